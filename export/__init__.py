"""Checkpoint -> ONNX graphs (encoder, decoder with past; fp32, int8, fp16), and verification."""

from export.artifacts import GraphSet, ensure_graphs, export_graphs, model_artifacts_dir

__all__ = ["GraphSet", "ensure_graphs", "export_graphs", "model_artifacts_dir"]
