"""Where sentences are tokenized: on the pair's engine thread, every waiting request in one
call (NMT_TOKENIZE=engine), or per request on the event loop (loop, the path before); a
request holding a sentence too long for the model fails whole, with the same error either
way, under both schedulers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from model.tokenizer import Tokenizer
from service.engine.base import Translation
from service.engine.loader import load_engine
from service.engine.torch_engine import TorchEngine
from service.errors import InputTooLong
from service.metrics import Metrics
from service.registry import DecodeOptions, ModelRunner
from service.scheduler import UNCOUNTED, Work, fitting, tokenize
from tests.service.test_scheduler import make_batcher
from tests.service_helpers import wait_until

T = TypeVar("T")
GREEDY = DecodeOptions(beam_size=1, max_length=6, num_alternatives=0)
SCHEDULERS = ["static", "continuous"]
LONG = "q " * 90  # over the tiny models' 63 source tokens


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class RecordingTokenizer(Tokenizer):
    """The real tokenizer; each encode call's thread and number of texts is noted."""

    def __init__(self, inner: Tokenizer) -> None:
        self.__dict__.update(inner.__dict__)
        self.calls: list[tuple[str, int]] = []

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        self.calls.append((threading.current_thread().name, len(texts)))
        return super().encode(texts)


class GatedEngine(TorchEngine):
    """The real engine, held inside its first translate/step call until the gate opens."""

    def __init__(self, inner: TorchEngine) -> None:
        self.__dict__.update(inner.__dict__)
        self.recorder = RecordingTokenizer(inner.tokenizer)
        self.tokenizer = self.recorder
        self.entered = threading.Event()
        self.gate = threading.Event()

    def _hold(self) -> None:
        self.entered.set()
        assert self.gate.wait(30)

    def translate(self, texts: list[str], **options: Any) -> list[Translation]:
        self._hold()
        return super().translate(texts, **options)

    def step_top_k(self, state: Any, tokens: Any, k: int) -> Any:
        self._hold()
        return super().step_top_k(state, tokens, k)


@pytest.fixture
def engine(tiny_model_dir: Path) -> GatedEngine:
    inner = load_engine(tiny_model_dir, backend="torch", device="cpu", precision="fp32")
    assert isinstance(inner, TorchEngine)
    return GatedEngine(inner)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_waiting_requests_are_tokenized_together_on_the_engine_thread(
    engine: GatedEngine, scheduler: str
) -> None:
    requests = [["A man walks.", "A dog runs."], ["Two girls sing."], ["A cat sleeps."]]

    async def scenario() -> list[list[str]]:
        batcher, _, _ = make_batcher(engine, scheduler=scheduler)
        first = asyncio.create_task(batcher.submit(["Hi."], None, GREEDY))
        assert await asyncio.to_thread(engine.entered.wait, 30)
        # The engine is busy: three requests wait, none tokenized yet.
        tasks = [asyncio.create_task(batcher.submit(r, None, GREEDY)) for r in requests]
        await wait_until(lambda: batcher.depth == 4)
        engine.recorder.calls.clear()
        engine.gate.set()
        await first
        results = await asyncio.gather(*tasks)
        await batcher.close()
        return [[t.translation.text for t in r] for r in results]

    got = run(scenario())
    calls = engine.recorder.calls
    # One call counted the four waiting sentences at once, off the event loop.
    assert (threading.main_thread().name, 4) not in calls
    assert all(name.startswith("engine-en-de") for name, _ in calls)
    counted = [n for _, n in calls]
    # and never again: both schedulers decode the ids counted ("Hi." was counted before)
    assert counted == [4]
    alone = [
        [engine.translate([t], beam_size=1, max_length=6)[0].text for t in r] for r in requests
    ]
    assert got == alone


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_loop_mode_counts_each_request_on_the_event_loop(
    engine: GatedEngine, scheduler: str
) -> None:
    async def scenario() -> None:
        batcher, _, _ = make_batcher(engine, scheduler=scheduler, tokenize_on="loop")
        engine.gate.set()
        engine.recorder.calls.clear()
        await asyncio.gather(*(batcher.submit([t], None, GREEDY) for t in ["A man.", "A dog."]))
        await batcher.close()

    run(scenario())
    main = threading.main_thread().name
    on_loop = [n for name, n in engine.recorder.calls if name == main]
    assert on_loop == [1, 1]
    # and the engine tokenizes them again, on its own thread (the path before)
    assert any(name.startswith("engine-en-de") for name, _ in engine.recorder.calls)


@pytest.mark.parametrize("tokenize_on", ["engine", "loop"])
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_a_request_with_a_too_long_sentence_fails_whole(
    engine: GatedEngine, scheduler: str, tokenize_on: str
) -> None:
    n = len(engine.tokenizer.encode([LONG])[0])
    limit = engine.max_positions - 1
    assert n > limit

    async def scenario() -> None:
        batcher, metrics, _ = make_batcher(engine, scheduler=scheduler, tokenize_on=tokenize_on)
        engine.gate.set()
        with pytest.raises(InputTooLong) as err:
            await batcher.submit(["A man.", LONG, "A dog.", LONG], None, GREEDY)
        # the first too-long sentence names the error; nothing of the request was decoded
        assert str(err.value) == (
            f"sentence 1 has {n} tokens; the model takes at most {limit} per sentence"
        )
        assert metrics.value("nmt_input_tokens_total", pair="en-de") == 0
        assert batcher.depth == 0
        # the batcher keeps serving
        [ok] = await batcher.submit(["A cat."], None, GREEDY)
        assert (
            ok.translation.text == engine.translate(["A cat."], beam_size=1, max_length=6)[0].text
        )
        await batcher.close()

    run(scenario())


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_a_request_cancelled_before_it_is_tokenized_leaves_the_queue(
    engine: GatedEngine, scheduler: str
) -> None:
    async def scenario() -> None:
        batcher, metrics, _ = make_batcher(engine, scheduler=scheduler)
        first = asyncio.create_task(batcher.submit(["Hi."], None, GREEDY))
        assert await asyncio.to_thread(engine.entered.wait, 30)
        gone = asyncio.create_task(batcher.submit(["A man.", "A dog."], None, GREEDY))
        await wait_until(lambda: batcher.depth == 2)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert batcher.depth == 0
        assert metrics.value("nmt_dropped_sentences_total", pair="en-de") == 2
        engine.gate.set()
        await first
        await batcher.close()

    run(scenario())


def test_tokenize_refuses_a_request_by_its_first_too_long_sentence(
    engine: GatedEngine,
) -> None:
    runner = ModelRunner("en-de", engine, None, Metrics())

    def refusal(index: int) -> Callable[[int, int], Exception]:
        return lambda tokens, limit: ValueError(index, tokens, limit)

    def request(*texts: str) -> list[Work]:
        return [
            Work(t, UNCOUNTED, GREEDY, lambda *_: None, refusal(i)) for i, t in enumerate(texts)
        ]

    good, bad = request("A man.", "A dog."), request("A cat.", LONG, LONG)
    accepted, refused = tokenize(runner, [good, bad])
    assert [n for _, n in engine.recorder.calls] == [5]  # one call for both requests
    assert accepted == good
    ids = engine.tokenizer.encode(["A man.", "A dog."])
    assert [w.source for w in good] == ids
    assert [w.n_tokens for w in good] == [len(i) for i in ids]
    [(request_refused, error)] = refused
    assert request_refused is bad
    assert error.args == (1, bad[1].n_tokens, engine.max_positions - 1)
    # counted already (the loop's path): only the check, no tokenizer call
    again = request("A man.")
    again[0].n_tokens = 3
    calls = len(engine.recorder.calls)
    assert tokenize(runner, [again]) == (again, [])
    assert len(engine.recorder.calls) == calls


def test_fitting_takes_what_fits_the_token_and_sentence_budgets() -> None:
    assert fitting([], 30) == 0
    assert fitting([40], 30) == 1  # one sentence always fits
    assert fitting([10, 10, 10, 10], 30) == 3
    assert fitting([5, 5, 20], 30) == 2  # padded to the longest: 3 x 20 > 30
    assert fitting([5, 5, 5, 5], 4096, max_sentences=2) == 2
