"""The ONNX Runtime engine: encoder and decoder-with-past graphs, the served backend."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from export.artifacts import GraphSet, ensure_graphs
from export.contract import GraphNames
from export.select_graph import write_select_graphs
from model.checkpoint import model_hash, read_model_config
from model.search import pad_batch
from model.tokenizer import TOKENIZER_FILE, Tokenizer
from service.cpus import available_cpus
from service.engine.base import Engine
from service.engine.ort_io import DeviceIO, GraphIO, HostIO, Value
from service.engine.ort_session import CUDA_PROVIDER, cuda_available

log = logging.getLogger(__name__)


@dataclass
class OrtState:
    """Decoder state on ONNX Runtime: B rows (hypotheses) decoding N sources.

    Rows come in N contiguous groups of B / N, one group per source entry (the beams of a
    sentence), so the source side is stored once per sentence, not once per beam. Rows may
    sit at different positions: the past is left-padded to the longest row's, the source
    side right-padded to the longest source.
    """

    # source side: one entry per source, gathered only when the set of sources changes
    src_host: np.ndarray  # (N, S) bool: the source mask on the host, for trimming
    src_mask: Value  # (N, S) bool, as the decoder takes it
    cross: list[Value]  # cross_k_0..L-1 then cross_v_0..L-1, each (N, H, S, Dh)
    # target side: one entry per row, growing by one position per step
    rows: int  # B
    past: list[Value]  # past_self_k_0..L-1 then past_self_v_0..L-1, each (B, H, T, Dh)
    positions: np.ndarray  # (B,) int64: tokens each row has decoded

    @property
    def sources(self) -> int:
        return len(self.src_host)

    @property
    def group(self) -> int:
        """Rows per source entry."""
        return self.rows // self.sources

    def grown(self, present: list[Value]) -> OrtState:
        """The same rows after one step: the cache grown by one position."""
        return OrtState(
            self.src_host, self.src_mask, self.cross, self.rows, present, self.positions + 1
        )


def step_ids(tokens: Tensor) -> np.ndarray:
    """One token per row as the decoder graph takes it: (N, 1) contiguous int64."""
    return np.ascontiguousarray(tokens.numpy().reshape(-1, 1), dtype=np.int64)


class OnnxEngine(Engine):
    """Greedy and beam search (model.search) over the exported graphs."""

    backend = "onnx"
    search_threads = 1

    def __init__(
        self,
        graphs: GraphSet,
        *,
        tokenizer: Tokenizer,
        source_lang: str,
        target_lang: str,
        version: str,
        bos_id: int,
        eos_id: int,
        pad_id: int,
        max_positions: int,
        n_layers: int,
        device: str = "cpu",
        threads: int | None = None,
        streams: int = 1,
        io_binding: bool | None = None,
    ) -> None:
        super().__init__(
            tokenizer=tokenizer,
            source_lang=source_lang,
            target_lang=target_lang,
            version=version,
            bos_id=bos_id,
            eos_id=eos_id,
            pad_id=pad_id,
            max_positions=max_positions,
        )
        self.device = device
        self.precision = graphs.precision
        self.graphs = graphs
        # ORT sessions take concurrent runs: the streams share the sessions and their weights.
        self.streams = max(1, streams)
        names = GraphNames(n_layers)
        # IO binding keeps the cache on the GPU; on the CPU, plain numpy feeds are as fast
        # (measured) and simpler, so binding there is only for exercising the CUDA path.
        io = DeviceIO if (device == "cuda" if io_binding is None else io_binding) else HostIO
        self.io: GraphIO = io(graphs, names, device=device, threads=threads)
        if device == "cuda" and CUDA_PROVIDER not in self.io.decoder.get_providers():
            # IO binding would place the cache on a device ORT does not run on.
            raise RuntimeError(f"ONNX Runtime could not start CUDA for {graphs.decoder}")

    def warmup(self) -> None:
        """Also run the row-select graphs that dropping a finished sentence runs."""
        super().warmup()
        token = self.eos_id + 1
        state = self.start([[token] * 4, [token] * 2])
        _, state = self.step(state, torch.full((2,), self.bos_id))
        self.select(state, torch.tensor([1]), torch.tensor([1]))

    def start(self, sources: Sequence[Sequence[int]]) -> OrtState:
        src_ids, src_mask = pad_batch(sources, self.pad_id)
        host = src_mask.numpy()
        mask, cross = self.io.encode(src_ids.numpy(), host)
        n = len(sources)
        positions = np.zeros(n, dtype=np.int64)
        return OrtState(host, mask, cross, n, self.io.empty_past(n, cross[0]), positions)

    def step(self, state: OrtState, tokens: Tensor) -> tuple[Tensor, OrtState]:
        ids = step_ids(tokens)
        (log_probs,), present = self.io.decode(
            ids, state.positions, state.src_mask, state.past, state.cross
        )
        return torch.from_numpy(log_probs), state.grown(present)

    def step_top_k(
        self, state: OrtState, tokens: Tensor, k: int
    ) -> tuple[Tensor, Tensor, OrtState]:
        """The graph's own TopK: on CUDA only (B, k) values and tokens leave the GPU (on the
        CPU, numpy's argmax with the graph's TopK idle measured the same: docs/decisions.md).
        """
        ids = step_ids(tokens)
        (values, top), present = self.io.decode(
            ids, state.positions, state.src_mask, state.past, state.cross, k=k
        )
        return torch.from_numpy(values), torch.from_numpy(top), state.grown(present)

    def select(self, state: OrtState, rows: Tensor, sources: Tensor | None) -> OrtState:
        index = rows.numpy().astype(np.int64, copy=False)
        positions = state.positions[index]
        past = self.io.select_past(state.past, index)
        slots = state_slots(past)
        longest = int(positions.max()) if len(positions) else 0
        if longest < slots:  # the longest rows left: drop the padding no row needs
            past = self.io.from_host(
                [np.ascontiguousarray(p[:, :, slots - longest :]) for p in self.io.to_host(past)]
            )
        if sources is None:
            # Same sources in the same order (beams widened or reordered within their
            # sentence): the source side is kept as it is, no copy.
            return OrtState(
                state.src_host, state.src_mask, state.cross, len(index), past, positions
            )
        entries = sources.numpy().astype(np.int64, copy=False)
        src_host = state.src_host[entries]
        src_mask, cross = self.io.select_sources(state.src_mask, state.cross, entries)
        width = max(1, int(src_host.sum(axis=1).max())) if len(entries) else 1
        if width < src_host.shape[1]:  # the longest sources left
            src_host = np.ascontiguousarray(src_host[:, :width])
            host = self.io.to_host(cross)
            cross = self.io.from_host([np.ascontiguousarray(c[:, :, :width]) for c in host])
            src_mask = self.io.from_host([src_host])[0]
        return OrtState(src_host, src_mask, cross, len(index), past, positions)

    def concat(self, states: Sequence[OrtState]) -> OrtState:
        """Rows at different positions and sources of different lengths, padded and joined."""
        if len(states) == 1:
            return states[0]
        slots = max(state_slots(s.past) for s in states)
        width = max(s.src_host.shape[1] for s in states)
        src_host = np.concatenate(
            [np.pad(s.src_host, ((0, 0), (0, width - s.src_host.shape[1]))) for s in states]
        )
        pasts = [self.io.to_host(s.past) for s in states]
        crosses = [self.io.to_host(s.cross) for s in states]
        past = [_join([p[i] for p in pasts], size=slots, left=True) for i in range(len(pasts[0]))]
        cross = [
            _join([c[i] for c in crosses], size=width, left=False) for i in range(len(crosses[0]))
        ]
        mask, *cross = self.io.from_host([src_host, *cross])
        past = self.io.from_host(past)
        positions = np.concatenate([s.positions for s in states])
        rows = sum(s.rows for s in states)
        return OrtState(src_host, mask, cross, rows, past, positions)


def state_slots(past: Sequence[Value]) -> int:
    """Self-attention slots (T) of a past held as numpy arrays or ORT values."""
    first = past[0]
    return int(first.shape[2] if isinstance(first, np.ndarray) else first.shape()[2])


def _join(parts: Sequence[np.ndarray], *, size: int, left: bool) -> np.ndarray:
    """Concatenate (B, H, T, Dh) parts along B, each padded along T to `size`: on the left with
    zeros (a past: masked by position), or on the right with copies of its last slot (a
    source side: masked, and a fully masked source still averages the same values)."""
    shape = list(parts[0].shape)
    shape[0] = sum(p.shape[0] for p in parts)
    shape[2] = size
    out = np.empty(shape, dtype=parts[0].dtype)
    at = 0
    for p in parts:
        n, have = p.shape[0], p.shape[2]
        block = out[at : at + n]
        if left:
            block[:, :, : size - have] = 0
            block[:, :, size - have :] = p
        else:
            block[:, :, :have] = p
            if have < size:
                block[:, :, have:] = p[:, :, have - 1 : have]
        at += n
    return out


def cpu_streams(threads: int | None, streams: int | None) -> tuple[int, int]:
    """(streams, intra-op threads per stream) for a budget of `threads` CPU threads.

    One stream per thread unless told otherwise: two streams of one thread beat one stream
    of two, at batch 32 and at batch 1, where a sleeping worker is woken for every op
    (docs/decisions.md).
    """
    total = threads or available_cpus()
    count = max(1, min(streams or total, total))
    return count, max(1, total // count)


def load_onnx_engine(
    model_dir: Path | str,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    threads: int | None = None,
    streams: int | None = None,
    artifacts_root: Path | None = None,
    graphs_dir: Path | None = None,
) -> OnnxEngine:
    """An ONNX Runtime engine for a model directory, exporting its graphs if they are missing.

    threads: intra-op threads in all (None: ORT's default; on the CPU, one per core);
    streams: batches decoded at once (None: on the CPU one per thread, on CUDA one);
    artifacts_root: where exported graphs are cached (None: $NMT_ARTIFACTS_DIR, else
    artifacts/); graphs_dir: run the graphs in this directory as they are (an A/B of two
    exports), instead of the model's cached export; an export of a format before the
    row-select graphs gets them written beside its decoder.
    """
    model_dir = Path(model_dir)
    if device == "cuda" and not cuda_available():
        # The service still answers, slower; an operator sees why in the log.
        log.warning("CUDAExecutionProvider is not available: %s runs on the CPU", model_dir)
        device = "cpu"
    if device == "cpu" and precision == "fp16":
        log.warning("fp16 graphs are for CUDA: %s runs fp32 on the CPU", model_dir)
        precision = "fp32"
    if device == "cuda" and precision == "int8":
        raise ValueError("int8 graphs are for the CPU; use fp16 or fp32 on cuda")
    if device == "cpu":
        streams, threads = cpu_streams(threads, streams)
    config, meta = read_model_config(model_dir)
    if graphs_dir is None:
        graphs = ensure_graphs(model_dir, precision, artifacts_root)
    else:
        graphs = GraphSet(Path(graphs_dir), precision)
        if not (graphs.select_past.exists() and graphs.select_sources.exists()):
            write_select_graphs(graphs.directory)
    return OnnxEngine(
        graphs,
        tokenizer=Tokenizer(model_dir / TOKENIZER_FILE),
        source_lang=meta["source_lang"],
        target_lang=meta["target_lang"],
        version=model_hash(model_dir),
        bos_id=config.bos_id,
        eos_id=config.eos_id,
        pad_id=config.pad_id,
        max_positions=config.max_length,
        n_layers=config.n_decoder_layers,
        device=device,
        threads=threads,
        streams=streams or 1,
    )
