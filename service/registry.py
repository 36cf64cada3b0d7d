"""Models directory -> one runner per language pair: its engines and the fallback policy.

Everything here is synchronous and runs on the pair's engine threads; the batcher and its
scheduler decide when, this module on which engine (the active one) and what a failure
of the primary engine switches to.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from model.checkpoint import CONFIG_FILE, read_model_config
from model.tokenizer import Tokenizer
from service.engine.base import Engine, Translation
from service.engine.loader import load_engine
from service.errors import InferenceFailed
from service.metrics import Metrics

log = logging.getLogger(__name__)

# After an ORT batch failure, batches go straight to torch for this long, then ORT is retried.
PRIMARY_RETRY_S = 60.0


@dataclass(frozen=True)
class DecodeOptions:
    """Decoding knobs; sentences with different options never share an engine call."""

    beam_size: int
    max_length: int | None
    num_alternatives: int


@dataclass
class BatchResult:
    """One engine call's outcome per sentence, and the backend that produced them."""

    backend: str
    outcomes: Sequence[Translation | InferenceFailed]


@dataclass
class ModelRunner:
    """One language pair: a primary engine, an optional PyTorch fallback, and their health."""

    pair: str
    primary: Engine | None
    fallback: Engine | None
    metrics: Metrics
    load_error: str | None = None
    _primary_failed_at: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.primary is None and self.fallback is None:
            raise ValueError(f"{self.pair}: no engine")

    # ----- what the service reports -----
    @property
    def active(self) -> Engine:
        """The engine the next batch goes to."""
        if self.primary is not None and not self._cooling_down():
            return self.primary
        assert self.fallback is not None
        return self.fallback

    @property
    def degraded(self) -> bool:
        """True while serving on the fallback (ORT failed to load, or failed recently)."""
        return self.fallback is not None and self.active is self.fallback

    @property
    def tokenizer(self) -> Tokenizer:
        return self.active.tokenizer

    @property
    def max_source_tokens(self) -> int:
        return self.active.max_positions - 1

    def primary_failed(self, sentences: int) -> None:
        """ORT failed under a batch of sentences: they and the next batches go to the
        fallback for PRIMARY_RETRY_S (readiness says degraded meanwhile)."""
        self._primary_failed_at = time.monotonic()
        self.metrics.fallbacks.labels(self.pair, "batch_failed").inc()
        self.metrics.fallback_sentences.labels(self.pair).inc(sentences)

    def _cooling_down(self) -> bool:
        failed = self._primary_failed_at
        return failed is not None and time.monotonic() - failed < PRIMARY_RETRY_S

    # ----- running a batch -----
    def run(
        self,
        texts: list[str],
        options: DecodeOptions,
        sources: Sequence[Sequence[int]] | None = None,
    ) -> BatchResult:
        """Translate one batch; never raises: a failed sentence becomes its own error.
        sources: the texts' ids, where the scheduler has tokenized them (every engine of a
        pair shares its tokenizer, so they hold on the fallback too)."""
        engine = self.active
        try:
            return BatchResult(engine.backend, self._call(engine, texts, options, sources))
        except Exception as exc:
            if engine is self.primary and self.fallback is not None:
                log.warning(
                    "%s: batch of %d failed on %s (%r); retrying it on %s",
                    self.pair,
                    len(texts),
                    engine.backend,
                    exc,
                    self.fallback.backend,
                )
                self.primary_failed(len(texts))
                engine = self.fallback
                try:
                    return BatchResult(engine.backend, self._call(engine, texts, options, sources))
                except Exception as exc2:
                    exc = exc2
            log.warning(
                "%s: batch of %d failed on %s (%r); isolating its sentences",
                self.pair,
                len(texts),
                engine.backend,
                exc,
            )
            alone = [
                self._alone(engine, t, options, None if sources is None else sources[i])
                for i, t in enumerate(texts)
            ]
            return BatchResult(engine.backend, alone)

    def _alone(
        self,
        engine: Engine,
        text: str,
        options: DecodeOptions,
        source: Sequence[int] | None,
    ) -> Translation | InferenceFailed:
        try:
            return self._call(engine, [text], options, None if source is None else [source])[0]
        except Exception as exc:
            log.error("%s: %s failed on one sentence: %r", self.pair, engine.backend, exc)
            return InferenceFailed("the model failed to translate this text")

    def _call(
        self,
        engine: Engine,
        texts: list[str],
        options: DecodeOptions,
        sources: Sequence[Sequence[int]] | None,
    ) -> list[Translation]:
        start = time.perf_counter()
        out = engine.translate(
            texts,
            beam_size=options.beam_size,
            max_length=options.max_length,
            num_alternatives=options.num_alternatives,
            sources=sources,
        )
        if len(out) != len(texts):
            raise RuntimeError(f"{engine.backend} returned {len(out)} results for {len(texts)}")
        self.metrics.inference_time.labels(self.pair, engine.backend).observe(
            time.perf_counter() - start
        )
        self.metrics.batch_size.labels(self.pair, engine.backend).observe(len(texts))
        self.metrics.output_tokens.labels(self.pair).inc(sum(len(t.tokens) for t in out))
        return out


# ----- loading -----
def discover_models(models_dir: Path) -> dict[str, Path]:
    """Language pair -> model directory, for every directory holding a config.json."""
    if not models_dir.is_dir():
        raise FileNotFoundError(f"models directory {models_dir} does not exist")
    found: dict[str, Path] = {}
    for config in sorted(models_dir.glob(f"*/{CONFIG_FILE}")):
        _, meta = read_model_config(config.parent)
        pair = f"{meta['source_lang']}-{meta['target_lang']}"
        if pair in found:
            raise ValueError(f"{pair} is served by both {found[pair]} and {config.parent}")
        found[pair] = config.parent
    if not found:
        raise FileNotFoundError(f"no model directory (*/{CONFIG_FILE}) in {models_dir}")
    return found


@dataclass(frozen=True)
class LoadOptions:
    """How to load every pair: backend (auto|onnx|torch), device, precision, threads, and
    the ONNX engine's streams."""

    backend: str
    device: str
    precision: str
    threads: int | None = None
    artifacts_dir: Path | None = None
    streams: int | None = None


def load_runner(pair: str, model_dir: Path, options: LoadOptions, metrics: Metrics) -> ModelRunner:
    """Load and warm up a pair's engines; with backend auto a failed ORT load is survived."""
    if options.backend == "torch":
        runner = ModelRunner(pair, load_torch(model_dir, options), None, metrics)
    elif options.backend == "onnx":
        runner = ModelRunner(pair, load_onnx(model_dir, options), None, metrics)
    else:
        fallback = load_torch(model_dir, options)
        try:
            onnx = load_onnx(model_dir, options)
        except Exception as exc:
            log.exception("%s: ONNX Runtime engine failed to load; serving on torch", pair)
            metrics.fallbacks.labels(pair, "load_failed").inc()
            error = f"{type(exc).__name__}: {exc}"
            runner = ModelRunner(pair, None, fallback, metrics, load_error=error)
        else:
            runner = ModelRunner(pair, onnx, fallback, metrics)
    for engine in (runner.primary, runner.fallback):
        if engine is not None:
            log_threads(pair, engine, options)
    return runner


def log_threads(pair: str, engine: Engine, options: LoadOptions) -> None:
    """One line per loaded engine: what NMT_THREADS and NMT_STREAMS came to on it."""
    import torch

    # torch's intra-op threads while the engine searches: its own (1 beside ONNX Runtime),
    # else the process's (NMT_THREADS, set by Translator.start, or torch's default).
    torch_threads = engine.search_threads or options.threads or torch.get_num_threads()
    io = getattr(engine, "io", None)  # an ONNX Runtime engine's sessions (ort_io.GraphIO)
    if io is None:
        ort_threads = "no ORT"
    else:
        intra = io.decoder.get_session_options().intra_op_num_threads
        ort_threads = f"{intra or 'default'} ORT intra-op thread(s) per stream"
    log.info(
        "%s: %s engine on %s/%s: %d stream(s), %s, %d torch thread(s)",
        pair,
        engine.backend,
        engine.device,
        engine.precision,
        engine.streams,
        ort_threads,
        torch_threads,
    )


def torch_cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def load_onnx(model_dir: Path, options: LoadOptions) -> Engine:
    """A warmed-up ONNX Runtime engine (graphs exported into the cache when missing; exports
    of pairs loading at once take turns, see export.artifacts)."""
    engine = load_engine(
        model_dir,
        backend="onnx",
        device=options.device,
        precision=options.precision,
        threads=options.threads,
        streams=options.streams,
        artifacts_root=options.artifacts_dir,
    )
    engine.warmup()
    return engine


def load_torch(model_dir: Path, options: LoadOptions) -> Engine:
    """A warmed-up PyTorch engine: fp32, or fp16 on cuda (int8 is an ONNX-only variant).

    The fallback behind ONNX Runtime on cuda runs on the CPU when this torch has no CUDA (the
    GPU image ships the CPU wheel: ONNX Runtime does the GPU work), rather than failing the
    start of a service whose served path works.
    """
    device = options.device
    if device == "cuda" and options.backend != "torch" and not torch_cuda_available():
        log.warning("%s: torch has no CUDA here; the fallback engine runs on the CPU", model_dir)
        device = "cpu"
    precision = "fp16" if device == "cuda" and options.precision == "fp16" else "fp32"
    if options.backend == "torch" and options.precision != precision:
        raise ValueError(f"the torch backend cannot run {options.precision} on {device}")
    engine = load_engine(model_dir, backend="torch", device=device, precision=precision)
    engine.warmup()
    return engine
