"""The static batcher over a real tiny torch engine: sharing, grouping, limits, cancellation.

(The continuous scheduler, the default, is tested in tests/service/test_scheduler.py.)"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from service.batcher import Batcher
from service.engine.base import Engine, Translation
from service.engine.loader import load_engine
from service.engine.torch_engine import TorchEngine
from service.errors import InferenceFailed, NotReady, QueueFull
from service.metrics import Metrics
from service.registry import DecodeOptions, ModelRunner
from tests.service_helpers import wait_until

T = TypeVar("T")
GREEDY = DecodeOptions(beam_size=1, max_length=6, num_alternatives=0)
BEAM2 = DecodeOptions(beam_size=2, max_length=6, num_alternatives=0)
LONG_WAIT = 60.0  # a batch that only closes by size, tokens or draining


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Engine:
    return load_engine(tiny_model_dir, backend="torch", device="cpu", precision="fp32")


def make_batcher(engine: Engine, **limits: Any) -> tuple[Batcher, Metrics]:
    metrics = Metrics()
    values: dict[str, Any] = dict(
        max_batch_size=32,
        max_batch_tokens=4096,
        max_wait_s=LONG_WAIT,
        max_queue_size=64,
        scheduler="static",
        max_kv_tokens=65536,
    )
    values.update(limits)
    batcher = Batcher(ModelRunner("en-de", engine, None, metrics), metrics=metrics, **values)
    batcher.start()
    return batcher, metrics


def engine_calls(metrics: Metrics) -> tuple[int, int]:
    """(engine calls, sentences) as the batch-size histogram saw them."""
    labels = {"pair": "en-de", "backend": "torch"}
    return (
        int(metrics.value("nmt_batch_size_count", **labels)),
        int(metrics.value("nmt_batch_size_sum", **labels)),
    )


def test_concurrent_requests_share_one_engine_call(engine: Engine) -> None:
    texts = ["A man.", "Two dogs run.", "A girl sings.", "People walk.", "A cat.", "Hi."]

    async def scenario() -> list[list[str]]:
        batcher, metrics = make_batcher(engine, max_batch_size=6)
        # Six requests of one sentence; the batch can only close by reaching six.
        results = await asyncio.gather(*(batcher.submit([t], [4], GREEDY) for t in texts))
        assert engine_calls(metrics) == (1, 6)
        await batcher.close()
        return [[r.translation.text for r in res] for res in results]

    together = run(scenario())
    alone = [t.text for t in engine.translate(texts, beam_size=1, max_length=6)]
    assert [r[0] for r in together] == alone


def test_different_decoding_options_never_share_an_engine_call(engine: Engine) -> None:
    async def scenario() -> None:
        batcher, metrics = make_batcher(engine, max_batch_size=4)
        await asyncio.gather(
            batcher.submit(["A man."], [3], GREEDY),
            batcher.submit(["A dog."], [3], BEAM2),
            batcher.submit(["A cat."], [3], GREEDY),
            batcher.submit(["A car."], [3], BEAM2),
        )
        assert engine_calls(metrics) == (2, 4)
        await batcher.close()

    run(scenario())


def test_batch_closes_at_the_token_budget(engine: Engine) -> None:
    async def scenario() -> None:
        # 3 sentences of 10 tokens fit 30 padded tokens; the fourth starts a new batch.
        batcher, metrics = make_batcher(engine, max_batch_tokens=30, max_batch_size=3)
        await asyncio.gather(*(batcher.submit(["A man walks."], [10], GREEDY) for _ in range(6)))
        assert engine_calls(metrics) == (2, 6)
        await batcher.close()

    run(scenario())


def test_full_queue_refuses_whole_requests(engine: Engine) -> None:
    async def scenario() -> None:
        batcher, metrics = make_batcher(engine, max_queue_size=3)
        first = asyncio.create_task(batcher.submit(["One.", "Two."], [2, 2], GREEDY))
        await wait_until(lambda: batcher.depth == 2)  # queued, in a batch held open
        with pytest.raises(QueueFull) as err:
            await batcher.submit(["Three.", "Four."], [2, 2], GREEDY)  # would make 4 > 3
        assert err.value.headers["Retry-After"] == "1"
        assert batcher.depth == 2  # nothing of the refused request was queued
        await batcher.close()  # drains the held batch
        assert len(await first) == 2
        # A request larger than the whole queue still gets an empty one.
        batcher, _ = make_batcher(engine, max_queue_size=1, max_wait_s=0)
        assert len(await batcher.submit(["One.", "Two."], [2, 2], GREEDY)) == 2
        await batcher.close()

    run(scenario())


def test_cancelled_work_never_reaches_the_engine(engine: Engine) -> None:
    async def scenario() -> None:
        batcher, metrics = make_batcher(engine, max_batch_size=2)
        gone = asyncio.create_task(batcher.submit(["Gone."], [2], GREEDY))
        await wait_until(lambda: batcher.depth == 1)
        gone.cancel()  # what a deadline or a client disconnect does
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert batcher.depth == 0
        assert metrics.value("nmt_dropped_sentences_total", pair="en-de") == 1
        # Only live sentences make the next batch (closing at size 2).
        await asyncio.gather(*(batcher.submit([t], [2], GREEDY) for t in ["A.", "B."]))
        assert engine_calls(metrics) == (1, 2)
        await batcher.close()

    run(scenario())


class GatedEngine(TorchEngine):
    """The real engine, held at the start of each call until the test opens the gate."""

    def __init__(self, inner: TorchEngine) -> None:
        self.__dict__.update(inner.__dict__)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def translate(self, texts: list[str], **options: Any) -> list[Translation]:
        self.entered.set()
        assert self.gate.wait(30)
        return super().translate(texts, **options)


def test_inference_runs_off_the_event_loop(engine: Engine) -> None:
    assert isinstance(engine, TorchEngine)
    gated = GatedEngine(engine)

    async def scenario() -> None:
        batcher, metrics = make_batcher(gated, max_wait_s=0)
        first = asyncio.create_task(batcher.submit(["A man."], [3], GREEDY))
        assert await asyncio.to_thread(gated.entered.wait, 30)
        # The engine is busy on its thread; the loop still takes and queues new work.
        second = asyncio.create_task(batcher.submit(["A dog."], [3], GREEDY))
        await wait_until(lambda: batcher.depth == 1)
        assert gated.entered.is_set() and not first.done()  # still busy with the first
        gated.gate.set()
        await asyncio.gather(first, second)
        assert engine_calls(metrics) == (2, 2)
        await batcher.close()

    run(scenario())


def test_close_drains_queued_work_at_once(engine: Engine) -> None:
    async def scenario() -> None:
        batcher, _ = make_batcher(engine)  # batches would otherwise wait 60 s
        pending = [asyncio.create_task(batcher.submit([t], [3], GREEDY)) for t in ["A.", "B."]]
        await wait_until(lambda: batcher.depth == 2)  # both wait in the open batch
        async with asyncio.timeout(10):
            await batcher.close()
            results = await asyncio.gather(*pending)
        assert [len(r) for r in results] == [1, 1]
        with pytest.raises(NotReady):
            await batcher.submit(["Late."], [2], GREEDY)

    run(scenario())


class PoisonEngine(TorchEngine):
    """The real engine, except that any batch holding the text POISON fails."""

    def __init__(self, inner: TorchEngine) -> None:
        self.__dict__.update(inner.__dict__)

    def translate(self, texts: list[str], **options: Any) -> list[Translation]:
        if "POISON" in texts:
            raise RuntimeError("bad input")
        return super().translate(texts, **options)


def test_one_bad_sentence_never_fails_its_batch_mates(engine: Engine) -> None:
    assert isinstance(engine, TorchEngine)

    async def scenario() -> None:
        batcher, metrics = make_batcher(PoisonEngine(engine), max_batch_size=3)
        good1, bad, good2 = await asyncio.gather(
            batcher.submit(["A man."], [3], GREEDY),
            batcher.submit(["POISON"], [3], GREEDY),
            batcher.submit(["A dog."], [3], GREEDY),
            return_exceptions=True,
        )
        assert isinstance(bad, InferenceFailed)
        assert not isinstance(good1, BaseException) and not isinstance(good2, BaseException)
        expected = engine.translate(["A man.", "A dog."], beam_size=1, max_length=6)
        assert [good1[0].translation.text, good2[0].translation.text] == [t.text for t in expected]
        await batcher.close()

    run(scenario())
