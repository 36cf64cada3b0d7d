"""The graph contract: what `export` writes and `service.engine` runs, defined once.

File names, the ONNX opset, the input and output names of every graph and the format
version of an exported variant. Both sides import this module and nothing of each other,
so the interface changes here and both see it.

A variant directory holds four graphs:
- encoder: source ids and mask -> cross-attention keys and values of every decoder layer,
  computed once per request;
- decoder with past (export/decoder_step.py): one new token and its position per row, the
  source mask and the cache -> log-probabilities of the next token and the cache grown by
  one position; and, for a `k` given at run time, each row's k best log-probabilities and
  their tokens (ONNX TopK, ties to the lower token id), which is all a search step needs:
  fetching those instead of the whole (rows, vocabulary) matrix keeps it on a GPU;
- select_past: rows `index` of every self-attention cache tensor (follow beams, drop
  finished rows), and select_sources: entries `index` of the source mask and of every cross
  tensor (export/select_graph.py).

The cache crosses the graph boundary one tensor per layer (`past_self_k_0`, ...), not
stacked (L, B, H, T, Dh) as `KVCache` holds it in PyTorch: a stacked input costs a Split
and a stacked output a Concat, two more copies of the whole cache per step
(docs/decisions.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
SELECT_PAST_FILE = "select_past.onnx"
SELECT_SOURCES_FILE = "select_sources.onnx"
MANIFEST_FILE = "export.json"
PRECISIONS = ("fp32", "int8", "fp16")
# ONNX opset: 17 has LayerNormalization, which ORT's CPU and CUDA kernels run fused.
OPSET = 17
# The IR version of the graphs built with onnx.helper (the row-select graphs): what the
# traced graphs carry; onnx's newer default can be ahead of the ONNX Runtime in use.
IR_VERSION = 8
# The graphs' interface (inputs, outputs, their meaning, the files of a variant); bump it
# whenever that changes, so that cached variants of an older format are exported again.
# 3: the decoder's top-k outputs; 4: that top-k in two stages; 5: the encoder packs real tokens;
# 6: a position per row and a left-padded, masked past (continuous batching);
# 7: the row-select graphs are exported with the variant
GRAPH_FORMAT = 7
TOP_K_OUTPUTS = ("top_log_probs", "top_tokens")
SELECT_INDEX = "index"


@dataclass(frozen=True)
class GraphNames:
    """Input and output names of every graph for a decoder of n_layers layers."""

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

    @cached_property
    def select_past_inputs(self) -> list[str]:
        """index (R,) int64, then the tensors whose rows it takes: the decoder's past."""
        return [SELECT_INDEX, *self.past]

    @cached_property
    def select_past_outputs(self) -> list[str]:
        """selected_past_self_*: (R, H, T, Dh), row i being row index[i] of the input."""
        return [f"selected_{name}" for name in self.past]

    @cached_property
    def select_sources_inputs(self) -> list[str]:
        """index (R,) int64, then the source mask and the cross tensors whose entries it takes."""
        return [SELECT_INDEX, "src_mask", *self.cross]

    @cached_property
    def select_sources_outputs(self) -> list[str]:
        """selected_src_mask (R, S), then selected_cross_* (R, H, S, Dh)."""
        return [f"selected_{name}" for name in self.select_sources_inputs[1:]]
