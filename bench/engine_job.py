"""One row of `python -m bench.engines`, measured in a process of its own.

`run_job` runs in the child: it loads the row's translator (one of our engines, the KV-less
torch baseline, or CTranslate2 on a model converted from the same checkpoint), warms it up
and times every batch of the test sentences; `measure` starts that child and turns its
outputs into a table `Row` (BLEU included).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from bench.toolkit import NvmlGpu, Stopwatch, memory_mib, reset_peak_rss, split_sentences

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


# ----- the translators a row can use -----
def _our_engine(job: Job) -> TranslateFn:
    from model.checkpoint import load_model
    from service.engine.loader import load_engine

    if job.engine == "onnx":
        root = Path(job.artifacts_root) if job.artifacts_root else None
        engine: Any = load_engine(
            job.model_dir,
            backend="onnx",
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

    from model.tokenizer import TOKENIZER_FILE, Tokenizer

    torch.set_num_threads(job.threads)
    meta = json.loads((Path(job.model_dir) / "config.json").read_text())
    tokenizer = Tokenizer(Path(job.model_dir) / TOKENIZER_FILE)
    texts = split_sentences(meta["source_lang"], job.sentences)
    limit = meta["model"]["max_length"] - 1
    sources = [s[:limit] for s in tokenizer.encode(texts)]
    batches = [sources[i : i + job.batch] for i in range(0, len(sources), job.batch)]

    translate = _ctranslate2(job) if job.engine == "ctranslate2" else _our_engine(job)
    translate(batches[0], job.beam)  # warm-up: first-call allocations and lazy init
    gpu = NvmlGpu() if job.device == "cuda" else None
    gpu_mib = gpu.used_mib() if gpu else None
    gpu_peak = gpu_mib
    rss, _ = memory_mib()
    reset_peak_rss()
    outputs: list[list[int]] = []
    times = []
    with Stopwatch() as clock:
        for batch in batches:
            t0 = time.perf_counter()
            outputs.extend(translate(batch, job.beam))  # tokens on the host: the GPU is done
            times.append(time.perf_counter() - t0)
            if gpu:  # the pools keep what a batch took, so reading after it sees its peak
                gpu_peak = max(gpu_peak or 0.0, gpu.used_mib())
    return {
        "gpu_mib": gpu_mib,
        "gpu_peak_mib": gpu_peak,
        "outputs": outputs,
        "seconds": clock.seconds,
        "cpu_seconds": clock.cpu_seconds,
        "steal_pct": clock.steal_pct,
        "p50_batch_ms": 1000 * statistics.median(times),
        "rss_mib": rss,
        "peak_delta_mib": memory_mib()[1] - rss,
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
