"""The PyTorch engine: the model itself with its explicit KV cache (the fallback backend)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from model.checkpoint import LoadedModel
from model.search import TorchState, TorchStepDecoder, pad_batch
from service.engine.base import Engine


class TorchEngine(Engine):
    backend = "torch"

    def __init__(
        self, loaded: LoadedModel, *, device: str = "cpu", precision: str = "fp32"
    ) -> None:
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"the torch engine runs fp32 or fp16, not {precision}")
        if precision == "fp16" and device != "cuda":
            raise ValueError("fp16 needs device cuda")
        cfg = loaded.config
        super().__init__(
            tokenizer=loaded.tokenizer,
            source_lang=loaded.source_lang,
            target_lang=loaded.target_lang,
            version=loaded.version,
            bos_id=cfg.bos_id,
            eos_id=cfg.eos_id,
            pad_id=cfg.pad_id,
            max_positions=cfg.max_length,
        )
        self.device = device
        self.precision = precision
        model = loaded.model.to(device).eval()
        self.model = model.half() if precision == "fp16" else model
        self.decoder = TorchStepDecoder(self.model)

    def start(self, sources: Sequence[Sequence[int]]) -> TorchState:
        src_ids, src_mask = pad_batch(sources, self.pad_id)
        return self.decoder.start(src_ids.to(self.device), src_mask.to(self.device))

    def step(self, state: TorchState, tokens: Tensor) -> tuple[Tensor, TorchState]:
        log_probs, state = self.decoder.step(state, tokens.to(self.device))
        return log_probs.cpu(), state

    def select(self, state: TorchState, rows: Tensor, sources: Tensor | None) -> TorchState:
        return self.decoder.select(state, rows.to(self.device), None)

    def concat(self, states: Sequence[TorchState]) -> TorchState:
        return self.decoder.concat(states)
