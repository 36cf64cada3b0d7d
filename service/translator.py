"""The translation service core: load models, check requests, split, batch, reassemble.

Routes call `Translator.translate`; it raises domain errors (service.errors) and knows
nothing of HTTP. It owns one ModelRunner and one Batcher per language pair.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from service.batcher import Batcher, Translated
from service.errors import (
    BeamSizeOutOfRange,
    DeadlineExceeded,
    EmptyText,
    InputTooLong,
    NotReady,
    TooManyTexts,
    UnsupportedLanguagePair,
)
from service.metrics import Metrics
from service.registry import (
    DecodeOptions,
    LoadOptions,
    ModelRunner,
    discover_models,
    load_runner,
)
from service.sentences import Segments, split_sentences
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class TranslateResult:
    """Translated texts, their alternatives, and which model and backend produced them."""

    texts: list[str]
    alternatives: list[list[str]]
    model: str
    backend: str


@dataclass
class Health:
    """Readiness: loading | ok | degraded | failed | stopping, and each pair's state."""

    status: str
    models: dict[str, dict[str, object]] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.status in ("ok", "degraded")


class Translator:
    """Everything behind the routes: engines per pair, their batchers, and request checks."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.device = settings.resolved_device()
        self.precision = settings.resolved_precision(self.device)
        self.runners: dict[str, ModelRunner] = {}
        self.batchers: dict[str, Batcher] = {}
        self.load_errors: dict[str, str] = {}
        self.model_dirs: dict[str, Path] = {}
        self.state = "loading"
        # Set once loading ended (either way); threads (tests, benchmarks) can wait on it.
        self.loaded = threading.Event()
        self._loading: asyncio.Task[None] | None = None

    # ----- lifecycle -----
    async def start(self) -> None:
        """Find the models now (a bad models dir stops start-up); load them in the background."""
        self.model_dirs = discover_models(self.settings.models_dir)
        if self.settings.threads:
            import torch

            torch.set_num_threads(self.settings.threads)
        self._loading = asyncio.create_task(self._load_all(), name="load-models")

    async def _load_all(self) -> None:
        # One pair at a time: an ONNX export (first start) uses torch.onnx's global state.
        for pair in self.model_dirs:
            try:
                runner = await asyncio.to_thread(self._load, pair)
            except Exception as exc:
                log.exception("%s: could not be loaded", pair)
                self.load_errors[pair] = f"{type(exc).__name__}: {exc}"
                continue
            self.runners[pair] = runner
            batcher = Batcher(
                runner,
                max_batch_size=self.settings.max_batch_size,
                max_batch_tokens=self.settings.max_batch_tokens,
                max_wait_s=self.settings.max_wait_ms / 1000,
                max_queue_size=self.settings.max_queue_size,
                metrics=self.metrics,
            )
            batcher.start()
            self.batchers[pair] = batcher
        if self.state == "loading":
            self.state = "ready" if self.batchers else "failed"
        log.info("models loaded: %s; failed: %s", sorted(self.batchers), sorted(self.load_errors))
        self.loaded.set()

    def _load(self, pair: str) -> ModelRunner:
        log.info(
            "%s: loading %s on %s/%s/%s",
            pair,
            self.model_dirs[pair],
            self.settings.backend,
            self.device,
            self.precision,
        )
        options = LoadOptions(
            self.settings.backend,
            self.device,
            self.precision,
            self.settings.threads or None,
            self.settings.artifacts_dir,
            self.settings.streams or None,
        )
        return load_runner(pair, self.model_dirs[pair], options, self.metrics)

    async def stop(self) -> None:
        """Refuse new work, finish everything accepted, then stop the engine threads."""
        self.state = "stopping"
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        await asyncio.gather(*(b.close() for b in self.batchers.values()))
        self.loaded.set()

    def health(self) -> Health:
        models: dict[str, dict[str, object]] = {}
        for pair, runner in self.runners.items():
            models[pair] = {"backend": runner.active.backend, "degraded": runner.degraded}
            if runner.load_error:
                models[pair]["error"] = runner.load_error
        for pair, error in self.load_errors.items():
            models[pair] = {"backend": None, "degraded": True, "error": error}
        if self.state == "ready":
            degraded = self.load_errors or any(r.degraded for r in self.runners.values())
            return Health("degraded" if degraded else "ok", models)
        return Health(self.state, models)

    # ----- requests -----
    def serving(self) -> dict[str, ModelRunner]:
        """The pairs being served; NotReady while loading, after a failed load, or stopping."""
        if self.state == "loading":
            raise NotReady("models are still loading")
        if self.state == "stopping":
            raise NotReady("the service is shutting down")
        if self.state == "failed":
            raise NotReady("no model could be loaded; see /health/ready", retry_after_s=60)
        return self.runners

    def runner(self, source_lang: str, target_lang: str) -> ModelRunner:
        """The runner of a pair that is being served, or why not."""
        pair = f"{source_lang}-{target_lang}"
        runners = self.serving()
        if pair not in runners:
            raise UnsupportedLanguagePair(
                f"no model for {pair}; served pairs: {', '.join(sorted(runners))}"
            )
        return runners[pair]

    async def translate(
        self,
        texts: list[str],
        source_lang: str,
        target_lang: str,
        *,
        beam_size: int | None = None,
        max_length: int | None = None,
        alternatives: int = 0,
    ) -> TranslateResult:
        """Translate texts of any number of sentences; raises a ServiceError for bad input."""
        options = self._check(texts, beam_size, max_length, alternatives)
        runner = self.runner(source_lang, target_lang)
        segments = [split_sentences(t) for t in texts]
        sentences = [s for seg in segments for s in seg.sentences]
        n_tokens = runner.count_tokens(sentences)
        self._check_lengths(segments, n_tokens, runner.max_source_tokens)
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                done = await self.batchers[runner.pair].submit(sentences, n_tokens, options)
        except TimeoutError:
            raise DeadlineExceeded(
                f"not translated within {self.settings.request_timeout_s:g} s"
            ) from None
        return self._reassemble(segments, done, runner, alternatives)

    def _check(
        self, texts: list[str], beam_size: int | None, max_length: int | None, alternatives: int
    ) -> DecodeOptions:
        limits = self.settings
        if not texts:
            raise EmptyText("no text to translate")
        if len(texts) > limits.max_texts:
            raise TooManyTexts(f"{len(texts)} texts; at most {limits.max_texts} per request")
        for i, text in enumerate(texts):
            if not text.strip():
                raise EmptyText(f"text {i} is empty or blank")
            if len(text) > limits.max_chars:
                raise InputTooLong(
                    f"text {i} has {len(text)} characters; at most {limits.max_chars}"
                )
        beam = limits.default_beam_size if beam_size is None else beam_size
        if not 1 <= beam <= limits.max_beam_size:
            raise BeamSizeOutOfRange(f"beam_size must be 1..{limits.max_beam_size}, not {beam}")
        if not 0 <= alternatives < limits.max_beam_size:
            raise BeamSizeOutOfRange(
                f"alternatives must be 0..{limits.max_beam_size - 1}, not {alternatives}"
            )
        # n alternatives need n + 1 beams.
        return DecodeOptions(max(beam, alternatives + 1), max_length, alternatives)

    @staticmethod
    def _check_lengths(segments: list[Segments], n_tokens: list[int], limit: int) -> None:
        # Longer sentences would be cut by the positional table: refuse rather than lose text.
        counts = iter(n_tokens)
        for i, seg in enumerate(segments):
            for _ in seg.sentences:
                n = next(counts)
                if n > limit:
                    raise InputTooLong(
                        f"text {i} has a sentence of {n} tokens; the model "
                        f"takes at most {limit} per sentence"
                    )

    @staticmethod
    def _reassemble(
        segments: list[Segments], done: list[Translated], runner: ModelRunner, alternatives: int
    ) -> TranslateResult:
        texts: list[str] = []
        alts: list[list[str]] = []
        at = 0
        for seg in segments:
            part = done[at : at + len(seg.sentences)]
            at += len(seg.sentences)
            texts.append(seg.join([d.translation.text for d in part]))
            # The k-th alternative of a text: each sentence's k-th alternative (or its best).
            alts.append(
                [
                    seg.join(
                        [
                            d.translation.alternatives[k].text
                            if k < len(d.translation.alternatives)
                            else d.translation.text
                            for d in part
                        ]
                    )
                    for k in range(alternatives)
                ]
            )
        backends = sorted({d.backend for d in done})
        engine = runner.active
        return TranslateResult(texts, alts, f"{runner.pair}@{engine.version}", "+".join(backends))
