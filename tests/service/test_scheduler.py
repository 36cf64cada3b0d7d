"""The continuous scheduler over real tiny engines: joining, budgets, cancellation, fallback,
draining (behind the Batcher's asyncio admission, as the service runs it)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from torch import Tensor

from service.batcher import Batcher
from service.engine.base import Engine
from service.engine.loader import load_engine
from service.engine.onnx_engine import OnnxEngine
from service.engine.torch_engine import TorchEngine
from service.errors import InferenceFailed, QueueFull
from service.metrics import Metrics
from service.registry import DecodeOptions, ModelRunner
from tests.service_helpers import wait_until

T = TypeVar("T")
GREEDY = DecodeOptions(beam_size=1, max_length=8, num_alternatives=0)
BEAM3 = DecodeOptions(beam_size=3, max_length=8, num_alternatives=1)
TEXTS = ["A man.", "Two dogs run in the park.", "A girl sings.", "People walk.", "A cat.", "Hi."]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def torch_engine(tiny_model_dir: Path) -> TorchEngine:
    engine = load_engine(tiny_model_dir, backend="torch")
    assert isinstance(engine, TorchEngine)
    return engine


@pytest.fixture(scope="module")
def onnx_engine(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> OnnxEngine:
    root = tmp_path_factory.mktemp("artifacts")
    engine = load_engine(tiny_model_dir, threads=2, artifacts_root=root)
    assert isinstance(engine, OnnxEngine)
    return engine


def make_batcher(
    primary: Engine | None, fallback: Engine | None = None, **limits: Any
) -> tuple[Batcher, Metrics, ModelRunner]:
    metrics = Metrics()
    values: dict[str, Any] = dict(
        max_batch_size=32,
        max_batch_tokens=4096,
        max_wait_s=0.0,
        max_queue_size=64,
        scheduler="continuous",
        max_kv_tokens=65536,
    )
    values.update(limits)
    runner = ModelRunner("en-de", primary, fallback, metrics)
    batcher = Batcher(runner, metrics=metrics, **values)
    batcher.start()
    return batcher, metrics, runner


def alone(engine: Engine, texts: Sequence[str], options: DecodeOptions) -> list[str]:
    """Each text translated on its own, outside the service."""
    return [
        engine.translate(
            [t],
            beam_size=options.beam_size,
            max_length=options.max_length,
            num_alternatives=options.num_alternatives,
        )[0].text
        for t in texts
    ]


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.value(name, pair="en-de", **labels)


class Gated:
    """Holds the engine thread inside its n-th decoder step until the test opens the gate."""

    def __init__(self, engine: Engine, at_step: int = 1) -> None:
        self.engine = engine
        self.at_step = at_step
        self.steps = 0
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.real = engine.step_top_k

    def __enter__(self) -> Gated:
        def step_top_k(state: Any, tokens: Tensor, k: int) -> tuple[Tensor, Tensor, Any]:
            self.steps += 1
            if self.steps == self.at_step:
                self.entered.set()
                assert self.gate.wait(30)
            return self.real(state, tokens, k)

        self.engine.step_top_k = step_top_k  # type: ignore[method-assign]
        return self

    def __exit__(self, *_: object) -> None:
        del self.engine.step_top_k  # back to the class's method
        self.gate.set()


@pytest.mark.parametrize("options", [GREEDY, BEAM3], ids=["greedy", "beam3"])
def test_sentences_join_a_running_batch_and_decode_as_alone(
    torch_engine: TorchEngine, options: DecodeOptions
) -> None:
    async def scenario() -> list[str]:
        batcher, metrics, _ = make_batcher(torch_engine)
        with Gated(torch_engine) as gated:
            first = asyncio.create_task(batcher.submit([TEXTS[0]], [3], options))
            assert await asyncio.to_thread(gated.entered.wait, 30)
            # The first sentence is mid-step; the others queue and join its running batch.
            rest = [asyncio.create_task(batcher.submit([t], [5], options)) for t in TEXTS[1:]]
            await asyncio.sleep(0)
            assert batcher.depth == len(TEXTS) - 1
            gated.gate.set()
            results = [await first] + [await r for r in rest]
        # two admissions: the first sentence, then the five that waited, into one batch
        assert metric(metrics, "nmt_admitted_per_step_count") == 2
        assert metric(metrics, "nmt_admitted_per_step_sum") == len(TEXTS)
        await wait_until(lambda: metric(metrics, "nmt_running_sentences") == 0)
        assert metric(metrics, "nmt_kv_cache_budget_tokens") == 65536
        assert metric(metrics, "nmt_admission_to_first_step_seconds_count") == len(TEXTS)
        await batcher.close()
        return [r[0].translation.text for r in results]

    assert run(scenario()) == alone(torch_engine, TEXTS, options)


def test_mixed_options_share_the_queue_and_decode_as_alone(onnx_engine: OnnxEngine) -> None:
    """Greedy and beam sentences, other budgets and alternatives, on two engine threads."""
    options = [GREEDY, BEAM3, DecodeOptions(1, 4, 0), DecodeOptions(3, 12, 0)] * 3

    async def scenario() -> list[list[str]]:
        batcher, _, _ = make_batcher(onnx_engine)
        texts = (TEXTS * 2)[: len(options)]
        results = await asyncio.gather(
            *(batcher.submit([t], [5], o) for t, o in zip(texts, options, strict=True))
        )
        await batcher.close()
        return [
            [r[0].translation.text] + [a.text for a in r[0].translation.alternatives]
            for r in results
        ]

    got = run(scenario())
    texts = (TEXTS * 2)[: len(options)]
    for text, option, translated in zip(texts, options, got, strict=True):
        want = onnx_engine.translate(
            [text],
            beam_size=option.beam_size,
            max_length=option.max_length,
            num_alternatives=option.num_alternatives,
        )[0]
        assert translated == [want.text] + [a.text for a in want.alternatives]


def test_a_short_sentence_does_not_wait_for_a_long_one(torch_engine: TorchEngine) -> None:
    long_options = DecodeOptions(beam_size=1, max_length=40, num_alternatives=0)
    long_text = max(TEXTS, key=lambda t: len(alone(torch_engine, [t], long_options)[0]))
    steps_long = len(torch_engine.translate([long_text], beam_size=1, max_length=40)[0].tokens)
    assert steps_long > 6  # (the tiny random model rambles: a long output)
    short = DecodeOptions(beam_size=1, max_length=2, num_alternatives=0)

    async def scenario() -> list[str]:
        batcher, _, _ = make_batcher(torch_engine)
        order: list[str] = []

        async def one(name: str, text: str, options: DecodeOptions) -> None:
            await batcher.submit([text], [5], options)
            order.append(name)

        with Gated(torch_engine, at_step=2) as gated:
            task_long = asyncio.create_task(one("long", long_text, long_options))
            assert await asyncio.to_thread(gated.entered.wait, 30)
            task_short = asyncio.create_task(one("short", "A cat.", short))
            await asyncio.sleep(0)
            gated.gate.set()
            await asyncio.gather(task_long, task_short)
        await batcher.close()
        return order

    assert run(scenario()) == ["short", "long"]


def test_cancelled_and_expired_sentences_free_their_rows(torch_engine: TorchEngine) -> None:
    async def scenario() -> None:
        batcher, metrics, _ = make_batcher(torch_engine)
        with Gated(torch_engine) as gated:
            kept = asyncio.create_task(batcher.submit(["A man."], [3], GREEDY))
            assert await asyncio.to_thread(gated.entered.wait, 30)
            gone = asyncio.create_task(batcher.submit(["A dog runs."], [4], GREEDY))
            expired = asyncio.create_task(
                asyncio.wait_for(batcher.submit(["A cat sleeps."], [4], GREEDY), 0.05)
            )
            await wait_until(lambda: batcher.depth == 2)
            gone.cancel()  # a client that left: out of the queue at once
            with pytest.raises(asyncio.CancelledError):
                await gone
            assert batcher.depth == 1
            assert metric(metrics, "nmt_dropped_sentences_total") == 1
            with pytest.raises(TimeoutError):
                await expired  # a deadline while it waited
            assert batcher.depth == 0
            gated.gate.set()
            await kept
        # a sentence cancelled while decoding leaves its batch at the next step
        with Gated(torch_engine, at_step=2) as gated:
            long = asyncio.create_task(
                batcher.submit(["Two men play football."], [5], DecodeOptions(1, 30, 0))
            )
            assert await asyncio.to_thread(gated.entered.wait, 30)
            steps = gated.steps
            long.cancel()
            with pytest.raises(asyncio.CancelledError):
                await long
            await asyncio.sleep(0)  # the futures' cancel callbacks tell the scheduler
            gated.gate.set()
            await wait_until(lambda: metric(metrics, "nmt_dropped_sentences_total") == 3)
            await wait_until(lambda: metric(metrics, "nmt_running_sentences") == 0)
        assert gated.steps == steps  # no step ran for it after the cancel
        assert metric(metrics, "nmt_dropped_sentences_total") == 3
        assert metric(metrics, "nmt_running_sentences") == 0
        await batcher.close()

    run(scenario())


def test_kv_budget_holds_sentences_back_until_rows_free(torch_engine: TorchEngine) -> None:
    async def scenario() -> None:
        # one sentence reserves 8 output positions + its source: two do not fit 20
        batcher, metrics, _ = make_batcher(torch_engine, max_kv_tokens=20)
        results = await asyncio.gather(*(batcher.submit([t], [5], GREEDY) for t in TEXTS[:3]))
        assert len(results) == 3
        # every step ran one sentence: the budget kept them apart
        steps = metric(metrics, "nmt_batch_size_count", backend="torch")
        assert metric(metrics, "nmt_batch_size_sum", backend="torch") == steps
        assert metric(metrics, "nmt_admitted_per_step_count") == 3
        await batcher.close()

    run(scenario())


def test_full_queue_refuses_whole_requests(torch_engine: TorchEngine) -> None:
    async def scenario() -> None:
        batcher, _, _ = make_batcher(torch_engine, max_queue_size=3)
        with Gated(torch_engine) as gated:
            running = asyncio.create_task(batcher.submit(["Zero."], [2], GREEDY))
            assert await asyncio.to_thread(gated.entered.wait, 30)
            waiting = asyncio.create_task(batcher.submit(["One.", "Two."], [2, 2], GREEDY))
            await asyncio.sleep(0)
            assert batcher.depth == 2
            with pytest.raises(QueueFull) as err:
                await batcher.submit(["Three.", "Four."], [2, 2], GREEDY)
            assert err.value.headers["Retry-After"] == "1"
            assert batcher.depth == 2
            gated.gate.set()
            await running
        assert len(await waiting) == 2
        await batcher.close()

    run(scenario())


def test_close_drains_running_and_queued_work(torch_engine: TorchEngine) -> None:
    async def scenario() -> None:
        batcher, _, _ = make_batcher(torch_engine, max_batch_size=2)
        pending = [asyncio.create_task(batcher.submit([t], [3], GREEDY)) for t in TEXTS]
        await asyncio.sleep(0)
        async with asyncio.timeout(30):
            await batcher.close()
            results = await asyncio.gather(*pending)
        assert [r[0].translation.text for r in results] == alone(torch_engine, TEXTS, GREEDY)

    run(scenario())


def test_ort_failing_mid_batch_finishes_its_rows_on_torch(
    onnx_engine: OnnxEngine, torch_engine: TorchEngine
) -> None:
    """ORT breaks at the third step of a running batch: every sentence still gets the
    translation the healthy ORT engine gives (fp32), from the PyTorch fallback."""
    want = alone(onnx_engine, TEXTS, GREEDY)
    healthy = onnx_engine.io.decoder  # type: ignore[attr-defined]

    async def scenario() -> list[Any]:
        batcher, metrics, runner = make_batcher(onnx_engine, torch_engine)
        with Gated(onnx_engine, at_step=3) as gated:
            tasks = [asyncio.create_task(batcher.submit([t], [5], GREEDY)) for t in TEXTS]
            assert await asyncio.to_thread(gated.entered.wait, 30)
            # the decoder graph swapped for the encoder's: the step fails inside ORT
            onnx_engine.io.decoder = onnx_engine.io.encoder  # type: ignore[attr-defined]
            gated.gate.set()
            results = await asyncio.gather(*tasks)
        # one failure per running batch (one per engine thread), each counted
        assert 1 <= metric(metrics, "nmt_fallbacks_total", reason="batch_failed") <= 2
        assert metric(metrics, "nmt_fallback_sentences_total") >= 1
        assert runner.degraded
        await batcher.close()
        return results

    try:
        results = run(scenario())
    finally:
        onnx_engine.io.decoder = healthy  # type: ignore[attr-defined]
    assert [r[0].translation.text for r in results] == want
    assert {r[0].backend for r in results} <= {"onnx", "torch"}
    assert "torch" in {r[0].backend for r in results}


class PoisonEngine(TorchEngine):
    """The real engine, except that encoding a batch holding POISON's ids fails."""

    def __init__(self, inner: TorchEngine) -> None:
        self.__dict__.update(inner.__dict__)
        self.poison = inner.tokenizer.encode(["POISON"])[0]

    def start(self, sources: Sequence[Sequence[int]]) -> Any:
        if any(list(s) == self.poison for s in sources):
            raise RuntimeError("bad input")
        return super().start(sources)


def test_one_bad_sentence_never_fails_its_batch_mates(torch_engine: TorchEngine) -> None:
    async def scenario() -> list[Any]:
        poisoned = PoisonEngine(torch_engine)
        batcher, _, _ = make_batcher(poisoned)
        with Gated(poisoned) as gated:
            first = asyncio.create_task(batcher.submit(["A man."], [3], GREEDY))
            assert await asyncio.to_thread(gated.entered.wait, 30)
            rest = [
                asyncio.create_task(batcher.submit([t], [3], GREEDY))
                for t in ["A dog.", "POISON", "A cat."]
            ]
            await asyncio.sleep(0)
            gated.gate.set()
            results = await asyncio.gather(first, *rest, return_exceptions=True)
        await batcher.close()
        return results

    first, dog, bad, cat = run(scenario())
    assert isinstance(bad, InferenceFailed)
    good = [r[0].translation.text for r in (first, dog, cat)]  # type: ignore[index]
    assert good == alone(torch_engine, ["A man.", "A dog.", "A cat."], GREEDY)


def test_admission_policy_budgets_share_and_grouping(torch_engine: TorchEngine) -> None:
    """What a thread admits at a step boundary (the scheduler's schedule, threads not run)."""
    from service.scheduler import Admission, ContinuousScheduler, Work, _Running

    def scheduler(threads: int = 1, **limits: Any) -> ContinuousScheduler:
        runner = ModelRunner("en-de", torch_engine, None, Metrics())
        values: dict[str, Any] = dict(max_sentences=8, max_kv_tokens=65536, max_batch_tokens=4096)
        values.update(limits)
        return ContinuousScheduler(runner, metrics=runner.metrics, threads=threads, **values)

    def works(n: int, waited: float = 0.0) -> list[Work]:
        out = [Work("A dog.", 4, GREEDY, lambda *_: None) for _ in range(n)]
        for w in out:
            w.enqueued -= waited
        return out

    def running(n: int) -> dict[Any, _Running]:
        sources = torch_engine.encode_texts(["A man walks."] * n)
        batch = torch_engine.new_batch(torch_engine.sentences(sources, max_length=8), 1)
        return {(id(torch_engine), 1, 0): _Running(torch_engine, batch)}

    # two idle threads share the queue: each takes half, within its row budget
    s = scheduler(threads=2)
    s.submit(works(20))
    assert len(s._schedule(0, {})) == 8  # ceil(20 / 2) = 10, capped at 8 per thread
    assert len(s._schedule(1, {})) == 8
    assert s.depth == 4
    # a thread past its fair share leaves a newcomer to the idle one
    s = scheduler(threads=2)
    s._sentences[0] = 7
    s.submit(works(1))
    assert s._schedule(0, running(7)) == []
    assert len(s._schedule(1, {})) == 1
    # a busy thread with one free row of 8 waits for half of its rows to be free ...
    s = scheduler()
    s._sentences[0] = 7
    s.submit(works(1, waited=61.0))  # (however long the head has waited in the queue)
    assert s._schedule(0, running(7)) == []
    # ... or until it has stepped `steps` times with room while sentences waited
    s = scheduler(admission=Admission(share=0.5, steps=2))
    s._sentences[0] = 7
    s.submit(works(1))
    assert s._schedule(0, running(7)) == [] and s._schedule(0, running(7)) == []
    assert len(s._schedule(0, running(7))) == 1
    # the KV budget: one greedy sentence reserves 8 output + 4 source positions
    s = scheduler(max_kv_tokens=30)
    s.submit(works(4))
    assert len(s._schedule(0, {})) == 2  # (2 x 8 + 2 x 4) = 24 <= 30 < 36
    # an idle thread runs one sentence even when it is over the whole budget
    s = scheduler(max_kv_tokens=5)
    s.submit(works(2))
    assert len(s._schedule(0, {})) == 1
