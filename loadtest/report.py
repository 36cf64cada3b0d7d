"""Summaries of a run (throughput, latency percentiles, status counts), as JSON and PNG."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from loadtest.runner import RunResult, Sample

PERCENTILES = (50, 90, 95, 99)


def latency_stats_ms(latencies_s: list[float]) -> dict[str, float | None]:
    """p50/p90/p95/p99, max, mean and min in milliseconds; None for an empty list."""
    keys = [f"p{p}" for p in PERCENTILES] + ["max", "mean", "min"]
    if not latencies_s:
        return dict.fromkeys(keys, None)
    ms = np.asarray(latencies_s, dtype=float) * 1000.0
    values = [*np.percentile(ms, PERCENTILES), ms.max(), ms.mean(), ms.min()]
    return {k: round(float(v), 3) for k, v in zip(keys, values, strict=True)}


def timeline(samples: list[Sample], wall_s: float) -> tuple[float, list[dict[str, float]]]:
    """Completions per bin of time: (bin width in s, [{t, requests_per_s, ok_per_s}])."""
    # About 40 bins whatever the length, but never under 0.25 s, so short runs stay readable.
    width = max(0.25, wall_s / 40)
    n_bins = max(1, int(np.ceil(wall_s / width)))
    done = np.array([s.start + s.latency for s in samples], dtype=float)
    ok = np.array([s.ok for s in samples], dtype=bool)
    edges = np.arange(n_bins + 1) * width
    all_counts, _ = np.histogram(done, bins=edges)
    ok_counts, _ = np.histogram(done[ok] if len(done) else done, bins=edges)
    rows = [
        {
            "t": round(float(edges[i]), 3),
            "requests_per_s": round(float(all_counts[i]) / width, 3),
            "ok_per_s": round(float(ok_counts[i]) / width, 3),
        }
        for i in range(n_bins)
    ]
    return width, rows


def summarize(result: RunResult, workload: dict[str, Any]) -> dict[str, Any]:
    """The JSON report of one run. Latency percentiles are over successful requests only."""
    samples, wall = result.samples, max(result.wall_s, 1e-9)
    ok = [s for s in samples if s.ok]
    status_counts = Counter(str(s.status) for s in samples)
    errors = Counter(s.error for s in samples if s.error is not None)
    width, bins = timeline(samples, result.wall_s)
    return {
        "config": asdict(result.config),
        "workload": workload,
        "wall_s": round(result.wall_s, 3),
        "requests": {
            "total": len(samples),
            "ok": len(ok),
            "failed": len(samples) - len(ok),
            "texts_ok": sum(s.n_texts for s in ok),
        },
        "throughput": {
            "requests_per_s": round(len(samples) / wall, 3),
            "ok_requests_per_s": round(len(ok) / wall, 3),
            "texts_per_s": round(sum(s.n_texts for s in ok) / wall, 3),
        },
        "latency_ms": latency_stats_ms([s.latency for s in ok]),
        "latency_ms_all": latency_stats_ms([s.latency for s in samples]),
        "status_counts": dict(sorted(status_counts.items())),
        "errors": dict(sorted(errors.items())),
        "timeline": {"bin_s": round(width, 3), "bins": bins},
        "samples": [
            [round(s.start, 4), round(s.latency, 4), s.status, s.n_texts, s.error] for s in samples
        ],
    }


def plot_run(summary: dict[str, Any], path: Path) -> None:
    """Latency histogram with percentile lines, and throughput over time."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    hist, rate = fig.subplots(1, 2)
    ok_latencies = [
        row[1] * 1000 for row in summary["samples"] if row[4] is None and 200 <= row[2] < 300
    ]
    if ok_latencies:
        hist.hist(
            ok_latencies, bins=min(50, max(5, len(ok_latencies) // 5)), color="tab:blue", alpha=0.8
        )
        for name, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            value = summary["latency_ms"][name]
            hist.axvline(value, color="black", linestyle=style, label=f"{name} {value:.0f} ms")
        hist.legend()
    else:
        hist.text(0.5, 0.5, "no successful request", ha="center", transform=hist.transAxes)
    hist.set_xlabel("latency (ms), successful requests")
    hist.set_ylabel("requests")
    hist.set_title("Latency distribution")

    bins = summary["timeline"]["bins"]
    # One more edge than bins, repeating the last value, so the last bin is drawn too.
    t = [b["t"] for b in bins] + [bins[-1]["t"] + summary["timeline"]["bin_s"]]
    for key, label, style in (("requests_per_s", "all", "-"), ("ok_per_s", "2xx", "--")):
        values = [b[key] for b in bins]
        rate.step(t, values + values[-1:], where="post", label=label, linestyle=style)
    rate.set_xlabel("time since start (s)")
    rate.set_ylabel("completed requests / s")
    rate.set_title("Throughput over time")
    rate.legend()
    config = summary["config"]
    load = (
        f"{config['concurrency']} clients"
        if config["mode"] == "closed"
        else f"{config['rate']} req/s Poisson"
    )
    fig.suptitle(
        f"{config['url']} - {load} - {summary['requests']['total']} requests, "
        f"{summary['throughput']['requests_per_s']:.1f} req/s"
    )
    fig.savefig(path, dpi=100)


def plot_sweep(sweep: dict[str, Any], path: Path) -> None:
    """Throughput against p95 latency, one point per load level."""
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    points = [
        (lvl["level"], lvl["throughput"]["ok_requests_per_s"], lvl["latency_ms"]["p95"])
        for lvl in sweep["levels"]
        if lvl["latency_ms"]["p95"] is not None
    ]
    if points:
        ax.plot([p[1] for p in points], [p[2] for p in points], marker="o")
        for level, x, y in points:
            ax.annotate(f"{level:g}", (x, y), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("throughput (successful requests / s)")
    ax.set_ylabel("p95 latency (ms)")
    what = "concurrency" if sweep["mode"] == "closed" else "offered rate (req/s)"
    ax.set_title(f"Sweep over {what}")
    ax.grid(True, alpha=0.3)
    fig.savefig(path, dpi=100)


def write_json(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def format_summary(summary: dict[str, Any]) -> str:
    """A few human-readable lines for the console."""
    req, thr, lat = summary["requests"], summary["throughput"], summary["latency_ms"]

    def ms(key: str) -> str:
        return "-" if lat[key] is None else f"{lat[key]:.1f}"

    lines = [
        f"requests   {req['total']} total, {req['ok']} ok, {req['failed']} failed "
        f"in {summary['wall_s']:.2f} s",
        f"throughput {thr['requests_per_s']:.2f} req/s ({thr['ok_requests_per_s']:.2f} ok), "
        f"{thr['texts_per_s']:.2f} texts/s",
        "latency ms " + "  ".join(f"{k} {ms(k)}" for k in ("p50", "p90", "p95", "p99", "max")),
        "status     " + ", ".join(f"{k}: {v}" for k, v in summary["status_counts"].items()),
    ]
    if summary["errors"]:
        lines.append("errors     " + ", ".join(f"{k}: {v}" for k, v in summary["errors"].items()))
    return "\n".join(lines)
