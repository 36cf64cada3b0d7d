"""Score a model directory: `python -m model.evaluate --model models/en-de`.

sacreBLEU on detokenized output against the raw references (cased and lowercased, with the
signature), greedy and beam, on val and every test set the pair's languages have; written to
metrics.json.

`--then models/en-fr` scores a pivot instead (de-en, then en-fr on the first pass's best
output), as the service routes a pair without a direct model; `--out` writes that JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import sacrebleu
import torch

from model.checkpoint import LoadedModel, load_model, read_metrics, write_metrics
from model.data import default_data_dir, read_pairs, splits_for
from model.search import translate_ids


def score(hypotheses: list[str], references: list[str]) -> dict[str, Any]:
    """Cased and lowercased corpus BLEU with their sacreBLEU signatures."""
    out: dict[str, Any] = {}
    for key, lowercase in (("bleu", False), ("bleu_lc", True)):
        metric = sacrebleu.metrics.BLEU(lowercase=lowercase)
        result = metric.corpus_score(hypotheses, [references])
        out[key] = round(result.score, 2)
        out[f"{key}_signature"] = str(metric.get_signature())
    return out


def translate_texts(
    loaded: LoadedModel, texts: list[str], *, beam_size: int, alpha: float, batch_size: int
) -> list[str]:
    sources = loaded.tokenizer.encode(texts)
    limit = loaded.config.max_length - 1
    hyps = translate_ids(
        loaded.model,
        [s[:limit] for s in sources],
        beam_size=beam_size,
        alpha=alpha,
        max_length=min(limit, 200),
        batch_size=batch_size,
    )
    return loaded.tokenizer.decode([h[0].tokens for h in hyps])


def evaluate(
    loaded: LoadedModel,
    data_dir: Path,
    *,
    splits: tuple[str, ...] | None = None,
    beams: tuple[int, ...] = (1, 5),
    alpha: float = 0.6,
    batch_size: int = 64,
    limit: int = 0,
    outputs_dir: Path | None = None,
    then: LoadedModel | None = None,
) -> dict[str, Any]:
    """BLEU of every (split, decoding) combination; with `then`, of the pivot loaded -> then."""
    source, target = loaded.source_lang, (then or loaded).target_lang
    if then is not None and then.source_lang != loaded.target_lang:
        raise ValueError(f"cannot pivot {loaded.pair} into {then.pair}")
    results: dict[str, Any] = {}
    for split in splits_for(data_dir, source, target) if splits is None else splits:
        sources, references = read_pairs(data_dir, split, source, target)
        if limit:
            sources, references = sources[:limit], references[:limit]
        results[split] = {"sentences": len(sources)}
        for beam in beams:
            started = time.perf_counter()
            hyps = translate_texts(
                loaded, sources, beam_size=beam, alpha=alpha, batch_size=batch_size
            )
            if then is not None:
                hyps = translate_texts(
                    then, hyps, beam_size=beam, alpha=alpha, batch_size=batch_size
                )
            name = "greedy" if beam == 1 else f"beam{beam}"
            results[split][name] = {
                **score(hyps, references),
                "seconds": round(time.perf_counter() - started, 1),
            }
            if outputs_dir:
                outputs_dir.mkdir(parents=True, exist_ok=True)
                (outputs_dir / f"{split}.{name}.{target}").write_text("\n".join(hyps) + "\n")
            print(
                f"{split:18s} {name:7s} BLEU {results[split][name]['bleu']:6.2f} "
                f"lc {results[split][name]['bleu_lc']:6.2f}",
                flush=True,
            )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $MULTI30K_DIR")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.6, help="length penalty exponent")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=0, help="first N sentences of each split")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--outputs", type=Path, default=None, help="write hypotheses here")
    parser.add_argument("--no-write", action="store_true", help="print only; keep metrics.json")
    parser.add_argument(
        "--then",
        type=Path,
        default=None,
        help="second model of a pivot (its source: the first's target)",
    )
    parser.add_argument("--out", type=Path, default=None, help="with --then: write its JSON here")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    then = load_model(args.then) if args.then else None
    results = evaluate(
        loaded,
        args.data_dir or default_data_dir(),
        beams=(1, args.beam),
        alpha=args.alpha,
        batch_size=args.batch_size,
        limit=args.limit,
        outputs_dir=args.outputs,
        then=then,
    )
    metrics = {} if then else read_metrics(args.model)
    metrics.update(
        {
            "pair": f"{loaded.source_lang}-{(then or loaded).target_lang}",
            "model_version": loaded.version,
            "decoding": {
                "beam": args.beam,
                "length_penalty_alpha": args.alpha,
                "detokenized": True,
                "tokenizer": "sacreBLEU 13a",
            },
            "bleu": results,
        }
    )
    if then is not None:
        metrics["route"] = [loaded.pair, then.pair]
        metrics["model_version"] = f"{loaded.version}+{then.version}"
    if args.limit:
        metrics["bleu_limit"] = args.limit
    if then is not None:
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(metrics, indent=2) + "\n")
    elif not args.no_write:
        write_metrics(args.model, metrics)


if __name__ == "__main__":
    main()
