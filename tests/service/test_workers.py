"""NMT_WORKERS: several server processes on one port. Real `python -m service` processes on the
tiny models: they share the port, /metrics sums them, readiness is the group's, a worker
killed is replaced, workers that fail to start stop the service, rate limits are shared
through a real redis-server, workers starting at once export each graph once, and SIGTERM
under load (tests/service/test_shutdown.py, with two workers) loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.settings import Settings
from tests.recording_client import BODY, REPO, redis_server, service, service_env
from tests.service_helpers import free_port, metric_value

pytestmark = pytest.mark.slow  # python -m service processes


def worker_pids(parent: int) -> set[int]:
    """The supervisor's worker processes (multiprocessing's resource tracker excluded)."""
    pids = set()
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        command = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"spawn_main" in command:
            pids.add(int(child))
    return pids


def fresh_post(url: str, body: dict[str, object] = BODY, **headers: str) -> httpx.Response:
    """One request on a connection of its own, so that the kernel picks a worker each time."""
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
        return client.post("/v1/translate", json=body, headers={"connection": "close", **headers})


def ready_status(url: str) -> int:
    return httpx.get(f"{url}/health/ready", headers={"connection": "close"}).status_code


def scrape(url: str) -> str:
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
        return client.get("/metrics", headers={"connection": "close"}).text


def test_workers_share_the_port_and_sum_their_metrics(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"")  # a previous run's: removed at start
    env = service_env(tiny_models_dir, workers="2", scheduler="continuous") | {
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)
    }
    with service(env, tmp_path / "service.log") as proc:
        workers = worker_pids(proc.popen.pid)
        assert len(workers) == 2
        answers = [fresh_post(proc.url) for _ in range(40)]
        assert {r.status_code for r in answers} == {200}
        assert len({r.json()["translations"][0]["text"] for r in answers}) == 1
        # Both workers served (each writes its samples under its pid), and whichever answers
        # /metrics counts every request of both.
        served = {int(p.stem.split("_")[-1]) for p in metrics_dir.glob("counter_*.db")}
        assert served == workers
        for _ in range(4):
            exposition = scrape(proc.url)
            assert (
                metric_value(
                    exposition,
                    "nmt_requests_total",
                    route="/v1/translate",
                    method="POST",
                    status="200",
                )
                == 40
            )
            # gauges: the sum over the live workers, each with the pair's whole budget
            budget = metric_value(exposition, "nmt_kv_cache_budget_tokens", pair="en-de")
            assert budget == 2 * Settings().max_kv_tokens
        proc.sigterm()
        assert proc.popen.wait(60) in (0, -signal.SIGTERM)
        log = proc.output()
    assert "with 2 worker processes of 1 engine thread" in log
    assert "Traceback" not in log, log[-3000:]
    assert not list(metrics_dir.glob("counter_1.db"))


def test_a_killed_worker_is_replaced_and_readiness_waits_for_it(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    env = service_env(tiny_models_dir, workers="2")
    with service(env, tmp_path / "service.log") as proc:
        before = worker_pids(proc.popen.pid)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = worker_pids(proc.popen.pid)
            if len(now) == 2 and victim not in now:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"no replacement for worker {victim}:\n{proc.output()[-3000:]}")
        # The group is not ready while the replacement loads (whichever worker answers), and
        # ready again once it has; then every request is served.
        assert ready_status(proc.url) == 503
        deadline = time.monotonic() + 60
        while ready_status(proc.url) != 200:
            assert time.monotonic() < deadline, proc.output()[-3000:]
            time.sleep(0.1)
        assert {fresh_post(proc.url).status_code for _ in range(20)} == {200}
        log = proc.output()
    assert f"died (exit {-signal.SIGKILL})" in log, log[-3000:]


def test_workers_share_one_rate_limit_through_redis(tiny_models_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = service_env(
        tiny_models_dir,
        workers="2",
        api_keys="shared-key",
        rate_limit="6/hour",
        rate_limit_storage=f"redis://127.0.0.1:{port}",
    )
    with redis_server(tmp_path, port=port), service(env, tmp_path / "service.log") as proc:
        statuses = [
            fresh_post(proc.url, **{"X-API-Key": "shared-key"}).status_code for _ in range(10)
        ]
        exposition = scrape(proc.url)
    assert statuses == [200] * 6 + [429] * 4
    assert metric_value(exposition, "nmt_rejections_total", reason="rate_limited") == 4


def test_workers_starting_at_once_export_each_graph_once(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    artifacts = tmp_path / "artifacts"  # empty: both workers find every graph missing
    env = service_env(tiny_models_dir, workers="2", artifacts_dir=str(artifacts))
    with service(env, tmp_path / "service.log") as proc:
        assert fresh_post(proc.url).status_code == 200
        log = proc.output()
    pairs = sorted(p.name for p in tiny_models_dir.iterdir() if (p / "config.json").exists())
    exports = [line for line in log.splitlines() if "exporting the fp32 graphs" in line]
    assert len(exports) == len(pairs), log[-3000:]
    assert sorted(p.parent.name.rsplit("-", 1)[0] for p in artifacts.glob("*/fp32")) == pairs
    assert not list(artifacts.glob("*/.*")), "a temporary directory was left behind"


def test_workers_that_fail_to_start_stop_the_service(tmp_path: Path) -> None:
    # A replacement would fail the same way: the supervisor stops with uvicorn's exit code 3.
    env = service_env(tmp_path / "no-models-here", workers="2")
    run = subprocess.run(
        [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 3, run.stderr[-3000:]
    assert "failed to start (3): stopping" in run.stderr, run.stderr[-3000:]
    assert "starting another" not in run.stderr
