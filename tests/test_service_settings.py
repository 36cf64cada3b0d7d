"""Settings from NMT_* variables, and `python -m service` as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from loadtest.runner import wait_ready
from service.settings import Settings, settings_table
from tests.service_helpers import free_port

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
    assert settings.resolved_precision("cuda") == "fp32"  # fp16 measured no faster on a GPU
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
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, 60, alive=lambda: proc.poll() is None)
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
