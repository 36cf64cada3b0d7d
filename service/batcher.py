"""The dynamic batcher: the only asyncio code that schedules work.

One bounded queue per language pair. A batch closes when it reaches max_batch_size
sentences, when the next sentence would take it over max_batch_tokens, or max_wait after
its first sentence arrived; then it runs on the pair's own engine thread, so the event loop
keeps serving while the engine works. Sentences with different decoding options share the
queue but never an engine call.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from service.engine.base import Translation
from service.errors import InferenceFailed, NotReady, QueueFull
from service.metrics import Metrics
from service.registry import BatchResult, DecodeOptions, ModelRunner

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


class Batcher:
    """Collects sentences from concurrent requests into engine calls for one pair."""

    def __init__(
        self,
        runner: ModelRunner,
        *,
        max_batch_size: int,
        max_batch_tokens: int,
        max_wait_s: float,
        max_queue_size: int,
        metrics: Metrics,
    ) -> None:
        self.runner = runner
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_s
        self.max_queue_size = max_queue_size
        self.metrics = metrics
        self._queue: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        # One thread per engine: calls never overlap on an engine, and never run on the loop.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"engine-{runner.pair}")
        self._depth = metrics.queue_depth.labels(runner.pair)

    @property
    def depth(self) -> int:
        """Sentences waiting (an open batch's included)."""
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"batcher-{self.runner.pair}")

    async def close(self) -> None:
        """Stop taking work, run everything already queued without waiting, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def submit(
        self, texts: list[str], n_tokens: list[int], options: DecodeOptions
    ) -> list[Translated]:
        """Queue sentences and wait for all of them; cancelling this drops what is still queued."""
        if self._closing:
            raise NotReady("the service is shutting down")
        # All of a request or none of it; one larger than the queue still gets an empty queue.
        if self._queue and len(self._queue) + len(texts) > self.max_queue_size:
            raise QueueFull(
                f"{self.runner.pair} queue is full ({len(self._queue)} sentences "
                "waiting); retry later",
                retry_after_s=1,
            )
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
        try:
            results = await asyncio.gather(*(i.future for i in items), return_exceptions=True)
        finally:
            for item in items:
                item.future.cancel()  # no-op for the finished; drops the still-queued
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, Translated)]

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
