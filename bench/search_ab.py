"""`python -m bench.search_ab --against REV`: this search code against a git revision's, A/B.

The search (`model/search.py`: greedy and beam bookkeeping around each decoder step) is
judged on whole translations: one ONNX Runtime engine translates the same sentences in turn
with the search of revision REV (A) and the current one (B), several rounds, so that a slow
spell of a shared machine falls on both. Same graphs, same engine; only the search differs.
Prints each side's sentences/s (every round, slowest to fastest), the ratio of the medians
by wall time and by CPU time, and the share of sentences whose tokens are identical.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import types
from collections.abc import Sequence
from pathlib import Path

import service.engine.base as engine_base
from bench.graphs_ab import add_run_arguments, compare, source_texts
from service.engine.onnx_engine import load_onnx_engine

REPO = Path(__file__).resolve().parents[1]


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="git revision of search A")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4])
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    texts = source_texts(args)
    engine = load_onnx_engine(args.model, precision=args.precision, threads=args.threads)
    sources = engine.tokenizer.encode(texts)
    searches = {"A": search_at(args.against).search, "B": engine_base.search}
    print(f"A: model/search.py at {args.against}\nB: model/search.py as checked out")

    def use(side: str) -> None:
        engine_base.search = searches[side]  # what Engine._search calls

    try:
        compare(args, sources, {"A": engine, "B": engine}, enter=use)
    finally:
        engine_base.search = searches["B"]


if __name__ == "__main__":
    main()
