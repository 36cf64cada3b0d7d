"""The committed checkpoints load, are small enough to ship, and translate validation text."""

from __future__ import annotations

from pathlib import Path

import pytest
import sacrebleu

from model.checkpoint import load_model, read_metrics
from model.data import read_pairs
from model.evaluate import translate_texts

PAIRS = ["en-de", "de-en"]
# Greedy BLEU on the first 200 validation sentences; the full scores are in metrics.json.
BLEU_FLOOR = 30.0


@pytest.mark.parametrize("pair", PAIRS)
def test_shipped_checkpoint_is_complete_and_small(shipped_models_dir: Path, pair: str) -> None:
    model_dir = shipped_models_dir / pair
    for name in ("config.json", "model.safetensors", "tokenizer.model", "metrics.json"):
        path = model_dir / name
        assert path.exists(), f"{path} is missing"
        assert path.stat().st_size < 50 * 1024 * 1024
    metrics = read_metrics(model_dir)
    assert metrics["pair"] == pair
    assert "bleu" in metrics["bleu"]["test_2016_flickr"]["beam5"]


@pytest.mark.parametrize("pair", PAIRS)
def test_shipped_model_translates_validation_sentences(
    shipped_models_dir: Path, data_dir: Path, pair: str
) -> None:
    loaded = load_model(shipped_models_dir / pair)
    src, tgt = pair.split("-")
    sources, references = read_pairs(data_dir, "val", src, tgt)
    hyps = translate_texts(loaded, sources[:200], beam_size=1, alpha=0.6, batch_size=100)
    bleu = sacrebleu.corpus_bleu(hyps, [references[:200]]).score
    assert bleu >= BLEU_FLOOR, f"{pair}: greedy val BLEU {bleu:.1f} < {BLEU_FLOOR}"
