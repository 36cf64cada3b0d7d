"""Checkpoint -> float32 ONNX graphs (encoder, decoder with past) via the TorchScript exporter.

The TorchScript path (`dynamo=False`) traces the model once with example inputs; the sizes
it reads (`past.size(2)` for the position of the new token) stay symbolic, so one graph
serves every batch, source length and cache length, including the empty cache (T = 0) of
the first step.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import onnx
import torch

from export.decoder_step import DecoderStepGraph
from export.graphs import (
    DECODER_FILE,
    ENCODER_FILE,
    OPSET,
    EncoderGraph,
    GraphNames,
    dynamic_axes,
    example_inputs,
)
from model.transformer import Transformer


def export_fp32(model: Transformer, out_dir: Path) -> GraphNames:
    """Write encoder.onnx and decoder.onnx for the model into out_dir; returns their names."""
    # A private float32 CPU copy in eval mode: the exporter switches modes on what it is
    # given, and the caller's model must not change under it.
    model = copy.deepcopy(model).float().cpu().eval()
    names = GraphNames(model.config.n_decoder_layers)
    enc_axes, dec_axes = dynamic_axes(names)
    enc_inputs, dec_inputs = example_inputs(model.config)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # Tracer warnings about Python ints from sizes: those sizes are exported symbolically.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            EncoderGraph(model).eval(),
            enc_inputs,
            str(out_dir / ENCODER_FILE),
            dynamo=False,
            opset_version=OPSET,
            input_names=names.encoder_inputs,
            output_names=names.encoder_outputs,
            dynamic_axes=enc_axes,
        )
        torch.onnx.export(
            DecoderStepGraph(model).eval(),
            dec_inputs,
            str(out_dir / DECODER_FILE),
            dynamo=False,
            opset_version=OPSET,
            input_names=names.decoder_inputs,
            output_names=names.decoder_outputs,
            dynamic_axes=dec_axes,
        )
    for name in (ENCODER_FILE, DECODER_FILE):
        onnx.checker.check_model(str(out_dir / name), full_check=True)
    return names
