"""Checkpoint -> float32 ONNX graphs (encoder, decoder with past) via the TorchScript exporter.

The TorchScript path (`dynamo=False`) traces the model once with example inputs; the sizes
it reads (`past.size(2)` for the position of the new token) stay symbolic, so one graph
serves every batch, source length and cache length, including the empty cache (T = 0) of
the first step.
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from onnx import TensorProto, helper

from export.contract import DECODER_FILE, ENCODER_FILE, OPSET, TOP_K_OUTPUTS, GraphNames
from export.decoder_step import DecoderStepGraph
from export.encoder_graph import EncoderGraph
from export.graphs import dynamic_axes, example_inputs
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
    add_top_k(out_dir / DECODER_FILE, model.config.vocab_size)
    for name in (ENCODER_FILE, DECODER_FILE):
        onnx.checker.check_model(str(out_dir / name), full_check=True)
    return names


def top_k_chunk(vocab_size: int) -> int:
    """The chunk width of the two-stage top-k: the divisor of V nearest sqrt(V), if one lies
    within a factor of two of it, else ceil(sqrt(V)) (the vocabulary is then padded)."""
    root = math.sqrt(vocab_size)
    divisors = [
        c for c in range(max(1, math.ceil(root / 2)), int(2 * root) + 1) if vocab_size % c == 0
    ]
    return min(divisors, key=lambda c: abs(c - root)) if divisors else math.ceil(root)


def add_top_k(decoder_file: Path, vocab_size: int) -> None:
    """Append input k and each row's k best log_probs: top_log_probs, top_tokens (B, k).

    Added to the exported graph rather than traced: torch.topk takes k as a Python int,
    which tracing would freeze into the graph, where the search asks for 1 (greedy) or 2K.

    Two stages, exact: the vocabulary is cut into chunks of C tokens; the k chunks with the
    largest maxima hold every one of the k best tokens (a token outside them has k larger
    chunk maxima above it), so one TopK runs over the V / C chunk maxima and a second over
    the k * C tokens of those chunks, taken in token order so that ties still go to the
    lower token id. ORT's CPU TopK over whole rows was the slow part (whole translations
    with both forms: `python -m bench.ab graphs`, figures in docs/decisions.md).
    """
    model = onnx.load(str(decoder_file))
    graph = model.graph
    chunk = top_k_chunk(vocab_size)
    chunks = -(-vocab_size // chunk)
    padding = chunks * chunk - vocab_size

    def const(name: str, values: list[int]) -> str:
        graph.initializer.append(
            helper.make_tensor(f"top_k/{name}", TensorProto.INT64, [len(values)], values)
        )
        return f"top_k/{name}"

    def node(op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> None:
        graph.node.append(
            helper.make_node(op, inputs, outputs, name=f"top_k/{outputs[0]}", **attrs)
        )

    graph.input.append(helper.make_tensor_value_info("k", TensorProto.INT64, [1]))
    values, tokens = TOP_K_OUTPUTS
    scores = "log_probs"
    if padding:  # -inf never reaches the top k while k <= V
        node("Pad", [scores, const("pads", [0, 0, 0, padding]), "top_k/neg_inf"], ["top_k/padded"])
        graph.initializer.append(
            helper.make_tensor("top_k/neg_inf", TensorProto.FLOAT, [], [-math.inf])
        )
        scores = "top_k/padded"
    node("Reshape", [scores, const("chunked", [0, chunks, chunk])], ["top_k/by_chunk"])
    node("ReduceMax", ["top_k/by_chunk"], ["top_k/chunk_max"], axes=[2], keepdims=0)
    # k chunks, or all of them when k is larger than their count
    node("Min", ["k", const("chunk_count", [chunks])], ["top_k/k_chunks"])
    node("TopK", ["top_k/chunk_max", "top_k/k_chunks"], ["top_k/_", "top_k/best_chunks"], axis=-1)
    # the chosen chunks in token order (TopK, largest = 0: ascending)
    node(
        "TopK",
        ["top_k/best_chunks", "top_k/k_chunks"],
        ["top_k/chunk_ids", "top_k/__"],
        axis=-1,
        largest=0,
    )
    node("Unsqueeze", ["top_k/chunk_ids", const("last", [2])], ["top_k/chunk_ids3"])
    node("Mul", ["top_k/chunk_ids3", const("width", [chunk])], ["top_k/starts"])
    node("Add", ["top_k/starts", const("offsets", list(range(chunk)))], ["top_k/ids3"])
    node("Reshape", ["top_k/ids3", const("rows", [0, -1])], ["top_k/candidates"])
    node("GatherElements", [scores, "top_k/candidates"], ["top_k/candidate_scores"], axis=1)
    node("TopK", ["top_k/candidate_scores", "k"], [values, "top_k/positions"], axis=-1, largest=1)
    node("GatherElements", ["top_k/candidates", "top_k/positions"], [tokens], axis=1)
    graph.output.append(helper.make_tensor_value_info(values, TensorProto.FLOAT, ["batch", "k"]))
    graph.output.append(helper.make_tensor_value_info(tokens, TensorProto.INT64, ["batch", "k"]))
    onnx.save(model, str(decoder_file))
