"""SIGTERM under load: readiness fails at once, the grace window serves with Connection: close,
then the service stops accepting, drains and exits, and no request that was sent is lost."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from tests.recording_client import Record, readiness, run_load, service, service_env, wait_for

pytestmark = pytest.mark.slow  # python -m service processes


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_under_load_loses_no_request(
    tiny_models_dir: Path, tmp_path: Path, workers: str
) -> None:
    # workers 2: the supervisor forwards the signal, each worker drains as one process does
    env = service_env(tiny_models_dir, shutdown_grace_s="2", workers=workers)
    record = Record()
    with service(env, tmp_path / "service.log") as proc:

        async def scenario() -> tuple[float, int]:
            load = asyncio.create_task(
                run_load(
                    proc.url,
                    clients=16,
                    until=lambda _: proc.popen.poll() is not None,
                    record=record,
                )
            )
            # Every worker's connection is open and busy before the signal.
            await wait_for(lambda: len(record.outcomes) >= 48)
            signalled = time.monotonic()
            proc.sigterm()
            status = await asyncio.to_thread(readiness, proc.url)
            await load
            return signalled, status

        signalled, ready_status = asyncio.run(scenario())
        code = proc.popen.wait(60)
        log = proc.output()

    counts = record.count()
    assert record.lost() == [], f"{counts}: {[o.error for o in record.lost()][:5]}"
    assert record.unanswered_properly() == [], counts
    assert ready_status == 503, "readiness must fail from the first moment of the shutdown"
    before = [o for o in record.outcomes if o.at < signalled and o.kind == "answer"]
    after = [o for o in record.outcomes if o.at > signalled and o.kind == "answer"]
    assert before and after, counts
    # Keep-alive until the signal; from then on responses close their connections.
    assert not any(o.headers.get("connection") == "close" for o in before)
    closing = [o for o in after if o.headers.get("connection") == "close"]
    assert len(closing) >= 16, f"{len(closing)} closing answers of {len(after)}"
    assert code in (0, -signal.SIGTERM), log[-2000:]
    assert "grace window over" in log and "Traceback" not in log, log[-2000:]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_second_sigterm_cuts_the_grace_short(
    tiny_models_dir: Path, tmp_path: Path, workers: str
) -> None:
    # A grace far past the test's patience: only the second signal can end it in time.
    env = service_env(tiny_models_dir, shutdown_grace_s="600", workers=workers)
    with service(env, tmp_path / "service.log") as proc:
        proc.sigterm()
        assert readiness(proc.url) == 503
        proc.sigterm()
        code = proc.popen.wait(60)
    assert code in (0, -signal.SIGTERM)
