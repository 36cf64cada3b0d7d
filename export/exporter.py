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
from onnx import TensorProto, helper

from export.decoder_step import DecoderStepGraph
from export.graphs import (
    DECODER_FILE,
    ENCODER_FILE,
    OPSET,
    TOP_K_OUTPUTS,
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
            input_names=names.step_inputs,
            output_names=names.step_outputs,
            dynamic_axes=dec_axes,
        )
    add_top_k(out_dir / DECODER_FILE)
    for name in (ENCODER_FILE, DECODER_FILE):
        onnx.checker.check_model(str(out_dir / name), full_check=True)
    return names


def add_top_k(decoder_file: Path) -> None:
    """Append input k and a TopK over log_probs: top_log_probs, top_tokens (B, k).

    Added to the exported graph rather than traced: torch.topk takes k as a Python int,
    which tracing would freeze into the graph, where the search asks for 1 (greedy) or 2K.
    """
    model = onnx.load(str(decoder_file))
    graph = model.graph
    graph.input.append(helper.make_tensor_value_info("k", TensorProto.INT64, [1]))
    values, tokens = TOP_K_OUTPUTS
    graph.node.append(
        helper.make_node(
            "TopK", ["log_probs", "k"], [values, tokens], name="top_k", axis=-1, largest=1
        )
    )
    graph.output.append(helper.make_tensor_value_info(values, TensorProto.FLOAT, ["batch", "k"]))
    graph.output.append(helper.make_tensor_value_info(tokens, TensorProto.INT64, ["batch", "k"]))
    onnx.save(model, str(decoder_file))
