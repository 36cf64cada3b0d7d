"""`load_engine`: one call that turns a model directory into a ready engine."""

from __future__ import annotations

from pathlib import Path

from export.contract import PRECISIONS
from model.checkpoint import load_model
from service.engine.base import BACKENDS, DEVICES, Engine


def load_engine(
    model_dir: Path | str,
    backend: str = "onnx",
    device: str = "cpu",
    precision: str = "fp32",
    *,
    threads: int | None = None,
    streams: int | None = None,
    artifacts_root: Path | None = None,
    graphs_dir: Path | None = None,
) -> Engine:
    """Load `models/<src>-<tgt>` on ONNX Runtime (the served path) or PyTorch (the fallback).

    threads, streams, artifacts_root (where exported graphs are cached) and graphs_dir (run
    these graphs instead): the ONNX engine's, see load_onnx_engine.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if backend == "torch":
        if graphs_dir is not None:
            raise ValueError("graphs_dir is for the onnx backend")
        from service.engine.torch_engine import TorchEngine

        return TorchEngine(load_model(model_dir), device=device, precision=precision)
    from service.engine.onnx_engine import load_onnx_engine

    return load_onnx_engine(
        Path(model_dir),
        device=device,
        precision=precision,
        threads=threads,
        streams=streams,
        artifacts_root=artifacts_root,
        graphs_dir=graphs_dir,
    )
