"""Inference engines behind one interface: ONNX Runtime (served) and PyTorch (fallback)."""

from service.engine.base import Alternative, Engine, Translation

__all__ = ["Alternative", "Engine", "Translation"]
