"""Settings from NMT_* variables, and `python -m service` as a real process: every setting
set in its environment, and its effect seen from outside; SIGTERM drains."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from model.tokenizer import TOKENIZER_FILE, Tokenizer
from service.settings import Settings, settings_table
from tests.service_helpers import clean_env, free_port, metric_value, service_process

REPO = Path(__file__).resolve().parents[2]


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


def test_the_shells_settings_never_reach_the_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/conftest.py drops NMT_* settings from this process; clean_env drops them, and
    the shell's proxies, from the services the tests start."""
    fields = {name.upper() for name in Settings.model_fields}
    assert not [n for n in os.environ if n.upper().startswith("NMT_") and n.upper()[4:] in fields]
    assert "127.0.0.1" in os.environ["NO_PROXY"]
    monkeypatch.setenv("https_proxy", "http://proxy.invalid:3128")
    monkeypatch.setenv("NMT_API_KEYS", "from-the-shell")
    env = clean_env(backend="torch")
    assert env["NMT_BACKEND"] == "torch"
    assert "https_proxy" not in env and "NMT_API_KEYS" not in env


# ----- python -m service, a real process -----


@dataclass
class Live:
    """A running `python -m service`: its URL, process and log, and a client with a key."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    client: httpx.Client

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        return metric_value(self.client.get("/metrics").text, name, **labels)


@contextmanager
def live_service(workdir: Path, key: str | None = None, **settings: str) -> Iterator[Live]:
    """`python -m service` with no flags: NMT_HOST and NMT_PORT say where it listens."""
    port = free_port()
    env = clean_env(host="127.0.0.1", port=str(port), **settings)
    url = f"http://127.0.0.1:{port}"
    log = workdir / "service.log"
    command = [sys.executable, "-m", "service"]
    headers = {"X-API-Key": key} if key else {}
    with (
        service_process(command, url, cwd=REPO, env=env, log=log, timeout=120) as process,
        httpx.Client(base_url=url, timeout=60, headers=headers, trust_env=False) as client,
    ):
        yield Live(url, process, log, client)


def body(text: str | list[str], **extra: object) -> dict[str, object]:
    return {"text": text, "source_lang": "en", "target_lang": "de", "max_length": 6, **extra}


def error_type(response: httpx.Response) -> str:
    return str(response.json()["error"]["type"])


# Static scheduler: a batch stays open a minute unless it fills (2 sentences) or its next
# sentence would take it over 20 padded tokens: what closes a batch shows each limit.
REQUESTS = {
    "backend": "torch",
    "device": "cpu",
    "threads": "1",
    "scheduler": "static",
    "max_wait_ms": "60000",
    "max_batch_size": "2",
    "max_batch_tokens": "20",
    "max_queue_size": "3",
    "request_timeout_s": "3",
    "default_beam_size": "2",
    "max_beam_size": "3",
    "max_texts": "2",
    "max_chars": "120",
    "max_body_bytes": "2000",
    "max_html_depth": "3",
    "api_keys": "k1,k3",
    "rate_limit": "100/minute",
    "char_rate_limit": "40/minute",
    "log_level": "warning",
    # A/B knobs whose paths give the same answers: the service serves every check with them.
    "tokenize": "loop",
}


def check_requests(live: Live, tokenizer: Tokenizer) -> None:
    c = live.client
    # host, port: it answers where NMT_HOST and NMT_PORT say. backend, device:
    models = c.get("/v1/models").json()["models"]
    assert {(m["backend"], m["fallback"], m["device"]) for m in models} == {("torch", None, "cpu")}
    # A lone sentence would wait out its deadline in an open batch: the checks below use
    # requests refused before batching (beam 4 is over max_beam_size), which the rate
    # limits count all the same.
    over = body("A dog.", beam_size=4)
    # api_keys, api_keys_file (k2 is only in the file):
    anonymous = httpx.get(f"{live.url}/v1/models", trust_env=False)
    assert anonymous.status_code == 401
    assert c.get("/v1/models", headers={"X-API-Key": "k2"}).status_code == 200
    # rate_limit (k1: 100/minute), rate_limits_file (k3: 1/minute), char_rate_limit (k2):
    assert c.post("/v1/translate", json=over).headers["x-ratelimit-limit"] == "100"
    k3 = {"X-API-Key": "k3"}
    assert c.post("/v1/translate", json=over, headers=k3).status_code == 422
    assert c.post("/v1/translate", json=over, headers=k3).status_code == 429
    chars = body("Two men walk with a dog in the park.", beam_size=4)  # 36 of 40 characters
    k2 = {"X-API-Key": "k2"}
    assert c.post("/v1/translate", json=chars, headers=k2).status_code == 422
    r = c.post("/v1/translate", json=chars, headers=k2)
    assert r.status_code == 429 and "(chars)" in r.json()["error"]["message"], r.text
    # max_texts, max_chars, max_body_bytes, max_beam_size, max_html_depth:
    assert error_type(c.post("/v1/translate", json=body(["A.", "B.", "C."]))) == "too_many_texts"
    assert error_type(c.post("/v1/translate", json=body("a" * 121))) == "input_too_long"
    assert c.post("/v1/translate", json=body("a" * 100, pad="x" * 2000)).status_code == 413
    assert error_type(c.post("/v1/translate", json=body("A.", beam_size=4))) == (
        "beam_size_out_of_range"
    )
    deep = "<div>" * 5 + "A dog." + "</div>" * 5  # 4 elements fit
    r = c.post("/v1/translate", json=body(deep, format="html"))
    assert r.status_code in (400, 422) and "deeper than 3" in r.text, r.text

    asyncio.run(batching(live, tokenizer))
    # log_level warning: none of the start-up's info lines.
    assert "models loaded" not in live.output() and " INFO " not in live.output()


async def batching(live: Live, tokenizer: Tokenizer) -> None:
    def engine_calls() -> tuple[float, float]:
        labels = {"pair": "en-de", "backend": "torch"}
        return (
            live.metric("nmt_batch_size_count", **labels),
            live.metric("nmt_batch_size_sum", **labels),
        )

    headers = {"X-API-Key": "k1"}
    async with httpx.AsyncClient(
        base_url=live.url, timeout=60, headers=headers, trust_env=False
    ) as c:
        # max_batch_size 2, max_wait_ms, default_beam_size 2: two requests, one naming beam
        # 2 and one naming none, close a batch together and run as one engine call (a
        # batch closed by the wait would have kept the first a minute).
        before = engine_calls()
        pair = await asyncio.gather(
            c.post("/v1/translate", json=body("A dog runs.", beam_size=2)),
            c.post("/v1/translate", json=body("A cat sleeps.")),
        )
        assert [r.status_code for r in pair] == [200, 200]
        after = engine_calls()
        assert (after[0] - before[0], after[1] - before[1]) == (1, 2)
        # max_batch_tokens 20: a long sentence cannot share (2 x its tokens > 20), so it
        # runs alone at once and the two short ones fill the next batch; under the default
        # budget the last short one would wait out the deadline.
        long, short = "Zebras quizzically juggle xylophones.", "A dog."
        n_long, n_short = (len(ids) for ids in tokenizer.encode([long, short]))
        assert 2 * n_long > 20 >= 2 * n_short, (n_long, n_short)
        r = await c.post("/v1/translate", json=body(f"{long} {short} {short}", beam_size=2))
        assert r.status_code == 200, r.text
        assert engine_calls()[0] - after[0] == 2
        # request_timeout_s 3, max_queue_size 3: a lone sentence waits in an open batch;
        # a request of 3 more is refused; the lone one gets 504 at its deadline.
        lone = asyncio.create_task(c.post("/v1/translate", json=body("A girl.")))
        async with asyncio.timeout(30):
            while live.metric("nmt_queue_depth", pair="en-de") < 1:
                await asyncio.sleep(0.02)
        full = await c.post("/v1/translate", json=body("A man. A boy. A car."))
        assert full.status_code == 429 and error_type(full) == "queue_full", full.text
        waited = await lone
        assert waited.status_code == 504 and "within 3 s" in waited.text, waited.text


# ONNX Runtime int8 in its own cache, continuous scheduler, translated files, a long grace.
ENGINES = {
    "backend": "onnx",
    "precision": "int8",
    "threads": "6",
    "streams": "2",
    "load_workers": "1",
    "scheduler": "continuous",
    "max_kv_tokens": "5000",
    "admit_share": "0.75",
    "admit_steps": "3",
    "files_ttl_s": "60",
    "max_files": "1",
    "max_file_bytes": "300",
    "max_file_chars": "100",
    "shutdown_grace_s": "600",
    "log_level": "info",
    "json_response": "fastapi",
}


def check_engines(live: Live, workdir: Path) -> None:
    c = live.client
    # backend, precision (threads and streams: no answer shows them; the log does, below):
    models = c.get("/v1/models").json()["models"]
    assert {(m["backend"], m["fallback"], m["precision"]) for m in models} == {
        ("onnx", None, "int8")
    }
    # artifacts_dir: the int8 graphs of both pairs were exported there.
    exported = {p.parent.name.rsplit("-", 1)[0] for p in (workdir / "artifacts").glob("*/int8")}
    assert exported == {"en-de", "de-en"}
    # scheduler continuous, max_kv_tokens:
    assert c.post("/v1/translate", json=body("A dog.")).status_code == 200
    assert live.metric("nmt_admitted_per_step_count", pair="en-de") >= 1
    assert live.metric("nmt_kv_cache_budget_tokens", pair="en-de") == 5000
    # max_file_bytes, max_file_chars:
    form = {"source": "en", "target": "de"}

    def upload(name: str, data: bytes) -> httpx.Response:
        return c.post("/translate_file", data=form, files={"file": (name, data, "text/plain")})

    assert upload("big.txt", b"A dog.\n" * 50).status_code == 413  # 350 bytes
    r = upload("long.txt", "Ä".encode() * 101)  # 101 characters in 202 bytes
    assert r.status_code == 413 and "characters" in r.text, r.text
    # files_dir, max_files 1, files_ttl_s 60:
    first = upload("a.txt", b"A dog.").json()["translatedFileUrl"]
    assert c.get(first).status_code == 200
    stored = list((workdir / "files").glob("*.json"))
    assert len(stored) == 1
    second = upload("b.txt", b"A cat.").json()["translatedFileUrl"]
    assert c.get(first).status_code == 404  # the oldest made room
    [meta] = (workdir / "files").glob("*.json")
    old = time.time() - 61
    os.utime(meta, (old, old))
    assert c.get(second).status_code == 404  # past its time
    # shutdown_grace_s 600: SIGTERM starts the grace window; the second one ends it.
    live.process.send_signal(signal.SIGTERM)
    ready = httpx.get(f"{live.url}/health/ready", trust_env=False, timeout=10)
    assert ready.status_code == 503 and ready.json()["status"] == "stopping"
    assert c.post("/v1/translate", json=body("A dog.")).status_code == 200
    live.process.send_signal(signal.SIGTERM)
    assert live.process.wait(60) in (0, -signal.SIGTERM)
    assert "serving 600 s more" in live.output()
    # log_level info (the requests group's warning hides these):
    assert "models loaded" in live.output()
    # admit_share 0.75, admit_steps 3:
    for pair in ("en-de", "de-en"):
        assert f"{pair}: continuous scheduler on 2 thread(s), admitting once 0.75 of a " in (
            live.output()
        )
        assert "rows is free or after 3 steps with room while sentences wait" in live.output()
    # threads 6, streams 2: each pair's engine decodes 2 batches at once with 3 ORT threads
    # each (unset, threads would be one per core and streams one per thread), and searches
    # on 1 torch thread.
    for pair in ("en-de", "de-en"):
        spread = "2 stream(s), 3 ORT intra-op thread(s) per stream, 1 torch thread(s)"
        assert f"{pair}: onnx engine on cpu/int8: {spread}" in live.output()
    # load_workers 1: the second pair starts loading once the first is done with its int8
    # export (two workers would start both at once; the exports themselves take turns).
    lines = live.output().splitlines()
    loading = [
        n for n, line in enumerate(lines) if "service.translator" in line and "loading" in line
    ]
    quantized = [n for n, line in enumerate(lines) if "symbolic shape inference" in line]
    assert len(loading) == 2 and quantized and loading[0] < quantized[0] < loading[1], lines[:8]


@dataclass(frozen=True)
class Group:
    settings: dict[str, str]
    check: Callable[[Live, Path, Tokenizer], None]
    key: str | None = None


GROUPS = {
    "requests": Group(REQUESTS, lambda live, _, tok: check_requests(live, tok), key="k1"),
    "engines": Group(ENGINES, lambda live, workdir, _: check_engines(live, workdir)),
}
# Set by the fixtures below (paths made per test): models_dir in both groups, host and port
# by live_service, and these.
PATH_SETTINGS = {
    "requests": {"api_keys_file", "rate_limits_file"},
    "engines": {"artifacts_dir", "files_dir"},
}
# Checked by starting a service that must refuse them (test_start_refuses_what_it_cannot_use).
AT_START = {"rate_limit_storage"}
# Started with by tests of their own: workers (tests/service/test_workers.py).
ELSEWHERE = {"workers"}


def test_every_setting_is_started_with() -> None:
    covered = {"models_dir", "host", "port"} | AT_START | ELSEWHERE
    for name, group in GROUPS.items():
        covered |= set(group.settings) | PATH_SETTINGS[name]
    assert set(Settings.model_fields) - covered == set(), "start a service with these"


@pytest.mark.slow
@pytest.mark.parametrize("group", list(GROUPS))
def test_each_setting_takes_effect_in_a_real_process(
    group: str, tiny_models_dir: Path, tmp_path: Path
) -> None:
    settings = dict(GROUPS[group].settings, models_dir=str(tiny_models_dir))
    if group == "requests":
        keys = tmp_path / "keys"
        keys.write_text("# from a mounted secret\nk2\n")
        limits = tmp_path / "limits.json"
        overrides = {"k1": {"char_rate_limit": None}, "k3": {"rate_limit": "1/minute"}}
        limits.write_text(json.dumps(overrides))
        settings |= {"api_keys_file": str(keys), "rate_limits_file": str(limits)}
    else:
        settings |= {
            "artifacts_dir": str(tmp_path / "artifacts"),
            "files_dir": str(tmp_path / "files"),
        }
    tokenizer = Tokenizer(tiny_models_dir / "en-de" / TOKENIZER_FILE)
    with live_service(tmp_path, GROUPS[group].key, **settings) as live:
        GROUPS[group].check(live, tmp_path, tokenizer)


@pytest.mark.slow
def test_start_refuses_what_it_cannot_use(tiny_models_dir: Path) -> None:
    """rate_limit_storage: a Redis nobody runs is an error at start, in one line."""
    env = clean_env(
        models_dir=str(tiny_models_dir),
        rate_limit="5/minute",
        rate_limit_storage=f"redis://127.0.0.1:{free_port()}",
    )
    run = subprocess.run(
        [sys.executable, "-m", "service"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "invalid configuration" in run.stderr and "redis" in run.stderr.lower(), run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_sigterm_drains_the_request_in_flight(tiny_models_dir: Path, tmp_path: Path) -> None:
    """A request waiting in an open batch when SIGTERM comes is answered before the process
    exits: uvicorn stops accepting and waits for it, then the lifespan drains the batchers.
    A process without a drain would drop its connection."""
    env = clean_env(
        models_dir=str(tiny_models_dir),
        backend="torch",
        threads="1",
        scheduler="static",
        max_wait_ms="5000",  # the batch closes 5 s after its sentence came
        shutdown_grace_s="0",
        log_level="info",
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path / "service.log"

    async def scenario(process: subprocess.Popen[bytes]) -> httpx.Response:
        async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as c:

            async def depth() -> float:
                return metric_value((await c.get("/metrics")).text, "nmt_queue_depth", pair="en-de")

            held = asyncio.create_task(c.post("/v1/translate", json=body("A dog.")))
            async with asyncio.timeout(30):
                while await depth() < 1:
                    await asyncio.sleep(0.02)
            assert not held.done(), "answered before the signal: nothing left to drain"
            process.send_signal(signal.SIGTERM)
            return await held

    with service_process(command, url, cwd=REPO, env=env, log=log, timeout=120) as process:
        response = asyncio.run(scenario(process))
        code = process.wait(60)
    assert response.status_code == 200 and response.json()["translations"][0]["text"].strip()
    assert code in (0, -signal.SIGTERM)
    out = log.read_text()
    assert "Traceback" not in out
    # uvicorn logs its shutdown steps: it waited for the connection, then ran the lifespan's.
    assert "Waiting for application shutdown" in out or "Application shutdown complete" in out, out
