"""The KV-less baseline: PyTorch re-running the decoder over the whole prefix at every step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from model.search import pad_batch
from service.engine.torch_engine import TorchEngine


@dataclass
class PrefixState:
    """What a decoder without a cache keeps: the encoder output and every token so far."""

    memory: Tensor  # (N, S, D)
    src_mask: Tensor  # (N, S)
    prefix: Tensor  # (N, T) BOS and the tokens fed so far


class TorchNoCacheEngine(TorchEngine):
    """Each step decodes the full prefix with `past=None`: self- and cross-attention keys
    and values are recomputed for every position at every step, O(T^2) per sentence."""

    # The state is a prefix, not TorchEngine's cache: the overrides narrow to another type.
    @torch.inference_mode()
    def start(self, sources: Sequence[Sequence[int]]) -> PrefixState:  # type: ignore[override]
        src_ids, src_mask = pad_batch(sources, self.pad_id)
        src_ids, src_mask = src_ids.to(self.device), src_mask.to(self.device)
        memory = self.model.encode(src_ids, src_mask)
        return PrefixState(memory, src_mask, src_ids.new_zeros(len(sources), 0))

    @torch.inference_mode()
    def step(  # type: ignore[override]
        self, state: PrefixState, tokens: Tensor
    ) -> tuple[Tensor, PrefixState]:
        prefix = torch.cat([state.prefix, tokens.to(self.device)[:, None]], dim=1)  # (N, T)
        logits, _ = self.model.decode_step(prefix, state.memory, state.src_mask, None)
        log_probs = torch.log_softmax(logits[:, -1].float(), dim=-1).cpu()
        return log_probs, PrefixState(state.memory, state.src_mask, prefix)

    def select(  # type: ignore[override]
        self, state: PrefixState, index: Tensor, sources: Tensor | None
    ) -> PrefixState:
        """Rows of every prefix (all rows of a step are at one position: no concat here)."""
        index = index.to(self.device)
        return PrefixState(
            state.memory.index_select(0, index),
            state.src_mask.index_select(0, index),
            state.prefix.index_select(0, index),
        )
