"""How tensors move in and out of the ONNX Runtime graphs: host arrays, or device buffers.

`HostIO` (CPU) feeds and receives numpy arrays: ORT reads contiguous numpy inputs in place
and hands its outputs over without a copy. `DeviceIO` (CUDA) keeps the cache in ORT values
on the device through IO binding: each step uploads the token ids and downloads only what
the search asks for, each row's k best log-probabilities and tokens (the whole (rows,
vocabulary) matrix only for `decode`, which export.verify uses).

Both select rows (beams, finished sentences) with one small Gather graph run by ORT, on
the host too, so the CPU tests cover the code the GPU runs. On the CPU its outputs come
from ORT's memory arena: numpy's fancy indexing allocates a new buffer per cache tensor per
step, a little larger each step, and in a synthetic beam loop (128 rows, int8) the page
faults of those fresh allocations cost 16.5 vs 11.3 ms of CPU per step; inside the engine
the two measured the same within noise.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from export.graphs import OPSET, TOP_K_OUTPUTS, GraphNames
from service.engine.ort_session import make_session

Value = Any  # np.ndarray on the host, ort.OrtValue on the device
Kind = tuple[int, int]  # (ONNX element type, rank) of a tensor


class GraphIO(Protocol):
    """Runs the encoder and decoder graphs and selects rows of their tensors."""

    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> tuple[Value, list[Value]]:
        """-> the source mask as the decoder takes it, and cross_k_*, cross_v_* per layer."""
        ...

    def decode(
        self,
        tokens: np.ndarray,
        positions: np.ndarray,
        src_mask: Value,
        past: Sequence[Value],
        cross: Sequence[Value],
    ) -> tuple[np.ndarray, list[Value]]:
        """-> log-probabilities (B, V) float32 on the host, and present_self_k_*, _v_*.

        The B rows are N contiguous groups, one per entry of src_mask and cross; row r has
        decoded positions[r] tokens (B,) int64, its past the last positions[r] slots.
        """
        ...

    def decode_top_k(
        self,
        tokens: np.ndarray,
        positions: np.ndarray,
        src_mask: Value,
        past: Sequence[Value],
        cross: Sequence[Value],
        k: int,
    ) -> tuple[np.ndarray, np.ndarray, list[Value]]:
        """-> each row's k best log-probabilities (B, k) float32 and tokens (B, k) int64 on
        the host, and present_self_k_*, _v_*."""
        ...

    def to_host(self, values: Sequence[Value]) -> list[np.ndarray]:
        """The tensors as numpy arrays (the same arrays on the host)."""
        ...

    def from_host(self, arrays: Sequence[np.ndarray]) -> list[Value]:
        """numpy arrays as the decoder takes them (the same arrays on the host)."""
        ...

    def empty_past(self, rows: int, like: Value) -> list[Value]:
        """Zero-length self-attention cache for rows, heads and dtype as in a cross tensor."""
        ...

    def gather(self, values: Sequence[Value], index: np.ndarray) -> list[Value]:
        """Rows index (N',) of each tensor, in that order."""
        ...


def gather_graph(kinds: Sequence[Kind]) -> bytes:
    """A graph taking rows `index` of each input along axis 0: y_i = x_i[index]."""
    index = helper.make_tensor_value_info("index", TensorProto.INT64, ["rows"])
    inputs, outputs, nodes = [index], [], []
    for i, (elem, rank) in enumerate(kinds):
        dims = [f"x{i}_{d}" for d in range(rank)]
        inputs.append(helper.make_tensor_value_info(f"x{i}", elem, dims))
        outputs.append(helper.make_tensor_value_info(f"y{i}", elem, ["rows", *dims[1:]]))
        nodes.append(helper.make_node("Gather", [f"x{i}", "index"], [f"y{i}"], axis=0))
    graph = helper.make_graph(nodes, "select_rows", inputs, outputs)
    # IR version 8 is what the exported graphs carry; onnx's newer default can be ahead of ORT.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


class RowGather:
    """One ORT Gather run for many tensors; a session per combination of tensor kinds."""

    def __init__(self, device: str, threads: int | None) -> None:
        self.device = device
        self.threads = threads
        self._sessions: dict[tuple[Kind, ...], ort.InferenceSession] = {}

    def session(self, kinds: tuple[Kind, ...]) -> ort.InferenceSession:
        session = self._sessions.get(kinds)
        if session is None:
            session = make_session(gather_graph(kinds), self.device, self.threads)
            self._sessions[kinds] = session
        return session

    def arrays(self, values: Sequence[np.ndarray], index: np.ndarray) -> list[np.ndarray]:
        kinds = tuple((helper.np_dtype_to_tensor_dtype(v.dtype), v.ndim) for v in values)
        feeds = {"index": index, **{f"x{i}": v for i, v in enumerate(values)}}
        return list(self.session(kinds).run(None, feeds))

    def bound(self, values: Sequence[ort.OrtValue], index: np.ndarray) -> list[ort.OrtValue]:
        kinds = tuple((_ELEMENT_TYPES[v.data_type()], len(v.shape())) for v in values)
        session = self.session(kinds)
        binding = session.io_binding()
        binding.bind_cpu_input("index", index)
        for i, value in enumerate(values):
            binding.bind_ortvalue_input(f"x{i}", value)
            binding.bind_output(f"y{i}", self.device, 0)
        session.run_with_iobinding(binding)
        return list(binding.get_outputs())


class DecoderRuns(ABC):
    """decode and decode_top_k over one decoder run that fetches some outputs to the host."""

    # The k fed when the top-k outputs are not wanted. ORT runs every node whatever is
    # fetched; k = 0 leaves the graph's top-k only its pass over the chunk maxima (a whole-row
    # TopK for k = 1 was 84 us at 16 x 8,000 on one thread, 8% of an int8 decoder step).
    idle_k = 0

    def decode(
        self,
        tokens: np.ndarray,
        positions: np.ndarray,
        src_mask: Value,
        past: Sequence[Value],
        cross: Sequence[Value],
    ) -> tuple[np.ndarray, list[Value]]:
        log_probs, *present = self._run(
            ["log_probs"], tokens, positions, src_mask, past, cross, self.idle_k
        )
        return self._host(log_probs), present

    def decode_top_k(
        self,
        tokens: np.ndarray,
        positions: np.ndarray,
        src_mask: Value,
        past: Sequence[Value],
        cross: Sequence[Value],
        k: int,
    ) -> tuple[np.ndarray, np.ndarray, list[Value]]:
        values, indices, *present = self._run(
            list(TOP_K_OUTPUTS), tokens, positions, src_mask, past, cross, k
        )
        return self._host(values), self._host(indices), present

    @abstractmethod
    def _run(
        self,
        fetch: list[str],
        tokens: np.ndarray,
        positions: np.ndarray,
        src_mask: Value,
        past: Sequence[Value],
        cross: Sequence[Value],
        k: int,
    ) -> list[Value]:
        """One decoder run: the outputs in fetch (on the host), then present_self_*."""

    @staticmethod
    def _host(value: Value) -> np.ndarray:
        return value if isinstance(value, np.ndarray) else value.numpy()


class HostIO(DecoderRuns):
    """numpy in, numpy out: the CPU path."""

    def __init__(
        self,
        encoder: ort.InferenceSession,
        decoder: ort.InferenceSession,
        names: GraphNames,
        *,
        threads: int | None,
    ) -> None:
        self.encoder = encoder
        self.decoder = decoder
        self.names = names
        self.rows = RowGather("cpu", threads)

    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> tuple[Value, list[Value]]:
        feeds = {"src_ids": src_ids, "src_mask": src_mask}
        return src_mask, list(self.encoder.run(self.names.encoder_outputs, feeds))

    def _run(
        self,
        fetch: list[str],
        tokens: np.ndarray,
        positions: np.ndarray,
        src_mask: Value,
        past: Sequence[Value],
        cross: Sequence[Value],
        k: int,
    ) -> list[Value]:
        feeds = {
            "tokens": tokens,
            "positions": positions,
            "src_mask": src_mask,
            "k": np.array([k], dtype=np.int64),
        }
        feeds.update(zip(self.names.past, past, strict=True))
        feeds.update(zip(self.names.cross, cross, strict=True))
        return list(self.decoder.run([*fetch, *self.names.present], feeds))

    def empty_past(self, rows: int, like: Value) -> list[Value]:
        _, h, _, dh = like.shape
        empty = np.zeros((rows, h, 0, dh), dtype=like.dtype)
        return [empty] * len(self.names.past)

    def gather(self, values: Sequence[Value], index: np.ndarray) -> list[Value]:
        return self.rows.arrays(values, index)

    def to_host(self, values: Sequence[Value]) -> list[np.ndarray]:
        return list(values)

    def from_host(self, arrays: Sequence[np.ndarray]) -> list[Value]:
        return list(arrays)


class DeviceIO(DecoderRuns):
    """IO binding: the cache lives in ORT values on the device between steps."""

    idle_k = 1  # k = 0 was never run on the CUDA TopK; decode (export.verify) is not hot

    def __init__(
        self,
        encoder: ort.InferenceSession,
        decoder: ort.InferenceSession,
        names: GraphNames,
        *,
        device: str,
        threads: int | None,
    ) -> None:
        self.encoder = encoder
        self.decoder = decoder
        self.names = names
        self.device = device
        self.rows = RowGather(device, threads)
        past = next(i for i in decoder.get_inputs() if i.name == names.past[0])
        self.cache_dtype = np.float16 if past.type == "tensor(float16)" else np.float32

    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> tuple[Value, list[Value]]:
        binding = self.encoder.io_binding()
        binding.bind_cpu_input("src_ids", src_ids)
        binding.bind_cpu_input("src_mask", src_mask)
        for name in self.names.encoder_outputs:
            binding.bind_output(name, self.device, 0)
        self.encoder.run_with_iobinding(binding)
        mask = ort.OrtValue.ortvalue_from_numpy(src_mask, self.device, 0)
        return mask, list(binding.get_outputs())

    def _run(
        self,
        fetch: list[str],
        tokens: np.ndarray,
        positions: np.ndarray,
        src_mask: Value,
        past: Sequence[Value],
        cross: Sequence[Value],
        k: int,
    ) -> list[Value]:
        binding = self.decoder.io_binding()
        binding.bind_cpu_input("tokens", tokens)
        binding.bind_cpu_input("positions", positions)
        binding.bind_cpu_input("k", np.array([k], dtype=np.int64))
        binding.bind_ortvalue_input("src_mask", src_mask)
        for name, value in zip(self.names.past, past, strict=True):
            binding.bind_ortvalue_input(name, value)
        for name, value in zip(self.names.cross, cross, strict=True):
            binding.bind_ortvalue_input(name, value)
        # Only what the search asks for crosses to the host (an unbound output is not
        # fetched); the grown cache stays where it is.
        for name in fetch:
            binding.bind_output(name, "cpu")
        for name in self.names.present:
            binding.bind_output(name, self.device, 0)
        self.decoder.run_with_iobinding(binding)
        return list(binding.get_outputs())

    def empty_past(self, rows: int, like: Value) -> list[Value]:
        _, h, _, dh = like.shape()
        empty = ort.OrtValue.ortvalue_from_shape_and_type(
            [rows, h, 0, dh], self.cache_dtype, self.device, 0
        )
        return [empty] * len(self.names.past)

    def gather(self, values: Sequence[Value], index: np.ndarray) -> list[Value]:
        return self.rows.bound(values, index)

    # Joining states and trimming padding go through the host on a device: a round trip
    # per admission (not per step), unmeasured on a GPU so far; a Concat/Slice graph run on
    # the device, as `gather` does, is the way to avoid it.
    def to_host(self, values: Sequence[Value]) -> list[np.ndarray]:
        return [v.numpy() for v in values]

    def from_host(self, arrays: Sequence[np.ndarray]) -> list[Value]:
        return [
            ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a), self.device, 0)
            for a in arrays
        ]


_ELEMENT_TYPES = {
    "tensor(float)": TensorProto.FLOAT,
    "tensor(float16)": TensorProto.FLOAT16,
    "tensor(bool)": TensorProto.BOOL,
    "tensor(int64)": TensorProto.INT64,
}
