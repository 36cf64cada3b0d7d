"""`python -m loadtest [run|sweep] --url ...`: load the service, write a JSON report and plots."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from loadtest.report import format_summary, plot_run, plot_sweep, summarize, write_json
from loadtest.runner import RunConfig, run_load, wait_ready
from loadtest.sentences import default_sentences_path, load_sentences
from loadtest.workload import ROUTE_PATHS, Workload, WorkloadConfig

COMMANDS = ("run", "sweep")


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    load = parser.add_argument_group("load")
    load.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL")
    load.add_argument(
        "--mode",
        choices=("closed", "open"),
        default="closed",
        help="closed: N clients each waiting for its answer; open: Poisson "
        "arrivals at --rate, whatever the answers",
    )
    load.add_argument("--concurrency", "-c", type=int, default=4, help="clients in closed mode")
    load.add_argument(
        "--rate", "-r", type=float, default=10.0, help="mean arrivals per second in open mode"
    )
    load.add_argument("--duration", "-d", type=float, help="seconds to run")
    load.add_argument(
        "--requests",
        "-n",
        type=int,
        help="requests to send (with --duration: whichever ends first)",
    )
    load.add_argument("--timeout", type=float, default=60.0, help="per-request timeout (s)")
    load.add_argument("--seed", type=int, default=0)
    load.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="first wait up to S seconds for /health/ready to answer 200",
    )

    mix = parser.add_argument_group("requests")
    mix.add_argument(
        "--sentences",
        type=Path,
        help="one sentence per line, .gz allowed (default: Multi30k "
        "test_2016_flickr.<source>.gz in MULTI30K_DIR)",
    )
    mix.add_argument("--source", default="en", help="source language")
    mix.add_argument("--target", default="de", help="target language")
    mix.add_argument(
        "--route",
        choices=sorted(ROUTE_PATHS),
        default="v1",
        help="v1: POST /v1/translate; libre: LibreTranslate POST /translate",
    )
    mix.add_argument(
        "--batch-fraction",
        type=float,
        default=0.2,
        help="share of requests carrying a batch of texts",
    )
    mix.add_argument(
        "--batch-size", type=int, default=8, help="largest batch; a batch holds 2..batch-size texts"
    )
    mix.add_argument("--beam-size", type=int, help="beam size sent with /v1 requests")
    mix.add_argument("--max-length", type=int, help="max_length sent with /v1 requests")
    mix.add_argument("--api-key", help="API key, when the service has NMT_API_KEYS set")

    parser.add_argument(
        "--out",
        type=Path,
        default=Path("loadtest-results"),
        help="directory for the JSON report and PNG plots",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest",
        description="Load-test the translation service. `run` (the default) performs one run; "
        "`sweep` repeats it over load levels and plots throughput against p95 latency.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="one load run (default)")
    _common_arguments(run)
    sweep = commands.add_parser("sweep", help="runs over several load levels")
    _common_arguments(sweep)
    sweep.add_argument(
        "--levels",
        default="1,2,4,8,16",
        help="comma-separated concurrencies (closed) or rates (open)",
    )
    return parser


def _configs(args: argparse.Namespace) -> tuple[Workload, RunConfig]:
    if args.duration is None and args.requests is None:
        args.duration = 30.0
    sentences = load_sentences(args.sentences or default_sentences_path(args.source))
    workload = Workload(
        sentences,
        WorkloadConfig(
            source_lang=args.source,
            target_lang=args.target,
            route=args.route,
            batch_fraction=args.batch_fraction,
            batch_size=args.batch_size,
            beam_size=args.beam_size,
            max_length=args.max_length,
            api_key=args.api_key,
        ),
        seed=args.seed,
    )
    config = RunConfig(
        url=args.url,
        mode=args.mode,
        concurrency=args.concurrency,
        rate=args.rate,
        duration_s=args.duration,
        requests=args.requests,
        timeout_s=args.timeout,
        seed=args.seed,
    )
    return workload, config


def _workload_json(workload: Workload) -> dict[str, Any]:
    data = asdict(workload.config)
    data.pop("api_key")  # a report is shared; a secret must not travel with it
    data["sentences"] = len(workload.sentences)
    return data


def run_once(workload: Workload, config: RunConfig, out: Path) -> dict[str, Any]:
    """One run: report.json and report.png under out."""
    result = asyncio.run(run_load(workload, config))
    summary = summarize(result, _workload_json(workload))
    out.mkdir(parents=True, exist_ok=True)
    write_json(summary, out / "report.json")
    plot_run(summary, out / "report.png")
    return summary


def sweep(workload: Workload, config: RunConfig, levels: list[float], out: Path) -> dict[str, Any]:
    """A run per level (concurrency or rate), then sweep.json and sweep.png under out."""
    rows = []
    for level in levels:
        if config.mode == "closed":
            level_config = replace(config, concurrency=int(level))
        else:
            level_config = replace(config, rate=level)
        summary = run_once(workload, level_config, out / f"level-{level:g}")
        print(f"--- level {level:g}\n{format_summary(summary)}", flush=True)
        rows.append(
            {
                "level": level,
                "throughput": summary["throughput"],
                "latency_ms": summary["latency_ms"],
                "requests": summary["requests"],
                "status_counts": summary["status_counts"],
                "errors": summary["errors"],
            }
        )
    result = {
        "mode": config.mode,
        "config": asdict(config),
        "workload": _workload_json(workload),
        "levels": rows,
    }
    write_json(result, out / "sweep.json")
    plot_sweep(result, out / "sweep.png")
    return result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv.insert(0, "run")
    args = build_parser().parse_args(argv)
    try:
        workload, config = _configs(args)
    except (OSError, ValueError) as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    if args.wait > 0:
        try:
            wait_ready(args.url, args.wait)
        except TimeoutError as exc:
            print(f"loadtest: {exc}", file=sys.stderr)
            return 2
    if args.command == "sweep":
        levels = [float(x) for x in args.levels.split(",") if x.strip()]
        sweep(workload, config, levels, args.out)
        print(f"wrote {args.out / 'sweep.json'} and {args.out / 'sweep.png'}")
        return 0
    summary = run_once(workload, config, args.out)
    print(format_summary(summary))
    print(f"wrote {args.out / 'report.json'} and {args.out / 'report.png'}")
    # Not one success means a wrong URL, pair or key rather than a slow service: fail loudly.
    return 0 if summary["requests"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
