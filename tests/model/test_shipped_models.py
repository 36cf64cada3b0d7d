"""The committed checkpoints load, are small enough to ship, and translate validation text:
every models/* directory (its languages read from its config.json), and every direction the
service reaches with them, pivots included."""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import permutations
from pathlib import Path

import pytest
import sacrebleu

from model.checkpoint import CONFIG_FILE, load_model, read_metrics, read_model_config
from model.data import read_lines, read_pairs
from model.evaluate import translate_texts
from tests.service_helpers import Served, serve, tiny_settings

REPO = Path(__file__).resolve().parents[2]
# Collected at import: the same directory as conftest's shipped_models_dir fixture.
SHIPPED = Path(os.environ.get("NMT_TEST_MODELS_DIR", REPO / "models"))
MODEL_DIRS = sorted(p.parent.name for p in SHIPPED.glob(f"*/{CONFIG_FILE}"))

# Greedy BLEU on the first 200 validation sentences, about ten points under what the shipped
# checkpoint scores there (the full scores are in each model's metrics.json).
BLEU_FLOORS = {
    "en-de": 30.0,
    "de-en": 32.0,
    "en-fr": 46.0,
    "fr-en": 38.0,
    "en-cs": 20.0,
    "cs-en": 25.0,
}
# A direction shipped without a floor of its own: this far under its metrics.json val greedy.
UNMEASURED_MARGIN = 10.0
# Through the API (ONNX Runtime, greedy) on the first 100 validation sentences: a pivot chains
# two models' errors, so its floor is set under the lower of its halves'.
PIVOT_MARGIN = 10.0
VAL_SENTENCES = 200


def pair_of(model_dir: Path) -> str:
    _, meta = read_model_config(model_dir)
    return f"{meta['source_lang']}-{meta['target_lang']}"


def bleu_floor(model_dir: Path) -> float:
    pair = pair_of(model_dir)
    if pair in BLEU_FLOORS:
        return BLEU_FLOORS[pair]
    return float(read_metrics(model_dir)["bleu"]["val"]["greedy"]["bleu"]) - UNMEASURED_MARGIN


def shipped_pairs() -> dict[str, Path]:
    """Pair (from config.json) -> its model directory."""
    return {pair_of(SHIPPED / name): SHIPPED / name for name in MODEL_DIRS}


def test_models_are_shipped() -> None:
    assert {"en-de", "de-en"} <= set(MODEL_DIRS), f"{SHIPPED}: {MODEL_DIRS}"


@pytest.mark.parametrize("name", MODEL_DIRS)
def test_shipped_checkpoint_is_complete_and_small(shipped_models_dir: Path, name: str) -> None:
    model_dir = shipped_models_dir / name
    for file in ("config.json", "model.safetensors", "tokenizer.model", "metrics.json"):
        path = model_dir / file
        assert path.exists(), f"{path} is missing"
        assert path.stat().st_size < 50 * 1024 * 1024
    metrics = read_metrics(model_dir)
    assert metrics["pair"] == pair_of(model_dir) == name
    assert "bleu" in metrics["bleu"]["test_2016_flickr"]["beam5"]


@pytest.mark.parametrize("name", MODEL_DIRS)
def test_shipped_model_translates_validation_sentences(
    shipped_models_dir: Path, data_dir: Path, name: str
) -> None:
    model_dir = shipped_models_dir / name
    loaded = load_model(model_dir)
    src, tgt = pair_of(model_dir).split("-")
    sources, references = read_pairs(data_dir, "val", src, tgt)
    hyps = translate_texts(loaded, sources[:VAL_SENTENCES], beam_size=1, alpha=0.6, batch_size=100)
    bleu = sacrebleu.corpus_bleu(hyps, [references[:VAL_SENTENCES]]).score
    floor = bleu_floor(model_dir)
    assert bleu >= floor, f"{name}: greedy val BLEU {bleu:.1f} < {floor}"


# ----- every direction through the running service -----
@pytest.fixture(scope="module")
def served_shipped(shipped_models_dir: Path) -> Iterator[Served]:
    # ONNX Runtime alone, graphs from the repository's cache (`make export` fills it).
    settings = tiny_settings(
        shipped_models_dir,
        backend="onnx",
        threads=2,
        artifacts_dir=None,
        max_texts=100,
        request_timeout_s=600,
    )
    with serve(settings, wait_loaded=False) as s:
        # A first run exports every model's graphs: far longer than tiny models take.
        assert s.translator.loaded.wait(900), "the shipped models did not load"
        yield s


@pytest.mark.slow
def test_every_language_reaches_every_other(served_shipped: Served) -> None:
    languages = served_shipped.client.get("/languages").json()
    codes = {lang["code"] for lang in languages}
    for lang in languages:
        assert sorted(lang["targets"]) == sorted(codes - {lang["code"]}), lang


def api_directions() -> list[str]:
    """Every ordered pair of the languages shipped: each has a model or a pivot."""
    langs = sorted({lang for pair in shipped_pairs() for lang in pair.split("-")})
    return [f"{s}-{t}" for s, t in permutations(langs, 2)]


@pytest.mark.slow
@pytest.mark.parametrize("pair", api_directions())
def test_every_direction_translates_through_the_api(
    served_shipped: Served, data_dir: Path, pair: str
) -> None:
    src, tgt = pair.split("-")
    # The validation set is multi-way: line i is the same sentence in every language.
    sources = read_lines(data_dir, "val", src)[:100]
    references = read_lines(data_dir, "val", tgt)[:100]
    r = served_shipped.client.post(
        "/v1/translate",
        json={"text": sources, "source_lang": src, "target_lang": tgt, "beam_size": 1},
        timeout=600,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    route = body["route"]
    models = shipped_pairs()
    assert route == ([pair] if pair in models else [f"{src}-en", f"en-{tgt}"])
    hyps = [t["text"] for t in body["translations"]]
    bleu = sacrebleu.corpus_bleu(hyps, [references]).score
    floor = min(bleu_floor(models[p]) for p in route) - (PIVOT_MARGIN if len(route) > 1 else 0)
    assert bleu >= floor, f"{pair} via {route}: greedy val BLEU {bleu:.1f} < {floor}"
