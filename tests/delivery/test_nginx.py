"""Two real service processes behind a real nginx (Debian's) running deploy/nginx/nginx.conf
on loopback: under load, one replica gets SIGTERM mid-run and no request is lost."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.delivery.test_delivery import find_tool
from tests.recording_client import (
    BODY,
    REPO,
    Process,
    Record,
    run_load,
    service,
    service_env,
    wait_for,
)
from tests.service_helpers import free_port

NGINX_CONF = REPO / "deploy" / "nginx" / "nginx.conf"


@contextmanager
def nginx(workdir: Path, upstreams: list[Process]) -> Iterator[tuple[str, Path]]:
    """nginx.conf as shipped, with only its listen address moved to a free loopback port and
    the replicas' addresses in upstream-servers.conf: its URL and access log."""
    exe = find_tool("nginx")
    port = free_port()
    conf = NGINX_CONF.read_text()
    assert conf.count("listen 8080;") == 1
    (workdir / "nginx.conf").write_text(conf.replace("listen 8080;", f"listen 127.0.0.1:{port};"))
    (workdir / "upstream-servers.conf").write_text(
        "".join(f"server 127.0.0.1:{p.port} max_fails=1 fail_timeout=5s;\n" for p in upstreams)
    )
    for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / temp).mkdir(exist_ok=True)
    globals_ = f"daemon off; pid {workdir}/nginx.pid; error_log {workdir}/error.log info;"
    access = workdir / "access.log"
    command = [exe, "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-g", globals_]
    check = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    with access.open("wb") as out:
        popen = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/nginx-health", trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if popen.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nginx did not start: {(workdir / 'error.log').read_text()[-2000:]}")
            time.sleep(0.05)
        yield url, access
    finally:
        popen.send_signal(signal.SIGQUIT)  # nginx's graceful stop
        try:
            popen.wait(30)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def served_by(access: Path) -> list[str]:
    """The replica (its final upstream address) of each proxied request, in order."""
    return re.findall(r"upstream=(?:[\d.:]+, )*([\d.:]+) ", access.read_text())


@pytest.mark.slow
def test_sigterm_to_one_replica_behind_nginx_loses_nothing(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    env = service_env(tiny_models_dir, shutdown_grace_s="2", log_level="info")
    record = Record()
    with (
        service(env, tmp_path / "a.log") as a,
        service(env, tmp_path / "b.log") as b,
        nginx(tmp_path, [a, b]) as (url, access),
    ):

        async def scenario() -> int:
            exited_at: list[int] = []

            def done(r: Record) -> bool:
                # Keep going until 64 more answers came after replica a had exited.
                if a.popen.poll() is None:
                    return False
                if not exited_at:
                    exited_at.append(len(r.outcomes))
                return len(r.outcomes) >= exited_at[0] + 64

            load = asyncio.create_task(
                run_load(url, clients=16, until=done, record=record, stop_on_refused=False)
            )
            await wait_for(lambda: len(record.outcomes) >= 64)
            a.sigterm()
            await load
            return exited_at[0]

        at_exit = asyncio.run(scenario())
        before = len(served_by(access))
        assert b.popen.poll() is None
        code = a.popen.wait(30)

    counts = record.count()
    assert record.lost() == [] and record.count()["refused"] == 0, counts
    assert set(counts) == {"200"}, counts
    replicas = served_by(access)
    assert len(replicas) == before == len(record.outcomes)
    a_addr, b_addr = f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"
    # Both served before the signal; after a exited, only b.
    assert {a_addr, b_addr} <= set(replicas[:64]), set(replicas[:64])
    assert set(replicas[at_exit + 16 :]) == {b_addr}
    assert code in (0, -signal.SIGTERM)
    assert "grace window over" in a.output()


def from_address(url: str, address: str) -> httpx.Client:
    """A client whose connections leave from `address` (any of 127.0.0.0/8 on Linux)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=url, transport=transport, timeout=60, trust_env=False)


def statuses(url: str, address: str, n: int = 1, forwarded_for: str | None = None) -> list[int]:
    """The status of each of n translations sent from `address`, claiming `forwarded_for`."""
    headers = {"x-forwarded-for": forwarded_for} if forwarded_for else {}
    with from_address(url, address) as client:
        return [
            client.post("/v1/translate", json=BODY, headers=headers).status_code for _ in range(n)
        ]


@pytest.mark.slow
def test_limits_per_address_behind_nginx_see_each_client(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    """Without API keys a client is its address. Behind nginx the service sees nginx's, so it
    takes the client's from the X-Forwarded-For nginx sets, and believes that header only
    from a trusted proxy (uvicorn's FORWARDED_ALLOW_IPS, here nginx's 127.0.0.1)."""
    env = service_env(tiny_models_dir, rate_limit="2/minute") | {"FORWARDED_ALLOW_IPS": "127.0.0.1"}
    with service(env, tmp_path / "api.log") as api, nginx(tmp_path, [api]) as (url, access):
        # Through nginx: two clients, two limits.
        assert statuses(url, "127.0.0.2", 3) == [200, 200, 429]
        assert statuses(url, "127.0.0.3") == [200]
        # A spent client's own header changes nothing: nginx appends the address it saw,
        # and uvicorn takes the last address that is not a trusted proxy.
        assert statuses(url, "127.0.0.2", forwarded_for="127.0.0.30") == [429]
        # Nor can another client spend it by claiming to be it.
        assert statuses(url, "127.0.0.4", forwarded_for="127.0.0.2") == [200]
        # Reaching the service directly from an address that is not a trusted proxy: the
        # header is ignored, and the client is its own address whatever it claims.
        assert statuses(api.url, "127.0.0.5", forwarded_for="127.0.0.2") == [200]
        claims = [statuses(api.url, "127.0.0.5", forwarded_for=f"127.0.0.{n}") for n in (31, 32)]
        assert claims == [[200], [429]]
        # From the trusted proxy's address the header is believed, as nginx's is.
        assert statuses(api.url, "127.0.0.1", forwarded_for="127.0.0.2") == [429]
        assert statuses(api.url, "127.0.0.1", forwarded_for="127.0.0.6") == [200]
    clients = re.findall(r"^([\d.]+) \"POST ", access.read_text(), re.MULTILINE)
    # nginx saw each client's own address (and only the proxied requests)
    assert clients == ["127.0.0.2"] * 3 + ["127.0.0.3", "127.0.0.2", "127.0.0.4"]


def test_compose_scale_profile(tmp_path: Path) -> None:
    compose = find_tool("docker-compose")
    run = subprocess.run(
        [compose, "-f", "docker-compose.yml", "--profile", "scale", "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    config = run.stdout
    for name in ("api-replica", "lb", "redis"):
        assert re.search(rf"^  {name}:$", config, re.MULTILINE), name
    assert "redis://redis:6379" in config
    assert "deploy/nginx/nginx.conf" in config and "upstream-compose.conf" in config
    upstream = (REPO / "deploy" / "nginx" / "upstream-compose.conf").read_text()
    assert "server api-replica:8000 resolve" in upstream
    conf = NGINX_CONF.read_text()
    assert "least_conn;" in conf and "proxy_next_upstream error" in conf
