"""model.evaluate: the splits each language has, and scoring a pivot through two models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.card import bleu_table
from model.checkpoint import load_model
from model.data import TEST_SPLITS, read_pairs, splits_for
from model.evaluate import evaluate, score, translate_texts


def test_czech_has_no_2017_test_sets(data_dir: Path) -> None:
    assert splits_for(data_dir, "en", "cs") == ("val", "test_2016_flickr")
    assert splits_for(data_dir, "de", "fr") == TEST_SPLITS


def test_pivot_scores_the_second_model_on_the_first_models_output(
    tiny_models_dir: Path, data_dir: Path
) -> None:
    first, second = load_model(tiny_models_dir / "en-de"), load_model(tiny_models_dir / "de-en")
    results = evaluate(
        first, data_dir, splits=("val",), beams=(1,), limit=6, batch_size=4, then=second
    )
    sources, references = read_pairs(data_dir, "val", "en", "en")
    middle = translate_texts(first, sources[:6], beam_size=1, alpha=0.6, batch_size=4)
    final = translate_texts(second, middle, beam_size=1, alpha=0.6, batch_size=4)
    assert results["val"]["greedy"]["bleu"] == score(final, references[:6])["bleu"]


def test_a_pivot_must_chain(tiny_models_dir: Path, data_dir: Path) -> None:
    first = load_model(tiny_models_dir / "en-de")
    with pytest.raises(ValueError, match="cannot pivot"):
        evaluate(first, data_dir, splits=("val",), beams=(1,), limit=2, then=first)


def test_model_card_labels_a_pivot_by_its_route(tmp_path: Path) -> None:
    result = {"bleu": 12.5, "bleu_lc": 13.0, "bleu_signature": "sig"}
    metrics = {
        "pair": "de-fr",
        "route": ["de-en", "en-fr"],
        "decoding": {"beam": 5},
        "bleu": {"test_2016_flickr": {"sentences": 3, "greedy": result, "beam5": result}},
    }
    path = tmp_path / "pivot.json"
    path.write_text(json.dumps(metrics))
    rows = bleu_table([], [path]).splitlines()
    assert rows[2] == "| de-fr (de-en+en-fr) | test_2016_flickr | 3 | 12.5 | 13.0 | 12.5 | 13.0 |"
