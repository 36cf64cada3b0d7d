"""How tensors move in and out of the ONNX Runtime graphs: host arrays, or device buffers.

`HostIO` (CPU) feeds and receives numpy arrays: ORT reads contiguous numpy inputs in place
and hands its outputs over without a copy. `DeviceIO` (CUDA) keeps the cache in ORT values
on the device through IO binding: each step uploads the token ids and downloads only what
the search asks for, each row's k best log-probabilities and tokens (the whole (rows,
vocabulary) matrix only for `decode` without k, which service.engine.verify uses).

Both select rows (beams, finished sentences) with the variant's exported row-select graphs
(export/select_graph.py), run by ORT on the host too, so the CPU tests cover the code the
GPU runs. The two differ in one call, `_run`: where a graph's inputs come from and where
its outputs go; every graph call is written once, on top of it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import onnxruntime as ort

from export.artifacts import GraphSet
from export.contract import SELECT_INDEX, TOP_K_OUTPUTS, GraphNames
from service.engine.ort_session import make_session

Value = Any  # np.ndarray on the host, ort.OrtValue on the device
Feeds = Mapping[str, Value]  # a graph's inputs by name
Names = Sequence[str]
Session: TypeAlias = ort.InferenceSession


class GraphIO(ABC):
    """Runs the encoder, decoder and row-select graphs of one exported variant."""

    # The k fed when the top-k outputs are not wanted. ORT runs every node whatever is
    # fetched; k = 0 leaves the graph's top-k only its pass over the chunk maxima (a whole-row
    # TopK for k = 1 was 84 us at 16 x 8,000 on one thread, 8% of an int8 decoder step).
    idle_k = 0

    def __init__(
        self, graphs: GraphSet, names: GraphNames, *, device: str, threads: int | None
    ) -> None:
        self.names = names
        self.device = device
        self.encoder = make_session(graphs.encoder, device, threads)
        self.decoder = make_session(graphs.decoder, device, threads)
        self.select_past_graph = make_session(graphs.select_past, device, threads)
        self.select_sources_graph = make_session(graphs.select_sources, device, threads)

    @abstractmethod
    def _run(self, graph: Session, feeds: Feeds, fetch: Names, keep: Names) -> list[Value]:
        """One graph run on feeds (numpy arrays, or values as this IO holds them). Returns
        the outputs in fetch as numpy arrays, then those in keep as this IO holds them."""

    @abstractmethod
    def to_host(self, values: Sequence[Value]) -> list[np.ndarray]:
        """The tensors as numpy arrays (the same arrays on the host)."""

    @abstractmethod
    def from_host(self, arrays: Sequence[np.ndarray]) -> list[Value]:
        """numpy arrays as the decoder takes them (the same arrays on the host)."""

    @abstractmethod
    def empty_past(self, rows: int, like: Value) -> list[Value]:
        """Zero-length self-attention cache for rows, heads and dtype as in a cross tensor."""

    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> tuple[Value, list[Value]]:
        """-> the source mask as the decoder takes it, and cross_k_*, cross_v_* per layer."""
        feeds = {"src_ids": src_ids, "src_mask": src_mask}
        cross = self._run(self.encoder, feeds, [], self.names.encoder_outputs)
        return self.from_host([src_mask])[0], cross

    def decode(
        self,
        tokens: np.ndarray,
        positions: np.ndarray,
        src_mask: Value,
        past: Sequence[Value],
        cross: Sequence[Value],
        *,
        k: int | None = None,
    ) -> tuple[list[np.ndarray], list[Value]]:
        """One decoder run -> what the search takes, on the host, and present_self_k_*, _v_*.

        What the search takes: without k, the log-probabilities (B, V) float32; with k, each
        row's k best log-probabilities (B, k) float32 and tokens (B, k) int64. The B rows
        are N contiguous groups, one per entry of src_mask and cross; row r has decoded
        positions[r] tokens (B,) int64, its past the last positions[r] slots.
        """
        feeds = {
            "tokens": tokens,
            "positions": positions,
            "k": np.array([self.idle_k if k is None else k], dtype=np.int64),
            "src_mask": src_mask,
        }
        feeds.update(zip(self.names.past, past, strict=True))
        feeds.update(zip(self.names.cross, cross, strict=True))
        fetch = ["log_probs"] if k is None else list(TOP_K_OUTPUTS)
        outputs = self._run(self.decoder, feeds, fetch, self.names.present)
        return outputs[: len(fetch)], outputs[len(fetch) :]

    def select_past(self, past: Sequence[Value], index: np.ndarray) -> list[Value]:
        """Rows index (R,) of every past tensor, in that order."""
        names = self.names
        feeds = {SELECT_INDEX: index, **dict(zip(names.select_past_inputs[1:], past, strict=True))}
        return self._run(self.select_past_graph, feeds, [], names.select_past_outputs)

    def select_sources(
        self, src_mask: Value, cross: Sequence[Value], index: np.ndarray
    ) -> tuple[Value, list[Value]]:
        """Entries index (R,) of the source mask and of every cross tensor, in that order."""
        names = self.names
        selected = zip(names.select_sources_inputs[1:], [src_mask, *cross], strict=True)
        feeds = {SELECT_INDEX: index, **dict(selected)}
        mask, *rows = self._run(self.select_sources_graph, feeds, [], names.select_sources_outputs)
        return mask, rows


class HostIO(GraphIO):
    """numpy in, numpy out: the CPU path."""

    def _run(self, graph: Session, feeds: Feeds, fetch: Names, keep: Names) -> list[Value]:
        return list(graph.run([*fetch, *keep], dict(feeds)))

    def empty_past(self, rows: int, like: Value) -> list[Value]:
        _, h, _, dh = like.shape
        empty = np.zeros((rows, h, 0, dh), dtype=like.dtype)
        return [empty] * len(self.names.past)

    def to_host(self, values: Sequence[Value]) -> list[np.ndarray]:
        return list(values)

    def from_host(self, arrays: Sequence[np.ndarray]) -> list[Value]:
        return list(arrays)


class DeviceIO(GraphIO):
    """IO binding: the cache lives in ORT values on the device between steps."""

    idle_k = 1  # k = 0 was never run on the CUDA TopK; decode without k (verify) is not hot

    def __init__(
        self, graphs: GraphSet, names: GraphNames, *, device: str, threads: int | None
    ) -> None:
        super().__init__(graphs, names, device=device, threads=threads)
        past = next(i for i in self.decoder.get_inputs() if i.name == names.past[0])
        self.cache_dtype = np.float16 if past.type == "tensor(float16)" else np.float32

    def _run(self, graph: Session, feeds: Feeds, fetch: Names, keep: Names) -> list[Value]:
        binding = graph.io_binding()
        for name, value in feeds.items():  # numpy arrays are host inputs, copied over
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)
        # Only what is fetched crosses to the host (an unbound output is not fetched); the
        # outputs kept (the grown cache, selected rows) stay where they are.
        for name in fetch:
            binding.bind_output(name, "cpu")
        for name in keep:
            binding.bind_output(name, self.device, 0)
        graph.run_with_iobinding(binding)
        outputs = list(binding.get_outputs())
        return [v.numpy() for v in outputs[: len(fetch)]] + outputs[len(fetch) :]

    def empty_past(self, rows: int, like: Value) -> list[Value]:
        _, h, _, dh = like.shape()
        empty = ort.OrtValue.ortvalue_from_shape_and_type(
            [rows, h, 0, dh], self.cache_dtype, self.device, 0
        )
        return [empty] * len(self.names.past)

    # Joining states and trimming padding go through the host on a device: a round trip
    # per admission (not per step), unmeasured on a GPU so far; a Concat/Slice graph run on
    # the device, as the row selection is, is the way to avoid it.
    def to_host(self, values: Sequence[Value]) -> list[np.ndarray]:
        return [v.numpy() for v in values]

    def from_host(self, arrays: Sequence[np.ndarray]) -> list[Value]:
        return [
            ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a), self.device, 0)
            for a in arrays
        ]
