"""`python -m bench.graphs_ab`: two exports of one model's graphs, A/B in one process.

A graph change (a fused op, another top-k) is judged on the whole search, not on the op
alone: both graph directories are loaded as engines side by side and translate the same
sentences in turn, several rounds, so that a slow spell of a shared machine falls on both.
Prints each side's sentences/s (every round, slowest to fastest), the ratio of the medians
by wall time and by CPU time, and the share of sentences whose tokens are identical.
Directories hold encoder.onnx and decoder.onnx of one precision
(`artifacts/<pair>-<hash>/<precision>/`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import median

from model.checkpoint import read_model_config
from model.data import default_data_dir, read_lines
from service.engine.onnx_engine import OnnxEngine, load_onnx_engine

SPLIT = "test_2016_flickr"


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """What every A/B here takes: the model, its precision, how many sentences in what
    batches, how many rounds, on how many threads."""
    parser.add_argument("--model", type=Path, default=Path("models/en-de"))
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)


def source_texts(args: argparse.Namespace) -> list[str]:
    """The first --limit source sentences of the test split."""
    _, meta = read_model_config(args.model)
    return read_lines(default_data_dir(), SPLIT, meta["source_lang"])[: args.limit]


def timed(
    engine: OnnxEngine, sources: list[list[int]], beam: int, batch: int
) -> tuple[float, float, list]:
    """Sentences per second and per CPU second (all threads) over all sources in batches,
    and each sentence's best tokens."""
    start, cpu = time.perf_counter(), time.process_time()
    out = []
    for i in range(0, len(sources), batch):
        out += [h[0].tokens for h in engine.generate(sources[i : i + batch], beam_size=beam)]
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return len(sources) / wall, len(sources) / cpu, out


def print_header() -> None:
    print(
        "| precision | beam | batch | A sent/s | B sent/s | B / A | B / A per CPU s | identical |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")


def print_row(
    args: argparse.Namespace,
    beam: int,
    speeds: dict[str, list[float]],
    per_cpu: dict[str, list[float]],
    tokens: dict[str, list],
) -> None:
    """One table row: each side's rounds, the median ratios, the identical share."""
    same = sum(a == b for a, b in zip(tokens["A"], tokens["B"], strict=True))
    a, b = sorted(speeds["A"]), sorted(speeds["B"])
    print(
        f"| {args.precision} | {beam} | {args.batch} | {'-'.join(f'{s:.1f}' for s in a)} "
        f"| {'-'.join(f'{s:.1f}' for s in b)} | {median(b) / median(a):.2f}x "
        f"| {median(per_cpu['B']) / median(per_cpu['A']):.2f}x "
        f"| {100 * same / len(tokens['A']):.1f}% |",
        flush=True,
    )


def compare(
    args: argparse.Namespace,
    sources: list[list[int]],
    engines: dict[str, OnnxEngine],
    enter: Callable[[str], None] = lambda side: None,
) -> None:
    """The table: per beam, each side warmed, then the sides timed in turn for --rounds
    rounds; `enter(side)` runs before each side translates (to switch what it runs)."""
    print_header()
    for beam in args.beams:
        speeds: dict[str, list[float]] = {side: [] for side in engines}
        per_cpu: dict[str, list[float]] = {side: [] for side in engines}
        tokens: dict[str, list] = {}
        for side, engine in engines.items():
            enter(side)
            engine.generate(sources[: args.batch], beam_size=beam)  # warm
        for _ in range(args.rounds):
            for side, engine in engines.items():
                enter(side)
                speed, cpu_speed, tokens[side] = timed(engine, sources, beam, args.batch)
                speeds[side].append(speed)
                per_cpu[side].append(cpu_speed)
        print_row(args, beam, speeds, per_cpu, tokens)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="graph directory A (the baseline)")
    parser.add_argument("b", type=Path, help="graph directory B")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4])
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    texts = source_texts(args)
    engines = {
        side: load_onnx_engine(
            args.model, precision=args.precision, threads=args.threads, graphs_dir=directory
        )
        for side, directory in (("A", args.a), ("B", args.b))
    }
    sources = engines["A"].tokenizer.encode(texts)
    print(f"A: {args.a}\nB: {args.b}")
    compare(args, sources, engines)


if __name__ == "__main__":
    main()
