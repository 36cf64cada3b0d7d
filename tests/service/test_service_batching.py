"""Batching, backpressure, deadlines, disconnects, readiness and draining through HTTP.

The batch-sharing tests hold batches open (max_wait_ms), which only the static scheduler
does: they run it (NMT_SCHEDULER=static); the continuous one has its own tests below."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import httpx
import pytest

import service.translator
from service.registry import ModelRunner
from tests.service_helpers import in_process, serve, tiny_settings, translate_body, wait_until

pytestmark = pytest.mark.slow  # the app with its lifespan: in process or served

HOLD = 60_000  # max_wait_ms that keeps a batch open until it fills or the service drains


@pytest.fixture
def static(monkeypatch: pytest.MonkeyPatch) -> None:
    """The static scheduler, for every Batcher the service builds."""
    monkeypatch.setenv("NMT_SCHEDULER", "static")


def batch_stats(app: object) -> tuple[int, int]:
    metrics = app.state.metrics  # type: ignore[attr-defined]
    labels = {"pair": "en-de", "backend": "onnx"}
    return (
        int(metrics.value("nmt_batch_size_count", **labels)),
        int(metrics.value("nmt_batch_size_sum", **labels)),
    )


def test_concurrent_requests_share_batches(tiny_models_dir: Path, static: None) -> None:
    async def scenario() -> None:
        settings = tiny_settings(tiny_models_dir, max_batch_size=8, max_wait_ms=HOLD)
        async with in_process(settings) as (app, client):
            texts = [f"A man number {i} walks." for i in range(8)]
            replies = await asyncio.gather(
                *(client.post("/v1/translate", json=translate_body(t)) for t in texts)
            )
            assert [r.status_code for r in replies] == [200] * 8
            # Eight requests, one engine call of eight sentences.
            assert batch_stats(app) == (1, 8)

    asyncio.run(scenario())


def test_batching_off_runs_one_sentence_per_call(tiny_models_dir: Path, static: None) -> None:
    async def scenario() -> None:
        async with in_process(tiny_settings(tiny_models_dir, max_batch_size=1)) as (app, client):
            replies = await asyncio.gather(
                *(
                    client.post("/v1/translate", json=translate_body(t))
                    for t in ["A.", "B.", "C.", "D."]
                )
            )
            assert all(r.status_code == 200 for r in replies)
            assert batch_stats(app) == (4, 4)

    asyncio.run(scenario())


def test_full_queue_gets_429_and_accepted_work_is_drained_at_shutdown(
    tiny_models_dir: Path, static: None
) -> None:
    async def scenario() -> None:
        settings = tiny_settings(tiny_models_dir, max_queue_size=2, max_wait_ms=HOLD)
        async with in_process(settings) as (app, client):
            batcher = app.state.translator.batchers["en-de"]
            held = asyncio.create_task(
                client.post(
                    "/v1/translate", json=translate_body("One dog runs. Another dog sleeps.")
                )
            )  # two sentences fill the queue
            await wait_until(lambda: batcher.depth == 2)
            r = await client.post("/v1/translate", json=translate_body("A cat."))
            assert r.status_code == 429
            assert r.headers["retry-after"] == "1"
            assert r.json()["error"]["type"] == "queue_full"
            assert app.state.metrics.value("nmt_rejections_total", reason="queue_full") == 1
            assert not held.done()
        # Leaving the lifespan drained the held batch instead of dropping it.
        async with asyncio.timeout(10):
            assert (await held).status_code == 200

    asyncio.run(scenario())


def test_past_deadline_gets_504_and_its_work_is_dropped(
    tiny_models_dir: Path, static: None
) -> None:
    async def scenario() -> None:
        # The batch is held open far past the deadline, so only the deadline can end the
        # request; 2 s leaves the sentence time to reach the queue on a busy machine.
        settings = tiny_settings(tiny_models_dir, request_timeout_s=2, max_wait_ms=HOLD)
        async with in_process(settings) as (app, client):
            r = await client.post("/v1/translate", json=translate_body("A slow dog."))
            assert r.status_code == 504 and r.json()["error"]["type"] == "deadline_exceeded"
            metrics = app.state.metrics
            await wait_until(
                lambda: metrics.value("nmt_dropped_sentences_total", pair="en-de") == 1
            )
            assert app.state.translator.batchers["en-de"].depth == 0
            assert batch_stats(app) == (0, 0)

    asyncio.run(scenario())


def test_disconnected_client_work_is_dropped(tiny_models_dir: Path, static: None) -> None:
    settings = tiny_settings(tiny_models_dir, max_wait_ms=HOLD, max_batch_size=8)
    with serve(settings) as served:
        batcher = served.translator.batchers["en-de"]

        async def scenario() -> None:
            async with httpx.AsyncClient(base_url=served.url, timeout=60, trust_env=False) as c:
                waiting = asyncio.create_task(
                    c.post("/v1/translate", json=translate_body("A dog."))
                )
                # The batch stays open: the sentence is queued; then the client gives up.
                await wait_until(lambda: batcher.depth == 1, timeout=60)
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
            # the client's connection is closed now
            await wait_until(
                lambda: served.metrics.value("nmt_dropped_sentences_total", pair="en-de") == 1,
                timeout=60,
            )

        asyncio.run(scenario())
        assert batcher.depth == 0
        assert served.metrics.value("nmt_rejections_total", reason="client_disconnected") == 1


def test_ready_is_503_until_models_are_loaded(
    tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    real_load = service.translator.load_runner

    def held_load(*args: object, **kwargs: object) -> ModelRunner:
        assert gate.wait(30)
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(service.translator, "load_runner", held_load)
    with serve(tiny_settings(tiny_models_dir), wait_loaded=False) as served:
        assert served.client.get("/health/live").status_code == 200
        ready = served.client.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "loading"
        r = served.client.post("/v1/translate", json=translate_body("A dog."))
        assert r.status_code == 503 and r.json()["error"]["type"] == "not_ready"
        assert "retry-after" in r.headers
        gate.set()
        assert served.translator.loaded.wait(30)
        assert served.client.get("/health/ready").json()["status"] == "ok"
        assert served.client.post("/v1/translate", json=translate_body("A dog.")).status_code == 200


def test_missing_models_dir_fails_at_startup(tmp_path: Path) -> None:
    async def scenario() -> None:
        with pytest.raises(FileNotFoundError):
            async with in_process(tiny_settings(tmp_path / "absent")):
                pass

    asyncio.run(scenario())


def test_continuous_scheduler_serves_as_static_does_and_drains_at_shutdown(
    tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default scheduler through HTTP: concurrent requests (greedy, beam, alternatives)
    get the static scheduler's translations; leaving the lifespan right after sending them
    still answers every one."""
    bodies = [
        translate_body(f"A man number {i} walks.", beam_size=1 + i % 3, alternatives=i % 2)
        for i in range(8)
    ]

    async def scenario(scheduler: str) -> list[object]:
        monkeypatch.setenv("NMT_SCHEDULER", scheduler)
        settings = tiny_settings(tiny_models_dir, max_batch_size=8, max_wait_ms=HOLD)
        async with in_process(settings) as (app, client):
            assert app.state.translator.batchers["en-de"].scheduler == scheduler
            replies = await asyncio.gather(*(client.post("/v1/translate", json=b) for b in bodies))
            assert [r.status_code for r in replies] == [200] * 8
            late = [asyncio.create_task(client.post("/v1/translate", json=b)) for b in bodies]
            batcher = app.state.translator.batchers["en-de"]

            def accepted() -> float:
                """Sentences the scheduler took (queue wait observed) or holds."""
                taken = app.state.metrics.value("nmt_queue_wait_seconds_count", pair="en-de")
                return taken + batcher.depth

            await wait_until(lambda: accepted() >= 16)
        # the lifespan drained the late ones
        async with asyncio.timeout(30):
            assert [(await r).status_code for r in late] == [200] * 8
        if scheduler == "continuous":
            metrics = app.state.metrics
            assert metrics.value("nmt_admitted_per_step_sum", pair="en-de") >= 8
            assert metrics.value("nmt_running_sentences", pair="en-de") == 0
        return [r.json()["translations"] for r in replies]

    assert asyncio.run(scenario("continuous")) == asyncio.run(scenario("static"))
