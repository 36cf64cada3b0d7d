"""`python -m bench.service`: the running service under N concurrent clients, batching on/off.

Starts `python -m service` in a subprocess for each mode (batching on: the configured
NMT_MAX_BATCH_SIZE; off: NMT_MAX_BATCH_SIZE=1), sends one test_2016_flickr sentence per
request from N concurrent clients, and reports throughput and latency percentiles at each
concurrency. The engine's own throughput at batch 32 (same model, backend, precision,
threads and beam, called directly) is the ceiling the service is compared with. The server
takes its scheduler from the environment (NMT_SCHEDULER, continuous by default;
`python -m bench.continuous` compares the two). Writes bench/results/service.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.steal import cpu_jiffies, steal_percent
from model.data import default_data_dir, read_lines

SPLIT = "test_2016_flickr"
RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Level:
    """One row: a batching mode at one concurrency."""

    batching: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch: float
    steal_pct: float


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----- the server -----
class Server:
    """`python -m service` in a subprocess, stopped with SIGTERM (a graceful drain)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(self.port)],
            env={**os.environ, **env},
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the server exited ({self.proc.returncode}); see {self.log.name}"
                )
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)  # polling a process we do not control: nothing to wait on
        raise TimeoutError(f"the server was not ready in {timeout:.0f} s; see {self.log.name}")

    def batch_stats(self) -> tuple[float, float]:
        """(engine calls, sentences) so far, from /metrics."""
        calls = sentences = 0.0
        for line in httpx.get(f"{self.url}/metrics", timeout=10).text.splitlines():
            if line.startswith("nmt_batch_size_count"):
                calls += float(line.rsplit(" ", 1)[1])
            elif line.startswith("nmt_batch_size_sum"):
                sentences += float(line.rsplit(" ", 1)[1])
        return calls, sentences

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# ----- the clients -----
class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough HTTP for this server.

    httpx costs several times the server's own per-request CPU; on a small machine the
    client would measure itself. uvicorn always answers with a Content-Length.
    """

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

    def close(self) -> None:
        self.writer.close()


async def drive(
    port: int, sentences: list[str], *, concurrency: int, duration: float, body: dict[str, Any]
) -> tuple[list[float], int, float]:
    """N clients, each sending its next sentence when the last answer came back."""
    latencies: list[float] = []
    errors = 0
    next_index = 0
    connections = [await Connection.open(port) for _ in range(concurrency)]
    # Warm the connections (and the server's code paths) before the clock starts.
    await asyncio.gather(
        *(
            c.post("/v1/translate", {**body, "text": s})
            for c, s in zip(connections, sentences, strict=False)
        )
    )
    stop_at = time.perf_counter() + duration

    async def one_client(connection: Connection) -> None:
        nonlocal next_index, errors
        while next_index < len(sentences) and time.perf_counter() < stop_at:
            text = sentences[next_index]
            next_index += 1
            start = time.perf_counter()
            status, _ = await connection.post("/v1/translate", {**body, "text": text})
            if status == 200:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(one_client(c) for c in connections))
    seconds = time.perf_counter() - start
    for connection in connections:
        connection.close()
    return latencies, errors, seconds


def run_mode(
    name: str,
    env: dict[str, str],
    sentences: list[str],
    args: argparse.Namespace,
    body: dict[str, Any],
) -> list[Level]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    server = Server(env, RESULTS / f"service-{name}.log.tmp")
    rows = []
    try:
        server.wait_ready(args.ready_timeout)
        for concurrency in args.concurrency:
            calls0, sent0 = server.batch_stats()
            jiffies = cpu_jiffies()
            latencies, errors, seconds = asyncio.run(
                drive(
                    server.port,
                    sentences,
                    concurrency=concurrency,
                    duration=args.duration,
                    body=body,
                )
            )
            steal = steal_percent(jiffies, cpu_jiffies())
            calls1, sent1 = server.batch_stats()
            mean_batch = (sent1 - sent0) / max(1.0, calls1 - calls0)
            ms = [x * 1000 for x in latencies] or [float("nan")]
            rows.append(
                Level(
                    batching=name,
                    concurrency=concurrency,
                    requests=len(latencies),
                    errors=errors,
                    seconds=round(seconds, 2),
                    requests_per_s=round(len(latencies) / seconds, 1),
                    p50_ms=round(percentile(ms, 50), 1),
                    p95_ms=round(percentile(ms, 95), 1),
                    p99_ms=round(percentile(ms, 99), 1),
                    mean_batch=round(mean_batch, 1),
                    steal_pct=round(steal, 1),
                )
            )
            print(_row_md(rows[-1]), flush=True)
    finally:
        server.stop()
    return rows


# ----- the engine alone -----
def engine_throughput(
    model_dir: Path, sentences: list[str], args: argparse.Namespace, settings_env: dict[str, str]
) -> dict[str, Any]:
    """Sentences/s of load_engine(...).translate at batch 32, in this process."""
    os.environ.update(settings_env)
    from service.registry import LoadOptions, load_onnx, load_torch
    from service.settings import Settings

    settings = Settings()
    device = settings.resolved_device()
    precision = settings.resolved_precision(device)
    backend = "onnx" if settings.backend == "auto" else settings.backend
    options = LoadOptions(
        backend,
        device,
        precision,
        settings.threads or None,
        settings.artifacts_dir,
        settings.streams or None,
    )
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    engine = (load_onnx if backend == "onnx" else load_torch)(model_dir, options)
    batch = args.engine_batch
    engine.translate(sentences[:batch], beam_size=args.beam_size)  # warm
    start, jiffies = time.perf_counter(), cpu_jiffies()
    done = 0
    for i in range(0, len(sentences), batch):
        engine.translate(sentences[i : i + batch], beam_size=args.beam_size)
        done = min(i + batch, len(sentences))
        if time.perf_counter() - start > args.duration:
            break
    seconds = time.perf_counter() - start
    return {
        "backend": engine.backend,
        "device": engine.device,
        "precision": engine.precision,
        "version": engine.version,
        "batch": batch,
        "sentences": done,
        "seconds": round(seconds, 2),
        "sentences_per_s": round(done / seconds, 1),
        "steal_pct": round(steal_percent(jiffies, cpu_jiffies()), 1),
    }


# ----- report -----
HEADER = (
    "| batching | clients | requests | errors | req/s | p50 ms | p95 ms | p99 ms "
    "| mean batch | steal % |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _row_md(r: Level) -> str:
    return (
        f"| {r.batching} | {r.concurrency} | {r.requests} | {r.errors} | "
        f"{r.requests_per_s} | {r.p50_ms} | {r.p95_ms} | {r.p99_ms} | {r.mean_batch} "
        f"| {r.steal_pct:.0f} |"
    )


def report(
    rows: list[Level], engine: dict[str, Any], args: argparse.Namespace, command: str
) -> dict[str, Any]:
    by = {(r.batching, r.concurrency): r for r in rows}
    top = max(args.concurrency)
    on, off = by.get(("on", top)), by.get(("off", top))
    summary = {
        "batching_speedup_at_max_clients": round(on.requests_per_s / off.requests_per_s, 2)
        if on and off and off.requests_per_s
        else None,
        "service_over_engine_at_max_clients": round(
            on.requests_per_s / engine["sentences_per_s"], 2
        )
        if on and engine["sentences_per_s"]
        else None,
    }
    return {
        "command": command,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "models_dir": str(args.models_dir),
        "pair": args.pair,
        "beam_size": args.beam_size,
        "engine": engine,
        "rows": [asdict(r) for r in rows],
        "summary": summary,
    }


def markdown(result: dict[str, Any]) -> str:
    engine, summary = result["engine"], result["summary"]
    rows = [Level(**r) for r in result["rows"]]
    lines = [
        "# Service benchmark",
        "",
        f"`{result['command']}`",
        "",
        f"{result['pair']} from {result['models_dir']}, one {SPLIT} sentence per request, "
        f"beam {result['beam_size']}; {engine['backend']} {engine['precision']} on "
        f"{engine['device']}, model {engine['version']}; {result['machine']['cpus']} CPUs, "
        f"{result['machine']['platform']}.",
        "",
        HEADER,
        *(_row_md(r) for r in rows),
        "",
        f"Engine alone at batch {engine['batch']}: {engine['sentences_per_s']} sentences/s "
        f"({engine['sentences']} sentences in {engine['seconds']} s, "
        f"{engine['steal_pct']:.0f}% of the machine's CPU time stolen by its host).",
        "",
        "steal %: the share of the machine's CPU time the hypervisor gave to other guests "
        "during that row (0 on a dedicated machine).",
        "",
    ]
    # A ratio is None when its modes were not both measured (--modes on, say).
    speedup = summary["batching_speedup_at_max_clients"]
    if speedup is not None:
        lines.append(f"- batching on / off at the most clients: {speedup}x (target >= 5x)")
    ratio = summary["service_over_engine_at_max_clients"]
    if ratio is not None:
        lines.append(
            f"- service (batching on, most clients) / engine at batch {engine['batch']}: "
            f"{ratio}x (target >= 0.8x)"
        )
    return "\n".join([*lines, ""])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.service", description=__doc__)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--pair", default="en-de")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument(
        "--limit",
        type=int,
        default=1000,
        help="most sentences per concurrency level (test_2016_flickr has 1000)",
    )
    parser.add_argument(
        "--duration", type=float, default=60.0, help="most seconds per concurrency level"
    )
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("--engine-batch", type=int, default=32)
    parser.add_argument("--modes", nargs="+", choices=["on", "off"], default=["on", "off"])
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=600.0,
        help="seconds to wait for the server (a first start exports ONNX)",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS / "service", help="writes OUT.md and OUT.json"
    )
    args = parser.parse_args(argv)
    command = "python -m bench.service " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))

    source = args.pair.split("-")[0]
    target = args.pair.split("-")[1]
    sentences = read_lines(default_data_dir(), SPLIT, source)[: args.limit]
    models_dir = args.models_dir.resolve()
    # The server inherits NMT_* from the environment (backend, precision, threads, ...);
    # these are the ones the benchmark itself decides.
    base_env = {
        "NMT_MODELS_DIR": str(models_dir),
        "NMT_LOG_LEVEL": "warning",
        "NMT_MAX_QUEUE_SIZE": str(max(1024, 2 * max(args.concurrency))),
    }
    body = {"source_lang": source, "target_lang": target, "beam_size": args.beam_size}

    engine = engine_throughput(models_dir / args.pair, sentences, args, base_env)
    print(
        f"engine alone at batch {args.engine_batch}: {engine['sentences_per_s']} sentences/s",
        flush=True,
    )
    print(HEADER, flush=True)
    rows: list[Level] = []
    for mode in args.modes:
        env = dict(base_env)
        if mode == "off":
            env["NMT_MAX_BATCH_SIZE"] = "1"
        rows += run_mode(mode, env, sentences, args, body)

    result = report(rows, engine, args, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print()
    print(markdown(result))


if __name__ == "__main__":
    main()
