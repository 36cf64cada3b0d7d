"""Per-key request and character limits: 429 with Retry-After and X-RateLimit-*, overrides from
a file, keys from a file, counters shared through a real redis-server, and Redis going away."""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.ratelimit import key_label
from tests.recording_client import REPO, redis_server, run_load, service, service_env
from tests.service_helpers import free_port, in_process, tiny_settings, translate_body

TEXT = "A man rides a bike."  # 19 characters


def in_a_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in its own event loop (pytest sees the test's own signature)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


async def post(client: httpx.AsyncClient, text: str = TEXT, **headers: str) -> httpx.Response:
    return await client.post("/v1/translate", json=translate_body(text), headers=headers)


@pytest.mark.slow
@in_a_loop
async def test_request_limit_per_address(tiny_models_dir: Path) -> None:
    async with in_process(tiny_settings(tiny_models_dir, rate_limit="3/minute")) as (app, client):
        answers = [await post(client) for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        assert [r.headers["x-ratelimit-remaining"] for r in answers] == ["2", "1", "0", "0"]
        assert {r.headers["x-ratelimit-limit"] for r in answers} == {"3"}
        refused = answers[-1]
        assert refused.json()["error"]["type"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 61
        assert int(refused.headers["x-ratelimit-reset"]) >= int(
            answers[0].headers["x-ratelimit-reset"]
        )
        # Health, metrics and the docs are never limited.
        assert (await client.get("/health/live")).status_code == 200
        metrics = app.state.metrics
        assert metrics.value("nmt_rate_limited_total", key="address", limit="requests") == 1


@pytest.mark.slow
@in_a_loop
async def test_character_limit_counts_texts_and_refusals_cost_nothing(
    tiny_models_dir: Path,
) -> None:
    settings = tiny_settings(tiny_models_dir, char_rate_limit="40/minute")
    async with in_process(settings) as (_, client):
        assert (await post(client)).status_code == 200  # 19
        assert (await post(client)).status_code == 200  # 38
        refused = await post(client)  # 57 would be over
        assert refused.status_code == 429 and "chars" in refused.json()["error"]["message"]
        assert (await post(client, "A.")).status_code == 200  # 40: the refusal cost nothing
        # LibreTranslate's q counts the same way, JSON or form.
        form = await client.post("/translate", data={"q": "A.", "source": "en", "target": "de"})
        assert form.status_code == 429
        too_big = await post(client, "x" * 41)
        assert too_big.status_code == 429 and "over the limit" in too_big.json()["error"]["message"]
        # A file to translate counts as its text.
        upload = await client.post(
            "/translate_file",
            data={"source": "en", "target": "de"},
            files={"file": ("a.txt", b"x" * 41, "text/plain")},
        )
        assert upload.status_code == 429 and "41 characters" in upload.json()["error"]["message"]


@pytest.mark.slow
@in_a_loop
async def test_limits_per_key_with_overrides_and_keys_from_a_file(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    keys = tmp_path / "api-keys"
    keys.write_text("# one key a line\nalpha-key\n\nbeta-key\n")
    overrides = tmp_path / "limits.json"
    # By the key's label (what the metrics show), and by the key itself; null lifts a limit.
    overrides.write_text(
        json.dumps(
            {
                key_label("beta-key"): {"rate_limit": "4/minute"},
                "gamma-key": {"rate_limit": None},
            }
        )
    )
    settings = tiny_settings(
        tiny_models_dir,
        api_keys="gamma-key",
        api_keys_file=keys,
        rate_limit="2/minute",
        rate_limits_file=overrides,
    )
    async with in_process(settings) as (app, client):
        alpha = [(await post(client, **{"X-API-Key": "alpha-key"})).status_code for _ in range(3)]
        beta = [(await post(client, authorization="Bearer beta-key")).status_code for _ in range(5)]
        gamma = [(await post(client, **{"X-API-Key": "gamma-key"})).status_code for _ in range(5)]
        assert alpha == [200, 200, 429]
        assert beta == [200, 200, 200, 200, 429]
        assert gamma == [200] * 5
        # LibreTranslate's api_key field is the same client as the header.
        libre = await client.post(
            "/translate", json={"q": "A.", "source": "en", "target": "de", "api_key": "alpha-key"}
        )
        assert libre.status_code == 429
        # Unknown keys are refused by the key check, and limited by address meanwhile.
        assert (await post(client, **{"X-API-Key": "nope"})).status_code == 401
        exposition = (await client.get("/metrics")).text
        assert f'key="{key_label("alpha-key")}"' in exposition
        for key in ("alpha-key", "beta-key", "gamma-key"):
            assert key not in exposition
        assert (
            app.state.metrics.value(
                "nmt_rate_limited_total", key=key_label("beta-key"), limit="requests"
            )
            == 1
        )


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"rate_limit": "lots"}, "NMT_RATE_LIMIT"),
        ({"api_keys_file": "/nonexistent/keys"}, "cannot read /nonexistent/keys"),
        ({"rate_limit": "2/minute", "rate_limits_file": "/nonexistent.json"}, "nonexistent.json"),
        ({"rate_limit": "2/minute", "rate_limit_storage": "memcache-ish://x"}, "STORAGE"),
        ({"rate_limit": "2/minute", "rate_limit_storage": "redis://127.0.0.1:1"}, "unreachable"),
        ({"rate_limit": "2/minute", "workers": "2"}, "need a shared rate_limit_storage"),
    ],
    ids=["bad-limit", "keys-file", "limits-file", "storage-scheme", "redis-down", "workers"],
)
def test_misconfiguration_is_a_clear_error_at_start(
    tiny_models_dir: Path, settings: dict[str, str], expected: str
) -> None:
    env = service_env(tiny_models_dir, api_keys="secret-key-1", **settings)
    run = subprocess.run(
        [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert expected in output, output[-2000:]
    assert "secret-key-1" not in output


@pytest.mark.slow
def test_replicas_share_one_limit_through_redis_and_fail_open_without_it(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    headers = {"X-API-Key": "shared-key"}
    port = free_port()
    env = service_env(
        tiny_models_dir,
        api_keys="shared-key",
        rate_limit="6/hour",
        rate_limit_storage=f"redis://127.0.0.1:{port}",
    )
    first = redis_server(tmp_path, port=port)
    first.__enter__()
    running = True
    try:
        with service(env, tmp_path / "a.log") as a, service(env, tmp_path / "b.log") as b:

            def send(n: int) -> list[int]:
                urls = [(a, b)[i % 2].url for i in range(n)]
                body = translate_body(TEXT)
                return [
                    httpx.post(f"{u}/v1/translate", json=body, headers=headers).status_code
                    for u in urls
                ]

            # One limit between the two replicas: six in all, then 429 from both.
            assert send(8) == [200] * 6 + [429, 429]

            # Redis goes away while serving: fail open, every request answered, no 5xx.
            first.__exit__(None, None, None)
            running = False
            record = asyncio.run(
                run_load(a.url, clients=4, until=lambda r: len(r.outcomes) >= 24, headers=headers)
            )
            assert set(record.count()) == {"200"}, record.count()
            assert errors_counted(a.url) == len(record.outcomes)

            # Redis back (empty): limits apply again, the services untouched.
            with redis_server(tmp_path, port=port):
                assert send(8) == [200] * 6 + [429, 429]
            assert "Traceback" not in a.output() + b.output()
    finally:
        if running:
            first.__exit__(None, None, None)


def errors_counted(url: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("nmt_rate_limit_errors_total "):
            return float(line.split()[1])
    return 0.0
