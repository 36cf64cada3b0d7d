"""JSON bodies rendered by orjson (NMT_JSON_RESPONSE=orjson, the default) are the bodies
FastAPI's own rendering gives (fastapi), byte for byte, route by route."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.datastructures import DefaultPlaceholder
from fastapi.responses import JSONResponse

from service.app import OrjsonResponse
from tests.service_helpers import in_process, tiny_settings


def test_orjson_renders_what_starlette_renders() -> None:
    content: dict[str, Any] = {
        "text": "Ein Mädchen – „läuft“ 東京 😀",
        "list": [1, -2, 0.5, -3.25, True, False, None],
        "nested": {"a": {"b": []}, "empty": ""},
    }
    body = OrjsonResponse(content).body
    assert body == JSONResponse(content).body
    assert "Mädchen".encode() in body  # UTF-8 as it is, not \u escapes
    # tiny floats: both valid JSON of the same value (orjson writes 1e-7, json 1e-07)
    floats = {"score": -1.5e-7}
    assert json.loads(bytes(OrjsonResponse(floats).body)) == json.loads(
        bytes(JSONResponse(floats).body)
    )
    assert OrjsonResponse({1: "a"}).body == b'{"1":"a"}'  # non-str keys as json.dumps does


def bodies(models_dir: Path, json_response: str) -> list[tuple[int, str, bytes]]:
    settings = tiny_settings(models_dir, backend="torch", json_response=json_response)
    translate = {"source_lang": "en", "target_lang": "de", "max_length": 8}
    requests: list[tuple[str, str, Any]] = [
        ("POST", "/v1/translate", {"text": ["A man.", "Zwei Männer."], **translate}),
        (
            "POST",
            "/v1/translate",
            {"text": "A dog.", "beam_size": 3, "alternatives": 2, **translate},
        ),
        ("POST", "/v1/translate", {"text": "", **translate}),  # an error
        ("POST", "/translate", {"q": "A girl sings.", "source": "en", "target": "de"}),
        ("POST", "/translate", {"q": ["A cat.", "Hi."], "source": "auto", "target": "de"}),
        ("POST", "/detect", {"q": "Ein Mann fährt Fahrrad."}),
        ("GET", "/languages", None),
        ("GET", "/v1/models", None),
        ("GET", "/frontend/settings", None),
        ("GET", "/health/ready", None),
        ("GET", "/health/live", None),
    ]

    async def scenario() -> list[tuple[int, str, bytes]]:
        out = []
        async with in_process(settings) as (app, client):
            rendering = app.router.default_response_class
            if json_response == "orjson":
                assert rendering is OrjsonResponse
            else:  # FastAPI's default: pydantic-core writes the bytes of a response model
                assert isinstance(rendering, DefaultPlaceholder)
            for method, path, body in requests:
                r = await client.request(method, path, json=body)
                out.append((r.status_code, r.headers["content-type"], r.content))
        return out

    return asyncio.run(scenario())


@pytest.mark.slow  # the app with its lifespan, in process
def test_every_json_route_answers_the_same_bytes(tiny_models_dir: Path) -> None:
    ours = bodies(tiny_models_dir, "orjson")
    theirs = bodies(tiny_models_dir, "fastapi")
    assert ours == theirs
    assert {status for status, _, _ in ours} == {200, 422}
    assert {kind for _, kind, _ in ours} == {"application/json"}
