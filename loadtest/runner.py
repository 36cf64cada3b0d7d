"""The load loops: closed (N clients, each waits for its answer) and open (Poisson arrivals)."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import httpx

from loadtest.workload import PlannedRequest, Workload

Mode = Literal["closed", "open"]


@dataclass(frozen=True)
class RunConfig:
    """How much load, for how long."""

    url: str
    mode: Mode = "closed"
    concurrency: int = 4
    rate: float = 10.0
    duration_s: float | None = None
    requests: int | None = None
    timeout_s: float = 60.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.duration_s is None and self.requests is None:
            raise ValueError("give a duration or a request count")
        if self.mode == "closed" and self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.mode == "open" and self.rate <= 0:
            raise ValueError("rate must be positive")


@dataclass(frozen=True)
class Sample:
    """One finished request; times in seconds from the start of the run."""

    start: float
    latency: float
    status: int  # 0 when no HTTP response came back
    n_texts: int
    error: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and self.error is None


@dataclass
class RunResult:
    config: RunConfig
    samples: list[Sample]
    wall_s: float


class _Budget:
    """Hands out request slots until the count or the deadline is used up."""

    def __init__(self, config: RunConfig, t0: float) -> None:
        self._left = config.requests if config.requests is not None else math.inf
        self._deadline = t0 + config.duration_s if config.duration_s is not None else math.inf

    def take(self, at: float) -> bool:
        if self._left <= 0 or at >= self._deadline:
            return False
        self._left -= 1
        return True


async def _send(
    client: httpx.AsyncClient, planned: PlannedRequest, due: float, t0: float
) -> Sample:
    """Send one request; latency counts from when it was due, so a late client shows up."""
    status, error = 0, None
    try:
        response = await client.post(planned.path, json=planned.payload)
        status = response.status_code
        if 200 <= status < 300:
            try:
                if not planned.accepts(response.json()):
                    error = "bad_response"
            except ValueError:
                error = "bad_response"
    except httpx.HTTPError as exc:
        error = type(exc).__name__
    return Sample(
        start=due - t0,
        latency=time.perf_counter() - due,
        status=status,
        n_texts=planned.n_texts,
        error=error,
    )


async def _closed_loop(
    client: httpx.AsyncClient, workload: Workload, config: RunConfig, t0: float
) -> list[Sample]:
    budget = _Budget(config, t0)
    samples: list[Sample] = []

    async def user() -> None:
        while budget.take(time.perf_counter()):
            samples.append(await _send(client, workload.next_request(), time.perf_counter(), t0))

    await asyncio.gather(*(user() for _ in range(config.concurrency)))
    return samples


async def _open_loop(
    client: httpx.AsyncClient, workload: Workload, config: RunConfig, t0: float
) -> list[Sample]:
    # Arrivals follow a schedule fixed in advance (exponential gaps), independent of how
    # fast the server answers: that is what makes the loop open.
    rng = random.Random(config.seed)
    budget = _Budget(config, t0)
    tasks: list[asyncio.Task[Sample]] = []
    due = t0 + rng.expovariate(config.rate)
    while budget.take(due):
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_send(client, workload.next_request(), due, t0)))
        due += rng.expovariate(config.rate)
    return list(await asyncio.gather(*tasks))


def wait_ready(
    url: str, timeout_s: float, *, alive: Callable[[], bool] | None = None, poll_s: float = 0.2
) -> None:
    """Poll GET /health/ready until it answers 200; TimeoutError past timeout_s.

    alive, when given, is asked between polls so that a server process that died fails
    at once instead of after the whole timeout.
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    with httpx.Client(base_url=url, timeout=2.0, trust_env=False) as client:
        while True:
            try:
                response = client.get("/health/ready")
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            if alive is not None and not alive():
                raise RuntimeError(f"{url}: the server exited before it was ready")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{url}/health/ready not 200 after {timeout_s:g} s ({last})")
            time.sleep(poll_s)


async def run_load(
    workload: Workload, config: RunConfig, transport: httpx.AsyncBaseTransport | None = None
) -> RunResult:
    """Run one load test against config.url and return every request's sample.

    transport replaces the network (httpx.MockTransport in tests).
    """
    # Closed loop: one connection per client. Open loop: no cap, since a client-side
    # pool limit would queue requests here and hide the server's own queueing.
    max_connections = config.concurrency if config.mode == "closed" else None
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=None)
    # trust_env=False: a proxy from the environment must not sit between client and server.
    async with httpx.AsyncClient(
        base_url=config.url,
        timeout=config.timeout_s,
        limits=limits,
        headers=workload.headers(),
        trust_env=False,
        transport=transport,
    ) as client:
        t0 = time.perf_counter()
        loop = _closed_loop if config.mode == "closed" else _open_loop
        samples = await loop(client, workload, config, t0)
        wall_s = time.perf_counter() - t0
    samples.sort(key=lambda s: s.start)
    return RunResult(config=config, samples=samples, wall_s=wall_s)
