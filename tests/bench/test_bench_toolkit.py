"""bench.toolkit: the A/B loop, the engine-alone rate, memory, and the service launcher with
its raw-socket client against a real `python -m service` on the tiny models."""

from __future__ import annotations

import asyncio
import math
import sys
from pathlib import Path

import pytest

from bench.toolkit import (
    ServiceProcess,
    closed_loop,
    engine_rate,
    in_turn,
    latency_stats,
    memory_mib,
    percentile,
    reset_peak_rss,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 100)) == (
        50.0,
        95.0,
        100.0,
    )
    assert latency_stats([0.010, 0.020, 0.030]) == {"p50_ms": 20.0, "p95_ms": 30.0, "p99_ms": 30.0}
    assert all(math.isnan(v) for v in latency_stats([]).values())


def test_in_turn_runs_every_side_once_a_round_in_order() -> None:
    calls: list[str] = []

    def run(side: str) -> str:
        calls.append(side)
        sum(i * i for i in range(20_000))  # some CPU time to measure
        return side * 2

    runs = in_turn({"A": lambda: run("A"), "B": lambda: run("B")}, rounds=3)
    assert calls == ["A", "B"] * 3
    assert [t.value for t in runs["A"]] == ["AA"] * 3 and len(runs["B"]) == 3
    assert all(t.seconds > 0 and t.cpu_seconds >= 0 for side in runs.values() for t in side)


def test_engine_rate_walks_the_texts_once_or_cycles_until_the_time_is_up(
    tiny_model_dir: Path, artifacts_dir: Path
) -> None:
    from service.engine.loader import load_engine

    engine = load_engine(tiny_model_dir, threads=1, streams=1, artifacts_root=artifacts_dir)
    texts = [f"A dog number {i} runs." for i in range(10)]
    once = engine_rate(engine, texts, batch=4, beam_size=1, duration=600, cycle=False)
    assert once["sentences"] == 10 and once["per_s"] > 0  # batches of 4, 4 and 2
    cycled = engine_rate(engine, texts, batch=4, beam_size=1, duration=0.0)
    assert cycled["sentences"] == 4  # the time was up after the first batch


@linux_only
def test_memory_reads_resident_and_peak_and_resets_the_peak() -> None:
    reset_peak_rss()
    rss, peak = memory_mib()
    block = bytearray(64 * 2**20)  # touched: resident
    block[::4096] = b"x" * len(block[::4096])
    _, grown = memory_mib()
    del block
    assert 0 < rss <= peak and grown >= peak + 50
    reset_peak_rss()
    now, reset = memory_mib()
    assert reset < grown and reset >= now


@pytest.mark.slow
def test_service_process_serves_and_the_client_counts_answers_and_errors(
    tiny_models_dir: Path, artifacts_dir: Path, tmp_path: Path
) -> None:
    env = {
        "NMT_MODELS_DIR": str(tiny_models_dir),
        "NMT_ARTIFACTS_DIR": str(artifacts_dir),
        "NMT_THREADS": "1",
        "NMT_LOG_LEVEL": "warning",
        # static: nmt_batch_size then counts each sentence once (continuous: once a step)
        "NMT_SCHEDULER": "static",
    }
    texts = [f"A dog number {i} runs." for i in range(6)]
    body = {"source_lang": "en", "target_lang": "de", "beam_size": 1, "max_length": 8}
    with ServiceProcess(env, tmp_path / "service.log") as server:
        assert server.wait_ready(300) > 0
        calls0, sent0 = server.batch_stats()
        load = asyncio.run(closed_loop(server.port, texts, [body], 2, 600, cycle=False))
        calls1, sent1 = server.batch_stats()
        # every text answered once, after one warm-up request per connection
        assert (len(load.latencies), load.errors) == (6, 0)
        assert sent1 - sent0 == 8 and 0 < calls1 - calls0 <= 8
        assert load.per_s > 0 and load.client_cpu_pct >= 0
        bad = asyncio.run(
            closed_loop(
                server.port, texts[:3], [{**body, "target_lang": "xx"}], 1, 600, cycle=False
            )
        )
        assert (len(bad.latencies), bad.errors) == (0, 3)
        rss, peak = server.memory_mib()
        assert 0 < rss <= peak
    assert server.proc.poll() is not None  # stopped (whether it drains: test_service_settings)


@pytest.mark.slow
def test_service_process_that_dies_fails_fast_with_its_log(tmp_path: Path) -> None:
    server = ServiceProcess({"NMT_BACKEND": "no-such-backend"}, tmp_path / "service.log")
    try:
        with pytest.raises(RuntimeError, match="service.log"):
            server.wait_ready(300)
    finally:
        server.stop()
    assert server.proc.returncode not in (None, 0)


def test_scheduler_rate_keeps_its_sentences_in_flight_and_counts_them(
    tiny_model_dir: Path, artifacts_dir: Path
) -> None:
    from bench.continuous import scheduler_rate
    from service.engine.loader import load_engine
    from service.metrics import Metrics
    from service.registry import ModelRunner

    engine = load_engine(tiny_model_dir, threads=1, streams=1, artifacts_root=artifacts_dir)
    metrics = Metrics()
    runner = ModelRunner("en-de", engine, None, metrics)
    texts = [f"A dog number {i} runs." for i in range(10)]
    row = scheduler_rate(runner, texts, beam=1, clients=4, duration=0.5)
    assert row["clients"] == 4 and row["sentences"] > 0
    assert row["per_s"] == pytest.approx(row["sentences"] / row["seconds"], rel=0.01)
    # every sentence went through the scheduler's engine thread, none failed
    decoded = metrics.value("nmt_admitted_per_step_sum", pair="en-de")
    assert decoded >= row["sentences"]
