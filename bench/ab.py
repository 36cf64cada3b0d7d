"""`python -m bench.ab graphs A B` / `python -m bench.ab search --against REV`: an A/B of
whole translations in one process.

A change to the graphs (a fused op, another top-k) or to the search (`model/search.py`: the
greedy and beam bookkeeping around each decoder step) is judged on whole translations, not
on the op alone:

- graphs: two graph directories (encoder.onnx and decoder.onnx of one precision, as in
  `artifacts/<pair>-<hash>/<precision>/`) loaded as two ONNX Runtime engines;
- search: one engine, searching with `model/search.py` of git revision REV (A) and with the
  one checked out (B): same graphs, only the search differs.

The sides translate the same test sentences in turn, several rounds, so that a slow spell
of a shared machine falls on both (`bench.toolkit.in_turn`). Prints each side's sentences/s
(every round, slowest to fastest), the ratio of the medians by wall time and by CPU time,
and the share of sentences whose tokens are identical.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import types
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from statistics import median

from bench.toolkit import REPO, in_turn, split_sentences
from model.checkpoint import read_model_config
from model.search import search
from service.engine.base import Engine, SearchFn
from service.engine.loader import load_engine

Side = Callable[[list[list[int]], int], list[list[int]]]  # (sources, beam) -> best tokens


def search_at(revision: str) -> types.ModuleType:
    """model/search.py as it was at a git revision, loaded as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{revision}:model/search.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType(f"search_at_{revision}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{revision}:model/search.py", "exec"), module.__dict__)
    return module


def side(engine: Engine, batch: int, search_fn: SearchFn = search) -> Side:
    """Translate sources in batches of `batch` with this engine and search."""

    def run(sources: list[list[int]], beam: int) -> list[list[int]]:
        out = []
        for i in range(0, len(sources), batch):
            hyps = engine.generate(sources[i : i + batch], beam_size=beam, search_fn=search_fn)
            out += [h[0].tokens for h in hyps]
        return out

    return run


def compare(
    args: argparse.Namespace, sources: list[list[int]], sides: dict[str, Side]
) -> list[str]:
    """The table, a row per beam: each side warmed on one batch, then the sides timed in
    turn for --rounds rounds."""
    lines = [
        "| precision | beam | batch | A sent/s | B sent/s | B / A | B / A per CPU s | identical |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    print(*lines, sep="\n")
    for beam in args.beams:
        for run in sides.values():
            run(sources[: args.batch], beam)  # warm
        runs = in_turn({name: partial(r, sources, beam) for name, r in sides.items()}, args.rounds)
        speed = {name: [len(sources) / t.seconds for t in runs[name]] for name in runs}
        per_cpu = {name: [len(sources) / t.cpu_seconds for t in runs[name]] for name in runs}
        a_tokens, b_tokens = runs["A"][-1].value, runs["B"][-1].value
        same = sum(a == b for a, b in zip(a_tokens, b_tokens, strict=True))
        a, b = sorted(speed["A"]), sorted(speed["B"])
        line = (
            f"| {args.precision} | {beam} | {args.batch} | {'-'.join(f'{s:.1f}' for s in a)} "
            f"| {'-'.join(f'{s:.1f}' for s in b)} | {median(b) / median(a):.2f}x "
            f"| {median(per_cpu['B']) / median(per_cpu['A']):.2f}x "
            f"| {100 * same / len(sources):.1f}% |"
        )
        print(line, flush=True)
        lines.append(line)
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", type=Path, default=Path("models/en-de"))
    common.add_argument("--precision", default="fp32")
    common.add_argument("--beams", type=int, nargs="+", default=[1, 4])
    common.add_argument("--batch", type=int, default=32)
    common.add_argument("--limit", type=int, default=1000, help="test sentences")
    common.add_argument("--rounds", type=int, default=3)
    common.add_argument("--threads", type=int, default=None)
    parser = argparse.ArgumentParser(
        prog="python -m bench.ab", description=__doc__.split("\n\n")[0]
    )
    what = parser.add_subparsers(dest="what", required=True)
    graphs = what.add_parser("graphs", parents=[common], help="two graph directories")
    graphs.add_argument("a", type=Path, help="graph directory A (the baseline)")
    graphs.add_argument("b", type=Path, help="graph directory B")
    searches = what.add_parser(
        "search", parents=[common], help="a git revision's search (A) against this one"
    )
    searches.add_argument("--against", required=True, help="git revision of search A")
    args = parser.parse_args(argv)

    _, meta = read_model_config(args.model)
    texts = split_sentences(meta["source_lang"], args.limit)

    def engine(graphs_dir: Path | None = None) -> Engine:
        return load_engine(
            args.model, precision=args.precision, threads=args.threads, graphs_dir=graphs_dir
        )

    if args.what == "graphs":
        a, b = engine(args.a), engine(args.b)
        sides = {"A": side(a, args.batch), "B": side(b, args.batch)}
        print(f"A: {args.a}\nB: {args.b}")
    else:
        a = b = engine()
        sides = {"A": side(a, args.batch, search_at(args.against).search), "B": side(b, args.batch)}
        print(f"A: model/search.py at {args.against}\nB: model/search.py as checked out")
    compare(args, a.tokenizer.encode(texts), sides)


if __name__ == "__main__":
    main()
