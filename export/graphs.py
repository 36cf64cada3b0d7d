"""The interface of the two ONNX graphs (names, dynamic axes, tracing inputs) and the encoder.

Encoder: source ids and mask -> cross-attention keys and values of every decoder layer,
computed once per request. Decoder with past (export/decoder_step.py): one new token and
its position per row, the source mask and the cache -> log-probabilities of the next token
and the cache grown by one position; and, for a `k` given at run time, each row's k best
log-probabilities and their tokens (ONNX TopK, ties to the lower token id), which is all a
search step needs: fetching those instead of the whole (rows, vocabulary) matrix keeps it
on a GPU.

The cache crosses the graph boundary one tensor per layer (`past_self_k_0`, ...), not
stacked (L, B, H, T, Dh) as `KVCache` holds it in PyTorch: a stacked input costs a Split
and a stacked output a Concat, two more copies of the whole cache per step; per-layer
tensors measured 7.5 -> 4.1 ms per decoder run at 32 rows and 17.6 -> 13.0 ms at 128
(one thread, d_model 256, 3 decoder layers).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from model.config import ModelConfig
from model.transformer import DecoderLayer, Transformer

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
# ONNX opset: 17 has LayerNormalization, which ORT's CPU and CUDA kernels run fused.
OPSET = 17
TOP_K_OUTPUTS = ("top_log_probs", "top_tokens")


@dataclass(frozen=True)
class GraphNames:
    """Input and output names of both graphs for a decoder of n_layers layers."""

    n_layers: int

    def _per_layer(self, *prefixes: str) -> list[str]:
        return [f"{p}_{i}" for p in prefixes for i in range(self.n_layers)]

    @cached_property
    def cross(self) -> list[str]:
        """cross_k_0..L-1, cross_v_0..L-1: (N, H, S, Dh), one entry per source sentence."""
        return self._per_layer("cross_k", "cross_v")

    @cached_property
    def past(self) -> list[str]:
        """past_self_k_0..L-1, past_self_v_0..L-1: (B, H, T, Dh), left-padded: row r's
        past is its last `positions[r]` slots."""
        return self._per_layer("past_self_k", "past_self_v")

    @cached_property
    def present(self) -> list[str]:
        """present_self_k_0..L-1, present_self_v_0..L-1: (B, H, T + 1, Dh)."""
        return self._per_layer("present_self_k", "present_self_v")

    @cached_property
    def encoder_inputs(self) -> list[str]:
        return ["src_ids", "src_mask"]

    @cached_property
    def encoder_outputs(self) -> list[str]:
        return self.cross

    @cached_property
    def step_inputs(self) -> list[str]:
        """The inputs of the traced decoder step."""
        return ["tokens", "positions", "src_mask", *self.past, *self.cross]

    @cached_property
    def step_outputs(self) -> list[str]:
        """The outputs of the traced decoder step: log_probs (B, V) and the grown cache."""
        return ["log_probs", *self.present]

    @cached_property
    def decoder_inputs(self) -> list[str]:
        """The decoder graph's inputs: the step's, and k (1,) int64 for the top-k outputs."""
        return [*self.step_inputs, "k"]

    @cached_property
    def decoder_outputs(self) -> list[str]:
        """The step's outputs, then top_log_probs (B, k) float32 and top_tokens (B, k) int64."""
        return [*self.step_outputs, *TOP_K_OUTPUTS]


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
