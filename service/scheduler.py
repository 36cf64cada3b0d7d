"""The schedulers behind a pair's Batcher: static (the default) and continuous.

The continuous scheduler: iteration-level batching on a pair's engine threads.

A batch never closes. Each engine thread (one per stream of the pair's engine: on the CPU
one per core) runs a loop of three parts, as vLLM's engine core does:

- tokenize: the sentences of every request not tokenized yet, in one call (requests
  arrive untokenized: nothing is tokenized on the event loop); a request holding a
  sentence too long for the model fails whole, at once;
- schedule: take waiting sentences from the head of the pair's queue, as many as fit its
  row budget (`max_sentences` per thread, the threads sharing the queue fairly) and the
  pair's KV-cache budget (`max_kv_tokens` cache positions, reserved at each sentence's
  whole output budget, so a running batch never outgrows it). An idle thread takes work
  at once; a busy one once a share of its rows is free or it has stepped some times
  with room while sentences waited (Admission), since joining copies the running cache;
- execute: encode them, join them to the running batch of their width (beam
  search: after their first step, taken alone), then one decoder step for every row;
- update: resolve the futures of the sentences that finished at once (from this thread,
  through the event loop's call_soon_threadsafe), and drop cancelled sentences (a deadline
  passed, a client left) at the next step, freeing their rows.

Sentences with the same rows per sentence share a running batch: all greedy sentences,
and beam sentences of one beam size, whatever their output budget or number of
alternatives (a per-sentence choice inside a batch). Beam sizes differ in the rows a
sentence takes, and the decoder graph takes one group size per call, so each beam size
has its own running batch, stepped in turn on the same thread.

If ONNX Runtime fails in the middle of a batch, the sentences of that batch go back to
the head of the queue and are decoded again from their source on the PyTorch fallback
(the fp32 tokens are the same): none is lost. A batch failing on the last engine left is
retried one sentence at a time, so a sentence that breaks the engine fails alone.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Gauge

from model.search import BeamBatch, SearchBatch, Sentence, batch_width
from service.engine.base import Engine, Translation
from service.errors import InferenceFailed, InputTooLong
from service.metrics import Metrics
from service.registry import BatchResult, DecodeOptions, ModelRunner

log = logging.getLogger(__name__)

# The search's length-penalty alpha, as Engine.translate uses it.
ALPHA = 0.6


@dataclass(frozen=True)
class Admission:
    """When a busy thread's running batch takes newcomers: once `share` of its rows is free,
    or once it has stepped `steps` times with room while sentences waited. Joining copies
    the running cache and encodes the newcomers, so admitting seldom serves more and makes
    newcomers wait longer (docs/decisions.md)."""

    share: float = 1.0
    steps: int = 32


@dataclass(frozen=True)
class Translated:
    """One sentence's translation and the backend that produced it."""

    translation: Translation
    backend: str


# Work.n_tokens of a sentence not tokenized yet (its pair's engine thread will).
UNCOUNTED = -1


def default_too_long(tokens: int, limit: int) -> Exception:
    """The error of a sentence over the model's limit, when its request names none."""
    return InputTooLong(
        f"a sentence has {tokens} tokens; the model takes at most {limit} per sentence"
    )


@dataclass(eq=False)
class Work:
    """One sentence waiting or decoding, and how its outcome goes back to its request."""

    text: str
    n_tokens: int  # UNCOUNTED until tokenized
    options: DecodeOptions
    # Called once, on an engine thread, with the Translation or the error; it must be
    # thread-safe (the Batcher hands it to the event loop with call_soon_threadsafe).
    resolve: Callable[[Translation | Exception, str], None]
    # (its tokens, the model's limit) -> the error its request fails with when it is too long
    too_long: Callable[[int, int], Exception] = default_too_long
    source: list[int] | None = None  # its token ids, once tokenized on the engine thread
    enqueued: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    isolate: bool = False  # decode alone: its batch failed on the last engine left
    on_fallback: bool = False  # its batch failed on ORT: it finishes on the fallback
    admitted: float = 0.0  # when it left the queue for a running batch

    @property
    def width(self) -> int:
        return batch_width(self.options.beam_size, 1 + self.options.num_alternatives)


# requests refused, each with the error its sentences fail with
Refused = list[tuple[list[Work], Exception]]


def tokenize(
    runner: ModelRunner, requests: Sequence[list[Work]], *, keep_ids: bool = True
) -> tuple[list[Work], Refused]:
    """Count the source tokens of the requests' uncounted sentences, in one tokenizer call.

    A sentence over the model's positional table would be cut: its whole request is refused
    rather than lose text, with the error of its first such sentence. Returns the sentences
    accepted, in order, and each refused request with its error. keep_ids keeps each
    sentence's ids for its encoder call.
    """
    todo = [w for request in requests for w in request if w.n_tokens == UNCOUNTED]
    if todo:
        ids = runner.tokenizer.encode([w.text for w in todo])
        for work, source in zip(todo, ids, strict=True):
            work.n_tokens = len(source)
            work.source = source if keep_ids else None
    limit = runner.max_source_tokens
    accepted: list[Work] = []
    refused: Refused = []
    for request in requests:
        first = next((w for w in request if w.n_tokens > limit), None)
        if first is None:
            accepted += request
        else:
            refused.append((request, first.too_long(first.n_tokens, limit)))
    return accepted, refused


def fitting(n_tokens: Iterable[int], max_tokens: int, max_sentences: int | None = None) -> int:
    """How many sentences from the head fit one engine call (at least one): at most
    max_sentences, and within max_tokens with padding (sentences x the longest)."""
    longest = count = 0
    for tokens in n_tokens:
        longest = max(longest, tokens)
        if count == max_sentences or (count and (count + 1) * longest > max_tokens):
            break
        count += 1
    return count


class Waiting:
    """One pair's waiting sentences: those counted, in order (ready), and the requests not
    tokenized yet (incoming). Not thread-safe: the continuous scheduler calls it under its
    lock, the static one from the event loop."""

    def __init__(self, gauge: Gauge) -> None:
        self.ready: deque[Work] = deque()
        self.incoming: list[list[Work]] = []
        self.uncounted = 0  # sentences incoming or being tokenized
        self._gauge = gauge

    def __len__(self) -> int:
        return len(self.ready) + self.uncounted

    def add(self, works: Iterable[Work]) -> None:
        """One request's sentences: counted ones (their lengths already checked) are ready at
        once, the others once an engine thread has tokenized them."""
        request = list(works)
        if any(w.n_tokens == UNCOUNTED for w in request):
            self.incoming.append(request)
            self.uncounted += len(request)
        else:
            self.ready.extend(request)
        self.changed()

    def remove(self, work: Work) -> bool:
        """Take a sentence out (True), unless it is being tokenized or has left the queue."""
        try:
            self.ready.remove(work)
        except ValueError:
            request = next((r for r in self.incoming if work in r), None)
            if request is None:
                return False
            request.remove(work)
            if not request:
                self.incoming = [r for r in self.incoming if r]
            self.uncounted -= 1
        self.changed()
        return True

    def take_incoming(self) -> list[list[Work]]:
        """The requests to tokenize now (they count as waiting until counted)."""
        requests, self.incoming = self.incoming, []
        return requests

    def counted(self, n: int, live: list[Work]) -> None:
        """n sentences taken to tokenize are done with; live ones are ready."""
        self.uncounted -= n
        self.ready.extend(live)
        self.changed()

    def changed(self) -> None:
        self._gauge.set(len(self))


def count(
    runner: ModelRunner, metrics: Metrics, requests: list[list[Work]]
) -> tuple[list[Work], Refused]:
    """On an engine thread: tokenize requests taken from the queue (tokenize). Returns the
    sentences to queue (those accepted and still wanted) and the requests refused, each with
    its error: the caller fails them once they have left the queue."""
    try:
        accepted, refused = tokenize(runner, requests)
    except Exception:  # a tokenizer failure must not leave requests waiting forever
        log.exception("%s: tokenizing failed", runner.pair)
        accepted, refused = [], [(r, InferenceFailed("the engine failed")) for r in requests]
    live = [w for w in accepted if not w.cancelled]
    if len(live) < len(accepted):  # cancelled while being tokenized
        metrics.dropped.labels(runner.pair).inc(len(accepted) - len(live))
    return live, refused


def admitted(metrics: Metrics, pair: str, works: list[Work], now: float) -> None:
    """Sentences leave the queue for the engine now: their time waiting, their tokens."""
    waited = metrics.queue_wait.labels(pair)
    for work in works:
        work.admitted = now
        waited.observe(now - work.enqueued)
    metrics.input_tokens.labels(pair).inc(sum(w.n_tokens for w in works))


def fail(works: Iterable[Work], error: Exception) -> None:
    """Resolve every sentence still wanted with the error."""
    for work in works:
        if not work.cancelled:
            work.resolve(error, "none")


@dataclass
class _Running:
    """A running batch and the engine it decodes on."""

    engine: Engine
    batch: SearchBatch
    fresh: list[Work] = field(default_factory=list)  # admitted, first step not yet taken


class ContinuousScheduler:
    """The waiting queue of one pair and the engine threads that run its batches."""

    def __init__(
        self,
        runner: ModelRunner,
        *,
        max_sentences: int,
        max_kv_tokens: int,
        max_batch_tokens: int,
        metrics: Metrics,
        threads: int | None = None,
        admission: Admission = Admission(),
    ) -> None:
        self.runner = runner
        self.admission = admission
        self.max_sentences = max_sentences
        self.max_kv_tokens = max_kv_tokens
        self.max_batch_tokens = max_batch_tokens
        self.metrics = metrics
        pair = runner.pair
        # (requests not tokenized yet: a thread tokenizes all of them at its next step)
        self._queue = Waiting(metrics.queue_depth.labels(pair))
        self._cond = threading.Condition()
        self._closing = False
        self._cancels = 0  # bumped by cancel(); a thread scans its batches when it changed
        count = threads or max(1, runner.active.streams)
        self._sentences = [0] * count  # running sentences per thread
        self._reserved = [0] * count  # KV-cache positions reserved per thread
        self._kv_used = [0] * count
        self._held = [0] * count  # step rounds a thread with room let sentences wait
        self._m_rows = metrics.running_rows.labels(pair)
        self._m_kv = metrics.kv_tokens.labels(pair)
        metrics.kv_budget.labels(pair).set(max_kv_tokens)
        self._threads = [
            threading.Thread(target=self._loop, args=(i,), name=f"engine-{pair}-{i}", daemon=True)
            for i in range(count)
        ]

    def start(self) -> None:
        log.info(
            "%s: continuous scheduler on %d thread(s), admitting once %g of a running batch's "
            "rows is free or after %d steps with room while sentences wait",
            self.runner.pair,
            len(self._threads),
            self.admission.share,
            self.admission.steps,
        )
        for thread in self._threads:
            thread.start()

    # ----- the asyncio side (any thread) -----
    @property
    def depth(self) -> int:
        return len(self._queue)

    def submit(self, works: Iterable[Work]) -> None:
        """Queue one request's sentences (Waiting.add)."""
        with self._cond:
            self._queue.add(works)
            self._cond.notify_all()

    def cancel(self, work: Work) -> bool:
        """Drop a sentence: from the queue now (True), or from its batch at the next step."""
        work.cancelled = True
        with self._cond:
            if self._queue.remove(work):
                return True
            self._cancels += 1
            return False

    async def close(self) -> None:
        """Finish every waiting and running sentence, then stop the threads."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for thread in self._threads:
            await asyncio.to_thread(thread.join)

    # ----- one engine thread -----
    def _loop(self, index: int) -> None:
        running: dict[tuple[int, int, int], _Running] = {}
        cancels = 0
        queue = self._queue
        while True:
            with self._cond:
                while not (queue.ready or queue.incoming or running or self._closing):
                    self._cond.wait()
                # (a thread still tokenizing queues what it tokenized, then runs it itself)
                if self._closing and not (queue.ready or queue.incoming or running):
                    return
                incoming = queue.take_incoming()
            if incoming:
                live, refused = count(self.runner, self.metrics, incoming)  # outside the lock
                with self._cond:
                    queue.counted(sum(len(r) for r in incoming), live)
                    self._cond.notify_all()
                for request, error in refused:
                    fail(request, error)
            with self._cond:
                taken = self._schedule(index, running)
                scan = cancels != self._cancels
                cancels = self._cancels
            try:
                if taken:
                    self._admit(taken, running)
                if scan:
                    self._drop_cancelled(running)
                for key, run in list(running.items()):
                    if run.batch.sentences:
                        self._step(key, run, running)
                    if key in running and not running[key].batch.sentences:
                        del running[key]
            except Exception:  # a bug here must not leave requests waiting forever
                log.exception("%s: scheduler thread %d failed", self.runner.pair, index)
                for run in running.values():
                    fail(run.batch.live_owners, InferenceFailed("the engine failed"))
                running.clear()
            self._account(index, running)

    def _account(self, index: int, running: dict[Any, _Running]) -> None:
        batches = [r.batch for r in running.values()]
        self._sentences[index] = sum(b.sentences for b in batches)
        self._reserved[index] = sum(b.reserved_kv_tokens() for b in batches)
        self._kv_used[index] = sum(b.kv_tokens for b in batches)
        self._m_rows.set(sum(self._sentences))
        self._m_kv.set(sum(self._kv_used))

    def _schedule(self, index: int, running: dict[Any, _Running]) -> list[Work]:
        """Under the lock: the waiting sentences this thread admits now, from the head."""
        waiting = self._queue.ready
        if not waiting:
            self._held[index] = 0
            return []
        threads = len(self._threads)
        mine = self._sentences[index]
        total = sum(self._sentences) + len(waiting)
        share = min(self.max_sentences, math.ceil(total / threads))
        room = share - mine
        if room <= 0:
            return []
        # Joining copies the running batch's cache (and encodes the newcomers): into a
        # running batch, sentences come in groups (Admission). The patience counts this
        # thread's own step rounds, not the head's age: behind a deep queue the head has
        # always waited long, and admitting at every step served less (docs/decisions.md).
        if (
            mine
            and room < self.admission.share * share
            and self._held[index] < self.admission.steps
        ):
            self._held[index] += 1
            return []
        self._held[index] = 0
        reserved = start = sum(self._reserved)
        engine = self.runner.active
        # (rows, sentences, longest budget, longest source) of each batch this admits into
        shapes: dict[int, list[int]] = {}
        for run in running.values():
            b = run.batch
            if run.engine is engine and len(b.budget):
                longest, source = int(b.budget.max()), int(b.src_len.max())
                shapes[b.width] = [b.sentences * b.width, b.sentences, longest, source]
        taken: list[Work] = []
        while waiting and len(taken) < room:
            work = waiting[0]
            if work.cancelled:
                waiting.popleft()
                continue
            width = work.width
            budget = engine.budget(work.n_tokens, work.options.max_length)
            rows, n, longest, source = shapes.get(width, [0, 0, 0, 0])
            before = rows * longest + n * source
            after = (rows + width) * max(longest, budget) + (n + 1) * max(source, work.n_tokens)
            idle = mine == 0 and not taken
            if not idle and reserved + after - before > self.max_kv_tokens:
                break  # the head waits for cache room: first come, first served
            if work.isolate and taken:
                break  # a sentence retried alone is admitted on its own
            reserved += after - before
            shapes[width] = [rows + width, n + 1, max(longest, budget), max(source, work.n_tokens)]
            taken.append(waiting.popleft())
            if work.isolate:
                break
        self._queue.changed()
        # what this thread will hold, so the others see it before the next step's account
        self._sentences[index] += len(taken)
        self._reserved[index] += reserved - start
        return taken

    def _admit(self, works: list[Work], running: dict[tuple[int, int, int], _Running]) -> None:
        """Tokenize, encode and join to the running batches (here, on the engine thread)."""
        runner = self.runner
        now = time.monotonic()
        pair = runner.pair
        self.metrics.admitted.labels(pair).observe(len(works))
        admitted(self.metrics, pair, works, now)
        groups: dict[tuple[Engine, int, int], list[Work]] = {}
        for work in works:
            engine = runner.active
            if work.on_fallback and runner.fallback is not None:
                engine = runner.fallback  # even if ORT's cool-down is over meanwhile
            slot = (engine, work.width, id(work) if work.isolate else 0)
            groups.setdefault(slot, []).append(work)
        for (engine, width, alone), group in groups.items():
            for chunk in self._encoder_chunks(group):
                try:
                    fresh = self._encode(engine, chunk, width)
                    done = fresh.widen() if isinstance(fresh, BeamBatch) else []
                except Exception as exc:
                    self._failed(engine, chunk, exc)
                    continue
                self._finish(engine, done)
                key = (id(engine), width, alone)
                if key in running:
                    try:
                        running[key].batch.concatenate(fresh)
                    except Exception as exc:
                        self._failed(engine, running.pop(key).batch.live_owners + chunk, exc)
                        continue
                else:
                    running[key] = _Running(engine, fresh)
                running[key].fresh += chunk

    def _encoder_chunks(self, group: list[Work]) -> Iterable[list[Work]]:
        """Admitted sentences in encoder calls within max_batch_tokens (padding included)."""
        while group:
            take = fitting((w.n_tokens for w in group), self.max_batch_tokens)
            yield group[:take]
            group = group[take:]

    @staticmethod
    def _encode(engine: Engine, works: list[Work], width: int) -> SearchBatch:
        # Sentences counted on the event loop (NMT_TOKENIZE=loop) are tokenized again here.
        missing = [w for w in works if w.source is None]
        if missing:
            for work, ids in zip(
                missing, engine.encode_texts([w.text for w in missing]), strict=True
            ):
                work.source = ids
        sources = [w.source for w in works if w.source is not None]
        sentences = [
            Sentence(
                source,
                engine.budget(len(source), w.options.max_length),
                1 + w.options.num_alternatives,
                ALPHA,
                w,
            )
            for source, w in zip(sources, works, strict=True)
        ]
        return engine.new_batch(sentences, width)

    def _step(self, key: Any, run: _Running, running: dict[Any, _Running]) -> None:
        pair, backend = self.runner.pair, run.engine.backend
        batch = run.batch
        start = time.perf_counter()
        try:
            done = batch.step()
        except Exception as exc:
            del running[key]
            self._failed(run.engine, batch.live_owners, exc)
            return
        end = time.perf_counter()
        self.metrics.step_time.labels(pair, backend).observe(end - start)
        self.metrics.batch_size.labels(pair, backend).observe(batch.sentences + len(done))
        if run.fresh:
            now = time.monotonic()
            first = self.metrics.first_step.labels(pair)
            for work in run.fresh:
                first.observe(now - work.admitted)
            run.fresh = []
        self._finish(run.engine, done)

    def _finish(self, engine: Engine, done: list[tuple[Any, list[Any]]]) -> None:
        if not done:
            return
        translations = engine.translations([hyps for _, hyps in done])
        self.metrics.output_tokens.labels(self.runner.pair).inc(
            sum(len(t.tokens) for t in translations)
        )
        now = time.monotonic()
        decoding = self.metrics.inference_time.labels(self.runner.pair, engine.backend)
        for (work, _), translation in zip(done, translations, strict=True):
            decoding.observe(now - work.admitted)
            if not work.cancelled:
                work.resolve(translation, engine.backend)

    def _drop_cancelled(self, running: dict[Any, _Running]) -> None:
        for run in running.values():
            gone = {id(w) for w in run.batch.live_owners if w.cancelled}
            if gone:
                dropped = run.batch.drop(gone)
                self.metrics.dropped.labels(self.runner.pair).inc(dropped)

    def _failed(self, engine: Engine, works: list[Work], exc: Exception) -> None:
        """A batch failed: its sentences go to the fallback, or are retried one by one."""
        works = [w for w in works if not w.cancelled]
        runner = self.runner
        if not works:
            return
        if engine is runner.primary and runner.fallback is not None:
            log.warning(
                "%s: batch of %d failed on %s (%r); its sentences finish on %s",
                runner.pair,
                len(works),
                engine.backend,
                exc,
                runner.fallback.backend,
            )
            runner.primary_failed(len(works))
            for work in works:
                work.on_fallback = True
            self._requeue(works)
            return
        if len(works) == 1 and works[0].isolate:
            log.error("%s: %s failed on one sentence: %r", runner.pair, engine.backend, exc)
            fail(works, InferenceFailed("the model failed to translate this text"))
            return
        log.warning(
            "%s: batch of %d failed on %s (%r); retrying its sentences one by one",
            runner.pair,
            len(works),
            engine.backend,
            exc,
        )
        for work in works:
            work.isolate = True
        self._requeue(works)

    def _requeue(self, works: list[Work]) -> None:
        with self._cond:
            self._queue.ready.extendleft(reversed(works))
            self._queue.changed()
            self._cond.notify_all()


class StaticScheduler:
    """Batches that close, then run to their longest sentence (the scheduler before issue 14).

    Between batches the engine thread tokenizes every request waiting untokenized, in one
    call (refusing those with a sentence too long for the model). A batch closes when it
    reaches max_batch_size sentences, when the next sentence would take it over
    max_batch_tokens, or max_wait_s after its first sentence arrived; then it runs on the
    pair's own engine thread (engine.translate on the ids tokenized: its streams split
    it), so the event loop keeps serving while the engine works. Sentences with different
    decoding options share the queue but never an engine call.
    """

    def __init__(
        self,
        runner: ModelRunner,
        *,
        max_batch_size: int,
        max_batch_tokens: int,
        max_wait_s: float,
        metrics: Metrics,
    ) -> None:
        self.runner = runner
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_s
        self.metrics = metrics
        # (requests not tokenized yet: the engine thread tokenizes them all before a batch)
        self._queue = Waiting(metrics.queue_depth.labels(runner.pair))
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        # One thread per engine: calls never overlap on an engine, and never run on the loop.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"engine-{runner.pair}")

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"batcher-{self.runner.pair}")

    def submit(self, works: Iterable[Work]) -> None:
        """Queue one request's sentences (Waiting.add)."""
        self._queue.add(works)
        self._wake.set()

    def cancel(self, work: Work) -> bool:
        """A cancelled sentence (deadline, disconnect) leaves the queue at once; one being
        tokenized or in a batch has its result discarded."""
        work.cancelled = True
        return self._queue.remove(work)

    async def close(self) -> None:
        """Run everything already queued without waiting for batches to fill, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        while (batch := await self._next_batch()) is not None:
            await self._execute(batch)

    async def _count(self) -> None:
        """Tokenize the requests not counted yet, all in one call on the engine thread (idle
        between batches); refused ones (a sentence too long) fail, the others queue."""
        requests = self._queue.take_incoming()
        live: list[Work] = []
        refused: Refused = []
        try:
            live, refused = await asyncio.get_running_loop().run_in_executor(
                self._executor, count, self.runner, self.metrics, requests
            )
        except Exception:  # count never raises; this guards the hand-off itself
            log.exception("%s: tokenizing failed", self.runner.pair)
            refused = [(r, InferenceFailed("the engine failed")) for r in requests]
        finally:
            self._queue.counted(sum(len(r) for r in requests), live)
        for request, error in refused:
            fail(request, error)

    async def _next_batch(self) -> list[Work] | None:
        """Wait until a batch closes (full, over budget, waited long enough, or draining)."""
        loop = asyncio.get_running_loop()
        queue = self._queue
        while True:
            self._wake.clear()
            if queue.incoming:
                await self._count()  # what arrives meanwhile sets _wake again
            if not queue.ready:
                if self._closing and not queue.incoming:
                    return None
                await self._wake.wait()
                continue
            take = fitting(
                (w.n_tokens for w in queue.ready), self.max_batch_tokens, self.max_batch_size
            )
            # enqueued is time.monotonic(), the clock of the loop's time()
            close_at = queue.ready[0].enqueued + self.max_wait_s
            if (
                take < len(queue.ready)
                or take == self.max_batch_size
                or self._closing
                or loop.time() >= close_at
            ):
                batch = [queue.ready.popleft() for _ in range(take)]
                queue.changed()
                return batch
            try:
                async with asyncio.timeout_at(close_at):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _execute(self, batch: list[Work]) -> None:
        """Run the batch on the engine thread, one engine call per set of decoding options."""
        groups: dict[DecodeOptions, list[Work]] = {}
        for work in batch:
            groups.setdefault(work.options, []).append(work)
        loop = asyncio.get_running_loop()
        pair = self.runner.pair
        for options, group in groups.items():
            works = [w for w in group if not w.cancelled]
            if not works:
                continue
            admitted(self.metrics, pair, works, loop.time())  # (time.monotonic's clock)
            # the ids the engine thread tokenized (none where the loop counted the sentences)
            ids = [w.source for w in works if w.source is not None]
            sources = ids if len(ids) == len(works) else None
            try:
                result = await loop.run_in_executor(
                    self._executor, self.runner.run, [w.text for w in works], options, sources
                )
            except Exception:  # the runner never raises; this guards the hand-off itself
                log.exception("%s: engine call failed", pair)
                result = BatchResult(
                    "none", [InferenceFailed("the engine call failed") for _ in works]
                )
            for work, outcome in zip(works, result.outcomes, strict=True):
                if not work.cancelled:  # else its request is gone
                    work.resolve(outcome, result.backend)
