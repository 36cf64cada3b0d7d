"""ONNX Runtime sessions with their options chosen on purpose, and the execution providers."""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def cuda_available() -> bool:
    return CUDA_PROVIDER in ort.get_available_providers()


def session_options(threads: int | None) -> ort.SessionOptions:
    """Options for a decoding graph run once per step."""
    options = ort.SessionOptions()
    # Constant folding, LayerNorm / MatMul+Transpose / MatMul+Scale fusions, and the
    # hardware-specific layout passes: all are exact up to float rounding.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The graphs are a chain of dependent ops: parallelism lives inside each op
    # (intra-op threads); running independent nodes in parallel buys nothing here.
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    # Shapes change every step (the cache grows by one): a memory plan recorded for one
    # shape is never reused, so recording it is pure overhead; the arena still recycles.
    options.enable_mem_pattern = False
    # Idle intra-op workers sleep instead of spinning: between two graph runs the search's
    # own (torch) ops need the same cores, and spinning workers starved them
    # (docs/decisions.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # warnings about hardware-specific rewrites are noise here
    return options


def providers_for(device: str) -> list[str | tuple[str, dict[str, object]]]:
    """CUDA first with CPU as the fallback for ops CUDA lacks; CPU alone for device cpu."""
    if device == "cuda":
        cuda_options: dict[str, object] = {
            "device_id": 0,
            # float32 graphs must give PyTorch's tokens: TF32 matrix products (ORT's CUDA
            # default on Ampere and later) round inputs to 10 mantissa bits, PyTorch's float32
            # matmul does not. float16 graphs are unaffected.
            "use_tf32": 0,
        }
        return [(CUDA_PROVIDER, cuda_options), CPU_PROVIDER]
    return [CPU_PROVIDER]


def make_session(graph: Path | bytes, device: str, threads: int | None) -> ort.InferenceSession:
    """A session for a graph file (or serialized graph) on cpu or cuda."""
    source = graph if isinstance(graph, bytes) else str(graph)
    if device == "cuda":
        # onnxruntime-gpu 1.31 warns on every CUDA session that no *plugin* EP device matches
        # (the built-in CUDA provider is used, as asked): noise in a service's log.
        ort.set_default_logger_severity(3)
    return ort.InferenceSession(source, session_options(threads), providers=providers_for(device))
