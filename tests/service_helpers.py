"""Helpers for the service tests: settings for tiny models, and a real server in a thread."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from loadtest.runner import wait_ready
from service.app import create_app
from service.metrics import Metrics
from service.settings import Settings
from service.translator import Translator

# The test being set up or run (tests/conftest.py sets it before the test's fixtures).
CURRENT: dict[str, pytest.Item] = {}


def starting_a_server(what: str) -> None:
    """Called by every helper that starts a server: in a run that leaves slow tests out
    (`pytest -m "not slow"`), a test that starts one without the slow marker fails, so the
    fast loop stays fast and the marker stays complete."""
    item = CURRENT.get("item")
    if item is None or item.get_closest_marker("slow") is not None:
        return
    if "slow" in (item.config.getoption("markexpr") or ""):
        pytest.fail(f"{item.nodeid} starts {what}: mark it @pytest.mark.slow")


# Proxy variables (either case): a service started by a test gets none, so that neither it
# nor a client it might make sends loopback traffic through the shell's proxy.
PROXY_VARIABLES = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "FTP_PROXY"}


def clean_env(**nmt: str) -> dict[str, str]:
    """The environment for a service process a test starts: this one's, without any NMT_*
    variable or proxy setting of the caller's shell, plus `nmt` (max_wait_ms="5" sets
    NMT_MAX_WAIT_MS)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("NMT_") and k.upper() not in PROXY_VARIABLES
    }
    env |= {f"NMT_{k.upper()}": v for k, v in nmt.items()}
    return env


def tiny_settings(models_dir: Path, **overrides: Any) -> Settings:
    """Settings for the tiny models: ONNX with the torch fallback, one CPU thread, short waits.

    The exported graphs are cached beside the models directory, so a test session exports
    each tiny model once.
    """
    values: dict[str, Any] = dict(
        models_dir=models_dir,
        backend="auto",
        device="cpu",
        precision="fp32",
        threads=1,
        max_wait_ms=2,
        default_beam_size=1,
        log_level="warning",
        artifacts_dir=Path(models_dir).parent / "onnx-artifacts",
    )
    values.update(overrides)
    return Settings(**values)


@dataclass
class Served:
    """A running server: its URL, the app, and a client bound to it."""

    url: str
    app: FastAPI
    client: httpx.Client

    @property
    def translator(self) -> Translator:
        return self.app.state.translator  # type: ignore[no-any-return]

    @property
    def metrics(self) -> Metrics:
        return self.app.state.metrics  # type: ignore[no-any-return]


@contextmanager
def serve(settings: Settings, *, wait_loaded: bool = True) -> Iterator[Served]:
    """Run the app under uvicorn on 127.0.0.1 (a free port) in a thread; stop it gracefully."""
    starting_a_server("a service")
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    # Listening before uvicorn starts: early connections wait in the backlog, no polling.
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
            client.get("/health/live").raise_for_status()  # answered once the lifespan started
            if wait_loaded:
                assert app.state.translator.loaded.wait(60), "models did not load"
            yield Served(url, app, client)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """One sample of a /metrics page (Prometheus text format); 0 when absent, as a counter
    or gauge that never moved would be."""
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def translate_body(text: str | list[str], **extra: Any) -> dict[str, Any]:
    return {"text": text, "source_lang": "en", "target_lang": "de", "max_length": 8, **extra}


@asynccontextmanager
async def in_process(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan, in this event loop, and an ASGI client (no sockets)."""
    starting_a_server("a service (in process)")
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://svc", timeout=30) as client,
        app.router.lifespan_context(app),
    ):
        assert await asyncio.to_thread(app.state.translator.loaded.wait, 60)
        yield app, client


async def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    """Yield to the loop until condition holds (the event under test, not a guessed delay)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def service_process(
    command: list[str], url: str, *, cwd: Path, env: dict[str, str], log: Path, timeout: float
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server command until the block ends; fail with its log if it never gets ready.

    env is the whole environment: build it with clean_env."""
    starting_a_server(f"a server process ({Path(command[0]).name})")
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        try:
            wait_ready(url, timeout, alive=lambda: process.poll() is None)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"{exc}\n{log.read_text()[-3000:]}")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
