"""The batcher: asyncio admission of sentences for one language pair, and its scheduler.

Admission is the same for both schedulers: one bounded queue per pair (a request that
would overflow it gets 429 with Retry-After, all of it or none), cancellation (a deadline
or a client that left drops its sentences), and draining at shutdown.

- continuous (service/scheduler.py, the default): the queue belongs to a scheduler whose
  engine threads admit sentences into running batches between decoding steps, and
  resolve each sentence's future the moment it finishes;
- static: a batch closes when it reaches max_batch_size sentences, when the next sentence
  would take it over max_batch_tokens, or max_wait after its first sentence arrived; then
  it runs to its longest sentence on the pair's own engine thread. Sentences with
  different decoding options share the queue but never an engine call. Kept for A/B runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from service.engine.base import Translation
from service.errors import InferenceFailed, NotReady, QueueFull
from service.metrics import Metrics
from service.registry import BatchResult, DecodeOptions, ModelRunner
from service.scheduler import ContinuousScheduler, Work

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Translated:
    """One sentence's translation and the backend that produced it."""

    translation: Translation
    backend: str


@dataclass(eq=False)
class _Item:
    text: str
    n_tokens: int
    options: DecodeOptions
    future: asyncio.Future[Translated]
    enqueued: float  # loop.time()


def configured_scheduler() -> tuple[str, int]:
    """NMT_SCHEDULER and NMT_MAX_KV_TOKENS from the environment, for a Batcher built
    without them."""
    from service.settings import Settings

    settings = Settings()
    return settings.scheduler, settings.max_kv_tokens


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
    ) -> None:
        self.runner = runner
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_s
        self.max_queue_size = max_queue_size
        self.metrics = metrics
        if scheduler is None or max_kv_tokens is None:
            configured, kv = configured_scheduler()
            scheduler = scheduler or configured
            max_kv_tokens = max_kv_tokens or kv
        if scheduler not in ("continuous", "static"):
            raise ValueError(f"scheduler must be continuous or static, not {scheduler!r}")
        self.scheduler = scheduler
        self.max_kv_tokens = max_kv_tokens
        self._queue: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._continuous: ContinuousScheduler | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._depth = metrics.queue_depth.labels(runner.pair)

    @property
    def depth(self) -> int:
        """Sentences waiting (an open batch's included)."""
        if self._continuous is not None:
            return self._continuous.depth
        return len(self._queue)

    def start(self) -> None:
        if self.scheduler == "continuous":
            self._continuous = ContinuousScheduler(
                self.runner,
                max_sentences=self.max_batch_size,
                max_kv_tokens=self.max_kv_tokens,
                max_batch_tokens=self.max_batch_tokens,
                max_wait_s=self.max_wait_s,
                metrics=self.metrics,
            )
            return
        # One thread per engine: calls never overlap on an engine, and never run on the loop.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"engine-{self.runner.pair}")
        self._task = asyncio.create_task(self._run(), name=f"batcher-{self.runner.pair}")

    async def close(self) -> None:
        """Stop taking work, run everything already queued without waiting, then stop."""
        self._closing = True
        if self._continuous is not None:
            await asyncio.to_thread(self._continuous.close)
            return
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(
        self, texts: list[str], n_tokens: list[int], options: DecodeOptions
    ) -> list[Translated]:
        """Queue sentences and wait for all of them; cancelling this drops what is still queued."""
        if self._closing:
            raise NotReady("the service is shutting down")
        # All of a request or none of it; one larger than the queue still gets an empty queue.
        depth = self.depth
        if depth and depth + len(texts) > self.max_queue_size:
            raise QueueFull(
                f"{self.runner.pair} queue is full ({depth} sentences waiting); retry later",
                retry_after_s=1,
            )
        if self._continuous is not None:
            return await self._submit_continuous(self._continuous, texts, n_tokens, options)
        loop = asyncio.get_running_loop()
        now = loop.time()
        items = [
            _Item(t, n, options, loop.create_future(), now)
            for t, n in zip(texts, n_tokens, strict=True)
        ]
        for item in items:
            item.future.add_done_callback(partial(self._forget, item))
        self._queue.extend(items)
        self._depth.set(len(self._queue))
        self._wake.set()
        return await self._gather([i.future for i in items])

    @staticmethod
    async def _gather(futures: list[asyncio.Future[Translated]]) -> list[Translated]:
        try:
            results = await asyncio.gather(*futures, return_exceptions=True)
        finally:
            for future in futures:
                future.cancel()  # no-op for the finished; drops the still-queued
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, Translated)]

    async def _submit_continuous(
        self,
        scheduler: ContinuousScheduler,
        texts: list[str],
        n_tokens: list[int],
        options: DecodeOptions,
    ) -> list[Translated]:
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Translated]] = [loop.create_future() for _ in texts]
        works = [
            Work(t, n, options, partial(_resolve_from_thread, loop, f))
            for t, n, f in zip(texts, n_tokens, futures, strict=True)
        ]
        for work, future in zip(works, futures, strict=True):
            future.add_done_callback(partial(self._cancel_work, scheduler, work))
        scheduler.submit(works)
        return await self._gather(futures)

    def _cancel_work(
        self, scheduler: ContinuousScheduler, work: Work, future: asyncio.Future[Translated]
    ) -> None:
        """A cancelled sentence leaves the queue at once, or its running batch at the next step
        (the scheduler counts that drop)."""
        if future.cancelled() and scheduler.cancel(work):
            self.metrics.dropped.labels(self.runner.pair).inc()

    def _forget(self, item: _Item, _: object = None) -> None:
        """A cancelled sentence (deadline, disconnect) leaves the queue at once."""
        if not item.future.cancelled():
            return
        try:
            self._queue.remove(item)
        except ValueError:
            return  # already taken into a batch: its result will be discarded
        self.metrics.dropped.labels(self.runner.pair).inc()
        self._depth.set(len(self._queue))

    # ----- schedule -> execute -----
    async def _run(self) -> None:
        while (batch := await self._next_batch()) is not None:
            await self._execute(batch)

    def _fitting(self) -> int:
        """How many sentences from the head fit one engine call (at least one)."""
        longest = 0
        for n, item in enumerate(self._queue):
            longest = max(longest, item.n_tokens)
            if n == self.max_batch_size or (n > 0 and (n + 1) * longest > self.max_batch_tokens):
                return n
        return len(self._queue)

    async def _next_batch(self) -> list[_Item] | None:
        """Wait until a batch closes (full, over budget, waited long enough, or draining)."""
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            if not self._queue:
                if self._closing:
                    return None
                await self._wake.wait()
                continue
            take = self._fitting()
            close_at = self._queue[0].enqueued + self.max_wait_s
            if (
                take < len(self._queue)
                or take == self.max_batch_size
                or self._closing
                or loop.time() >= close_at
            ):
                batch = [self._queue.popleft() for _ in range(take)]
                self._depth.set(len(self._queue))
                return batch
            try:
                async with asyncio.timeout_at(close_at):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _execute(self, batch: list[_Item]) -> None:
        assert self._executor is not None
        """Run the batch on the engine thread, one engine call per set of decoding options."""
        groups: dict[DecodeOptions, list[_Item]] = {}
        for item in batch:
            groups.setdefault(item.options, []).append(item)
        loop = asyncio.get_running_loop()
        for options, group in groups.items():
            items = [i for i in group if not i.future.done()]
            if not items:
                continue
            now = loop.time()
            for item in items:
                self.metrics.queue_wait.labels(self.runner.pair).observe(now - item.enqueued)
            self.metrics.input_tokens.labels(self.runner.pair).inc(sum(i.n_tokens for i in items))
            try:
                result = await loop.run_in_executor(
                    self._executor, self.runner.run, [i.text for i in items], options
                )
            except Exception:  # the runner never raises; this guards the hand-off itself
                log.exception("%s: engine call failed", self.runner.pair)
                result = BatchResult(
                    "none", [InferenceFailed("the engine call failed") for _ in items]
                )
            for item, outcome in zip(items, result.outcomes, strict=True):
                if item.future.done():
                    continue  # its request is gone
                if isinstance(outcome, Exception):
                    item.future.set_exception(outcome)
                else:
                    item.future.set_result(Translated(outcome, result.backend))


def _resolve_from_thread(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Translated],
    outcome: Translation | Exception,
    backend: str,
) -> None:
    """An engine thread's result, handed to the event loop (asyncio futures are not
    thread-safe); a future already cancelled (its request gone) is left alone."""
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
