"""`python -m bench.continuous`: the continuous scheduler against the static one (issue 14).

Every figure comes from `python -m service` in a subprocess, driven over loopback by a
raw-socket asyncio client (bench.service.Connection: keep-alive HTTP/1.1, a few dozen
microseconds of CPU per request; the client's own CPU time is reported beside each row),
one scheduler after the other in one run:

- closed: N clients (1/8/64/256 by default), each sending its next test_2016_flickr
  sentence when the last answer came back, static against continuous, for int8 greedy and
  fp32 beam 4; and the engine alone at batch 32 (load_engine(...).translate, this process);
- onoff: batching off (the static scheduler at NMT_MAX_BATCH_SIZE=1) at 64 clients, int8
  greedy, against the closed rows at 64;
- streams: continuous at 64 clients, int8 greedy, with one stream of every thread
  (NMT_STREAMS=1) against the default one running batch per stream;
- lean: continuous at 64 clients, int8 greedy, uvicorn on uvloop + httptools
  (uvicorn[standard]) against asyncio + h11 (those imports shadowed);
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
import platform
import random
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.service import RESULTS, SPLIT, Connection, Server, percentile
from bench.steal import cpu_jiffies, steal_percent
from model.data import default_data_dir, read_lines

CONFIGS = {"int8-greedy": ("int8", 1), "fp32-beam4": ("fp32", 4)}


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def stats(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    return {f"p{q}_ms": round(percentile(ms, q), 1) for q in (50, 95, 99)}


# ----- load shapes -----
async def closed_loop(
    port: int,
    texts: list[str],
    body: dict[str, Any] | list[dict[str, Any]],
    clients: int,
    duration: float,
) -> dict[str, Any]:
    """clients connections, each sending its next text when the last answer came back
    (with the bodies in turn when given several)."""
    bodies = body if isinstance(body, list) else [body]
    connections = [await Connection.open(port) for _ in range(clients)]
    await asyncio.gather(
        *(
            c.post("/v1/translate", {**bodies[0], "text": t})
            for c, t in zip(connections, texts, strict=False)
        )
    )
    latencies: list[float] = []
    errors = 0
    next_index = 0
    stop_at = time.perf_counter() + duration

    async def one(connection: Connection) -> None:
        nonlocal next_index, errors
        while time.perf_counter() < stop_at:
            text = texts[next_index % len(texts)]
            body = bodies[next_index % len(bodies)]
            next_index += 1
            start = time.perf_counter()
            status, _ = await connection.post("/v1/translate", {**body, "text": text})
            if status == 200:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

    cpu0, jiffies, start = client_cpu(), cpu_jiffies(), time.perf_counter()
    await asyncio.gather(*(one(c) for c in connections))
    seconds = time.perf_counter() - start
    for c in connections:
        c.close()
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(seconds, 2),
        "per_s": round(len(latencies) / seconds, 1),
        **stats([x * 1000 for x in latencies]),
        "client_cpu_pct": round(100 * (client_cpu() - cpu0) / seconds, 1),
        "steal_pct": round(steal_percent(jiffies, cpu_jiffies()), 1),
    }


async def mixed_load(
    port: int, captions: list[str], body: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """Caption clients (one sentence) and paragraph clients (six sentences) side by side."""
    rng = random.Random(0)
    classes = {"caption": args.caption_clients, "paragraph": args.paragraph_clients}
    latencies: dict[str, list[float]] = {name: [] for name in classes}
    errors = 0
    stop_at = time.perf_counter() + args.duration

    async def one(kind: str, connection: Connection) -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            if kind == "caption":
                text = rng.choice(captions)
            else:
                text = " ".join(rng.choice(captions) for _ in range(args.paragraph_sentences))
            start = time.perf_counter()
            status, _ = await connection.post("/v1/translate", {**body, "text": text})
            if status == 200:
                latencies[kind].append(time.perf_counter() - start)
            else:
                errors += 1

    tasks = []
    for kind, count in classes.items():
        for _ in range(count):
            tasks.append(one(kind, await Connection.open(port)))
    cpu0, start = client_cpu(), time.perf_counter()
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - start
    out: dict[str, Any] = {"errors": errors, "seconds": round(seconds, 2)}
    for kind, values in latencies.items():
        out[kind] = {"requests": len(values), **stats([x * 1000 for x in values])}
    out["client_cpu_pct"] = round(100 * (client_cpu() - cpu0) / seconds, 1)
    return out


async def open_loop(
    port: int, texts: list[str], body: dict[str, Any], rate: float, duration: float
) -> dict[str, Any]:
    """Poisson arrivals at `rate` requests/s, whatever the answers (a connection each)."""
    rng = random.Random(int(rate))
    idle: list[Connection] = []
    latencies: list[float] = []
    errors = 0
    pending: set[asyncio.Task[None]] = set()

    async def one(text: str) -> None:
        nonlocal errors
        connection = idle.pop() if idle else await Connection.open(port)
        start = time.perf_counter()
        status, _ = await connection.post("/v1/translate", {**body, "text": text})
        if status == 200:
            latencies.append(time.perf_counter() - start)
        else:
            errors += 1
        idle.append(connection)

    cpu0, start = client_cpu(), time.perf_counter()
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
    seconds = time.perf_counter() - start
    for c in idle:
        c.close()
    return {
        "rate": round(rate, 1),
        "sent": sent,
        "requests": len(latencies),
        "errors": errors,
        "per_s": round(len(latencies) / seconds, 1),
        **stats([x * 1000 for x in latencies]),
        "client_cpu_pct": round(100 * (client_cpu() - cpu0) / seconds, 1),
    }


def resident_mib(pid: int) -> float:
    """A process's resident set size (VmRSS), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for process {pid}")


# ----- the engine alone -----
def engine_alone(
    model_dir: Path, texts: list[str], precision: str, beam: int, args: argparse.Namespace
) -> dict[str, Any]:
    from service.registry import LoadOptions, load_onnx

    engine = load_onnx(model_dir, LoadOptions("onnx", "cpu", precision, None, None, None))
    batch = args.engine_batch
    engine.translate(texts[:batch], beam_size=beam)  # warm
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < args.duration:
        chunk = [texts[(done + i) % len(texts)] for i in range(batch)]
        engine.translate(chunk, beam_size=beam)
        done += batch
    seconds = time.perf_counter() - start
    return {"batch": batch, "sentences": done, "per_s": round(done / seconds, 1)}


# ----- runs -----
def with_server(env: dict[str, str], name: str, args: argparse.Namespace, work: Any) -> Any:
    server = Server(env, RESULTS / f"continuous-{name}.log.tmp")
    try:
        server.wait_ready(args.ready_timeout)
        return work(server)
    finally:
        server.stop()


def closed_row(
    server: Server,
    texts: list[str],
    body: dict[str, Any] | list[dict[str, Any]],
    clients: int,
    duration: float,
) -> dict[str, Any]:
    """A closed-loop row, with the mean sentences per engine call (static) or per step
    (continuous) from the server's nmt_batch_size."""
    calls0, sent0 = server.batch_stats()
    row = asyncio.run(closed_loop(server.port, texts, body, clients, duration))
    calls1, sent1 = server.batch_stats()
    row["mean_batch"] = round((sent1 - sent0) / max(1.0, calls1 - calls0), 1)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.continuous", description=__doc__)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--pair", default="en-de")
    parser.add_argument(
        "--parts",
        nargs="+",
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
    parser.add_argument("--ready-timeout", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "continuous")
    args = parser.parse_args(argv)
    command = "python -m bench.continuous " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    source, target = args.pair.split("-")
    texts = read_lines(default_data_dir(), SPLIT, source)
    models_dir = args.models_dir.resolve()
    base_env = {
        "NMT_MODELS_DIR": str(models_dir),
        "NMT_LOG_LEVEL": "warning",
        "NMT_MAX_QUEUE_SIZE": str(max(4096, 8 * max(args.clients))),
        "NMT_REQUEST_TIMEOUT_S": "120",
    }
    result: dict[str, Any] = {
        "command": command,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "client": "raw-socket asyncio (bench.service.Connection)",
        "closed": {},
        "engine": {},
    }

    def env_for(config: str, scheduler: str, **extra: str) -> dict[str, str]:
        precision, _ = CONFIGS[config]
        return {**base_env, "NMT_PRECISION": precision, "NMT_SCHEDULER": scheduler, **extra}

    def body_for(config: str) -> dict[str, Any]:
        return {"source_lang": source, "target_lang": target, "beam_size": CONFIGS[config][1]}

    if "closed" in args.parts:
        for config in args.configs:
            precision, beam = CONFIGS[config]
            result["engine"][config] = engine_alone(
                models_dir / args.pair, texts, precision, beam, args
            )
            print(config, "engine alone", result["engine"][config], flush=True)
            for scheduler in args.schedulers:

                def levels(
                    server: Server, config: str = config, scheduler: str = scheduler
                ) -> list[dict[str, Any]]:
                    rows = []
                    for clients in args.clients:
                        row = closed_row(server, texts, body_for(config), clients, args.duration)
                        print(config, scheduler, row, flush=True)
                        rows.append(row)
                    return rows

                result["closed"][f"{config}/{scheduler}"] = with_server(
                    env_for(config, scheduler), f"{config}-{scheduler}", args, levels
                )
    if "onoff" in args.parts:
        config = "int8-greedy"
        row = with_server(
            env_for(config, "static", NMT_MAX_BATCH_SIZE="1"),
            "off",
            args,
            lambda server: closed_row(server, texts, body_for(config), 64, args.duration),
        )
        print("batching off", row, flush=True)
        result["off"] = row
    if "streams" in args.parts:
        # one running batch per stream (the default: 2 streams of 1 thread on 2 cores)
        # against one stream of every thread, continuous, int8 greedy, 64 clients
        config = "int8-greedy"
        cpus = str(os.cpu_count() or 2)
        row = with_server(
            env_for(config, "continuous", NMT_STREAMS="1", NMT_THREADS=cpus),
            "one-stream",
            args,
            lambda server: closed_row(server, texts, body_for(config), 64, args.duration),
        )
        print("continuous, one stream", row, flush=True)
        result["one_stream"] = row
    if "lean" in args.parts:
        # uvicorn[standard]'s uvloop and httptools against asyncio and h11: the same server
        # with those two imports shadowed by modules that fail (uvicorn then falls back)
        config = "int8-greedy"
        shadow = Path(tempfile.mkdtemp(prefix="no-uvloop-"))
        for module in ("uvloop", "httptools"):
            (shadow / module).mkdir()
            (shadow / module / "__init__.py").write_text("raise ImportError('shadowed')\n")
        path = os.pathsep.join(p for p in (str(shadow), os.environ.get("PYTHONPATH")) if p)
        result["lean"] = {}
        for name, extra in (("asyncio+h11", {"PYTHONPATH": path}), ("uvloop+httptools", {})):
            row = with_server(
                env_for(config, "continuous", **extra),
                f"lean-{name}",
                args,
                lambda server: closed_row(server, texts, body_for(config), 64, args.duration),
            )
            print("lean", name, row, flush=True)
            result["lean"][name] = row
    if "options" in args.parts:
        # requests alternating greedy and beam 4 (int8): the static scheduler never puts
        # them in one engine call; the continuous one runs a batch per width, in turn
        config = "int8-greedy"
        bodies = [{**body_for(config), "beam_size": beam} for beam in (1, 4)]
        result["options"] = {}
        for scheduler in args.schedulers:
            row = with_server(
                env_for(config, scheduler),
                f"options-{scheduler}",
                args,
                lambda server: closed_row(server, texts, bodies, 64, args.duration),
            )
            print("options", scheduler, row, flush=True)
            result["options"][scheduler] = row
    if "rss" in args.parts:
        # the server's resident memory after warming up and after rss_duration seconds at
        # saturation (256 closed-loop clients), continuous, int8 greedy
        config = "int8-greedy"

        def rss(server: Server) -> dict[str, Any]:
            asyncio.run(closed_loop(server.port, texts, body_for(config), 256, 5.0))
            start = resident_mib(server.proc.pid)
            row = asyncio.run(
                closed_loop(server.port, texts, body_for(config), 256, args.rss_duration)
            )
            return {"start_mib": start, "end_mib": resident_mib(server.proc.pid), **row}

        result["rss"] = with_server(env_for(config, "continuous"), "rss", args, rss)
        print("rss", result["rss"], flush=True)
    if "mixed" in args.parts:
        result["mixed"] = {}
        config = args.mixed_config
        captions = [t for t in texts if t.strip()]
        for scheduler in args.schedulers:
            row = with_server(
                env_for(config, scheduler),
                f"mixed-{scheduler}",
                args,
                lambda server: asyncio.run(
                    mixed_load(server.port, captions, body_for(config), args)
                ),
            )
            print("mixed", scheduler, row, flush=True)
            result["mixed"][scheduler] = row
    if "poisson" in args.parts:
        config = "int8-greedy"
        static_rows = result["closed"].get(f"{config}/static", [])
        at64 = [r for r in static_rows if r["clients"] == 64]
        capacity = args.capacity or (at64[0]["per_s"] if at64 else 100.0)
        result["poisson"] = {"capacity": capacity}
        for scheduler in args.schedulers:

            def rates(server: Server, scheduler: str = scheduler) -> list[dict[str, Any]]:
                rows = []
                for share in args.rates:
                    rate = share * capacity
                    row = asyncio.run(
                        open_loop(server.port, texts, body_for(config), rate, args.duration)
                    )
                    row["share"] = share
                    print("poisson", scheduler, row, flush=True)
                    rows.append(row)
                return rows

            result["poisson"][scheduler] = with_server(
                env_for(config, scheduler), f"poisson-{scheduler}", args, rates
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict[str, Any]) -> str:
    lines = [f"`{result['command']}`", "", f"Client: {result['client']}.", ""]
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
                f"{r['per_s']} req/s (p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms)"
            )
        lines.append("")
    if "rss" in result:
        r = result["rss"]
        lines.append(
            f"RSS at saturation (continuous, int8 greedy, 256 clients, {r['seconds']} s, "
            f"{r['requests']} requests): {r['start_mib']} MiB after warming up, "
            f"{r['end_mib']} MiB at the end ({r['end_mib'] / r['start_mib'] - 1:+.1%})"
        )
        lines.append("")
    if "lean" in result:
        for name, r in result["lean"].items():
            lines.append(
                f"- continuous, int8 greedy, 64 clients, uvicorn on {name}: {r['per_s']} req/s "
                f"(p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms)"
            )
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
