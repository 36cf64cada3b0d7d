"""`python -m bench.engines`: every engine on the same test_2016_flickr sentences, one table.

Rows: torch without a KV cache, torch with it, ONNX Runtime fp32 and int8, and CTranslate2
fp32 and int8 converted from the same checkpoint; each at beam 1 and 4, batch 1 and 32.
Every row runs in a fresh process, so its peak memory and thread settings are its own.

Streams: ONNX Runtime and CTranslate2 rows run in each of the `--streams` settings: with 1,
the batch is decoded as one on all `--threads` threads; with s > 1, it is split into s
shares decoded at once, each on threads / s threads (our engine's `streams`, CTranslate2's
`inter_threads` with `max_batch_size` = batch / s). The torch rows always run one stream.

CUDA (`--device cuda`): torch without and with the cache (fp32, and fp16 with the cache),
ONNX Runtime fp32 and fp16 on the CUDA execution provider with IO binding, and CTranslate2
float32 and float16 when its CUDA build can run. Streams there overlap one share's host work
(the search, the graph launches) with another's GPU work. Memory there is the GPU's:
the device memory in use once the row's engine is loaded and warm, and the most in use while
it ran, read from NVML around each batch (both include the CUDA context and the runtime's
memory pool), beside the process's RSS.

Noise: on a shared virtual machine the host can take the cores away for a while (steal
time). Each row records the share of CPU time stolen while it ran, and `--repeat N` measures
every row N times, in turn over the whole table (so a slow spell hits different rows in
each pass), keeping each row's fastest pass.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.engine_job import Job, Row, measure
from bench.engine_report import BEAMS, ratios, render
from bench.toolkit import RESULTS, SPLIT, command_line, machine, split_sentences

ENGINES = ("torch-nocache", "torch", "onnx", "ctranslate2")
ROWS = (
    ("torch-nocache", "fp32"),
    ("torch", "fp32"),
    ("onnx", "fp32"),
    ("onnx", "int8"),
    ("ctranslate2", "fp32"),
    ("ctranslate2", "int8"),
)
CUDA_ROWS = (
    ("torch-nocache", "fp32"),
    ("torch", "fp32"),
    ("torch", "fp16"),
    ("onnx", "fp32"),
    ("onnx", "fp16"),
    ("ctranslate2", "fp32"),
    ("ctranslate2", "fp16"),
)
DEVICES = ("cpu", "cuda")
STREAMED = ("onnx", "ctranslate2")  # engines that can decode shares of a batch at once
BATCHES = (1, 32)


def ctranslate2_unavailable(meta: dict[str, Any], device: str) -> str | None:
    """Why CTranslate2 cannot run this model on this device; None when it can."""
    if meta["model"].get("moe_experts"):
        return "no mixture-of-experts model in CTranslate2"
    try:
        import ctranslate2
    except ImportError:
        return "not installed"
    if device == "cuda" and ctranslate2.get_cuda_device_count() < 1:
        return f"ctranslate2 {ctranslate2.__version__} sees no CUDA device"
    return None


def prepare(
    model_dir: Path, rows: Sequence[tuple[str, str]], artifacts_root: Path | None
) -> Path | None:
    """Export the ONNX graphs and convert the CTranslate2 model once, before any row runs."""
    from export.artifacts import ensure_graphs, model_artifacts_dir

    for engine, precision in rows:
        if engine == "onnx":
            ensure_graphs(model_dir, precision, artifacts_root)
    if not any(engine == "ctranslate2" for engine, _ in rows):
        return None
    from bench.ctranslate2_model import CT2_DIR, convert
    from model.checkpoint import load_model

    return convert(load_model(model_dir), model_artifacts_dir(model_dir, artifacts_root) / CT2_DIR)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/en-de"))
    parser.add_argument("--limit", type=int, default=1000, help="sentences per row")
    parser.add_argument(
        "--batch1-limit",
        type=int,
        default=None,
        help="sentences for the batch-1 rows (default: --limit)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="intra-op threads of every engine",
    )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="cpu",
        help="cpu, or cuda: the CUDA rows (fp32 and fp16)",
    )
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--beams", nargs="+", type=int, default=list(BEAMS))
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    parser.add_argument(
        "--streams",
        nargs="+",
        type=int,
        default=[1, 2],
        help="streams settings for the onnx and ctranslate2 rows (torch rows: 1)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure every row this many times, in turn, and keep its fastest pass",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS / "engines", help="writes OUT.md and OUT.json"
    )
    args = parser.parse_args(argv)

    from model.checkpoint import model_hash

    meta = json.loads((args.model / "config.json").read_text())
    references = split_sentences(meta["target_lang"])
    limit = min(args.limit, len(references))
    batch1_limit = min(args.batch1_limit or limit, limit)
    table = CUDA_ROWS if args.device == "cuda" else ROWS
    rows_wanted = [(e, p) for e, p in table if e in args.engines]
    failed: list[str] = []
    if any(e == "ctranslate2" for e, _ in rows_wanted):
        reason = ctranslate2_unavailable(meta, args.device)
        if reason:
            print(f"CTranslate2 rows skipped: {reason}", file=sys.stderr)
            failed.append(f"CTranslate2 ({reason})")
            rows_wanted = [(e, p) for e, p in rows_wanted if e != "ctranslate2"]
    root_env = os.environ.get("NMT_ARTIFACTS_DIR")
    ct2_dir = prepare(args.model, rows_wanted, Path(root_env) if root_env else None)

    jobs: list[Job] = []
    for engine, precision in rows_wanted:
        for beam in args.beams:
            for batch in args.batches:
                # (at batch 1, s streams decode the one sentence on threads / s threads)
                streams = args.streams if engine in STREAMED else [1]
                if args.device == "cuda" and batch == 1:
                    streams = [1]  # one sentence: nothing to overlap on a GPU
                for stream_count in streams:
                    jobs.append(
                        Job(
                            engine,
                            precision,
                            beam,
                            batch,
                            str(args.model),
                            batch1_limit if batch == 1 else limit,
                            args.threads,
                            max(1, min(stream_count, args.threads)),
                            str(ct2_dir) if ct2_dir else None,
                            root_env,
                            args.device,
                        )
                    )
    best: list[Row | None] = [None] * len(jobs)
    for attempt in range(1, max(1, args.repeat) + 1):
        for i, job in enumerate(jobs):
            try:
                row = measure(job, references)
            except Exception as exc:  # one broken row (a library, a driver) spares the rest
                what = f"{job.engine} {job.precision} beam {job.beam} batch {job.batch}"
                print(f"pass {attempt} {what}: failed: {exc!r}", file=sys.stderr, flush=True)
                failed.append(f"{what} ({type(exc).__name__}: {exc})")
                continue
            kept = best[i]
            if kept is None or row.sentences_per_s > kept.sentences_per_s:
                best[i] = row
            print(
                f"pass {attempt} {job.engine:14s} {job.precision} beam {job.beam} "
                f"batch {job.batch:3d} streams {job.streams}: {row.sentences_per_s:8.1f} sent/s "
                f"{row.tokens_per_s:9.0f} tok/s p50 {row.p50_batch_ms:8.1f} ms  "
                f"steal {row.steal_pct:4.1f}%  BLEU {row.bleu:.2f}",
                flush=True,
            )
    rows = [r for r in best if r is not None]

    report = {
        "command": command_line("bench.engines", argv),
        "model": str(args.model),
        "model_hash": model_hash(args.model),
        "split": SPLIT,
        "source_lang": meta["source_lang"],
        "target_lang": meta["target_lang"],
        "sentences": limit,
        "batch1_sentences": batch1_limit,
        "repeat": max(1, args.repeat),
        "machine": machine(args.threads, args.device),
        "memory": "RSS with the engine loaded and warm; peak delta = VmHWM during the timed "
        "run (reset before it) minus that RSS; fresh process per row",
        "rows": [asdict(r) for r in rows],
        "failed": failed,
    }
    report["ratios"] = ratios(rows, args.device)
    text = render(rows, report)
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
