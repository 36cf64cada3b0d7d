"""`python -m bench.stream_split`: how a batch is split into streams, A/B on whole translations.

One ONNX Runtime engine with several streams translates the test sentences in batches, in
turn with two ways of cutting each batch into the streams' shares, several rounds, so that a
slow spell of a shared machine falls on both:

- A: sentences sorted by length and dealt in turn (each share gets long and short ones
  alike), the split before balanced shares;
- B: the engine's `stream_shares`: contiguous runs of the length order, cut so that the
  largest estimated share cost is least, with `--overhead` as its per-step overhead.

Prints each side's sentences/s (every round, slowest to fastest), the ratio of the medians
by wall time and by CPU time, and the share of sentences whose tokens are identical (fp32:
100%; int8 quantizes activations per batch tensor, so its tokens depend on the share). Then
each side's stream use: the time its shares spent decoding over streams x the time its
batches took, 100% when every stream decodes until its batch is done.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import service.engine.base as engine_base
from bench.graphs_ab import add_run_arguments, compare, source_texts
from service.engine.onnx_engine import OnnxEngine, load_onnx_engine


def dealt(lengths: Sequence[int], streams: int) -> list[list[int]]:
    """Sentences sorted by length, dealt in turn to at most `streams` shares."""
    streams = max(1, min(streams, len(lengths)))
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[s::streams] for s in range(streams)]


class StreamUse:
    """Per side, the time spent decoding shares and the wall time of the batches."""

    def __init__(self, engine: OnnxEngine) -> None:
        self.side = "A"
        self.busy: dict[str, list[float]] = defaultdict(list)  # appends are thread-safe
        self.wall: dict[str, list[float]] = defaultdict(list)
        engine._search = self._timed(engine._search, self.busy)  # type: ignore[method-assign]
        engine.generate = self._timed(engine.generate, self.wall)  # type: ignore[method-assign]

    def _timed(self, call: Callable[..., Any], spent: dict[str, list[float]]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                spent[self.side].append(time.perf_counter() - start)

        return run

    def fraction(self, side: str, streams: int) -> float:
        return sum(self.busy[side]) / (streams * sum(self.wall[side]))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--streams", type=int, default=None, help="default: one per thread")
    parser.add_argument(
        "--overhead",
        type=int,
        default=engine_base.SHARE_STEP_OVERHEAD,
        help="B's SHARE_STEP_OVERHEAD",
    )
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    texts = source_texts(args)
    engine = load_onnx_engine(
        args.model, precision=args.precision, threads=args.threads, streams=args.streams
    )
    sources = engine.tokenizer.encode(texts)
    splits = {"A": dealt, "B": engine_base.stream_shares}
    overheads = {"A": engine_base.SHARE_STEP_OVERHEAD, "B": args.overhead}
    print(f"{engine.streams} streams; A: dealt in turn; B: balanced runs, overhead {args.overhead}")

    clock = StreamUse(engine)

    def use(side: str) -> None:
        engine_base.stream_shares = splits[side]  # what Engine.generate calls
        engine_base.SHARE_STEP_OVERHEAD = overheads[side]
        clock.side = side

    try:
        compare(args, sources, {"A": engine, "B": engine}, enter=use)
    finally:
        engine_base.stream_shares = splits["B"]
        engine_base.SHARE_STEP_OVERHEAD = overheads["A"]
    use_a, use_b = (clock.fraction(side, engine.streams) for side in "AB")
    print(f"stream use: A {100 * use_a:.0f}%, B {100 * use_b:.0f}%")


if __name__ == "__main__":
    main()
