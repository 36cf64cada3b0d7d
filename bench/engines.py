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
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from bench.steal import cpu_jiffies, steal_percent

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
BEAMS = (1, 4)
STREAMED = ("onnx", "ctranslate2")  # engines that can decode shares of a batch at once
BATCHES = (1, 32)
SPLIT = "test_2016_flickr"
RESULTS = Path(__file__).resolve().parent / "results"
# The same length penalty alpha on every engine; CTranslate2 applies it as score / len^alpha,
# ours as GNMT's ((5 + len) / 6)^alpha, so beam-4 rows may rank a few hypotheses differently.
ALPHA = 0.6

TranslateFn = Callable[[list[list[int]], int], list[list[int]]]


@dataclass(frozen=True)
class Job:
    """One row to measure, and what the child process needs to run it."""

    engine: str
    precision: str
    beam: int
    batch: int
    model_dir: str
    sentences: int
    threads: int
    streams: int
    ct2_dir: str | None
    artifacts_root: str | None
    device: str = "cpu"


@dataclass
class Row:
    """One line of the table."""

    engine: str
    precision: str
    beam: int
    batch: int
    streams: int
    sentences: int
    seconds: float
    cpu_seconds: float
    sentences_per_s: float
    tokens_per_s: float
    p50_batch_ms: float
    steal_pct: float
    rss_mib: float
    peak_delta_mib: float
    bleu: float
    device: str = "cpu"
    gpu_mib: float | None = None  # device memory in use, engine loaded and warm
    gpu_peak_mib: float | None = None  # most device memory in use during the timed run


# ----- memory, read from /proc (Linux) -----
def _status_kib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return float("nan")


def _reset_peak_rss() -> None:
    """Set the peak RSS (VmHWM) back to the current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


class NvmlGpu:
    """GPU 0 through NVML: its name, and the device memory in use (every process's, the CUDA
    context included: on a benchmark machine that is this row's process alone)."""

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


# ----- the translators a row can use -----
def _our_engine(job: Job) -> TranslateFn:
    from model.checkpoint import load_model
    from service.engine.loader import load_engine

    if job.engine == "onnx":
        from service.engine.onnx_engine import load_onnx_engine

        root = Path(job.artifacts_root) if job.artifacts_root else None
        engine: Any = load_onnx_engine(
            Path(job.model_dir),
            device=job.device,
            precision=job.precision,
            threads=job.threads,
            streams=job.streams,
            artifacts_root=root,
        )
    elif job.engine == "torch-nocache":
        from bench.torch_nocache import TorchNoCacheEngine

        engine = TorchNoCacheEngine(load_model(job.model_dir), device=job.device)
    else:
        engine = load_engine(
            job.model_dir, backend="torch", device=job.device, precision=job.precision
        )

    def translate(batch: list[list[int]], beam: int) -> list[list[int]]:
        # CTranslate2's budget: one per batch (ours default to one per sentence), so that
        # every engine decodes as far
        budget = min(2 * max(len(s) for s in batch) + 10, engine.max_positions - 1)
        hyps = engine.generate(batch, beam_size=beam, alpha=ALPHA, max_length=budget)
        return [h[0].tokens for h in hyps]

    return translate


def _ctranslate2(job: Job) -> TranslateFn:
    import ctranslate2

    from model.checkpoint import read_model_config
    from model.tokenizer import TOKENIZER_FILE, Tokenizer

    config, _ = read_model_config(Path(job.model_dir))
    sp = Tokenizer(Path(job.model_dir) / TOKENIZER_FILE).sp
    compute_type = {"fp32": "float32", "int8": "int8", "fp16": "float16"}[job.precision]
    translator = ctranslate2.Translator(
        job.ct2_dir,
        device=job.device,
        compute_type=compute_type,
        inter_threads=job.streams,
        intra_threads=max(1, job.threads // job.streams),
    )
    # With several streams, CTranslate2 splits a batch into sub-batches of this size (sorted
    # by length) and decodes them in parallel, one per inter-op thread.
    share = 0 if job.streams == 1 else -(-job.batch // job.streams)

    def translate(batch: list[list[int]], beam: int) -> list[list[int]]:
        # The output budget our engines use: twice the longest source plus ten.
        budget = min(2 * max(len(s) for s in batch) + 10, config.max_length - 1)
        results = translator.translate_batch(
            [[sp.id_to_piece(i) for i in s] for s in batch],
            beam_size=beam,
            max_decoding_length=budget,
            length_penalty=ALPHA if beam > 1 else 0.0,
            max_batch_size=share,
            # Every translation our engines return carries its score (the API serves it);
            # CTranslate2 skips the greedy log-softmax unless asked (10-20% of its greedy
            # time at 16 rows, measured), so it is asked: the same output from both.
            return_scores=True,
        )
        return [[sp.piece_to_id(p) for p in r.hypotheses[0]] for r in results]

    return translate


def run_job(job: Job) -> dict[str, Any]:
    """Child process: load, warm up, then time every batch; returns outputs and figures."""
    import torch

    from model.data import default_data_dir, read_lines
    from model.tokenizer import TOKENIZER_FILE, Tokenizer

    torch.set_num_threads(job.threads)
    meta = json.loads((Path(job.model_dir) / "config.json").read_text())
    tokenizer = Tokenizer(Path(job.model_dir) / TOKENIZER_FILE)
    texts = read_lines(default_data_dir(), SPLIT, meta["source_lang"])[: job.sentences]
    limit = meta["model"]["max_length"] - 1
    sources = [s[:limit] for s in tokenizer.encode(texts)]
    batches = [sources[i : i + job.batch] for i in range(0, len(sources), job.batch)]

    translate = _ctranslate2(job) if job.engine == "ctranslate2" else _our_engine(job)
    translate(batches[0], job.beam)  # warm-up: first-call allocations and lazy init
    gpu = NvmlGpu() if job.device == "cuda" else None
    gpu_mib = gpu.used_mib() if gpu else None
    gpu_peak = gpu_mib
    rss_kib = _status_kib("VmRSS")
    _reset_peak_rss()
    outputs: list[list[int]] = []
    times = []
    start, cpu_start, jiffies = time.perf_counter(), time.process_time(), cpu_jiffies()
    for batch in batches:
        t0 = time.perf_counter()
        outputs.extend(translate(batch, job.beam))  # tokens on the host: the GPU is done
        times.append(time.perf_counter() - t0)
        if gpu:  # the pools keep what a batch took, so reading after it sees its peak
            gpu_peak = max(gpu_peak or 0.0, gpu.used_mib())
    seconds = time.perf_counter() - start
    return {
        "gpu_mib": gpu_mib,
        "gpu_peak_mib": gpu_peak,
        "outputs": outputs,
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu_start,
        "steal_pct": steal_percent(jiffies, cpu_jiffies()),
        "p50_batch_ms": 1000 * statistics.median(times),
        "rss_mib": rss_kib / 1024,
        "peak_delta_mib": (_status_kib("VmHWM") - rss_kib) / 1024,
    }


def measure(job: Job, references: Sequence[str]) -> Row:
    """Run one job in a fresh process and turn its outputs into a table row."""
    import sacrebleu

    from model.tokenizer import TOKENIZER_FILE, Tokenizer

    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        result = pool.submit(run_job, job).result()
    outputs = result["outputs"]
    hypotheses = Tokenizer(Path(job.model_dir) / TOKENIZER_FILE).decode(outputs)
    bleu = sacrebleu.corpus_bleu(hypotheses, [list(references[: len(outputs)])]).score
    seconds = result["seconds"]
    return Row(
        engine=job.engine,
        precision=job.precision,
        beam=job.beam,
        batch=job.batch,
        streams=job.streams,
        sentences=len(outputs),
        seconds=round(seconds, 3),
        cpu_seconds=round(result["cpu_seconds"], 3),
        sentences_per_s=round(len(outputs) / seconds, 2),
        tokens_per_s=round(sum(len(o) for o in outputs) / seconds, 1),
        p50_batch_ms=round(result["p50_batch_ms"], 2),
        steal_pct=round(result["steal_pct"], 1),
        rss_mib=round(result["rss_mib"], 1),
        peak_delta_mib=round(result["peak_delta_mib"], 1),
        bleu=round(bleu, 2),
        device=job.device,
        gpu_mib=_round(result["gpu_mib"]),
        gpu_peak_mib=_round(result["gpu_peak_mib"]),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


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


def ratios(rows: Sequence[Row], device: str = "cpu") -> list[dict[str, Any]]:
    """The issue's targets at batch 32: ORT vs CTranslate2 (at each precision) and vs torch
    without cache, each engine in its fastest streams setting (a peer is compared at its best,
    not ours). The reduced precision is int8 on the CPU and fp16 on CUDA."""
    low = "fp16" if device == "cuda" else "int8"
    best: dict[tuple[str, str, int, int], Row] = {}
    for r in rows:
        key = (r.engine, r.precision, r.beam, r.batch)
        if key not in best or r.sentences_per_s > best[key].sentences_per_s:
            best[key] = r
    out = []
    for beam in BEAMS:
        for (a, b), target in (
            ((("onnx", "fp32"), ("ctranslate2", "fp32")), 1.0),
            ((("onnx", low), ("ctranslate2", low)), 1.0),
            ((("onnx", "fp32"), ("torch-nocache", "fp32")), 3.0),
        ):
            ka, kb = (*a, beam, 32), (*b, beam, 32)
            if ka in best and kb in best:
                ra, rb = best[ka], best[kb]
                value = ra.sentences_per_s / rb.sentences_per_s
                # CPU seconds per sentence: the fairer figure when other work shares the cores
                cpu_value = (rb.cpu_seconds / rb.sentences) / (ra.cpu_seconds / ra.sentences)
                out.append(
                    {
                        "beam": beam,
                        "batch": 32,
                        "engine": " ".join(a),
                        "engine_streams": ra.streams,
                        "versus": " ".join(b),
                        "versus_streams": rb.streams,
                        "ratio": round(value, 2),
                        "cpu_ratio": round(cpu_value, 2),
                        "target": target,
                        "met": value >= target,
                    }
                )
    return out


def gpu_name() -> str | None:
    """The name of GPU 0, from NVML; None without one."""
    try:
        return NvmlGpu().name()
    except Exception:
        return None


def onnxruntime_version() -> str:
    try:
        import onnxruntime
    except ImportError:
        return "not installed"
    return str(onnxruntime.__version__)


def machine(threads: int, device: str = "cpu") -> dict[str, Any]:
    """The CPU (and GPU), core count and library versions the table was measured with."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "torch": installed("torch"),
        # the module's own version: onnxruntime-gpu installs the same module under another name
        "onnxruntime": onnxruntime_version(),
        "ctranslate2": installed("ctranslate2"),
        "device": device,
        "gpu": gpu_name() if device == "cuda" else None,
    }


def render(rows: Sequence[Row], report: dict[str, Any]) -> str:
    """The markdown table with the command, the machine and how each column was measured."""
    m = report["machine"]
    on_gpu = m.get("device") == "cuda"
    where = f"GPU: {m['gpu']}, " if on_gpu else ""
    lines = [
        "# Engine benchmark" + (" (CUDA)" if on_gpu else ""),
        "",
        f"Command: `{report['command']}`",
        "",
        f"Model: `{report['model']}` ({report['model_hash']}), {report['split']} "
        f"{report['source_lang']}->{report['target_lang']}; machine: {where}{m['cpu']}, "
        f"{m['logical_cores']} logical cores, {m['threads']} thread(s) per engine; "
        f"torch {m['torch']}, onnxruntime {m['onnxruntime']}, ctranslate2 {m['ctranslate2']}.",
        "",
        "| engine | precision | beam | batch | streams | sentences | sent/s | tokens/s "
        "| p50 ms/batch | CPU s | steal % | RSS MiB | peak Δ MiB "
        + ("| GPU MiB | GPU peak MiB " if on_gpu else "")
        + "| BLEU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        + ("---:|---:|" if on_gpu else "")
        + "---:|",
    ]
    for r in rows:
        gpu = f"| {r.gpu_mib:.0f} | {r.gpu_peak_mib:.0f} " if on_gpu and r.gpu_mib else ""
        lines.append(
            f"| {r.engine} | {r.precision} | {r.beam} | {r.batch} | {r.streams} | {r.sentences} "
            f"| {r.sentences_per_s:.1f} | {r.tokens_per_s:.0f} | {r.p50_batch_ms:.1f} "
            f"| {r.cpu_seconds:.2f} | {r.steal_pct:.0f} | {r.rss_mib:.0f} | {r.peak_delta_mib:.1f} "
            f"{gpu}| {r.bleu:.2f} |"
        )
    for failure in report.get("failed", []):
        lines.append(f"\nNot measured: {failure}")
    lines += [
        "",
        "Targets at batch 32, each engine in its fastest streams setting (sentences/s ratio; "
        "CPU-time ratio beside it):",
        "",
    ]
    for t in report["ratios"]:
        mark = "met" if t["met"] else "NOT met"
        lines.append(
            f"- beam {t['beam']}: {t['engine']} ({t['engine_streams']} stream(s)) / "
            f"{t['versus']} ({t['versus_streams']}) = {t['ratio']:.2f}x "
            f"(target >= {t['target']:.1f}x, {mark}; by CPU time {t['cpu_ratio']:.2f}x)"
        )
    lines += [
        "",
        "How to read it: each row runs in a fresh process after one warm-up batch; the batches "
        "are the sentences in file order. streams: how many shares of a batch are decoded "
        "at once, each on threads / streams threads (CTranslate2: inter_threads). "
        "tokens/s counts generated tokens (EOS excluded). "
        "CPU s is the process CPU time of the timed run, all threads (spinning worker "
        "threads count too). steal % is the share of the machine's CPU time the hypervisor "
        "took for other guests during the timed run (0 on a dedicated machine). "
        "RSS is the resident memory with the engine loaded and warm; peak Δ is the peak RSS "
        "during the timed run (VmHWM, reset before it) minus that RSS. BLEU is sacreBLEU over "
        "the row's sentences, so rows with fewer sentences are not comparable on BLEU. "
        "CTranslate2 applies the length penalty as score / length^0.6, ours as GNMT's "
        "((5 + length) / 6)^0.6, which may rank some beam-4 hypotheses differently.",
    ]
    if on_gpu:
        lines.append(
            "GPU MiB is the device memory in use (NVML) with the row's engine loaded and warm, "
            "GPU peak the most in use after any batch of the timed run; both include the CUDA "
            "context and the runtime's memory pool (ORT's arena, torch's caching allocator)."
        )
    if report.get("repeat", 1) > 1:
        lines.append(
            f"Every row was measured {report['repeat']} times, in turn over the whole table; "
            "the table keeps each row's fastest pass."
        )
    if report["batch1_sentences"] < report["sentences"]:
        lines.append(
            f"Batch-1 rows ran on the first {report['batch1_sentences']} sentences "
            f"(--batch1-limit), the others on {report['sentences']}."
        )
    return "\n".join(lines) + "\n"


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
    from model.data import default_data_dir, read_lines

    meta = json.loads((args.model / "config.json").read_text())
    references = read_lines(default_data_dir(), SPLIT, meta["target_lang"])
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
        "command": " ".join(["python -m bench.engines", *(argv or sys.argv[1:])]),
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
