"""Settings from NMT_* variables, and `python -m service` as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from service.settings import Settings, settings_table

REPO = Path(__file__).resolve().parents[1]


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NMT_API_KEYS", " k1,k2 ,,")
    monkeypatch.setenv("NMT_MAX_BATCH_SIZE", "1")
    monkeypatch.setenv("NMT_BACKEND", "torch")
    monkeypatch.setenv("NMT_LOG_LEVEL", "DEBUG")
    settings = Settings()
    assert settings.api_keys == ["k1", "k2"]
    assert (settings.max_batch_size, settings.backend, settings.log_level) == (1, "torch", "debug")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NMT_BACKEND", "tensorrt"),
        ("NMT_MAX_BATCH_SIZE", "0"),
        ("NMT_DEVICE", "tpu"),
        ("NMT_DEFAULT_BEAM_SIZE", "9"),
    ],
)
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_auto_device_and_precision_on_this_machine() -> None:
    settings = Settings(device="cpu")
    assert settings.resolved_device() == "cpu"
    assert settings.resolved_precision("cpu") == "fp32"
    assert settings.resolved_precision("cuda") == "fp16"
    assert Settings(precision="int8").resolved_precision("cpu") == "int8"


def test_every_setting_is_documented() -> None:
    table = settings_table()
    for name, field in Settings.model_fields.items():
        assert field.description, name
        assert f"`NMT_{name.upper()}`" in table


def test_python_m_service_serves_and_stops_on_sigterm(tiny_models_dir: Path) -> None:
    env = {
        **os.environ,
        "NMT_MODELS_DIR": str(tiny_models_dir),
        "NMT_BACKEND": "torch",
        "NMT_THREADS": "1",
        "NMT_LOG_LEVEL": "warning",
    }
    with socket_port() as port:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc)
        r = httpx.post(
            f"{url}/v1/translate",
            json={"text": "A dog.", "source_lang": "en", "target_lang": "de", "max_length": 5},
        )
        assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        # uvicorn drains, runs the lifespan shutdown, then re-raises the signal it caught.
        assert proc.wait(30) in (0, -signal.SIGTERM)
        assert b"Traceback" not in (proc.stdout.read() if proc.stdout else b"")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class socket_port:  # noqa: N801 (used as a context manager)
    """A free loopback port, released just before the server binds it."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *_: object) -> None:
        self.sock.close()


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Poll readiness of a process we cannot hook into, failing fast if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError("the service did not become ready")
