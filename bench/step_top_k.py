"""`python -m bench.step_top_k`: where a search step's top-k is taken, A/B in one process.

in-graph: the decoder graph's own TopK; only each row's k best log-probabilities and tokens
leave ONNX Runtime (on CUDA: the GPU). host: the graph returns every row's whole (V,)
log-probabilities and the top-k is taken on the host (`Engine.step_top_k`, the generic path
every engine has). Both run on one loaded engine, in turn, twice, on the same sentences;
the tokens of both are compared.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from model.checkpoint import read_model_config
from model.data import default_data_dir, read_lines
from service.engine.base import Engine
from service.engine.onnx_engine import OnnxEngine, load_onnx_engine

SPLIT = "test_2016_flickr"
SETTINGS = ((1, 32), (4, 32), (1, 1), (4, 1))  # (beam, batch)


def run(engine: OnnxEngine, sources: list[list[int]], beam: int, batch: int) -> tuple[float, list]:
    """Sentences/s and the best tokens of every sentence."""
    engine.generate(sources[:batch], beam_size=beam)  # warm
    start = time.perf_counter()
    out = []
    for i in range(0, len(sources), batch):
        out += [h[0].tokens for h in engine.generate(sources[i : i + batch], beam_size=beam)]
    return len(sources) / (time.perf_counter() - start), out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/en-de"))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precisions", nargs="+", default=None)
    parser.add_argument("--limit", type=int, default=1000, help="sentences at batch 32")
    parser.add_argument("--batch1-limit", type=int, default=100, help="sentences at batch 1")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    precisions = args.precisions or (["fp32", "fp16"] if args.device == "cuda" else ["fp32"])
    _, meta = read_model_config(args.model)
    texts = read_lines(default_data_dir(), SPLIT, meta["source_lang"])
    print("| precision | beam | batch | host top-k sent/s | in-graph sent/s | identical |")
    print("|---|---:|---:|---:|---:|---:|")
    for precision in precisions:
        engine = load_onnx_engine(
            args.model, device=args.device, precision=precision, threads=args.threads
        )
        sources = engine.tokenizer.encode(texts)
        for beam, batch in SETTINGS:
            chosen = sources[: args.limit if batch > 1 else args.batch1_limit]
            speeds: dict[str, list[float]] = {"host": [], "graph": []}
            outputs: dict[str, list] = {}
            for _ in range(2):
                engine.step_top_k = partial(Engine.step_top_k, engine)  # type: ignore[method-assign]
                speed, outputs["host"] = run(engine, chosen, beam, batch)
                speeds["host"].append(speed)
                del engine.step_top_k  # the engine's own, in-graph
                speed, outputs["graph"] = run(engine, chosen, beam, batch)
                speeds["graph"].append(speed)
            same = sum(a == b for a, b in zip(outputs["host"], outputs["graph"], strict=True))
            host = "-".join(f"{s:.1f}" for s in sorted(speeds["host"]))
            graph = "-".join(f"{s:.1f}" for s in sorted(speeds["graph"]))
            print(
                f"| {precision} | {beam} | {batch} | {host} | {graph} "
                f"| {100 * same / len(chosen):.1f}% |",
                flush=True,
            )


if __name__ == "__main__":
    main()
