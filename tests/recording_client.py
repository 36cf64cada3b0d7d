"""A load client that records the outcome of every request, and service processes to load.

Shared by the shutdown, nginx and rate-limit tests: each request ends as an answer (its
status and headers), `refused` (the connection could not be opened, so nothing was sent), or
`lost` (sent, and the connection dropped before an answer): what a graceful shutdown must
never produce.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from loadtest.runner import wait_ready
from tests.service_helpers import clean_env, free_port, starting_a_server

REPO = Path(__file__).resolve().parents[1]
BODY = {"text": "A man rides a bike.", "source_lang": "en", "target_lang": "de", "max_length": 6}


@dataclass
class Outcome:
    kind: str  # "answer", "refused" or "lost"
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""
    at: float = 0.0  # time.monotonic() when it ended


@dataclass
class Record:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self) -> Counter[str]:
        return Counter(f"{o.status}" if o.kind == "answer" else o.kind for o in self.outcomes)

    def lost(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == "lost"]

    def unanswered_properly(self) -> list[Outcome]:
        """Answers other than 200, or 429/503 with Retry-After."""
        return [
            o
            for o in self.outcomes
            if o.kind == "answer"
            and not (o.status == 200 or (o.status in (429, 503) and "retry-after" in o.headers))
        ]


async def _one(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> Outcome:
    try:
        r = await client.post(path, json=BODY, headers=headers)
    except httpx.ConnectError as exc:
        return Outcome("refused", error=repr(exc), at=time.monotonic())
    except httpx.HTTPError as exc:
        return Outcome("lost", error=f"{type(exc).__name__}: {exc}", at=time.monotonic())
    return Outcome("answer", r.status_code, dict(r.headers), at=time.monotonic())


async def run_load(
    url: str,
    *,
    clients: int,
    until: Callable[[Record], bool],
    max_requests: int = 5000,
    max_seconds: float = 120,
    path: str = "/v1/translate",
    headers: dict[str, str] | None = None,
    stop_on_refused: bool = True,
    record: Record | None = None,
) -> Record:
    """`clients` workers sharing one keep-alive pool, each sending one request after another,
    until `until(record)` holds (or a worker's connection is refused, the server being gone),
    bounded in count and time. Outcomes go into `record` as they come, when one is given."""
    record = Record() if record is None else record
    deadline = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=url, timeout=60, limits=limits, trust_env=False
    ) as client:

        async def worker() -> None:
            while (
                len(record.outcomes) < max_requests
                and time.monotonic() < deadline
                and not until(record)
            ):
                outcome = await _one(client, path, headers or {})
                record.outcomes.append(outcome)
                if outcome.kind == "refused" and stop_on_refused:
                    return
                if outcome.status in (429, 503) and "retry-after" in outcome.headers:
                    # A well-behaved client: told when to come back, it waits until then.
                    await asyncio.sleep(float(outcome.headers["retry-after"]))

        await asyncio.gather(*(worker() for _ in range(clients)))
    return record


def service_env(models_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a `python -m service` on the tiny models, ONNX Runtime only, with
    the graphs cached where tests/service_helpers.tiny_settings caches them."""
    defaults = {
        "models_dir": str(models_dir),
        "artifacts_dir": str(Path(models_dir).parent / "onnx-artifacts"),
        "backend": "onnx",
        "device": "cpu",
        "threads": "1",
        "default_beam_size": "1",
        "log_level": "info",
    }
    return clean_env(**(defaults | settings))


@dataclass
class Process:
    url: str
    port: int
    popen: subprocess.Popen[bytes]
    log: Path

    def sigterm(self) -> None:
        self.popen.send_signal(signal.SIGTERM)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def service(env: dict[str, str], log: Path, *, port: int | None = None) -> Iterator[Process]:
    """`python -m service` on a free loopback port, ready; killed if still running at the end."""
    starting_a_server("python -m service")
    port = port or free_port()
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(url, 120, alive=lambda: popen.poll() is None)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"{exc}\n{log.read_text()[-3000:]}")
        yield Process(url, port, popen, log)
    finally:
        if popen.poll() is None:
            kill_with_workers(popen)


def kill_with_workers(popen: subprocess.Popen[bytes]) -> None:
    """SIGKILL a service and its worker processes (NMT_WORKERS), which would otherwise serve
    on until they notice that their supervisor is gone."""
    try:
        children = Path(f"/proc/{popen.pid}/task/{popen.pid}/children").read_text().split()
    except OSError:
        children = []
    popen.kill()
    for child in children:
        with suppress(ProcessLookupError):
            os.kill(int(child), signal.SIGKILL)
    popen.wait()


def readiness(url: str) -> int:
    """GET /health/ready on a fresh connection: its status."""
    with httpx.Client(base_url=url, timeout=10, trust_env=False) as client:
        return client.get("/health/ready", headers={"connection": "close"}).status_code


async def wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


@contextmanager
def redis_server(workdir: Path, *, port: int | None = None) -> Iterator[str]:
    """A real redis-server (Debian's) on a loopback port, no persistence: its redis:// URL."""
    import redis

    from tests.delivery.test_delivery import find_tool

    starting_a_server("redis-server")
    exe = find_tool("redis-server")
    port = port or free_port()
    log = workdir / f"redis-{port}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        client = redis.Redis(port=port, socket_connect_timeout=1)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if popen.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}"
    finally:
        popen.terminate()
        popen.wait(30)
