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
100%; int8 quantizes activations per batch tensor, so its tokens depend on the share).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import service.engine.base as engine_base
from bench.graphs_ab import add_run_arguments, compare, source_texts
from service.engine.onnx_engine import load_onnx_engine


def dealt(lengths: Sequence[int], streams: int) -> list[list[int]]:
    """Sentences sorted by length, dealt in turn to at most `streams` shares."""
    streams = max(1, min(streams, len(lengths)))
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[s::streams] for s in range(streams)]


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

    def use(side: str) -> None:
        engine_base.stream_shares = splits[side]  # what Engine.generate calls
        engine_base.SHARE_STEP_OVERHEAD = overheads[side]

    try:
        compare(args, sources, {"A": engine, "B": engine}, enter=use)
    finally:
        engine_base.stream_shares = splits["B"]
        engine_base.SHARE_STEP_OVERHEAD = overheads["A"]


if __name__ == "__main__":
    main()
