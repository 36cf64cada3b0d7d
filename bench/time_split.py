"""`python -m bench.time_split`: where an ONNX Runtime translation's time goes.

One engine, one stream of one thread, translates the test sentences in batches; the time
inside each of its graph runs (encoder, decoder, row selection: ort_io's GraphIO calls) is
summed, and the rest is the search's own Python (model/search.py, the engine's step). Printed
per round as seconds and shares of the whole.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from bench.graphs_ab import add_run_arguments, source_texts
from service.engine.onnx_engine import load_onnx_engine

# GraphIO calls -> the part of the work they are
PARTS = {
    "encode": "encoder",
    "decode_top_k": "decoder",
    "decode": "decoder",
    "select_past": "select",
    "gather": "select",
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4])
    add_run_arguments(parser)
    parser.set_defaults(batch=16, threads=1)
    args = parser.parse_args(argv)
    texts = source_texts(args)
    engine = load_onnx_engine(args.model, precision=args.precision, threads=args.threads)
    sources = engine.tokenizer.encode(texts)
    spent: dict[str, float] = defaultdict(float)

    def timed(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def run(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return call(*a, **k)
            finally:
                spent[PARTS[name]] += time.perf_counter() - start

        return run

    io = engine.io
    for name in PARTS:
        if hasattr(io, name):
            setattr(io, name, timed(name, getattr(io, name)))
    print(f"{args.precision}, {engine.streams} stream(s), {args.threads} thread(s) in all")
    print("| beam | batch | round | seconds | encoder | decoder | select | search (Python) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for beam in args.beams:
        engine.generate(sources[: args.batch], beam_size=beam)  # warm
        for round_ in range(1, args.rounds + 1):
            spent.clear()
            start = time.perf_counter()
            for i in range(0, len(sources), args.batch):
                engine.generate(sources[i : i + args.batch], beam_size=beam)
            total = time.perf_counter() - start
            parts = [spent["encoder"], spent["decoder"], spent["select"]]
            shares = [*parts, total - sum(parts)]
            cells = " | ".join(f"{100 * s / total:.0f}%" for s in shares)
            print(f"| {beam} | {args.batch} | {round_} | {total:.2f} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
