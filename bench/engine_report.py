"""The report of `python -m bench.engines`: the target ratios and the markdown table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.engine_job import Row

BEAMS = (1, 4)


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
