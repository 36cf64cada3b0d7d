"""Print the model card's BLEU table from metrics.json: `python -m model.card models/*`."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

from safetensors import safe_open

from model.checkpoint import read_metrics, read_model_config
from model.data import TEST_SPLITS


def bleu_table(model_dirs: list[Path], pivots: Sequence[Path] = ()) -> str:
    """One row per (pair, split): cased and lowercased BLEU, greedy and beam; a pivot's
    (`model.evaluate --then ... --out F`) pair reads `de-fr (de-en+en-fr)`."""
    lines = [
        "| pair | split | sentences | greedy BLEU | greedy BLEU (lc) | beam BLEU "
        "| beam BLEU (lc) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    signature = ""
    every = [read_metrics(d) for d in model_dirs] + [json.loads(p.read_text()) for p in pivots]
    for metrics in every:
        pair = metrics["pair"]
        if "route" in metrics:
            pair += f" ({'+'.join(metrics['route'])})"
        beam_key = f"beam{metrics['decoding']['beam']}"
        for split in (s for s in TEST_SPLITS if s in metrics["bleu"]):
            r = metrics["bleu"][split]
            g, b = r["greedy"], r[beam_key]
            lines.append(
                f"| {pair} | {split} | {r['sentences']} | {g['bleu']:.1f} | "
                f"{g['bleu_lc']:.1f} | {b['bleu']:.1f} | {b['bleu_lc']:.1f} |"
            )
            signature = b["bleu_signature"]
    lines.append("")
    lines.append(f"sacreBLEU signature: `{signature}` (lowercased: `case:lc`).")
    return "\n".join(lines)


def size_table(model_dirs: list[Path]) -> str:
    """Architecture, size and training budget of each model."""
    lines = [
        "| pair | layers (enc+dec) | d_model | heads | d_ff | vocab | parameters | epochs | "
        "updates | train time | weights |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for model_dir in model_dirs:
        config, meta = read_model_config(model_dir)
        training = meta.get("training", {})
        params = _parameter_count(model_dir)
        lines.append(
            f"| {meta['source_lang']}-{meta['target_lang']} | "
            f"{config.n_encoder_layers}+{config.n_decoder_layers} | {config.d_model} | "
            f"{config.n_heads} | {config.d_ff} | {config.vocab_size} | {params / 1e6:.1f}M | "
            f"{training.get('epochs', '?')} | {training.get('updates', '?')} | "
            f"{training.get('train_time_s', 0) / 60:.0f} min | {training.get('weights', '?')} |"
        )
    return "\n".join(lines)


def _parameter_count(model_dir: Path) -> int:
    """Stored parameters (the tied output projection counted once, as it is stored)."""
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 (not a dict)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument(
        "--pivots", type=Path, nargs="*", default=[], help="pivot JSONs of model.evaluate --then"
    )
    args = parser.parse_args(argv)
    print(size_table(args.models))
    print()
    print(bleu_table(args.models, args.pivots))


if __name__ == "__main__":
    main()
