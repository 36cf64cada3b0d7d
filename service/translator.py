"""The translation service core: load models, check requests, split, batch, reassemble.

Routes call `Translator.translate`; it raises domain errors (service.errors) and knows
nothing of HTTP. It owns one ModelRunner and one Batcher per language pair, and routes a
pair without a model of its own through English (X-en, then en-Y) when both halves are served.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from service.batcher import Batcher, TooLong, Translated
from service.cpus import available_cpus
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
from service.scheduler import Admission
from service.sentences import Segments, split_sentences
from service.settings import Settings

log = logging.getLogger(__name__)

# A pair without a model of its own is translated source -> PIVOT_LANG -> target, as
# LibreTranslate does: every model here is trained to or from English.
PIVOT_LANG = "en"


@dataclass
class TranslateResult:
    """Translated texts, their alternatives, which models and backends produced them, and the
    route: the model pairs that ran, in order (one, or two through the pivot language)."""

    texts: list[str]
    alternatives: list[list[str]]
    model: str
    backend: str
    route: list[str] = field(default_factory=list)


@dataclass
class Health:
    """Readiness: loading | ok | degraded | failed | stopping, and each pair's state
    (loading | ready | failed) with its backend."""

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
        # Pair -> the model pairs that translate it, direct or through PIVOT_LANG; set once
        # loading ended, from the pairs that loaded.
        self.routes: dict[str, list[str]] = {}
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
        # Pairs load in parallel (NMT_LOAD_WORKERS, default one per CPU): building ORT
        # sessions and warming up run mostly outside the GIL. Graph exports (first start)
        # still take turns inside load_onnx: torch.onnx keeps global state.
        workers = max(1, min(len(self.model_dirs), self.settings.load_workers or available_cpus()))
        pool = ThreadPoolExecutor(workers, thread_name_prefix="load")
        try:
            await asyncio.gather(*(self._load_pair(pair, pool) for pair in self.model_dirs))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        self.routes = find_routes(self.runners)
        if self.state == "loading":
            self.state = "ready" if self.batchers else "failed"
        log.info(
            "models loaded: %s; failed: %s; pivots: %s",
            sorted(self.batchers),
            sorted(self.load_errors),
            sorted(pair for pair, route in self.routes.items() if len(route) > 1),
        )
        self.loaded.set()

    async def _load_pair(self, pair: str, pool: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        try:
            runner = await loop.run_in_executor(pool, self._load, pair)
        except Exception as exc:
            log.exception("%s: could not be loaded", pair)
            self.load_errors[pair] = f"{type(exc).__name__}: {exc}"
            return
        self.runners[pair] = runner
        batcher = Batcher(
            runner,
            max_batch_size=self.settings.max_batch_size,
            max_batch_tokens=self.settings.max_batch_tokens,
            max_wait_s=self.settings.max_wait_ms / 1000,
            max_queue_size=self.settings.max_queue_size,
            metrics=self.metrics,
            scheduler=self.settings.scheduler,
            max_kv_tokens=self.settings.max_kv_tokens,
            admission=Admission(self.settings.admit_share, self.settings.admit_steps),
            tokenize_on=self.settings.tokenize,
        )
        batcher.start()
        self.batchers[pair] = batcher
        log.info("%s: ready", pair)

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
        models: dict[str, dict[str, object]] = {
            pair: {"state": "loading", "backend": None, "degraded": False}
            for pair in self.model_dirs
        }
        for pair, runner in self.runners.items():
            models[pair] = {
                "state": "ready",
                "backend": runner.active.backend,
                "degraded": runner.degraded,
            }
            if runner.load_error:
                models[pair]["error"] = runner.load_error
        for pair, error in self.load_errors.items():
            models[pair] = {"state": "failed", "backend": None, "degraded": True, "error": error}
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

    def reachable(self) -> dict[str, list[str]]:
        """Every pair that can be translated -> its route (NotReady when nothing is served)."""
        self.serving()
        return self.routes

    def route(self, source_lang: str, target_lang: str) -> list[ModelRunner]:
        """The runners that translate a pair, in order: its own model, else the two halves of
        its pivot; UnsupportedLanguagePair when there is neither."""
        runners = self.serving()
        pair = f"{source_lang}-{target_lang}"
        if pair not in self.routes:
            pivots = [p for p, route in self.routes.items() if len(route) > 1]
            raise UnsupportedLanguagePair(
                f"no model for {pair} and no route through {PIVOT_LANG}; served pairs: "
                f"{', '.join(sorted(runners))}"
                + (f"; through {PIVOT_LANG}: {', '.join(pivots)}" if pivots else "")
            )
        return [runners[p] for p in self.routes[pair]]

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
        """Translate texts of any number of sentences; raises a ServiceError for bad input.

        A pair served through the pivot runs two passes, each through its pair's batcher and
        under one deadline: the first pass's best translations are the second's sources, and
        alternatives come from the second.
        """
        options = self._check(texts, beam_size, max_length, alternatives)
        route = self.route(source_lang, target_lang)
        segments = [split_sentences(t) for t in texts]
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                done, backends = await self._passes(route, segments, options)
        except TimeoutError:
            raise DeadlineExceeded(
                f"not translated within {self.settings.request_timeout_s:g} s"
            ) from None
        return self._reassemble(segments, done, route, backends, alternatives)

    async def _passes(
        self, route: list[ModelRunner], segments: list[Segments], options: DecodeOptions
    ) -> tuple[list[Translated], set[str]]:
        """Each pass of the route through its pair's batcher; the best output feeds the next.

        The batcher's engine thread tokenizes each pass's sentences; one longer than its
        model takes fails the request with too_long's error.
        """
        backends: set[str] = set()
        sentences = [s for seg in segments for s in seg.sentences]
        done: list[Translated] = []
        for i, runner in enumerate(route):
            if i:
                sentences = [d.translation.text for d in done]
            # A pivot pass decodes its best only, at the request's beam, to its own budget.
            last = i == len(route) - 1
            step = options if last else DecodeOptions(options.beam_size, None, 0)
            error = too_long(segments, route[i - 1] if i else None, runner)
            done = await self.batchers[runner.pair].submit(sentences, None, step, too_long=error)
            backends.update(d.backend for d in done)
        return done, backends

    def check_texts(self, texts: list[str]) -> None:
        """Refuse no texts, too many, a blank one or one over the character limit."""
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

    def _check(
        self, texts: list[str], beam_size: int | None, max_length: int | None, alternatives: int
    ) -> DecodeOptions:
        self.check_texts(texts)
        limits = self.settings
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
    def _reassemble(
        segments: list[Segments],
        done: list[Translated],
        route: list[ModelRunner],
        backends: set[str],
        alternatives: int,
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
        model = "+".join(f"{r.pair}@{r.active.version}" for r in route)
        return TranslateResult(
            texts, alts, model, "+".join(sorted(backends)), [r.pair for r in route]
        )


def too_long(segments: list[Segments], first: ModelRunner | None, runner: ModelRunner) -> TooLong:
    """The error of a pass's sentence longer than its model takes, naming its text: the
    positional table would cut it, so the request is refused rather than lose text. In a
    pivot's second pass, the first model's output (capped by its own positional table, in
    its own tokens) may still count more in the second's tokenizer."""
    text_of = [i for i, seg in enumerate(segments) for _ in seg.sentences]

    def error(sentence: int, tokens: int, limit: int) -> Exception:
        what = "of" if first is None else f"whose {first.pair} translation has"
        model = "the model" if first is None else runner.pair
        return InputTooLong(
            f"text {text_of[sentence]} has a sentence {what} {tokens} tokens; "
            f"{model} takes at most {limit} per sentence"
        )

    return error


def find_routes(runners: dict[str, ModelRunner]) -> dict[str, list[str]]:
    """Every pair that can be translated -> the model pairs that translate it, in order.

    A pair's own model always wins; a pair without one among the languages served goes
    through PIVOT_LANG when both of its halves (X-en and en-Y) are served.
    """
    routes = {pair: [pair] for pair in runners}
    languages = sorted(
        {lang for r in runners.values() for lang in (r.active.source_lang, r.active.target_lang)}
    )
    for source in languages:
        for target in languages:
            pair, first, second = (
                f"{source}-{target}",
                f"{source}-{PIVOT_LANG}",
                f"{PIVOT_LANG}-{target}",
            )
            if source != target and pair not in routes and first in runners and second in runners:
                routes[pair] = [first, second]
    return dict(sorted(routes.items()))
