"""Pairs without a model of their own go through English; readiness is per pair.

The models directory (tests/conftest.py, tiny_pivot_models_dir) holds en-de, de-en, en-fr,
fr-en and a direct de-fr: fr-de is served only through English, de-fr by its own model, and
nothing reaches or leaves Czech.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from libretranslatepy import LibreTranslateAPI

from export.artifacts import ensure_graphs, graphs_cached
from model.checkpoint import WEIGHTS_FILE
from service.metrics import Metrics
from service.translator import Translator
from tests.service_helpers import Served, serve, tiny_settings

PAIRS = {"en-de", "de-en", "en-fr", "fr-en", "de-fr"}


@pytest.fixture(scope="module")
def served(tiny_pivot_models_dir: Path) -> Iterator[Served]:
    with serve(tiny_settings(tiny_pivot_models_dir, max_texts=4)) as s:
        yield s


def post(served: Served, text: str | list[str], source: str, target: str, **extra: Any) -> Any:
    body = {"text": text, "source_lang": source, "target_lang": target, "max_length": 8, **extra}
    r = served.client.post("/v1/translate", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def engine_translate(served: Served, pair: str, text: str, **options: Any) -> Any:
    """The pair's own engine on one sentence, outside the service: what a pass must give."""
    options = {"beam_size": 1, "max_length": None, "num_alternatives": 0, **options}
    return served.translator.runners[pair].active.translate([text], **options)[0]


# ----- routes -----
@pytest.mark.slow
def test_pivot_pair_goes_through_english(served: Served) -> None:
    text = "Un homme fait du vélo."
    body = post(served, text, "fr", "de", beam_size=3, alternatives=2)
    assert body["route"] == ["fr-en", "en-de"]
    versions = {p: served.translator.runners[p].active.version for p in ("fr-en", "en-de")}
    assert body["model"] == f"fr-en@{versions['fr-en']}+en-de@{versions['en-de']}"
    # The second pass translates the first pass's best output; alternatives are the second's.
    english = engine_translate(served, "fr-en", text, beam_size=3)
    german = engine_translate(
        served, "en-de", english.text, beam_size=3, max_length=8, num_alternatives=2
    )
    [item] = body["translations"]
    assert item["text"] == german.text
    assert item["alternatives"] == [a.text for a in german.alternatives]


@pytest.mark.slow
def test_pivot_keeps_each_texts_sentences_and_layout(served: Served) -> None:
    listed = post(served, ["Un chien court.", "Deux enfants jouent!"], "fr", "de")
    whole = post(served, " Un chien court.\n\n  Deux enfants jouent!\n", "fr", "de")
    assert listed["route"] == whole["route"] == ["fr-en", "en-de"]
    a, b = (t["text"] for t in listed["translations"])
    assert whole["translations"][0]["text"] == f" {a}\n\n  {b}\n"


@pytest.mark.slow
@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_a_direct_model_wins(served: Served, pair: str) -> None:
    source, target = pair.split("-")
    body = post(served, "Eine Frau liest.", source, target)
    assert body["route"] == [pair]
    assert body["model"].startswith(f"{pair}@") and "+" not in body["model"]


@pytest.mark.slow
def test_libretranslate_translates_a_pivot_pair(served: Served) -> None:
    text = "Une femme lit un livre."
    ours = post(served, text, "fr", "de", max_length=None, beam_size=None)
    theirs = LibreTranslateAPI(served.url).translate(text, "fr", "de")
    assert theirs == ours["translations"][0]["text"]


# ----- what the service lists -----
@pytest.mark.slow
def test_languages_lists_every_reachable_target(served: Served) -> None:
    assert served.client.get("/languages").json() == [
        {"code": "de", "name": "German", "targets": ["en", "fr"]},
        {"code": "en", "name": "English", "targets": ["de", "fr"]},
        {"code": "fr", "name": "French", "targets": ["de", "en"]},
    ]


@pytest.mark.slow
def test_models_lists_the_pivots(served: Served) -> None:
    body = served.client.get("/v1/models").json()
    assert {m["pair"] for m in body["models"]} == PAIRS
    assert body["pivots"] == [
        {"pair": "fr-de", "source_lang": "fr", "target_lang": "de", "route": ["fr-en", "en-de"]}
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source", "target"), [("en", "cs"), ("cs", "en"), ("de", "cs"), ("fr", "fr"), ("xx", "de")]
)
def test_a_pair_neither_direct_nor_pivotable_is_400(
    served: Served, source: str, target: str
) -> None:
    body = {"text": "A dog.", "source_lang": source, "target_lang": target}
    r = served.client.post("/v1/translate", json=body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "unsupported_language_pair"
    assert f"no model for {source}-{target} and no route through en" in error["message"]
    assert "fr-de" in error["message"]  # the pivots that do exist are named
    lt = served.client.post("/translate", json={"q": "A dog.", "source": source, "target": target})
    assert lt.status_code == 400 and lt.json()["error"]["type"] == "unsupported_language_pair"


# ----- readiness per pair -----
@pytest.mark.slow
def test_health_reports_each_pair_ready(served: Served) -> None:
    r = served.client.get("/health/ready")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    models = r.json()["models"]
    assert set(models) == PAIRS
    assert {m["state"] for m in models.values()} == {"ready"}


@pytest.mark.parametrize("workers", [1, 0])  # one pair at a time; one per CPU
def test_every_pair_is_loading_until_loaded(tiny_pivot_models_dir: Path, workers: int) -> None:
    async def scenario() -> None:
        settings = tiny_settings(tiny_pivot_models_dir, load_workers=workers)
        translator = Translator(settings, Metrics())
        await translator.start()  # loading runs in the background: nothing has loaded yet
        health = translator.health()
        assert health.status == "loading" and not health.ready
        assert {p: m["state"] for p, m in health.models.items()} == dict.fromkeys(PAIRS, "loading")
        assert await asyncio.to_thread(translator.loaded.wait, 120)
        health = translator.health()
        assert health.status == "ok"
        assert {m["state"] for m in health.models.values()} == {"ready"}
        await translator.stop()

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def one_broken(tiny_pivot_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """en-de, de-en, fr-en as they are, and an en-fr whose weights are corrupt."""
    root = tmp_path_factory.mktemp("one-broken")
    for pair in ("en-de", "de-en", "fr-en", "en-fr"):
        shutil.copytree(tiny_pivot_models_dir / pair, root / pair)
    (root / "en-fr" / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    return root


@pytest.mark.slow
def test_a_failed_pair_is_reported_and_its_pivots_dropped(
    one_broken: Path, tiny_pivot_models_dir: Path
) -> None:
    # The graphs of the intact copies are those of tiny_pivot_models_dir: same cache.
    settings = tiny_settings(
        one_broken, artifacts_dir=tiny_pivot_models_dir.parent / "onnx-artifacts"
    )
    with serve(settings) as s:
        r = s.client.get("/health/ready")
        assert r.status_code == 200 and r.json()["status"] == "degraded"
        models = r.json()["models"]
        assert models["en-fr"]["state"] == "failed" and models["en-fr"]["error"]
        assert {models[p]["state"] for p in ("en-de", "de-en", "fr-en")} == {"ready"}
        # de-fr needed en-fr; fr-de goes through halves that loaded.
        ok = s.client.post(
            "/v1/translate", json={"text": "Un chat.", "source_lang": "fr", "target_lang": "de"}
        )
        assert ok.status_code == 200 and ok.json()["route"] == ["fr-en", "en-de"]
        r = s.client.post(
            "/v1/translate", json={"text": "Eine Katze.", "source_lang": "de", "target_lang": "fr"}
        )
        assert r.status_code == 400 and "de-fr" in r.json()["error"]["message"]
        assert s.client.get("/languages").json() == [
            {"code": "de", "name": "German", "targets": ["en"]},
            {"code": "en", "name": "English", "targets": ["de"]},
            {"code": "fr", "name": "French", "targets": ["de", "en"]},
        ]


@pytest.mark.slow
def test_graphs_are_cached_once_exported(served: Served, tiny_pivot_models_dir: Path) -> None:
    artifacts = tiny_pivot_models_dir.parent / "onnx-artifacts"
    # Every pair loaded at once on a first start: their exports took turns, all are whole.
    for pair in PAIRS:
        assert graphs_cached(tiny_pivot_models_dir / pair, "fp32", artifacts)
        assert not graphs_cached(tiny_pivot_models_dir / pair, "int8", artifacts)
    assert not graphs_cached(tiny_pivot_models_dir / "en-de", "fp32", artifacts / "elsewhere")


def test_a_corrupt_cached_graph_is_not_cached(tiny_pivot_models_dir: Path, tmp_path: Path) -> None:
    # Loading it would export again (the cache heals), so it must take its turn to export.
    graphs = ensure_graphs(tiny_pivot_models_dir / "en-fr", "fp32", tmp_path)
    assert graphs_cached(tiny_pivot_models_dir / "en-fr", "fp32", tmp_path)
    graphs.decoder.write_bytes(b"not an onnx graph")
    assert not graphs_cached(tiny_pivot_models_dir / "en-fr", "fp32", tmp_path)
