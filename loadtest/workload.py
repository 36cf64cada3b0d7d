"""What the load client sends: single texts and batches drawn from a sentence list."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Route = Literal["v1", "libre"]
ROUTE_PATHS: dict[str, str] = {"v1": "/v1/translate", "libre": "/translate"}


@dataclass(frozen=True)
class WorkloadConfig:
    """The request mix: language pair, route, share and size of batch requests."""

    source_lang: str = "en"
    target_lang: str = "de"
    route: Route = "v1"
    batch_fraction: float = 0.2
    batch_size: int = 8
    beam_size: int | None = None
    max_length: int | None = None
    api_key: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.batch_fraction <= 1.0:
            raise ValueError(f"batch_fraction must be in [0, 1], not {self.batch_fraction}")
        if self.batch_size < 2 and self.batch_fraction > 0:
            raise ValueError("batch_size must be at least 2 when batch_fraction > 0")
        if self.route not in ROUTE_PATHS:
            raise ValueError(f"route must be one of {sorted(ROUTE_PATHS)}, not {self.route!r}")


@dataclass(frozen=True)
class PlannedRequest:
    """One request body and how many texts it carries."""

    path: str
    payload: dict[str, Any]
    n_texts: int
    batched: bool

    def accepts(self, body: Any) -> bool:
        """Whether a 200 response body has the shape this request asked for."""
        if not isinstance(body, dict):
            return False
        if self.path == ROUTE_PATHS["libre"]:
            out = body.get("translatedText")
            if self.batched:
                return isinstance(out, list) and len(out) == self.n_texts
            return isinstance(out, str)
        translations = body.get("translations")
        return isinstance(translations, list) and len(translations) == self.n_texts


class Workload:
    """Draws requests at random (seeded) from the sentences."""

    def __init__(self, sentences: Sequence[str], config: WorkloadConfig, seed: int = 0) -> None:
        if not sentences:
            raise ValueError("no sentences to send")
        self.sentences = list(sentences)
        self.config = config
        self._rng = random.Random(seed)

    def headers(self) -> dict[str, str]:
        """Auth header for /v1; LibreTranslate carries its key in the body instead."""
        if self.config.api_key and self.config.route == "v1":
            return {"Authorization": f"Bearer {self.config.api_key}"}
        return {}

    def next_request(self) -> PlannedRequest:
        cfg = self.config
        batched = self._rng.random() < cfg.batch_fraction
        n_texts = self._rng.randint(2, cfg.batch_size) if batched else 1
        texts = self._rng.choices(self.sentences, k=n_texts)
        text: str | list[str] = texts if batched else texts[0]
        payload: dict[str, Any]
        if cfg.route == "libre":
            payload = {
                "q": text,
                "source": cfg.source_lang,
                "target": cfg.target_lang,
                "format": "text",
            }
            if cfg.api_key:
                payload["api_key"] = cfg.api_key
        else:
            payload = {"text": text, "source_lang": cfg.source_lang, "target_lang": cfg.target_lang}
            if cfg.beam_size is not None:
                payload["beam_size"] = cfg.beam_size
            if cfg.max_length is not None:
                payload["max_length"] = cfg.max_length
        return PlannedRequest(ROUTE_PATHS[cfg.route], payload, n_texts, batched)
