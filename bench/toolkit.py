"""What every benchmark here shares: the test sentences, clocks, memory, the machine, the A/B
loop, and one way to start the service and load it.

- `SPLIT`, `split_sentences`: every figure is measured on Multi30k's test_2016_flickr.
- `Stopwatch`: wall time, this process's CPU time (all threads) and the host's steal time
  (`cpu_jiffies`, `steal_percent`) over a block.
- `memory_mib`, `reset_peak_rss`: resident memory and its peak, from /proc (Linux).
- `machine`: the CPU (and GPU), cores and library versions a table was measured with.
- `in_turn`: the A/B loop, every side once per round so a slow spell falls on all of them.
- `ServiceProcess`: `python -m service` in a subprocess, ready when /health/ready answers
  200 (`loadtest.runner.wait_ready`, the readiness poll the tests use too), stopped with
  SIGTERM (a graceful drain).
- `Connection`, `closed_loop`: a raw-socket keep-alive HTTP/1.1 client and N clients each
  sending its next text when the last answer came back. httpx costs several times the
  server's own per-request CPU; on a small machine the client would measure itself.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from loadtest.sentences import SPLIT

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"

T = TypeVar("T")


def split_sentences(lang: str, limit: int | None = None) -> list[str]:
    """The first `limit` (default: all) sentences of the test split in one language."""
    from model.data import default_data_dir, read_lines

    return read_lines(default_data_dir(), SPLIT, lang)[:limit]


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """How a report names the command that produced it: `python -m module` and its
    arguments (argv, else this process's), quoted for a shell."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join([f"python -m {module}", *(shlex.quote(a) for a in args)])


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence: the smallest value
    with at least q% of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered) / 100)))
    return ordered[rank - 1]


def latency_stats(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p95 and p99 of latencies given in seconds, in milliseconds (NaN without any)."""
    if not seconds:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    ms = [1000 * s for s in seconds]
    return {f"p{q}_ms": round(percentile(ms, q), 1) for q in (50, 95, 99)}


# ----- clocks -----
Reading = tuple[int, int]  # (stolen, total) jiffies


def cpu_jiffies() -> Reading:
    """(stolen, total) CPU time of the whole machine so far, from /proc/stat (Linux).

    On a cloud VM the hypervisor can take the cores away for a while; the guest sees it as
    "steal". A benchmark that records it says how much of a slow figure was the machine.
    """
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0]
    except OSError:
        return 0, 0
    fields = [int(v) for v in first.split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user]
    total = sum(fields[:8])
    return (fields[7] if len(fields) > 7 else 0), total


def steal_percent(before: Reading, after: Reading) -> float:
    """Share of the machine's CPU time stolen between two readings, in percent."""
    total = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / total if total > 0 else 0.0


class Stopwatch:
    """Times a block: `seconds` (wall), `cpu_seconds` (this process, all threads) and
    `steal_pct` (the machine's CPU time its host took meanwhile), set when the block ends."""

    seconds = cpu_seconds = steal_pct = float("nan")

    def __enter__(self) -> Stopwatch:
        self._jiffies = cpu_jiffies()
        self._cpu = time.process_time()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
        self.cpu_seconds = time.process_time() - self._cpu
        self.steal_pct = steal_percent(self._jiffies, cpu_jiffies())

    def elapsed(self) -> float:
        """Wall seconds since the block began (while it runs)."""
        return time.perf_counter() - self._start

    @property
    def cpu_pct(self) -> float:
        """CPU time over wall time, in percent of one core."""
        return 100 * self.cpu_seconds / self.seconds


# ----- memory -----
def memory_mib(pid: int | str = "self") -> tuple[float, float]:
    """A process's resident memory (VmRSS) and its peak (VmHWM), MiB, from /proc (Linux)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return int(fields["VmRSS"][0]) / 1024, int(fields["VmHWM"][0]) / 1024


def reset_peak_rss() -> None:
    """Set this process's peak RSS (VmHWM) back to its current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


class NvmlGpu:
    """GPU 0 through NVML: its name, and the device memory in use (every process's, the CUDA
    context included: on a benchmark machine that is one benchmark's process alone)."""

    def __init__(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)

    def used_mib(self) -> float:
        return float(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used) / 2**20

    def name(self) -> str:
        name = self._nvml.nvmlDeviceGetName(self._handle)
        return name.decode() if isinstance(name, bytes) else str(name)


# ----- the machine -----
def gpu_name() -> str | None:
    """The name of GPU 0, from NVML; None without one."""
    try:
        return NvmlGpu().name()
    except Exception:
        return None


def _installed(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _onnxruntime_version() -> str:
    # the module's own version: onnxruntime-gpu installs the same module under another name
    try:
        import onnxruntime
    except ImportError:
        return "not installed"
    return str(onnxruntime.__version__)


def machine(threads: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """The CPU (and GPU), core count, platform and library versions of this machine."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        cpuinfo = []
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": _installed("torch"),
        "onnxruntime": _onnxruntime_version(),
        "ctranslate2": _installed("ctranslate2"),
        "device": device,
        "gpu": gpu_name() if device == "cuda" else None,
    }


# ----- the A/B loop -----
@dataclass
class Timed(Generic[T]):
    """One side's run in one round: its wall and CPU seconds, and what it returned."""

    seconds: float
    cpu_seconds: float
    value: T


def in_turn(sides: Mapping[str, Callable[[], T]], rounds: int) -> dict[str, list[Timed[T]]]:
    """Run every side once per round, in order, `rounds` rounds: a slow spell of a shared
    machine then falls on every side alike. Each side's runs, in round order."""
    runs: dict[str, list[Timed[T]]] = {side: [] for side in sides}
    for _ in range(rounds):
        for side, run in sides.items():
            with Stopwatch() as clock:
                value = run()
            runs[side].append(Timed(clock.seconds, clock.cpu_seconds, value))
    return runs


# ----- the engine alone -----
def engine_rate(
    engine: Any,
    texts: Sequence[str],
    *,
    batch: int,
    beam_size: int,
    duration: float,
    cycle: bool = True,
) -> dict[str, Any]:
    """Sentences/s of `engine.translate` (a service Engine) in batches of `batch`, after one
    warm-up batch, for `duration` seconds: the ceiling a served figure is compared with.
    cycle: start the texts over when they run out, else stop there."""
    engine.translate(list(texts[:batch]), beam_size=beam_size)  # warm
    done = 0
    with Stopwatch() as clock:
        while True:
            size = batch if cycle else min(batch, len(texts) - done)
            engine.translate(
                [texts[(done + i) % len(texts)] for i in range(size)], beam_size=beam_size
            )
            done += size
            if clock.elapsed() >= duration or (not cycle and done >= len(texts)):
                break
    return {"batch": batch, **rate_figures(done, clock)}


def rate_figures(sentences: int, clock: Stopwatch) -> dict[str, Any]:
    """Sentences done in a stopped Stopwatch's time: the count, seconds, per second, steal."""
    return {
        "sentences": sentences,
        "seconds": round(clock.seconds, 2),
        "per_s": round(sentences / clock.seconds, 1),
        "steal_pct": round(clock.steal_pct, 1),
    }


# ----- the service -----
def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """`python -m service` on a free loopback port in a subprocess, with `env` over this
    process's environment (inherit=False: `env` alone); its output goes to `log` (None:
    this process's)."""

    def __init__(
        self, env: Mapping[str, str], log: Path | None = None, *, inherit: bool = True
    ) -> None:
        from loadtest.runner import wait_ready  # the tests' readiness poll

        self._wait_ready = wait_ready
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self._log = log.open("w") if log else None
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(self.port)],
            env={**os.environ, **env} if inherit else dict(env),
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log else None,
        )

    def wait_ready(self, timeout: float, poll_s: float = 0.2) -> float:
        """Wait for /health/ready to answer 200; the seconds from spawn to then."""
        try:
            self._wait_ready(
                self.url, timeout, alive=lambda: self.proc.poll() is None, poll_s=poll_s
            )
        except (RuntimeError, TimeoutError) as exc:
            where = f"; see {self.log_path}" if self.log_path else ""
            raise type(exc)(f"{exc} (exit status {self.proc.poll()}){where}") from exc
        return time.perf_counter() - self.started

    def batch_stats(self) -> tuple[float, float]:
        """(engine calls or steps, sentences in them) so far, from /metrics' nmt_batch_size."""
        import httpx

        calls = sentences = 0.0
        text = httpx.get(f"{self.url}/metrics", timeout=10, trust_env=False).text
        for line in text.splitlines():
            if line.startswith("nmt_batch_size_count"):
                calls += float(line.rsplit(" ", 1)[1])
            elif line.startswith("nmt_batch_size_sum"):
                sentences += float(line.rsplit(" ", 1)[1])
        return calls, sentences

    def memory_mib(self) -> tuple[float, float]:
        """The server's resident memory and its peak since spawn, MiB."""
        return memory_mib(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self._log:
            self._log.close()

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough HTTP for this server
    (uvicorn always answers with a Content-Length)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        payload = json.dumps(body).encode()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: "
            f"application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(
            int(line.split(":", 1)[1])
            for line in lines
            if line.lower().startswith("content-length:")
        )
        return int(lines[0].split()[1]), await self.reader.readexactly(length)

    async def translate(self, body: dict[str, Any], text: str) -> tuple[bool, float]:
        """POST /v1/translate of `text` with `body`'s options: (answered 200, seconds)."""
        start = time.perf_counter()
        status, _ = await self.post("/v1/translate", {**body, "text": text})
        return status == 200, time.perf_counter() - start

    def close(self) -> None:
        self.writer.close()


@dataclass
class Load:
    """What a load loop measured: each answered request's latency (s), the rest as errors,
    and its wall time, the client's CPU time and the host's steal over it."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = float("nan")
    client_cpu_pct: float = float("nan")
    steal_pct: float = float("nan")

    def count(self, ok: bool, seconds: float) -> None:
        if ok:
            self.latencies.append(seconds)
        else:
            self.errors += 1

    @property
    def per_s(self) -> float:
        return len(self.latencies) / self.seconds


async def closed_loop(
    port: int,
    texts: Sequence[str],
    bodies: Sequence[dict[str, Any]],
    clients: int,
    duration: float,
    *,
    cycle: bool = True,
) -> Load:
    """`clients` connections, each sending its next text when the last answer came back,
    for `duration` seconds; with the bodies (the request options) in turn. cycle: start the
    texts over when they run out, else stop there. Each connection answers one request
    before the clock starts (connections open, the server's code paths warm)."""
    connections = [await Connection.open(port) for _ in range(clients)]
    await asyncio.gather(
        *(c.translate(bodies[0], t) for c, t in zip(connections, texts, strict=False))
    )
    load = Load()
    next_index = 0
    stop_at = time.perf_counter() + duration

    async def one(connection: Connection) -> None:
        nonlocal next_index
        while time.perf_counter() < stop_at and (cycle or next_index < len(texts)):
            text = texts[next_index % len(texts)]
            body = bodies[next_index % len(bodies)]
            next_index += 1
            load.count(*await connection.translate(body, text))

    with Stopwatch() as clock:
        await asyncio.gather(*(one(c) for c in connections))
    for c in connections:
        c.close()
    load.seconds, load.client_cpu_pct = clock.seconds, clock.cpu_pct
    load.steal_pct = clock.steal_pct
    return load
