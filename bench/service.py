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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.toolkit import (
    RESULTS,
    SPLIT,
    ServiceProcess,
    closed_loop,
    command_line,
    engine_rate,
    machine,
    percentile,
    split_sentences,
)


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


def run_mode(
    name: str,
    env: dict[str, str],
    sentences: list[str],
    args: argparse.Namespace,
    body: dict[str, Any],
) -> list[Level]:
    """A server in one batching mode, each concurrency in turn: every sentence at most once
    per level."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    with ServiceProcess(env, RESULTS / f"service-{name}.log.tmp") as server:
        server.wait_ready(args.ready_timeout)
        for concurrency in args.concurrency:
            calls0, sent0 = server.batch_stats()
            load = asyncio.run(
                closed_loop(server.port, sentences, [body], concurrency, args.duration, cycle=False)
            )
            calls1, sent1 = server.batch_stats()
            mean_batch = (sent1 - sent0) / max(1.0, calls1 - calls0)
            ms = [x * 1000 for x in load.latencies] or [float("nan")]
            rows.append(
                Level(
                    batching=name,
                    concurrency=concurrency,
                    requests=len(load.latencies),
                    errors=load.errors,
                    seconds=round(load.seconds, 2),
                    requests_per_s=round(load.per_s, 1),
                    p50_ms=round(percentile(ms, 50), 1),
                    p95_ms=round(percentile(ms, 95), 1),
                    p99_ms=round(percentile(ms, 99), 1),
                    mean_batch=round(mean_batch, 1),
                    steal_pct=round(load.steal_pct, 1),
                )
            )
            print(_row_md(rows[-1]), flush=True)
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
    rate = engine_rate(
        engine,
        sentences,
        batch=args.engine_batch,
        beam_size=args.beam_size,
        duration=args.duration,
        cycle=False,
    )
    return {
        "backend": engine.backend,
        "device": engine.device,
        "precision": engine.precision,
        "version": engine.version,
        "batch": rate["batch"],
        "sentences": rate["sentences"],
        "seconds": rate["seconds"],
        "sentences_per_s": rate["per_s"],
        "steal_pct": rate["steal_pct"],
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
        "machine": machine(),
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
        f"{engine['device']}, model {engine['version']}; "
        f"{result['machine']['logical_cores']} CPUs, {result['machine']['platform']}.",
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
    command = command_line("bench.service", argv)

    source = args.pair.split("-")[0]
    target = args.pair.split("-")[1]
    sentences = split_sentences(source, args.limit)
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
