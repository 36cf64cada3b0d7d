"""`python -m export --model models/en-de --out artifacts/en-de [--int8] [--fp16]`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from export.artifacts import export_graphs, model_artifacts_dir


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Export a model directory to ONNX: encoder and decoder-with-past graphs."
    )
    parser.add_argument("--model", type=Path, required=True, help="a model directory")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: the artifacts cache of the checkpoint)",
    )
    parser.add_argument("--int8", action="store_true", help="also write int8 graphs (CPU)")
    parser.add_argument("--fp16", action="store_true", help="also write float16 graphs (GPU)")
    args = parser.parse_args(argv)
    out = args.out or model_artifacts_dir(args.model)
    precisions = ["fp32"] + ["int8"] * args.int8 + ["fp16"] * args.fp16
    for precision, graphs in export_graphs(args.model, out, precisions).items():
        sizes = ", ".join(
            f"{p.name} {p.stat().st_size / 2**20:.1f} MiB" for p in (graphs.encoder, graphs.decoder)
        )
        print(f"{precision}: {graphs.directory} ({sizes})")


if __name__ == "__main__":
    main()
