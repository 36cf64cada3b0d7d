"""Failures the service must survive, made real: no model loads at all, and one sentence that
neither ONNX Runtime nor PyTorch can translate while its batch-mates are served."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from model.checkpoint import WEIGHTS_FILE
from model.tokenizer import Tokenizer
from tests.service_helpers import in_process, serve, tiny_settings, translate_body
from tests.tiny_models import write_tiny_model

pytestmark = pytest.mark.slow  # every test here starts the service

HOLD = 60_000  # max_wait_ms: a static batch closes only when full
# The model's embedding table is cut to its first EMBEDDED pieces of the tokenizer's 600.
EMBEDDED = 300


@pytest.fixture(scope="module")
def all_broken(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both tiny models, their weights corrupt: every pair fails to load on every engine."""
    root = tmp_path_factory.mktemp("all-broken")
    for pair in ("en-de", "de-en"):
        shutil.copytree(tiny_models_dir / pair, root / pair)
        (root / pair / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    return root


def test_no_model_loads_readiness_failed_and_requests_503(all_broken: Path, tmp_path: Path) -> None:
    with serve(tiny_settings(all_broken, artifacts_dir=tmp_path / "artifacts")) as s:
        assert s.client.get("/health/live").status_code == 200
        ready = s.client.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "failed"
        models = ready.json()["models"]
        assert set(models) == {"en-de", "de-en"}
        assert all(m["state"] == "failed" and m["error"] for m in models.values()), models
        for method, path, body in [
            ("POST", "/v1/translate", translate_body("A dog.")),
            ("POST", "/translate", {"q": "A dog.", "source": "en", "target": "de"}),
            ("GET", "/v1/models", None),
        ]:
            r = s.client.request(method, path, json=body)
            assert r.status_code == 503, (path, r.text)
            assert r.json()["error"]["type"] == "not_ready" and r.headers["retry-after"], path
        # still answering, still failed: nothing retried the load behind its back
        assert s.client.get("/health/ready").json()["status"] == "failed"


@pytest.fixture(scope="module")
def short_vocabulary(tiny_tokenizer: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An en-de model whose embedding has fewer rows than its tokenizer has pieces (as a model
    shipped with the wrong tokenizer would): a sentence with a piece past the table breaks
    the embedding lookup of both engines, ORT's Gather and torch's Embedding."""
    root = tmp_path_factory.mktemp("short-vocabulary")
    write_tiny_model(root / "en-de", tiny_tokenizer, "en", "de", seed=5, vocab_size=EMBEDDED)
    return root


@pytest.mark.parametrize("scheduler", ["static", "continuous"])
def test_a_sentence_both_engines_fail_on_fails_alone(
    short_vocabulary: Path, tiny_tokenizer: Tokenizer, tmp_path: Path, scheduler: str
) -> None:
    good = ["A man", "A dog"]  # no period: "." is a piece past the first 300
    bad = "Zebras quizzically juggle xylophones."
    ids = tiny_tokenizer.encode([*good, bad])
    assert all(max(i) < EMBEDDED for i in ids[:2]) and max(ids[2]) >= EMBEDDED, ids

    async def scenario() -> None:
        settings = tiny_settings(
            short_vocabulary,
            artifacts_dir=tmp_path / "artifacts",
            scheduler=scheduler,
            max_batch_size=3,
            max_wait_ms=HOLD,
        )
        async with in_process(settings) as (app, client):
            runner = app.state.translator.runners["en-de"]
            assert runner.primary.backend == "onnx" and runner.fallback.backend == "torch"
            # Three requests, one batch (static: it closes at three sentences; continuous:
            # an idle engine may start the first before the others come).
            first, broken, second = await asyncio.gather(
                client.post("/v1/translate", json=translate_body(good[0])),
                client.post("/v1/translate", json=translate_body(bad)),
                client.post("/v1/translate", json=translate_body(good[1])),
            )
            assert broken.status_code == 500, broken.text
            assert broken.json()["error"]["type"] == "inference_failed"
            for r in (first, second):
                assert r.status_code == 200, r.text
                assert r.json()["translations"][0]["text"].strip()
                if scheduler == "static":  # their batch failed on ORT with the bad one
                    assert r.json()["backend"] == "torch"
            metrics = app.state.metrics
            assert metrics.value("nmt_fallbacks_total", pair="en-de", reason="batch_failed") >= 1
            # and the service goes on serving (three sentences: a full batch), on the
            # fallback for now
            again = await client.post("/v1/translate", json=translate_body([*good, good[0]]))
            assert again.status_code == 200 and len(again.json()["translations"]) == 3
            ready = await client.get("/health/ready")
            assert ready.status_code == 200 and ready.json()["status"] == "degraded"

    asyncio.run(scenario())
