"""The batcher: asyncio admission of sentences for one language pair.

Admission is the same whichever scheduler runs the engine: one bounded queue per pair (a
request that would overflow it gets 429 with Retry-After, all of it or none), cancellation
(a deadline or a client that left drops its sentences: from the queue at once, from a
running batch at its next step), and draining at shutdown. Nothing is tokenized here: the
pair's engine thread tokenizes every waiting request's sentences in one call and fails a
request holding a sentence too long for the model (NMT_TOKENIZE=loop counts each request
here instead, on the event loop, for A/B runs). Then the pair's scheduler
(service/scheduler.py) decides when each sentence runs:

- continuous (NMT_SCHEDULER=continuous): engine threads admit sentences into running batches between
  decoding steps and resolve each sentence's future the moment it finishes;
- static (the default, measured faster on 2 CPU cores: docs/benchmarks.md): a batch
  closes (full, over its token budget, or max_wait after its first sentence) and runs
  to its longest sentence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from functools import partial

from service.engine.base import Translation
from service.errors import InputTooLong, NotReady, QueueFull
from service.metrics import Metrics
from service.registry import DecodeOptions, ModelRunner
from service.scheduler import (
    UNCOUNTED,
    Admission,
    ContinuousScheduler,
    StaticScheduler,
    Translated,
    Work,
    tokenize,
)

__all__ = ["Batcher", "TooLong", "Translated"]

log = logging.getLogger(__name__)

# (a sentence's index in its request, its tokens, the model's limit) -> the request's error
TooLong = Callable[[int, int, int], Exception]


def sentence_too_long(index: int, tokens: int, limit: int) -> Exception:
    """The default error of a request with a sentence too long: it names the sentence."""
    return InputTooLong(
        f"sentence {index} has {tokens} tokens; the model takes at most {limit} per sentence"
    )


def configured_scheduler() -> tuple[str, int, Admission]:
    """NMT_SCHEDULER, NMT_MAX_KV_TOKENS and NMT_ADMIT_SHARE/NMT_ADMIT_STEPS from the
    environment, for a Batcher built without them."""
    from service.settings import Settings

    settings = Settings()
    admission = Admission(settings.admit_share, settings.admit_steps)
    return settings.scheduler, settings.max_kv_tokens, admission


class Batcher:
    """Admits sentences from concurrent requests for one pair and hands them to its scheduler."""

    def __init__(
        self,
        runner: ModelRunner,
        *,
        max_batch_size: int,
        max_batch_tokens: int,
        max_wait_s: float,
        max_queue_size: int,
        metrics: Metrics,
        scheduler: str | None = None,
        max_kv_tokens: int | None = None,
        admission: Admission | None = None,
        tokenize_on: str = "engine",
    ) -> None:
        """tokenize_on: engine (each pair's engine thread tokenizes the waiting requests in
        one call) or loop (each request on the event loop in submit, as before: for A/B)."""
        if tokenize_on not in ("engine", "loop"):
            raise ValueError(f"tokenize_on must be engine or loop, not {tokenize_on!r}")
        self.runner = runner
        self.max_queue_size = max_queue_size
        self.metrics = metrics
        self.tokenize_on = tokenize_on
        if scheduler is None or max_kv_tokens is None or admission is None:
            configured, kv, configured_admission = configured_scheduler()
            scheduler = scheduler or configured
            max_kv_tokens = max_kv_tokens or kv
            admission = admission or configured_admission
        self.scheduler = scheduler
        self._closing = False
        self._scheduler: ContinuousScheduler | StaticScheduler
        if scheduler == "continuous":
            self._scheduler = ContinuousScheduler(
                runner,
                max_sentences=max_batch_size,
                max_kv_tokens=max_kv_tokens,
                max_batch_tokens=max_batch_tokens,
                metrics=metrics,
                admission=admission,
            )
        elif scheduler == "static":
            self._scheduler = StaticScheduler(
                runner,
                max_batch_size=max_batch_size,
                max_batch_tokens=max_batch_tokens,
                max_wait_s=max_wait_s,
                metrics=metrics,
            )
        else:
            raise ValueError(f"scheduler must be continuous or static, not {scheduler!r}")

    @property
    def depth(self) -> int:
        """Sentences waiting (an open batch's included), not those running."""
        return self._scheduler.depth

    def start(self) -> None:
        self._scheduler.start()

    async def close(self) -> None:
        """Stop taking work, finish everything already accepted, then stop."""
        self._closing = True
        await self._scheduler.close()

    async def submit(
        self,
        texts: list[str],
        n_tokens: Sequence[int] | None,
        options: DecodeOptions,
        *,
        too_long: TooLong = sentence_too_long,
    ) -> list[Translated]:
        """Queue sentences and wait for all of them; cancelling this drops what is unfinished.

        n_tokens: their source tokens when the caller counted them (and checked them against
        the model's limit), else None. A request with a sentence over the limit fails with
        too_long's error for the first such sentence.
        """
        if self._closing:
            raise NotReady("the service is shutting down")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Translated]] = [loop.create_future() for _ in texts]
        counts = [UNCOUNTED] * len(texts) if n_tokens is None else n_tokens
        works = [
            Work(t, n, options, partial(_resolve_from_thread, loop, f), partial(too_long, i))
            for i, (t, n, f) in enumerate(zip(texts, counts, futures, strict=True))
        ]
        if n_tokens is None and self.tokenize_on == "loop":
            # the path before: this request alone, on the event loop (its length checked
            # before the queue's room); the engine tokenizes its sentences again
            _, refused = tokenize(self.runner, [works], keep_ids=False)
            if refused:
                raise refused[0][1]
        # All of a request or none of it; one larger than the queue still gets an empty queue.
        depth = self.depth
        if depth and depth + len(texts) > self.max_queue_size:
            raise QueueFull(
                f"{self.runner.pair} queue is full ({depth} sentences waiting); retry later",
                retry_after_s=1,
            )
        for work, future in zip(works, futures, strict=True):
            future.add_done_callback(partial(self._cancel, work))
        self._scheduler.submit(works)
        try:
            results = await asyncio.gather(*futures, return_exceptions=True)
        finally:
            for future in futures:
                future.cancel()  # no-op for the finished; drops the unfinished
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, Translated)]

    def _cancel(self, work: Work, future: asyncio.Future[Translated]) -> None:
        """A cancelled sentence leaves the queue at once (counted here), or its running batch
        at the next step (counted by the scheduler)."""
        if future.cancelled() and self._scheduler.cancel(work):
            self.metrics.dropped.labels(self.runner.pair).inc()


def _resolve_from_thread(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Translated],
    outcome: Translation | Exception,
    backend: str,
) -> None:
    """A result from an engine thread (or the loop), handed to the event loop: asyncio
    futures are not thread-safe. A future already cancelled (its request gone) is left
    alone."""
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
        loop.call_soon_threadsafe(_settle, future, outcome, backend)


def _settle(
    future: asyncio.Future[Translated], outcome: Translation | Exception, backend: str
) -> None:
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(Translated(outcome, backend))
