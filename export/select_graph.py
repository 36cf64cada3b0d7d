"""The row-select graphs: rows `index` of many tensors along axis 0, in one ONNX Runtime run.

A search drops finished sentences and follows its beams by selecting rows of the decoder's
cache (select_past) and, when the set of sentences changes, entries of the source side
(select_sources). The engine runs these graphs rather than indexing arrays itself, on the
host too, so the CPU tests cover the code the GPU runs (where the cache stays on the device
between steps). On the CPU their outputs come from ORT's memory arena, where numpy's fancy
indexing allocates a new buffer per cache tensor per step (docs/decisions.md).

Each variant gets its own pair, typed as its decoder takes the tensors (float16 caches for
fp16), so they are exported, cached and checksummed with the variant's other graphs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from export.contract import (
    DECODER_FILE,
    IR_VERSION,
    OPSET,
    SELECT_INDEX,
    SELECT_PAST_FILE,
    SELECT_SOURCES_FILE,
    GraphNames,
)

Kind = tuple[int, int]  # (ONNX element type, rank) of a tensor


def select_graph(
    inputs: Sequence[str], outputs: Sequence[str], kinds: Sequence[Kind]
) -> onnx.ModelProto:
    """A graph taking rows `index` (R,) of each input along axis 0: y_i = x_i[index]."""
    index = helper.make_tensor_value_info(SELECT_INDEX, TensorProto.INT64, ["rows"])
    graph_inputs, graph_outputs, nodes = [index], [], []
    for i, (x, y, (elem, rank)) in enumerate(zip(inputs, outputs, kinds, strict=True)):
        dims = [f"x{i}_{d}" for d in range(rank)]
        graph_inputs.append(helper.make_tensor_value_info(x, elem, dims))
        graph_outputs.append(helper.make_tensor_value_info(y, elem, ["rows", *dims[1:]]))
        nodes.append(helper.make_node("Gather", [x, SELECT_INDEX], [y], axis=0))
    graph = helper.make_graph(nodes, "select_rows", graph_inputs, graph_outputs)
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )


def decoder_kinds(decoder_file: Path) -> tuple[int, dict[str, Kind]]:
    """The decoder graph's layer count and the (element type, rank) of each of its inputs."""
    decoder = onnx.load(str(decoder_file), load_external_data=False)
    kinds = {
        i.name: (i.type.tensor_type.elem_type, len(i.type.tensor_type.shape.dim))
        for i in decoder.graph.input
    }
    return sum(1 for name in kinds if name.startswith("past_self_k_")), kinds


def write_select_graphs(directory: Path) -> None:
    """select_past.onnx and select_sources.onnx beside a variant's decoder.onnx."""
    n_layers, kinds = decoder_kinds(directory / DECODER_FILE)
    names = GraphNames(n_layers)
    for file, inputs, outputs in (
        (SELECT_PAST_FILE, names.select_past_inputs, names.select_past_outputs),
        (SELECT_SOURCES_FILE, names.select_sources_inputs, names.select_sources_outputs),
    ):
        selected = inputs[1:]  # after the index
        model = select_graph(selected, outputs, [kinds[name] for name in selected])
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(directory / file))
