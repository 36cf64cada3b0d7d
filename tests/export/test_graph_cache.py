"""A corrupt cached graph heals: its checksum in export.json fails at load, and the graphs
are exported again, so the service comes back on ONNX Runtime instead of the fallback."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from export.artifacts import ensure_graphs
from export.contract import MANIFEST_FILE
from tests.service_helpers import in_process, tiny_settings, translate_body

pytestmark = pytest.mark.slow  # the app with its lifespan, in process


def test_truncated_decoder_is_exported_again(tiny_models_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir / "en-de", models / "en-de")
    settings = tiny_settings(models, backend="auto", artifacts_dir=tmp_path / "artifacts")

    async def serve_once() -> tuple[dict[str, object], str]:
        async with in_process(settings) as (_, client):
            health = (await client.get("/health/ready")).json()
            answer = await client.post("/v1/translate", json=translate_body("A dog runs."))
            assert answer.status_code == 200, answer.text
            return health["models"]["en-de"], answer.json()["backend"]

    first, backend = asyncio.run(serve_once())
    assert backend == "onnx" and first["degraded"] is False, first
    graphs = ensure_graphs(models / "en-de", "fp32", tmp_path / "artifacts")
    manifest = json.loads((graphs.directory / MANIFEST_FILE).read_text())
    assert set(manifest["sha256"]) >= {"encoder.onnx", "decoder.onnx"}

    decoder = graphs.decoder
    data = decoder.read_bytes()
    decoder.write_bytes(data[: len(data) // 2])

    again, backend = asyncio.run(serve_once())
    assert backend == "onnx" and again["degraded"] is False, again
    digest = hashlib.sha256(decoder.read_bytes()).hexdigest()
    assert (
        digest
        == json.loads((graphs.directory / MANIFEST_FILE).read_text())["sha256"]["decoder.onnx"]
    )
