"""ONNX Runtime failures: the PyTorch engine takes over with the same output, and says so."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import service.registry
from export.artifacts import ensure_graphs
from export.contract import MANIFEST_FILE
from service.engine.onnx_engine import OnnxEngine
from tests.service_helpers import Served, serve, tiny_settings, translate_body

TEXTS = ["A man rides a bike.", "Two dogs play in the snow."]


@pytest.fixture(scope="module")
def onnx_outputs(tiny_models_dir: Path) -> list[str]:
    """What the healthy ONNX engine answers for TEXTS."""
    with serve(tiny_settings(tiny_models_dir)) as served:
        r = served.client.post("/v1/translate", json=translate_body(TEXTS))
        assert r.json()["backend"] == "onnx"
        return [t["text"] for t in r.json()["translations"]]


@pytest.fixture
def served(tiny_models_dir: Path) -> Iterator[Served]:
    with serve(tiny_settings(tiny_models_dir)) as s:
        yield s


def break_decoder(served: Served) -> object:
    """Point the ORT decoder at the encoder graph: every decoding step fails inside ORT."""
    engine = served.translator.runners["en-de"].primary
    assert isinstance(engine, OnnxEngine)
    healthy = engine.io.decoder  # type: ignore[attr-defined]
    engine.io.decoder = engine.io.encoder  # type: ignore[attr-defined]
    return healthy


@pytest.mark.slow
def test_failed_ort_batch_is_retried_on_torch(served: Served, onnx_outputs: list[str]) -> None:
    break_decoder(served)
    r = served.client.post("/v1/translate", json=translate_body(TEXTS))
    assert r.status_code == 200
    assert r.json()["backend"] == "torch"
    assert [t["text"] for t in r.json()["translations"]] == onnx_outputs
    assert served.metrics.value("nmt_fallbacks_total", pair="en-de", reason="batch_failed") == 1
    ready = served.client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    assert ready.json()["models"]["en-de"] == {
        "state": "ready",
        "backend": "torch",
        "degraded": True,
    }
    model = next(
        m for m in served.client.get("/v1/models").json()["models"] if m["pair"] == "en-de"
    )
    assert (model["backend"], model["degraded"]) == ("torch", True)
    # While degraded, batches go straight to torch: no new ORT failure, no new fallback.
    assert served.client.post("/v1/translate", json=translate_body(TEXTS)).status_code == 200
    assert served.metrics.value("nmt_fallbacks_total", pair="en-de", reason="batch_failed") == 1


@pytest.mark.slow
def test_ort_is_tried_again_after_the_cool_down(
    served: Served, onnx_outputs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service.registry, "PRIMARY_RETRY_S", 0.0)
    healthy = break_decoder(served)
    served.client.post("/v1/translate", json=translate_body(TEXTS))
    served.client.post("/v1/translate", json=translate_body(TEXTS))
    assert served.metrics.value("nmt_fallbacks_total", pair="en-de", reason="batch_failed") == 2
    served.translator.runners["en-de"].primary.io.decoder = healthy  # type: ignore[union-attr]
    r = served.client.post("/v1/translate", json=translate_body(TEXTS))
    assert r.json()["backend"] == "onnx"
    assert [t["text"] for t in r.json()["translations"]] == onnx_outputs
    assert served.client.get("/health/ready").json()["status"] == "ok"


@pytest.mark.slow
def test_ort_that_cannot_load_leaves_torch_serving(
    tiny_models_dir: Path, tmp_path: Path, onnx_outputs: list[str]
) -> None:
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir / "en-de", models / "en-de")
    graphs = ensure_graphs(models / "en-de", "fp32", tmp_path / "artifacts")
    broken = b"not an onnx graph"
    graphs.decoder.write_bytes(broken)  # a graph ONNX Runtime cannot load...
    # ...that its manifest vouches for: a graph failing its checksum is exported again
    # instead (tests/export/test_graph_cache.py).
    manifest = json.loads((graphs.directory / MANIFEST_FILE).read_text())
    manifest["sha256"]["decoder.onnx"] = hashlib.sha256(broken).hexdigest()
    (graphs.directory / MANIFEST_FILE).write_text(json.dumps(manifest))
    with serve(tiny_settings(models, artifacts_dir=tmp_path / "artifacts")) as served:
        ready = served.client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert "error" in ready.json()["models"]["en-de"]
        r = served.client.post("/v1/translate", json=translate_body(TEXTS))
        assert r.json()["backend"] == "torch"
        assert [t["text"] for t in r.json()["translations"]] == onnx_outputs
        assert served.metrics.value("nmt_fallbacks_total", pair="en-de", reason="load_failed") == 1
        model = served.client.get("/v1/models").json()["models"][0]
        assert (model["backend"], model["fallback"], model["degraded"]) == ("torch", None, True)


@pytest.mark.slow
def test_onnx_only_reports_failures_as_json(tiny_models_dir: Path) -> None:
    with serve(tiny_settings(tiny_models_dir, backend="onnx")) as served:
        assert served.translator.runners["en-de"].fallback is None
        break_decoder(served)
        r = served.client.post("/v1/translate", json=translate_body(TEXTS))
        assert r.status_code == 500
        assert r.json() == {
            "error": {
                "type": "inference_failed",
                "message": "the model failed to translate this text",
            }
        }
        assert served.client.get("/health/ready").json()["status"] == "ok"


@pytest.mark.slow
def test_torch_only(tiny_models_dir: Path, onnx_outputs: list[str]) -> None:
    with serve(tiny_settings(tiny_models_dir, backend="torch")) as served:
        r = served.client.post("/v1/translate", json=translate_body(TEXTS))
        assert r.json()["backend"] == "torch"
        assert [t["text"] for t in r.json()["translations"]] == onnx_outputs
        model = served.client.get("/v1/models").json()["models"][0]
        assert (model["backend"], model["fallback"], model["degraded"]) == ("torch", None, False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a torch build without CUDA")
def test_cuda_service_keeps_a_cpu_fallback_when_torch_has_no_cuda(tiny_model_dir: Path) -> None:
    """The GPU image pairs onnxruntime-gpu with the CPU build of torch: on NMT_DEVICE=cuda the
    fallback must load on the CPU instead of failing the service's start."""
    options = service.registry.LoadOptions("auto", "cuda", "fp16", threads=1)
    engine = service.registry.load_torch(tiny_model_dir, options)
    assert (engine.backend, engine.device, engine.precision) == ("torch", "cpu", "fp32")
    assert engine.translate(TEXTS, beam_size=2)[0].text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a torch build without CUDA")
def test_torch_backend_on_cuda_without_cuda_fails_loudly(tiny_model_dir: Path) -> None:
    """NMT_BACKEND=torch on cuda is a request for the GPU: no silent move to the CPU."""
    options = service.registry.LoadOptions("torch", "cuda", "fp16", threads=1)
    with pytest.raises((RuntimeError, AssertionError)):
        service.registry.load_torch(tiny_model_dir, options)
