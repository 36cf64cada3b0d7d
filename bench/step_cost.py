"""`python -m bench.step_cost`: the cost of one greedy decoding step, ours against CTranslate2.

Whole translations mix encoding, steps at every row count as sentences finish, and the
search's bookkeeping. This isolates the step: R sentences of middling length are decoded for
exactly N steps (CTranslate2: min_decoding_length = max_decoding_length = N; ours:
`step_top_k` N times from `start`), and again for 1 step; the difference over N - 1 is the
cost of a step at R rows. Both on one thread, one stream, in turn, several rounds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch

from bench.engines import prepare
from model.checkpoint import read_model_config
from model.data import default_data_dir, read_lines
from service.engine.onnx_engine import load_onnx_engine

SPLIT = "test_2016_flickr"
CT2_TYPES = {"fp32": "float32", "int8": "int8"}


def main(argv: Sequence[str] | None = None) -> None:
    import ctranslate2

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/en-de"))
    parser.add_argument("--precision", choices=sorted(CT2_TYPES), default="int8")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    _, meta = read_model_config(args.model)
    ct2_dir = prepare(args.model, [("onnx", args.precision), ("ctranslate2", args.precision)], None)
    engine = load_onnx_engine(args.model, precision=args.precision, threads=1, streams=1)
    translator = ctranslate2.Translator(
        str(ct2_dir), compute_type=CT2_TYPES[args.precision], inter_threads=1, intra_threads=1
    )
    texts = read_lines(default_data_dir(), SPLIT, meta["source_lang"])
    by_length = sorted(engine.tokenizer.encode(texts), key=len)
    middle = len(by_length) // 2
    sp = engine.tokenizer.sp

    def ct2(pieces: list[list[str]], steps: int, *, scores: bool) -> float:
        start = time.perf_counter()
        translator.translate_batch(
            pieces,
            beam_size=1,
            min_decoding_length=steps,
            max_decoding_length=steps,
            return_scores=scores,
        )
        return time.perf_counter() - start

    def ours(sources: list[list[int]], steps: int) -> float:
        start = time.perf_counter()
        state = engine.start(sources)
        tokens = torch.full((len(sources),), engine.bos_id)
        for _ in range(steps):
            _, top, state = engine.step_top_k(state, tokens, 1)
            tokens = top[:, 0]
        return time.perf_counter() - start

    print(f"us per greedy step, {args.precision}, one thread (rounds, fastest to slowest)")
    print("| rows | CTranslate2 | CTranslate2 with scores | ours |")
    print("|---:|---:|---:|---:|")
    n = args.steps
    for rows in args.rows:
        sources = by_length[middle : middle + rows]
        pieces = [[sp.id_to_piece(i) for i in s] for s in sources]
        ours(sources, n)  # warm
        ct2(pieces, n, scores=True)
        cost: dict[str, list[float]] = {"ct2": [], "ct2+scores": [], "ours": []}
        for _ in range(args.rounds):
            runs = {
                "ct2": partial(ct2, pieces, scores=False),
                "ct2+scores": partial(ct2, pieces, scores=True),
                "ours": partial(ours, sources),
            }
            for name, run in runs.items():
                cost[name].append(1e6 * (run(n) - run(1)) / (n - 1))
        cells = [" ".join(f"{c:.0f}" for c in sorted(cost[k])) for k in cost]
        print(f"| {rows} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
