"""`python -m bench.greedy_compaction`: when greedy search drops its finished rows, A/B.

Greedy search keeps a finished sentence's row in the batch until finished rows are
`model.search.COMPACT_SHARE` of it, then drops them with one `select` (a copy of the cache
and, when sentences leave, of their source side). This runs the same sentences with several
shares in turn on one engine, several rounds; share 0 drops every row as soon as it
finishes. Prints sentences/s (every round, slowest to fastest) and the share of sentences
whose tokens equal those of share 0.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from statistics import median

import model.search
from bench.graphs_ab import add_run_arguments, source_texts, timed
from service.engine.onnx_engine import load_onnx_engine

SPLIT = "test_2016_flickr"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    texts = source_texts(args)
    engine = load_onnx_engine(args.model, precision=args.precision, threads=args.threads)
    sources = engine.tokenizer.encode(texts)
    shares = sorted({0.0, *args.shares})
    engine.generate(sources[: args.batch], beam_size=1)  # warm
    speeds: dict[float, list[float]] = {share: [] for share in shares}
    tokens: dict[float, list] = {}
    default = model.search.COMPACT_SHARE
    try:
        for _ in range(args.rounds):
            for share in shares:
                # 0 would keep rows only while none is finished: any finish compacts.
                model.search.COMPACT_SHARE = max(share, 1e-9)
                speed, _, tokens[share] = timed(engine, sources, 1, args.batch)
                speeds[share].append(speed)
    finally:
        model.search.COMPACT_SHARE = default
    print("| precision | batch | share | sent/s | vs share 0 (medians) | identical to share 0 |")
    print("|---|---:|---:|---:|---:|---:|")
    for share in shares:
        same = sum(a == b for a, b in zip(tokens[share], tokens[0.0], strict=True))
        runs = "-".join(f"{s:.1f}" for s in sorted(speeds[share]))
        print(
            f"| {args.precision} | {args.batch} | {share:g} | {runs} "
            f"| {median(speeds[share]) / median(speeds[0.0]):.2f}x "
            f"| {100 * same / len(sources):.1f}% |",
            flush=True,
        )


if __name__ == "__main__":
    main()
