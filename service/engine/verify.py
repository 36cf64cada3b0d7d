"""`python -m service.engine.verify --model models/en-de`: ONNX Runtime against PyTorch.

For each precision: the largest difference of the next-token log-probabilities over every
step of teacher-forced decoding (log-probabilities are the logits shifted by a per-row
constant, so this is also the logit difference up to that shift), the share of sentences
translated to identical tokens at beam 1 and beam 4, and the BLEU of each variant.

`--device cuda` runs both sides on the GPU: PyTorch float32 as the reference, ONNX Runtime's
CUDA execution provider (IO binding) for the fp32 and fp16 graphs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from export.artifacts import model_artifacts_dir
from model.data import default_data_dir, read_lines
from service.engine.base import Engine
from service.engine.loader import load_engine
from service.engine.ort_session import cuda_available

SPLIT = "test_2016_flickr"
BEAMS = (1, 4)
# The issue's targets: fp32 identical to PyTorch (all greedy, >= 99.5% beam); int8 within
# 0.5 BLEU. The issue sets none for fp16: it is held to the int8 bound.
FP32_GREEDY_IDENTICAL = 1.0
FP32_BEAM_IDENTICAL = 0.995
MAX_BLEU_DROP = 0.5


@dataclass
class Result:
    """One variant at one beam size."""

    precision: str
    beam: int
    identical: float  # share of sentences with the same tokens as PyTorch
    bleu: float
    bleu_drop: float  # PyTorch BLEU minus this variant's
    max_logprob_diff: float
    seconds: float
    passed: bool


def batches(sources: Sequence[Sequence[int]], size: int) -> list[list[int]]:
    """Sentence indices in batches of similar length (as a serving batcher would form them)."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    return [order[i : i + size] for i in range(0, len(order), size)]


def translate_all(
    engine: Engine, sources: Sequence[Sequence[int]], beam: int, size: int
) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in sources]
    for chunk in batches(sources, size):
        hyps = engine.generate([sources[i] for i in chunk], beam_size=beam)
        for i, h in zip(chunk, hyps, strict=True):
            out[i] = h[0].tokens
    return out


@torch.inference_mode()
def max_logprob_diff(
    reference: Engine, candidate: Engine, sources: Sequence[Sequence[int]], size: int
) -> float:
    """Largest |log p_candidate - log p_reference|, both fed the reference's greedy tokens."""
    worst = 0.0
    for chunk in batches(sources, size):
        batch = [sources[i] for i in chunk]
        ref_state, cand_state = reference.start(batch), candidate.start(batch)
        tokens = torch.full((len(batch),), reference.bos_id, dtype=torch.long)
        finished = torch.zeros(len(batch), dtype=torch.bool)
        for _ in range(reference.max_length_for(max(len(s) for s in batch))):
            ref_lp, ref_state = reference.step(ref_state, tokens)
            cand_lp, cand_state = candidate.step(cand_state, tokens)
            live = ~finished  # rows past their EOS decode garbage on both sides; skip them
            worst = max(worst, float((cand_lp[live] - ref_lp[live]).abs().max()))
            tokens = ref_lp.argmax(dim=-1)
            finished |= tokens == reference.eos_id
            if bool(finished.all()):
                break
    return worst


def verify(
    model_dir: Path,
    precisions: Sequence[str],
    limit: int | None,
    batch_size: int,
    threads: int | None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run every check; returns the report (also the JSON written to disk)."""
    import sacrebleu

    if threads:
        torch.set_num_threads(threads)
    reference = load_engine(model_dir, backend="torch", device=device)
    texts = read_lines(default_data_dir(), SPLIT, reference.source_lang)[:limit]
    refs = read_lines(default_data_dir(), SPLIT, reference.target_lang)[: len(texts)]
    limit_len = reference.max_positions - 1
    sources = [s[:limit_len] for s in reference.tokenizer.encode(texts)]

    def bleu(outputs: list[list[int]]) -> float:
        return float(sacrebleu.corpus_bleu(reference.tokenizer.decode(outputs), [refs]).score)

    expected = {beam: translate_all(reference, sources, beam, batch_size) for beam in BEAMS}
    torch_bleu = {beam: bleu(outputs) for beam, outputs in expected.items()}
    results = []
    for precision in precisions:
        # fp16 graphs are for the GPU; on the CPU the reference stays there.
        engine = load_engine(
            model_dir,
            backend="onnx",
            device="cuda" if precision == "fp16" else device,
            precision=precision,
            threads=threads,
        )
        diff = max_logprob_diff(reference, engine, sources, batch_size)
        for beam in BEAMS:
            start = time.perf_counter()
            outputs = translate_all(engine, sources, beam, batch_size)
            seconds = time.perf_counter() - start
            same = sum(a == b for a, b in zip(outputs, expected[beam], strict=True)) / len(sources)
            score = bleu(outputs)
            drop = torch_bleu[beam] - score
            if precision == "fp32":
                passed = same >= (FP32_GREEDY_IDENTICAL if beam == 1 else FP32_BEAM_IDENTICAL)
            else:
                passed = drop <= MAX_BLEU_DROP
            results.append(
                Result(
                    precision,
                    beam,
                    round(same, 4),
                    round(score, 2),
                    round(drop, 2),
                    diff,
                    round(seconds, 2),
                    passed,
                )
            )
    return {
        "model": str(model_dir),
        "device": device,
        "version": reference.version,
        "split": SPLIT,
        "pair": reference.pair,
        "sentences": len(sources),
        "torch_bleu": {str(b): round(v, 2) for b, v in torch_bleu.items()},
        "results": [asdict(r) for r in results],
        "passed": all(r.passed for r in results),
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"{report['pair']} {report['version']} on {report.get('device', 'cpu')}: "
        f"{report['sentences']} sentences of "
        f"{report['split']}; PyTorch BLEU beam 1 {report['torch_bleu']['1']:.2f}, "
        f"beam 4 {report['torch_bleu']['4']:.2f}",
        "",
        "| precision | beam | identical tokens | BLEU | BLEU drop | max logprob diff | s "
        "| target |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["results"]:
        target = (
            ("100% identical" if r["beam"] == 1 else ">= 99.5% identical")
            if r["precision"] == "fp32"
            else f"drop <= {MAX_BLEU_DROP}"
        )
        lines.append(
            f"| {r['precision']} | {r['beam']} | {100 * r['identical']:.1f}% | {r['bleu']:.2f} "
            f"| {r['bleu_drop']:+.2f} | {r['max_logprob_diff']:.2e} | {r['seconds']:.1f} "
            f"| {target}: {'pass' if r['passed'] else 'FAIL'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None, help="first N test sentences")
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=None,
        choices=["fp32", "int8", "fp16"],
        help="variants to check (default: fp32 int8 on cpu, fp32 fp16 on cuda; fp16 needs CUDA)",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="where PyTorch and ONNX Runtime both run (int8 is CPU-only)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON report (default: verify.json in the model's artifacts dir)",
    )
    args = parser.parse_args(argv)
    if args.precisions is None:
        args.precisions = ["fp32", "fp16"] if args.device == "cuda" else ["fp32", "int8"]
    if ("fp16" in args.precisions or args.device == "cuda") and not cuda_available():
        parser.error("fp16 and --device cuda need ONNX Runtime's CUDA provider, absent here")
    if args.device == "cuda" and "int8" in args.precisions:
        parser.error("int8 graphs are for the CPU; verify fp32 and fp16 on cuda")
    report = verify(
        args.model, args.precisions, args.limit, args.batch_size, args.threads, args.device
    )
    print(render(report))
    out = args.out or model_artifacts_dir(args.model) / "verify.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()
