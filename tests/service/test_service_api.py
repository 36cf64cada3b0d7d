"""Every route of the running service (real uvicorn on loopback, tiny models, real engines)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from libretranslatepy import LibreTranslateAPI

from tests.service_helpers import Served, metric_value, serve, tiny_settings, translate_body

pytestmark = pytest.mark.slow  # every test here runs against a served app


@pytest.fixture(scope="module")
def served(tiny_models_dir: Path) -> Iterator[Served]:
    with serve(
        tiny_settings(tiny_models_dir, max_chars=200, max_texts=4, max_body_bytes=4096)
    ) as s:
        yield s


def error_of(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    return body["error"]  # type: ignore[no-any-return]


# ----- /v1/translate -----
def test_translate_one_text(served: Served) -> None:
    r = served.client.post("/v1/translate", json=translate_body("A man rides a bike."))
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"translations", "model", "backend", "route"}
    assert body["route"] == ["en-de"]
    assert len(body["translations"]) == 1 and body["translations"][0]["text"].strip()
    assert "alternatives" not in body["translations"][0]
    assert body["model"].startswith("en-de@") and body["backend"] == "onnx"


def test_multi_sentence_text_is_split_and_reassembled(served: Served) -> None:
    listed = served.client.post(
        "/v1/translate", json=translate_body(["A man rides a bike.", "Two dogs play!"])
    ).json()["translations"]
    whole = served.client.post(
        "/v1/translate", json=translate_body(" A man rides a bike.\n\n  Two dogs play!\n")
    ).json()["translations"]
    assert whole[0]["text"] == f" {listed[0]['text']}\n\n  {listed[1]['text']}\n"


def test_alternatives(served: Served) -> None:
    r = served.client.post(
        "/v1/translate", json=translate_body(["A dog.", "A cat."], beam_size=3, alternatives=2)
    )
    assert r.status_code == 200
    for item in r.json()["translations"]:
        assert len(item["alternatives"]) == 2


# ----- LibreTranslate -----
def test_libretranslate_json_and_form_bodies(served: Served) -> None:
    body = {"q": "A man rides a bike.", "source": "en", "target": "de"}
    as_json = served.client.post("/translate", json=body)
    as_form = served.client.post("/translate", data=body)
    assert as_json.status_code == as_form.status_code == 200
    assert as_json.json() == as_form.json()
    assert isinstance(as_json.json()["translatedText"], str)


def test_libretranslate_list_and_alternatives(served: Served) -> None:
    r = served.client.post(
        "/translate",
        json={"q": ["A dog.", "A cat."], "source": "en", "target": "de", "alternatives": 2},
    )
    body = r.json()
    assert len(body["translatedText"]) == 2
    assert [len(a) for a in body["alternatives"]] == [2, 2]
    one = served.client.post(
        "/translate", data={"q": "A dog.", "source": "en", "target": "de", "alternatives": "1"}
    ).json()
    assert isinstance(one["translatedText"], str) and len(one["alternatives"]) == 1


@pytest.mark.parametrize(
    ("body", "status", "type_"),
    [
        # format html and source auto work now: tests/service/test_libretranslate.py
        ({"q": "Hi", "source": "en", "target": "de", "format": "md"}, 422, "validation_error"),
        ({"q": "Hi.", "source": "xx", "target": "de"}, 400, "unsupported_language_pair"),
        ({"q": "", "source": "en", "target": "de"}, 422, "empty_text"),
        ({"source": "en", "target": "de"}, 422, "validation_error"),
    ],
)
def test_libretranslate_errors(
    served: Served, body: dict[str, Any], status: int, type_: str
) -> None:
    r = served.client.post("/translate", data=body)
    assert r.status_code == status and error_of(r)["type"] == type_


def test_libretranslatepy_round_trip(served: Served) -> None:
    lt = LibreTranslateAPI(served.url)
    direct = served.client.post(
        "/translate", json={"q": "Two young men play soccer.", "source": "en", "target": "de"}
    ).json()
    assert lt.translate("Two young men play soccer.", "en", "de") == direct["translatedText"]
    assert lt.languages() == [
        {"code": "de", "name": "German", "targets": ["en"]},
        {"code": "en", "name": "English", "targets": ["de"]},
    ]


# ----- models, health, metrics, docs -----
def test_models(served: Served) -> None:
    models = served.client.get("/v1/models").json()["models"]
    assert [m["pair"] for m in models] == ["de-en", "en-de"]
    for m in models:
        assert (m["backend"], m["fallback"], m["degraded"]) == ("onnx", "torch", False)
        assert m["device"] == "cpu" and m["precision"] == "fp32" and len(m["version"]) == 12


@pytest.mark.parametrize("prefix", ["", "/v2"])
def test_health(served: Served, prefix: str) -> None:
    assert served.client.get(f"{prefix}/health/live").json()["status"] == "live"
    ready = served.client.get(f"{prefix}/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
    assert set(ready.json()["models"]) == {"en-de", "de-en"}


def test_metrics_count_what_happened(served: Served) -> None:
    """Every family moves by what two requests did (prometheus_client prints a family's name
    even when it never moved, so names alone prove nothing)."""
    sentences = ["A girl sings.", "Two dogs run in the snow."]
    before = served.client.get("/metrics").text
    ok = served.client.post("/v1/translate", json=translate_body(" ".join(sentences)))
    bad = served.client.post("/v1/translate", json=translate_body("A girl.", beam_size=99))
    assert (ok.status_code, bad.status_code) == (200, 422)
    after = served.client.get("/metrics").text

    def moved(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    route = {"route": "/v1/translate", "method": "POST"}
    assert moved("nmt_requests_total", **route, status="200") == 1
    assert moved("nmt_requests_total", **route, status="422") == 1
    assert moved("nmt_rejections_total", reason="beam_size_out_of_range") == 1
    assert moved("nmt_request_duration_seconds_count", route="/v1/translate") == 2
    assert moved("nmt_request_duration_seconds_sum", route="/v1/translate") > 0
    en_de, onnx = {"pair": "en-de"}, {"pair": "en-de", "backend": "onnx"}
    # the 422 never reached a queue: two sentences did, one wait each
    assert moved("nmt_queue_wait_seconds_count", **en_de) == 2
    tokens = served.translator.runners["en-de"].tokenizer.encode(sentences)
    assert moved("nmt_input_tokens_total", **en_de) == sum(len(t) for t in tokens)
    # at most max_length 8 tokens each (EOS not counted), and some
    assert 0 < moved("nmt_output_tokens_total", **en_de) <= 2 * 8
    assert moved("nmt_batch_size_count", **onnx) >= 1
    assert moved("nmt_inference_seconds_count", **onnx) >= 1
    assert moved("nmt_inference_seconds_sum", **onnx) > 0
    assert metric_value(after, "nmt_queue_depth", **en_de) == 0  # nothing left waiting
    assert moved("nmt_fallbacks_total", pair="en-de", reason="batch_failed") == 0


def test_openapi_docs_with_examples(served: Served) -> None:
    assert "swagger" in served.client.get("/docs").text.lower()
    spec = served.client.get("/openapi.json").json()
    assert spec["components"]["schemas"]["TranslateRequest"]["examples"]
    for path in (
        "/v1/translate",
        "/translate",
        "/languages",
        "/v1/models",
        "/health/ready",
        "/metrics",
    ):
        assert path in spec["paths"], path
    form = spec["paths"]["/translate"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-www-form-urlencoded"} <= set(form)


# ----- errors -----
BAD_INPUTS = [
    # (body, status, error type)
    (b"{not json", 400, "invalid_json"),
    (b'["a list"]', 422, "validation_error"),
    (json.dumps({"text": "A dog."}), 422, "validation_error"),
    (json.dumps(translate_body(42)), 422, "validation_error"),
    (json.dumps(translate_body([1, 2])), 422, "validation_error"),
    (json.dumps(translate_body("A dog.", beam_size="big")), 422, "validation_error"),
    (json.dumps(translate_body("A dog.", alternatives=-1)), 422, "validation_error"),
    (json.dumps(translate_body("A dog.", max_length=0)), 422, "validation_error"),
    (json.dumps(translate_body("A dog.", colour="red")), 422, "validation_error"),
    (json.dumps(translate_body("")), 422, "empty_text"),
    (json.dumps(translate_body(" \n\t ")), 422, "empty_text"),
    (json.dumps(translate_body([])), 422, "empty_text"),
    (json.dumps(translate_body(["A dog.", ""])), 422, "empty_text"),
    (json.dumps(translate_body("x" * 201)), 422, "input_too_long"),
    (json.dumps(translate_body("q " * 90)), 422, "input_too_long"),  # over 63 tokens
    (json.dumps(translate_body(["A."] * 5)), 422, "too_many_texts"),
    (json.dumps(translate_body("A dog.", beam_size=0)), 422, "beam_size_out_of_range"),
    (json.dumps(translate_body("A dog.", beam_size=9)), 422, "beam_size_out_of_range"),
    (json.dumps(translate_body("A dog.", alternatives=8)), 422, "beam_size_out_of_range"),
    (
        json.dumps({**translate_body("A dog."), "target_lang": "fr"}),
        400,
        "unsupported_language_pair",
    ),
    (
        json.dumps({**translate_body("A dog."), "source_lang": "de", "target_lang": "de"}),
        400,
        "unsupported_language_pair",
    ),
    (b"x" * 5000, 413, "body_too_large"),
]


@pytest.mark.parametrize(("body", "status", "type_"), BAD_INPUTS)
def test_bad_inputs_get_json_errors(
    served: Served, body: str | bytes, status: int, type_: str
) -> None:
    r = served.client.post(
        "/v1/translate", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == status, r.text
    error = error_of(r)
    assert error["type"] == type_ and error["message"]
    assert "Traceback" not in r.text


def test_body_not_labelled_json_is_415(served: Served) -> None:
    r = served.client.post(
        "/v1/translate",
        content=json.dumps(translate_body("A dog.")),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 415 and error_of(r)["type"] == "unsupported_media_type"


def test_streamed_body_over_the_limit_is_413(served: Served) -> None:
    chunks = (b"x" * 1000 for _ in range(10))  # no Content-Length: counted while read
    r = served.client.post(
        "/v1/translate", content=chunks, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and error_of(r)["type"] == "body_too_large"


def test_unknown_route_and_wrong_method(served: Served) -> None:
    r = served.client.get("/v1/nothing")
    assert r.status_code == 404 and error_of(r)["type"] == "not_found"
    r = served.client.get("/v1/translate")
    assert r.status_code == 405 and error_of(r)["type"] == "method_not_allowed"
    assert r.headers["allow"] == "POST"


# ----- API keys -----
@pytest.fixture(scope="module")
def guarded(tiny_models_dir: Path) -> Iterator[Served]:
    with serve(tiny_settings(tiny_models_dir, api_keys="k1, k2")) as s:
        yield s


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"X-API-Key": "k3"}])
def test_api_key_required(guarded: Served, headers: dict[str, str]) -> None:
    r = guarded.client.post("/v1/translate", json=translate_body("A dog."), headers=headers)
    assert r.status_code == 401 and error_of(r)["type"] == "unauthorized"
    assert guarded.client.get("/v1/models", headers=headers).status_code == 401
    r = guarded.client.post(
        "/translate", data={"q": "A dog.", "source": "en", "target": "de"}, headers=headers
    )
    assert r.status_code == 401


@pytest.mark.parametrize("headers", [{"Authorization": "Bearer k1"}, {"X-API-Key": "k2"}])
def test_api_key_accepted(guarded: Served, headers: dict[str, str]) -> None:
    r = guarded.client.post("/v1/translate", json=translate_body("A dog."), headers=headers)
    assert r.status_code == 200
    assert guarded.client.get("/v1/models", headers=headers).status_code == 200


def test_api_key_in_libretranslate_body(guarded: Served) -> None:
    assert LibreTranslateAPI(guarded.url, api_key="k2").translate("A dog.", "en", "de")
    with pytest.raises(Exception, match="401"):
        LibreTranslateAPI(guarded.url, api_key="wrong").translate("A dog.", "en", "de")
    # Probes, metrics and the language list stay open.
    for path in ("/health/live", "/health/ready", "/metrics", "/languages"):
        assert guarded.client.get(path).status_code == 200
