"""`python -m bench.continuous`: the continuous scheduler against the static one (issue 14).

Every figure comes from `python -m service` in a subprocess, driven over loopback by a
raw-socket asyncio client (bench.toolkit.Connection: keep-alive HTTP/1.1, a few dozen
microseconds of CPU per request; the client's own CPU time is reported beside each row),
one scheduler after the other in one run:

- scheduler: the continuous scheduler fed in this process (64 sentences in flight, no
  HTTP) against the engine alone at batch 32, for int8 greedy and fp32 beam 4 (not in the
  default parts);
- closed: N clients (1/8/64/256 by default), each sending its next test_2016_flickr
  sentence when the last answer came back, static against continuous, for int8 greedy and
  fp32 beam 4; and the engine alone at batch 32 (load_engine(...).translate, this process);
- replicas: one server process per core (NMT_THREADS=1), the 64 clients split evenly
  between them, against the closed rows' one process at 64 (not in the default parts);
- workers: one server of NMT_WORKERS=1 against one of --workers-ab processes (default one
  per CPU, NMT_THREADS divided among them) on the same port, 64 clients, both configs
  and schedulers (not in the default parts);
- onoff: batching off (the static scheduler at NMT_MAX_BATCH_SIZE=1) at 64 clients, int8
  greedy, against the closed rows at 64;
- streams: continuous at 64 clients, int8 greedy, with one stream of every thread
  (NMT_STREAMS=1) against the default one running batch per stream;
- lean: continuous at 64 clients, int8 greedy, the default request path against each of
  its changes undone alone: asyncio + h11 instead of uvicorn[standard]'s uvloop + httptools,
  tokenizing per request on the event loop, FastAPI's JSON instead of orjson;
- options: requests alternating greedy and beam 4 at 64 clients, int8, static against
  continuous (not in the default parts);
- rss: the server's resident memory at the start and the end of rss_duration seconds at
  saturation (not in the default parts);
- mixed: 32 clients each sending one caption and 8 each sending a paragraph of 6 captions,
  p50/p95 latency by class, static against continuous;
- poisson: open-loop Poisson arrivals at 50/80/100/120% of the static scheduler's closed
  throughput at 64 clients (int8 greedy), p50/p95/p99 and the throughput achieved.

Writes OUT.json and OUT.md (default bench/results/continuous).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.toolkit import (
    RESULTS,
    Connection,
    Load,
    ServiceProcess,
    Stopwatch,
    closed_loop,
    command_line,
    engine_rate,
    latency_stats,
    machine,
    rate_figures,
    split_sentences,
)

CONFIGS = {"int8-greedy": ("int8", 1), "fp32-beam4": ("fp32", 4)}
# The open loop reuses a connection idle for less than this (uvicorn closes them at 5 s).
KEEP_ALIVE_S = 4.0


def load_row(load: Load) -> dict[str, Any]:
    """The figures of a load loop that a row reports."""
    return {
        "requests": len(load.latencies),
        "errors": load.errors,
        "per_s": round(load.per_s, 1),
        **latency_stats(load.latencies),
        "client_cpu_pct": round(load.client_cpu_pct, 1),
    }


# ----- load shapes -----
async def mixed_load(
    port: int, captions: list[str], body: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """Caption clients (one sentence) and paragraph clients (six sentences) side by side."""
    rng = random.Random(0)
    classes = {"caption": args.caption_clients, "paragraph": args.paragraph_clients}
    loads = {name: Load() for name in classes}
    stop_at = time.perf_counter() + args.duration

    async def one(kind: str, connection: Connection) -> None:
        while time.perf_counter() < stop_at:
            if kind == "caption":
                text = rng.choice(captions)
            else:
                text = " ".join(rng.choice(captions) for _ in range(args.paragraph_sentences))
            loads[kind].count(*await connection.translate(body, text))

    tasks = []
    for kind, count in classes.items():
        for _ in range(count):
            tasks.append(one(kind, await Connection.open(port)))
    with Stopwatch() as clock:
        await asyncio.gather(*tasks)
    out: dict[str, Any] = {
        "errors": sum(load.errors for load in loads.values()),
        "seconds": round(clock.seconds, 2),
    }
    for kind, load in loads.items():
        out[kind] = {"requests": len(load.latencies), **latency_stats(load.latencies)}
    out["client_cpu_pct"] = round(clock.cpu_pct, 1)
    return out


async def open_loop(
    port: int, texts: list[str], body: dict[str, Any], rate: float, duration: float
) -> dict[str, Any]:
    """Poisson arrivals at `rate` requests/s, whatever the answers (a connection each).

    Idle connections are reused, but not once idle for KEEP_ALIVE_S: the server closes a
    connection idle for 5 s (uvicorn's keep-alive timeout), and a request sent on it as it
    closes is lost on the client's side. A request that fails anyway counts as an error."""
    rng = random.Random(int(rate))
    idle: list[tuple[Connection, float]] = []  # (connection, when it was last answered)
    load = Load()
    pending: set[asyncio.Task[None]] = set()

    async def one(text: str) -> None:
        connection = None
        while idle and connection is None:
            reused, since = idle.pop()
            if time.perf_counter() - since < KEEP_ALIVE_S:
                connection = reused
            else:
                reused.close()
        if connection is None:
            connection = await Connection.open(port)
        try:
            load.count(*await connection.translate(body, text))
        except (OSError, asyncio.IncompleteReadError):
            load.errors += 1
            connection.close()
            return
        idle.append((connection, time.perf_counter()))

    with Stopwatch() as clock:
        start = time.perf_counter()
        at, sent = start, 0
        while at - start < duration:
            at += rng.expovariate(rate)
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(texts[sent % len(texts)]))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        await asyncio.gather(*pending)
    for c, _ in idle:
        c.close()
    load.seconds, load.client_cpu_pct = clock.seconds, clock.cpu_pct
    row = load_row(load)
    return {"rate": round(rate, 1), "sent": sent, **row}


# ----- runs -----
def closed_figures(load: Load, clients: int) -> dict[str, Any]:
    return {
        "clients": clients,
        "seconds": round(load.seconds, 2),
        **load_row(load),
        "steal_pct": round(load.steal_pct, 1),
    }


def closed_row(
    server: ServiceProcess,
    texts: list[str],
    bodies: list[dict[str, Any]],
    clients: int,
    duration: float,
) -> dict[str, Any]:
    """A closed-loop row, with the mean sentences per engine call (static) or per step
    (continuous) from the server's nmt_batch_size."""
    calls0, sent0 = server.batch_stats()
    load = asyncio.run(closed_loop(server.port, texts, bodies, clients, duration))
    calls1, sent1 = server.batch_stats()
    row = closed_figures(load, clients)
    row["mean_batch"] = round((sent1 - sent0) / max(1.0, calls1 - calls0), 1)
    return row


class Runs:
    """What every part shares: the sentences, the server settings of a config and scheduler,
    and one server per measurement."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.source, self.target = args.pair.split("-")
        self.texts = split_sentences(self.source)
        self.models_dir = args.models_dir.resolve()
        self._engines: dict[str, Any] = {}
        self.base_env = {
            "NMT_MODELS_DIR": str(self.models_dir),
            "NMT_LOG_LEVEL": "warning",
            "NMT_MAX_QUEUE_SIZE": str(max(4096, 8 * max(args.clients))),
            "NMT_REQUEST_TIMEOUT_S": "120",
            "NMT_WORKERS": str(args.workers),
        }

    def env(self, config: str, scheduler: str, **extra: str) -> dict[str, str]:
        precision, _ = CONFIGS[config]
        return {**self.base_env, "NMT_PRECISION": precision, "NMT_SCHEDULER": scheduler, **extra}

    def engine(self, config: str) -> Any:
        """The pair's warmed-up ONNX Runtime engine in this process, at the config's
        precision (loaded once; the engine-alone rates and the scheduler part share it)."""
        from service.registry import LoadOptions, load_onnx

        precision, _ = CONFIGS[config]
        if config not in self._engines:
            options = LoadOptions("onnx", "cpu", precision, None, None, None)
            self._engines[config] = load_onnx(self.models_dir / self.args.pair, options)
        return self._engines[config]

    def engine_alone(self, config: str) -> dict[str, Any]:
        """Sentences/s of the engine alone at --engine-batch, measured now."""
        _, beam = CONFIGS[config]
        return engine_rate(
            self.engine(config),
            self.texts,
            batch=self.args.engine_batch,
            beam_size=beam,
            duration=self.args.duration,
        )

    def body(self, config: str) -> dict[str, Any]:
        beam = CONFIGS[config][1]
        return {"source_lang": self.source, "target_lang": self.target, "beam_size": beam}

    def on_server(
        self, env: dict[str, str], name: str, work: Callable[[ServiceProcess], Any]
    ) -> Any:
        with ServiceProcess(env, RESULTS / f"continuous-{name}.log.tmp") as server:
            server.wait_ready(self.args.ready_timeout)
            return work(server)

    def at64(
        self, env: dict[str, str], name: str, bodies: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """One closed-loop row of 64 clients, int8 greedy unless other bodies are given."""
        bodies = bodies or [self.body("int8-greedy")]
        return self.on_server(
            env,
            name,
            lambda server: closed_row(server, self.texts, bodies, 64, self.args.duration),
        )


def part_closed(runs: Runs, result: dict[str, Any]) -> None:
    args = runs.args
    for config in args.configs:
        result["engine"][config] = runs.engine_alone(config)
        print(config, "engine alone", result["engine"][config], flush=True)
        for scheduler in args.schedulers:

            def levels(
                server: ServiceProcess, config: str = config, scheduler: str = scheduler
            ) -> list[dict[str, Any]]:
                rows = []
                for clients in args.clients:
                    row = closed_row(
                        server, runs.texts, [runs.body(config)], clients, args.duration
                    )
                    print(config, scheduler, row, flush=True)
                    rows.append(row)
                return rows

            result["closed"][f"{config}/{scheduler}"] = runs.on_server(
                runs.env(config, scheduler), f"{config}-{scheduler}", levels
            )


def scheduler_rate(
    runner: Any, texts: list[str], *, beam: int, clients: int, duration: float, **knobs: Any
) -> dict[str, Any]:
    """Sentences/s of a ContinuousScheduler fed in this process, no HTTP: `clients`
    sentences in flight, each finished one replaced by the next text at once (from its
    engine thread), after one second of warm-up. knobs: ContinuousScheduler's own."""
    import threading

    from service.registry import DecodeOptions
    from service.scheduler import UNCOUNTED, ContinuousScheduler, Work

    scheduler = ContinuousScheduler(
        runner,
        max_sentences=32,
        max_kv_tokens=1 << 30,
        max_batch_tokens=4096,
        metrics=runner.metrics,
        **knobs,
    )
    options = DecodeOptions(beam, None, 0)
    lock = threading.Lock()
    state = {"sent": 0, "done": 0, "stop": False}

    def resolve(outcome: Any, _backend: str) -> None:
        if isinstance(outcome, Exception):
            raise outcome
        with lock:
            state["done"] += 1
        if not state["stop"]:
            submit()

    def submit() -> None:
        with lock:
            text = texts[state["sent"] % len(texts)]
            state["sent"] += 1
        scheduler.submit([Work(text, UNCOUNTED, options, resolve)])

    scheduler.start()
    for _ in range(clients):
        submit()
    time.sleep(1.0)
    with lock:
        before = state["done"]
    with Stopwatch() as clock:
        time.sleep(duration)
        with lock:
            done = state["done"] - before
    state["stop"] = True
    asyncio.run(scheduler.close())
    return {"clients": clients, **rate_figures(done, clock)}


def part_scheduler(runs: Runs, result: dict[str, Any]) -> None:
    # The continuous scheduler with no HTTP in front, 64 sentences in flight, against the
    # engine alone at batch 32, in this process: what scheduling costs by itself.
    from service.metrics import Metrics
    from service.registry import ModelRunner

    args = runs.args
    result["scheduler"] = {}
    for config in args.configs:
        _, beam = CONFIGS[config]
        engine = runs.engine(config)
        runner = ModelRunner(args.pair, engine, None, Metrics())
        row = {
            "engine": runs.engine_alone(config),
            "scheduler": scheduler_rate(
                runner, runs.texts, beam=beam, clients=64, duration=args.duration
            ),
        }
        result["scheduler"][config] = row
        print(config, "scheduler alone", row, flush=True)


def part_replicas(runs: Runs, result: dict[str, Any]) -> None:
    # One process per core against one process of every core, int8 greedy, 64 clients: two
    # servers of NMT_THREADS=1 (what the compose file's scale profile runs behind nginx), the
    # client's connections split evenly between them, each server its own texts; no load
    # balancer in between (its CPU is not counted).
    cpus = os.cpu_count() or 2
    body = [runs.body("int8-greedy")]
    result["replicas"] = {}
    for scheduler in runs.args.schedulers:
        env = runs.env("int8-greedy", scheduler, NMT_THREADS="1")
        logs = [RESULTS / f"continuous-replica-{i}.log.tmp" for i in range(cpus)]
        servers = [ServiceProcess(env, log) for log in logs]
        try:
            for server in servers:
                server.wait_ready(runs.args.ready_timeout)

            async def load(servers: list[ServiceProcess] = servers) -> list[Load]:
                return await asyncio.gather(
                    *(
                        closed_loop(
                            s.port, runs.texts[i::cpus], body, 64 // cpus, runs.args.duration
                        )
                        for i, s in enumerate(servers)
                    )
                )

            loads = asyncio.run(load())
        finally:
            for server in servers:
                server.stop()
        row = {
            "processes": cpus,
            "per_s": round(sum(load.per_s for load in loads), 1),
            "each_per_s": [round(load.per_s, 1) for load in loads],
            "errors": sum(load.errors for load in loads),
        }
        result["replicas"][scheduler] = row
        print(scheduler, "one process per core", row, flush=True)


def part_workers(runs: Runs, result: dict[str, Any]) -> None:
    # One process against several on one port (NMT_WORKERS: the kernel hands each of the 64
    # connections to a worker), every config and scheduler, at 64 clients.
    many = runs.args.workers_ab or os.cpu_count() or 2
    result["workers"] = {"processes": many, "rows": {}}
    for config in runs.args.configs:
        if config not in result["engine"]:
            result["engine"][config] = runs.engine_alone(config)
        for scheduler in runs.args.schedulers:
            row = {}
            for workers in (1, many):
                env = runs.env(config, scheduler, NMT_WORKERS=str(workers))
                name = f"workers{workers}-{config}-{scheduler}"
                row[str(workers)] = runs.at64(env, name, [runs.body(config)])
                print(config, scheduler, f"{workers} worker(s)", row[str(workers)], flush=True)
            result["workers"]["rows"][f"{config}/{scheduler}"] = row


def part_onoff(runs: Runs, result: dict[str, Any]) -> None:
    # batching off: the static scheduler at batch 1
    result["off"] = runs.at64(runs.env("int8-greedy", "static", NMT_MAX_BATCH_SIZE="1"), "off")
    print("batching off", result["off"], flush=True)


def part_streams(runs: Runs, result: dict[str, Any]) -> None:
    # one running batch per stream (the default: 2 streams of 1 thread on 2 cores)
    # against one stream of every thread, continuous, int8 greedy, 64 clients
    cpus = str(os.cpu_count() or 2)
    env = runs.env("int8-greedy", "continuous", NMT_STREAMS="1", NMT_THREADS=cpus)
    result["one_stream"] = runs.at64(env, "one-stream")
    print("continuous, one stream", result["one_stream"], flush=True)


def part_lean(runs: Runs, result: dict[str, Any]) -> None:
    # The lean request path, one change at a time against the default (uvloop + httptools,
    # tokenizing on the engine thread, orjson responses): uvicorn[standard] against asyncio +
    # h11 (those two imports shadowed by modules that fail, so uvicorn falls back), tokenizing
    # per request on the event loop (NMT_TOKENIZE=loop), FastAPI's own JSON
    # (NMT_JSON_RESPONSE=fastapi).
    shadow = Path(tempfile.mkdtemp(prefix="no-uvloop-"))
    for module in ("uvloop", "httptools"):
        (shadow / module).mkdir()
        (shadow / module / "__init__.py").write_text("raise ImportError('shadowed')\n")
    path = os.pathsep.join(p for p in (str(shadow), os.environ.get("PYTHONPATH")) if p)
    variants: dict[str, dict[str, str]] = {
        "default": {},
        "asyncio+h11": {"PYTHONPATH": path},
        "tokenize on the loop": {"NMT_TOKENIZE": "loop"},
        "FastAPI JSON": {"NMT_JSON_RESPONSE": "fastapi"},
    }
    result["lean"] = {}
    for name, extra in variants.items():
        row = runs.at64(runs.env("int8-greedy", "continuous", **extra), f"lean-{name}")
        print("lean", name, row, flush=True)
        result["lean"][name] = row


def part_options(runs: Runs, result: dict[str, Any]) -> None:
    # requests alternating greedy and beam 4 (int8): the static scheduler never puts
    # them in one engine call; the continuous one runs a batch per width, in turn
    bodies = [{**runs.body("int8-greedy"), "beam_size": beam} for beam in (1, 4)]
    result["options"] = {}
    for scheduler in runs.args.schedulers:
        row = runs.at64(runs.env("int8-greedy", scheduler), f"options-{scheduler}", bodies)
        print("options", scheduler, row, flush=True)
        result["options"][scheduler] = row


def part_rss(runs: Runs, result: dict[str, Any]) -> None:
    # the server's resident memory after warming up and after rss_duration seconds at
    # saturation (256 closed-loop clients), continuous, int8 greedy
    bodies = [runs.body("int8-greedy")]

    def rss(server: ServiceProcess) -> dict[str, Any]:
        asyncio.run(closed_loop(server.port, runs.texts, bodies, 256, 5.0))
        start = round(server.memory_mib()[0], 1)
        samples: list[tuple[float, float]] = []  # (seconds into the run, RSS MiB) each minute

        async def sampled() -> Load:
            task = asyncio.create_task(
                closed_loop(server.port, runs.texts, bodies, 256, runs.args.rss_duration)
            )
            began = time.perf_counter()
            while not task.done():
                await asyncio.wait({task}, timeout=60)
                at = round(time.perf_counter() - began)
                samples.append((at, round(server.memory_mib()[0], 1)))
            return await task

        load = asyncio.run(sampled())
        row = closed_figures(load, 256)
        end = round(server.memory_mib()[0], 1)
        return {"start_mib": start, "end_mib": end, "samples": samples, **row}

    result["rss"] = runs.on_server(runs.env("int8-greedy", "continuous"), "rss", rss)
    print("rss", result["rss"], flush=True)


def part_mixed(runs: Runs, result: dict[str, Any]) -> None:
    result["mixed"] = {}
    config = runs.args.mixed_config
    captions = [t for t in runs.texts if t.strip()]
    for scheduler in runs.args.schedulers:
        row = runs.on_server(
            runs.env(config, scheduler),
            f"mixed-{scheduler}",
            lambda server: asyncio.run(
                mixed_load(server.port, captions, runs.body(config), runs.args)
            ),
        )
        print("mixed", scheduler, row, flush=True)
        result["mixed"][scheduler] = row


def part_poisson(runs: Runs, result: dict[str, Any]) -> None:
    args, config = runs.args, "int8-greedy"
    static_rows = result["closed"].get(f"{config}/static", [])
    at64 = [r for r in static_rows if r["clients"] == 64]
    capacity = args.capacity or (at64[0]["per_s"] if at64 else 100.0)
    result["poisson"] = {"capacity": capacity}
    for scheduler in args.schedulers:

        def rates(server: ServiceProcess, scheduler: str = scheduler) -> list[dict[str, Any]]:
            rows = []
            for share in args.rates:
                rate = share * capacity
                row = asyncio.run(
                    open_loop(server.port, runs.texts, runs.body(config), rate, args.duration)
                )
                row["share"] = share
                print("poisson", scheduler, row, flush=True)
                rows.append(row)
            return rows

        result["poisson"][scheduler] = runs.on_server(
            runs.env(config, scheduler), f"poisson-{scheduler}", rates
        )


PARTS = {
    "scheduler": part_scheduler,
    "closed": part_closed,
    "onoff": part_onoff,
    "replicas": part_replicas,
    "workers": part_workers,
    "streams": part_streams,
    "lean": part_lean,
    "options": part_options,
    "rss": part_rss,
    "mixed": part_mixed,
    "poisson": part_poisson,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.continuous", description=__doc__)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--pair", default="en-de")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=list(PARTS),
        default=["closed", "onoff", "streams", "lean", "mixed", "poisson"],
    )
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per row")
    parser.add_argument("--engine-batch", type=int, default=32)
    parser.add_argument("--caption-clients", type=int, default=32)
    parser.add_argument("--paragraph-clients", type=int, default=8)
    parser.add_argument("--paragraph-sentences", type=int, default=6)
    parser.add_argument("--mixed-config", default="fp32-beam4", choices=list(CONFIGS))
    parser.add_argument("--rates", type=float, nargs="+", default=[0.5, 0.8, 1.0, 1.2])
    parser.add_argument("--schedulers", nargs="+", default=["static", "continuous"])
    parser.add_argument(
        "--capacity",
        type=float,
        default=None,
        help="poisson's 100%% in req/s (default: this run's static closed rate at 64 clients)",
    )
    parser.add_argument("--rss-duration", type=float, default=600.0)
    parser.add_argument(
        "--workers", type=int, default=1, help="NMT_WORKERS of every server (0: one per CPU)"
    )
    parser.add_argument(
        "--workers-ab", type=int, default=0, help="the workers part's many (0: one per CPU)"
    )
    parser.add_argument("--ready-timeout", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "continuous")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "command": command_line("bench.continuous", argv),
        "machine": machine(),
        "client": "raw-socket asyncio (bench.toolkit.Connection)",
        "closed": {},
        "engine": {},
    }
    runs = Runs(args)
    for name, part in PARTS.items():  # in this order: poisson takes its 100% from closed
        if name in args.parts:
            part(runs, result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def brief(row: dict[str, Any]) -> str:
    return f"{row['per_s']} req/s (p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms)"


def markdown(result: dict[str, Any]) -> str:
    lines = [f"`{result['command']}`", "", f"Client: {result['client']}.", ""]
    if "scheduler" in result:
        lines += [
            "| config | engine alone, batch 32 | continuous scheduler alone, 64 in flight "
            "| x engine |",
            "|---|---:|---:|---:|",
        ]
        for config, row in result["scheduler"].items():
            engine, alone = row["engine"]["per_s"], row["scheduler"]["per_s"]
            lines.append(f"| {config} | {engine} | {alone} | {alone / engine:.2f} |")
        lines.append("")
    if result["closed"]:
        lines += [
            "| config | scheduler | clients | req/s | x engine | p50 ms | p95 ms | p99 ms "
            "| mean batch | errors | client CPU % |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key, rows in result["closed"].items():
            config, scheduler = key.split("/")
            engine = result["engine"][config]["per_s"]
            for r in rows:
                lines.append(
                    f"| {config} | {scheduler} | {r['clients']} | {r['per_s']} | "
                    f"{r['per_s'] / engine:.2f} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} "
                    f"| {r['mean_batch']} | {r['errors']} | {r['client_cpu_pct']} |"
                )
        lines.append("")
        for config, e in result["engine"].items():
            lines.append(f"- engine alone, {config}, batch {e['batch']}: {e['per_s']} sentences/s")
        lines.append("")
    if "replicas" in result:
        for scheduler, row in result["replicas"].items():
            lines.append(
                f"- {scheduler}, int8 greedy, 64 clients over {row['processes']} processes of "
                f"one thread: {row['per_s']} req/s ({' + '.join(map(str, row['each_per_s']))})"
            )
        lines.append("")
    if "workers" in result:
        many = result["workers"]["processes"]
        lines += [
            f"| config | scheduler | 1 process req/s | {many} workers req/s | x | "
            f"{many} workers x engine | p50 ms (1 / {many}) |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for key, row in result["workers"]["rows"].items():
            config, scheduler = key.split("/")
            one, more = row["1"], row[str(many)]
            engine = result["engine"].get(config, {}).get("per_s")
            vs_engine = f"{more['per_s'] / engine:.2f}" if engine else "-"
            lines.append(
                f"| {config} | {scheduler} | {one['per_s']} | {more['per_s']} | "
                f"{more['per_s'] / one['per_s']:.2f} | {vs_engine} | "
                f"{one['p50_ms']} / {more['p50_ms']} |"
            )
        lines.append("")
    if "off" in result:
        off = result["off"]
        lines.append(
            f"Batching off (static, batch 1), int8 greedy, 64 clients: {off['per_s']} req/s"
        )
        for key, rows in result["closed"].items():
            if key.startswith("int8-greedy/"):
                at64 = [r for r in rows if r["clients"] == 64]
                if at64 and off["per_s"]:
                    ratio = at64[0]["per_s"] / off["per_s"]
                    lines.append(f"- {key.split('/')[1]} on / off at 64: {ratio:.2f}x")
        lines.append("")
    if "one_stream" in result:
        one = result["one_stream"]
        lines.append(
            f"Continuous, int8 greedy, 64 clients, one stream of every thread: {one['per_s']} "
            f"req/s (p50 {one['p50_ms']} ms, mean batch {one['mean_batch']})"
        )
        lines.append("")
    if "options" in result:
        for scheduler, r in result["options"].items():
            lines.append(
                f"- int8, requests alternating greedy and beam 4, 64 clients, {scheduler}: "
                + brief(r)
            )
        lines.append("")
    if "rss" in result:
        r = result["rss"]
        lines.append(
            f"RSS at saturation (continuous, int8 greedy, 256 clients, {r['seconds']} s, "
            f"{r['requests']} requests): {r['start_mib']} MiB after warming up, "
            f"{r['end_mib']} MiB at the end ({r['end_mib'] / r['start_mib'] - 1:+.1%})"
        )
        if r.get("samples"):
            lines.append(
                "- each minute: " + ", ".join(f"{at} s {mib} MiB" for at, mib in r["samples"])
            )
        lines.append("")
    if "lean" in result:
        for name, r in result["lean"].items():
            lines.append(f"- continuous, int8 greedy, 64 clients, {name}: " + brief(r))
        lines.append("")
    if "mixed" in result:
        lines += [
            "| scheduler | caption reqs | caption p50 | caption p95 | paragraph reqs "
            "| paragraph p50 | paragraph p95 | caption p50 / paragraph p50 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for scheduler, r in result["mixed"].items():
            c, p = r["caption"], r["paragraph"]
            ratio = c["p50_ms"] / p["p50_ms"] if p["p50_ms"] else float("nan")
            lines.append(
                f"| {scheduler} | {c['requests']} | {c['p50_ms']} | {c['p95_ms']} | "
                f"{p['requests']} | {p['p50_ms']} | {p['p95_ms']} | {ratio:.2f} |"
            )
        lines.append("")
    if "poisson" in result:
        lines += [
            f"Open loop, int8 greedy; 100% = {result['poisson']['capacity']} req/s (static, 64 "
            "closed-loop clients).",
            "",
            "| scheduler | load | rate | req/s | p50 ms | p95 ms | p99 ms | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for scheduler, rows in result["poisson"].items():
            if scheduler == "capacity":
                continue
            for r in rows:
                lines.append(
                    f"| {scheduler} | {r['share']:.0%} | {r['rate']} | {r['per_s']} | "
                    f"{r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['errors']} |"
                )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
