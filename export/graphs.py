"""Tracing the encoder and decoder graphs: dynamic axes and example inputs.

The graphs' names, files and format are the contract in export/contract.py.
"""

from __future__ import annotations

import torch
from torch import Tensor

from export.contract import GraphNames
from model.config import ModelConfig
from model.transformer import DecoderLayer, Transformer


def decoder_layers(model: Transformer) -> list[DecoderLayer]:
    """The decoder stack with its layer type (nn.ModuleList items are typed as plain Modules)."""
    return [layer for layer in model.decoder_layers if isinstance(layer, DecoderLayer)]


def example_inputs(
    config: ModelConfig, sources: int = 3, beams: int = 2, src_len: int = 7, past_len: int = 5
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Tracing inputs of both graphs; sizes that differ from each other, and a non-empty
    past, so that nothing the graphs should compute from shapes is traced as a constant."""
    src_ids = torch.randint(4, config.vocab_size, (sources, src_len))
    src_mask = torch.ones(sources, src_len, dtype=torch.bool)
    src_mask[0, -2:] = False
    rows = sources * beams
    tokens = torch.randint(4, config.vocab_size, (rows, 1))
    positions = torch.randint(0, past_len + 1, (rows,))
    n, h, dh = config.n_decoder_layers, config.n_heads, config.d_head
    past = [torch.randn(rows, h, past_len, dh) for _ in range(2 * n)]
    cross = [torch.randn(sources, h, src_len, dh) for _ in range(2 * n)]
    return (src_ids, src_mask), (tokens, positions, src_mask, *past, *cross)


def dynamic_axes(names: GraphNames) -> tuple[dict[str, dict[int, str]], dict[str, dict[int, str]]]:
    """Named dynamic axes: sources and src_len on the source side; batch (rows: sources times
    beams) and past_len on the target side."""
    enc: dict[str, dict[int, str]] = {
        "src_ids": {0: "sources", 1: "src_len"},
        "src_mask": {0: "sources", 1: "src_len"},
    }
    enc.update({n: {0: "sources", 2: "src_len"} for n in names.cross})
    dec: dict[str, dict[int, str]] = {
        "tokens": {0: "batch"},
        "positions": {0: "batch"},
        "src_mask": {0: "sources", 1: "src_len"},
        "log_probs": {0: "batch"},
    }
    dec.update({n: {0: "batch", 2: "past_len"} for n in names.past})
    dec.update({n: {0: "sources", 2: "src_len"} for n in names.cross})
    dec.update({n: {0: "batch", 2: "present_len"} for n in names.present})
    return enc, dec
