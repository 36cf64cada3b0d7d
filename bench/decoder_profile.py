"""`python -m bench.decoder_profile`: where one decoder step's time goes, by ONNX op type.

The model's exported decoder graph runs one step at a fixed shape (rows, rows per source,
cached positions, k) on one thread with ORT's profiler on; the kernel times of every node are
summed per op type over the runs and printed with their share and node count. Random cache
and source; the shapes are what cost depends on. The wall time per run (profiler off) is
printed too.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.artifacts import ensure_graphs
from export.graphs import TOP_K_OUTPUTS, GraphNames
from model.checkpoint import read_model_config
from service.engine.ort_session import session_options


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/en-de"))
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--group", type=int, default=4, help="rows per source (beams)")
    parser.add_argument("--cached", type=int, default=20, help="positions in the cache")
    parser.add_argument("--src-len", type=int, default=16)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args(argv)
    config, _ = read_model_config(args.model)
    graphs = ensure_graphs(args.model, args.precision)
    names = GraphNames(config.n_decoder_layers)
    rng = np.random.default_rng(0)
    sources = max(1, args.rows // args.group)
    src_mask = np.ones((sources, args.src_len), dtype=bool)
    encoder = ort.InferenceSession(str(graphs.encoder), session_options(1))
    src_ids = rng.integers(4, config.vocab_size, (sources, args.src_len))
    cross = encoder.run(names.cross, {"src_ids": src_ids, "src_mask": src_mask})
    shape = (args.rows, config.n_heads, args.cached, config.d_head)
    feeds = {
        "tokens": rng.integers(4, config.vocab_size, (args.rows, 1)),
        "positions": np.full(args.rows, args.cached, dtype=np.int64),  # every row at one step
        "src_mask": src_mask,
        "k": np.array([args.k], dtype=np.int64),
        **{n: rng.standard_normal(shape).astype(cross[0].dtype) for n in names.past},
        **dict(zip(names.cross, cross, strict=True)),
    }
    fetch = [*TOP_K_OUTPUTS, *names.present]

    plain = ort.InferenceSession(str(graphs.decoder), session_options(1))
    for _ in range(5):
        plain.run(fetch, feeds)
    start = time.perf_counter()
    for _ in range(args.runs):
        plain.run(fetch, feeds)
    wall = (time.perf_counter() - start) / args.runs

    options = session_options(1)
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "decoder")
    profiled = ort.InferenceSession(str(graphs.decoder), options)
    for _ in range(args.runs):
        profiled.run(fetch, feeds)
    events = json.loads(Path(profiled.end_profiling()).read_text())
    spent: dict[str, float] = defaultdict(float)
    nodes: Counter[str] = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            spent[op] += event["dur"]
            nodes[op] += 1
    total = sum(spent.values())
    print(
        f"{args.precision} decoder, {args.rows} rows ({args.group} per source), "
        f"{args.cached} cached positions, source length {args.src_len}, k {args.k}: "
        f"{1e6 * wall:.0f} us per run (profiler off), {total / args.runs:.0f} us of kernels"
    )
    print("| op | us per run | share | nodes |")
    print("|---|---:|---:|---:|")
    for op, us in sorted(spent.items(), key=lambda item: -item[1]):
        count = nodes[op] // args.runs
        print(f"| {op} | {us / args.runs:.1f} | {100 * us / total:.1f}% | {count} |")


if __name__ == "__main__":
    main()
