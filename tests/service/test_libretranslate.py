"""LibreTranslate's API on a running server: parameter sources, /detect, source auto, HTML,
/frontend/settings, files, and the real clients (libretranslatepy, deep-translator)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from deep_translator import LibreTranslator
from libretranslatepy import LibreTranslateAPI
from selectolax.lexbor import LexborHTMLParser

from tests.service_helpers import Served, serve, tiny_settings

pytestmark = pytest.mark.slow  # every test here runs against a served app

EN = "Two young men are playing soccer in a park."
DE = "Zwei junge Männer spielen Fußball in einem Park."
FR = "Deux jeunes hommes jouent au football dans un parc."


@pytest.fixture(scope="module")
def served(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    files = tmp_path_factory.mktemp("files")
    settings = tiny_settings(
        tiny_models_dir,
        max_chars=200,
        max_texts=4,
        max_file_bytes=4000,
        max_file_chars=3000,
        max_html_depth=20,
        files_dir=files,
        max_files=3,
    )
    with serve(settings) as s:
        yield s


def error_of(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    return body["error"]  # type: ignore[no-any-return]


def en_de(served: Served, text: str | list[str]) -> list[str]:
    """The /v1 translations of texts from English (the reference the other routes must match)."""
    texts = [text] if isinstance(text, str) else text
    out: list[str] = []
    for start in range(0, len(texts), 4):  # max_texts
        body = {"text": texts[start : start + 4], "source_lang": "en", "target_lang": "de"}
        r = served.client.post("/v1/translate", json=body)
        assert r.status_code == 200, r.text
        out += [t["text"] for t in r.json()["translations"]]
    return out


# ----- where the fields come from -----
def test_fields_from_query_json_and_form_agree(served: Served) -> None:
    fields = {"q": EN, "source": "en", "target": "de"}
    as_query = served.client.post("/translate", params=fields)
    as_json = served.client.post("/translate", json=fields)
    as_form = served.client.post("/translate", data=fields)
    as_multipart = served.client.post(
        "/translate", data=fields, files={"unused": ("x.txt", b"x", "text/plain")}
    )
    answers = [r.json() for r in (as_query, as_json, as_form, as_multipart)]
    assert all(r.status_code == 200 for r in (as_query, as_json, as_form, as_multipart))
    assert answers[0] == answers[1] == answers[2] == answers[3]
    assert answers[0]["translatedText"] == en_de(served, EN)[0]


def test_json_body_wins_over_query(served: Served) -> None:
    r = served.client.post(
        "/translate",
        params={"q": "nonsense", "target": "en"},
        json={"q": EN, "target": "de", "source": "en"},
    )
    assert r.status_code == 200 and r.json()["translatedText"] == en_de(served, EN)[0]


def test_repeated_query_field_is_a_list(served: Served) -> None:
    r = served.client.post(
        "/translate", params=[("q", EN), ("q", "A dog."), ("source", "en"), ("target", "de")]
    )
    assert r.json()["translatedText"] == en_de(served, [EN, "A dog."])


def test_alternatives_false_is_refused(served: Served) -> None:
    body = {"q": EN, "source": "en", "target": "de", "alternatives": False}
    r = served.client.post("/translate", json=body)
    assert r.status_code == 422 and "boolean" in error_of(r)["message"]
    r = served.client.post(
        "/v1/translate", json={"text": EN, "target_lang": "de", "beam_size": True}
    )
    assert r.status_code == 422


# ----- /detect and source auto -----
@pytest.mark.parametrize(("text", "language"), [(EN, "en"), (DE, "de"), (FR, "fr")])
def test_detect(served: Served, text: str, language: str) -> None:
    for r in (
        served.client.post("/detect", json={"q": text}),
        served.client.post("/detect", data={"q": text}),
        served.client.post("/detect", params={"q": text}),
    ):
        assert r.status_code == 200, r.text
        (found,) = r.json()
        assert found["language"] == language and 50 < found["confidence"] <= 100


@pytest.mark.parametrize(
    ("fields", "status", "type_"),
    [
        ({"q": ""}, 422, "empty_text"),
        ({"q": "   "}, 422, "empty_text"),
        ({}, 422, "validation_error"),
        ({"q": "12345 !!"}, 400, "language_not_detected"),
        ({"q": "x" * 201}, 422, "validation_error"),
    ],
)
def test_detect_errors(served: Served, fields: dict[str, str], status: int, type_: str) -> None:
    r = served.client.post("/detect", data=fields)
    assert r.status_code == status and error_of(r)["type"] == type_


def test_source_auto_groups_by_language(served: Served) -> None:
    r = served.client.post(
        "/translate", json={"q": [EN, DE, "A dog runs."], "source": "auto", "target": "de"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    english = en_de(served, [EN, "A dog runs."])
    # German text into German comes back as it was.
    assert body["translatedText"] == [english[0], DE, english[1]]
    assert [d["language"] for d in body["detectedLanguage"]] == ["en", "de", "en"]
    one = served.client.post("/translate", data={"q": DE, "source": "auto", "target": "en"}).json()
    assert (
        one["detectedLanguage"]["language"] == "de" and one["detectedLanguage"]["confidence"] > 50
    )
    direct = served.client.post("/translate", json={"q": DE, "source": "de", "target": "en"}).json()
    assert one["translatedText"] == direct["translatedText"] and "detectedLanguage" not in direct


def test_source_auto_on_v1(served: Served) -> None:
    r = served.client.post("/v1/translate", json={"text": [DE, EN], "target_lang": "en"})
    assert r.status_code == 200, r.text
    items = r.json()["translations"]
    assert [i["detected_language"]["language"] for i in items] == ["de", "en"]
    assert items[1]["text"] == EN
    assert r.json()["model"].startswith("de-en@")


def test_source_auto_refuses_a_language_without_a_model(served: Served) -> None:
    r = served.client.post("/translate", json={"q": [EN, FR], "source": "auto", "target": "de"})
    assert r.status_code == 400
    error = error_of(r)
    assert error["type"] == "unsupported_language_pair"
    assert "text 1" in error["message"] and "French (fr" in error["message"]
    r = served.client.post("/translate", json={"q": "42", "source": "auto", "target": "de"})
    assert r.status_code == 400 and error_of(r)["type"] == "language_not_detected"


# ----- HTML -----
def skeleton(html: str) -> list[tuple[str, dict[str, str | None]]]:
    """Every element and comment with its attributes, in order: the markup without the text."""
    root = LexborHTMLParser(html, is_fragment=True).root
    assert root is not None
    return [
        (n.tag, dict(n.attributes)) for n in root.traverse(include_text=False) if n.tag != "-text"
    ]


def test_html_keeps_markup(served: Served) -> None:
    html = (
        '<p class="intro">A man <b>rides</b> a bike &amp; <a href="/x?a=1&amp;b=2">a dog</a>'
        " runs.</p><script>s = 'A dog.'</script><style>p {}</style>"
        "<p>Code: <code>A dog.</code></p><!-- A -->"
    )
    r = served.client.post(
        "/translate", json={"q": html, "source": "en", "target": "de", "format": "html"}
    )
    assert r.status_code == 200, r.text
    out = r.json()["translatedText"]
    assert skeleton(out) == skeleton(html)
    assert "<script>s = 'A dog.'</script><style>p {}</style>" in out
    assert "<code>A dog.</code></p><!-- A -->" in out
    # The sentence across the inline elements is translated as one text, its words dealt
    # back to the text nodes in order.
    line, code = en_de(served, ["A man rides a bike & a dog runs.", "Code: "])
    first = LexborHTMLParser(out, is_fragment=True).css_first("p")
    assert first is not None and first.text().split() == line.split()
    assert f"<p>{code}<code>" in out
    assert "&amp;" in out or "&" not in line


def test_html_broken_markup_is_repaired_like_a_browser(served: Served) -> None:
    r = served.client.post(
        "/v1/translate",
        json={
            "text": "<p>A dog<li>A cat</b>",
            "source_lang": "en",
            "target_lang": "de",
            "format": "html",
        },
    )
    assert r.status_code == 200, r.text
    dog, cat = en_de(served, ["A dog", "A cat"])
    assert r.json()["translations"][0]["text"] == f"<p>{dog}</p><li>{cat}</li>"


def test_html_whole_document_and_auto(served: Served) -> None:
    html = f"<!DOCTYPE html><html><head><title>{DE}</title></head><body><p>{DE}</p></body></html>"
    r = served.client.post(
        "/translate", json={"q": html, "source": "auto", "target": "en", "format": "html"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["detectedLanguage"]["language"] == "de"
    assert body["translatedText"].startswith("<!DOCTYPE html><html><head><title>")


@pytest.mark.parametrize(
    ("q", "status", "type_"),
    [
        ("<div>" * 30 + "A dog.", 422, "invalid_markup"),
        ("<p>" + "A dog. " * 40 + "</p>", 422, "input_too_long"),
        ("  ", 422, "empty_text"),
    ],
)
def test_html_limits(served: Served, q: str, status: int, type_: str) -> None:
    r = served.client.post(
        "/translate", json={"q": q, "source": "en", "target": "de", "format": "html"}
    )
    assert r.status_code == status and error_of(r)["type"] == type_
    assert served.client.get("/health/ready").status_code == 200


@pytest.mark.parametrize(
    ("fields", "status", "type_"),
    [
        ({"q": "<p>42</p>", "source": "", "target": ""}, 400, "unsupported_language_pair"),
        (
            {"q": "<p>A dog.</p>", "source": "en", "target": "de", "alternatives": 8},
            422,
            "beam_size_out_of_range",
        ),
    ],
)
def test_html_checks_pair_and_alternatives(
    served: Served, fields: dict[str, object], status: int, type_: str
) -> None:
    # Found by schemathesis: an HTML input with nothing to translate skipped both checks.
    r = served.client.post("/translate", json={**fields, "format": "html"})
    assert r.status_code == status and error_of(r)["type"] == type_


def test_unknown_format(served: Served) -> None:
    r = served.client.post(
        "/translate", json={"q": EN, "source": "en", "target": "de", "format": "markdown"}
    )
    assert r.status_code == 422 and "format" in error_of(r)["message"]


# ----- /frontend/settings -----
def test_frontend_settings(served: Served) -> None:
    body = served.client.get("/frontend/settings").json()
    assert body == {
        "charLimit": 200,
        "frontendTimeout": 500,
        "keyRequired": False,
        "suggestions": False,
        "filesTranslation": True,
        "supportedFilesFormat": [".txt", ".html"],
        "language": {
            "source": {"code": "auto", "name": "Auto Detect"},
            "target": {"code": "de", "name": "German"},
        },
    }


# ----- files -----
def upload(served: Served, name: str, data: bytes, **fields: str) -> httpx.Response:
    return served.client.post(
        "/translate_file",
        data={"source": "en", "target": "de", **fields},
        files={"file": (name, data, "application/octet-stream")},
    )


def test_translate_text_file(served: Served) -> None:
    text = f"{EN}\n\nA dog runs. A cat sleeps.\n  42\n"
    r = upload(served, "../../etc/notes.txt", text.encode())
    assert r.status_code == 200, r.text
    url = r.json()["translatedFileUrl"]
    assert url.startswith(served.url + "/download_file/")
    got = httpx.get(url)
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("text/plain")
    assert 'filename="notes.de.txt"' in got.headers["content-disposition"]
    a, b = en_de(served, [EN, "A dog runs. A cat sleeps."])
    assert got.text == f"{a}\n\n{b}\n  42\n"
    # Only the store's own files, named by their ids, are in its directory.
    files_dir = served.app.state.settings.files_dir
    assert all(p.parent == files_dir for p in files_dir.rglob("*"))
    assert not any("notes" in p.name or "etc" in p.name for p in files_dir.iterdir())


def test_translate_html_file_with_auto(served: Served) -> None:
    r = upload(served, "page.html", f"<h1>{DE}</h1>".encode(), source="auto", target="en")
    assert r.status_code == 200, r.text
    got = httpx.get(r.json()["translatedFileUrl"])
    assert got.headers["content-type"].startswith("text/html")
    direct = served.client.post("/translate", json={"q": DE, "source": "de", "target": "en"})
    assert got.text == f"<h1>{direct.json()['translatedText']}</h1>"


def test_file_store_is_bounded(served: Served) -> None:
    urls = [upload(served, f"n{i}.txt", b"A dog.").json()["translatedFileUrl"] for i in range(4)]
    assert httpx.get(urls[0]).status_code == 404  # the oldest went when a fourth came
    assert all(httpx.get(u).status_code == 200 for u in urls[1:])
    assert len(list(served.app.state.settings.files_dir.glob("*.data"))) == 3


@pytest.mark.parametrize(
    ("name", "data", "status", "type_"),
    [
        ("a.pdf", b"%PDF-1.4", 400, "invalid_file"),
        ("noext", b"A dog.", 400, "invalid_file"),
        ("a.txt", b"\xff\xfe\x00A\x00 dog", 400, "invalid_file"),
        ("a.txt", b"A dog. " * 700, 413, "file_too_large"),
        ("a.txt", b"A dog. " * 440, 413, "file_too_large"),  # characters, not bytes
        ("a.txt", "é".encode() * 1600, 422, "input_too_long"),  # a "sentence" of 1600 tokens
        ("a.txt", b"  \n ", 422, "empty_text"),
        ("a.html", b"<div>" * 30, 422, "invalid_markup"),
    ],
)
def test_bad_files(served: Served, name: str, data: bytes, status: int, type_: str) -> None:
    r = upload(served, name, data)
    assert r.status_code == status, r.text
    assert error_of(r)["type"] == type_


def test_file_requests_missing_parts(served: Served) -> None:
    r = served.client.post(
        "/translate_file",
        data={"source": "en", "target": "de"},
        files={"other": ("a.txt", b"A dog.")},
    )
    assert r.status_code == 422 and "file" in error_of(r)["message"]
    r = served.client.post("/translate_file", files={"file": ("a.txt", b"A dog.")})
    assert r.status_code == 422 and "target" in error_of(r)["message"]
    r = served.client.post("/translate_file", json={"target": "de"})
    assert r.status_code == 422


@pytest.mark.parametrize("file_id", ["nope", "../../etc/passwd", "A" * 32, "%2e%2e%2fsettings"])
def test_unknown_download_ids(served: Served, file_id: str) -> None:
    r = served.client.get(f"/download_file/{file_id}")
    assert r.status_code == 404 and error_of(r)["type"] in ("file_not_found", "not_found")


# ----- real clients -----
def test_libretranslatepy(served: Served) -> None:
    lt = LibreTranslateAPI(served.url)
    assert lt.translate(EN, "en", "de") == en_de(served, EN)[0]
    assert lt.translate(DE, "auto", "de") == DE
    assert (
        lt.detect(DE) == [served.client.post("/detect", json={"q": DE}).json()[0]]
        and lt.detect(DE)[0]["language"] == "de"
    )
    assert {(lang["code"], tuple(lang["targets"])) for lang in lt.languages()} == {
        ("de", ("en",)),
        ("en", ("de",)),
    }


def test_deep_translator(served: Served) -> None:
    # It always sends an api_key (in the query string, with no body); keys are off here.
    client = LibreTranslator(
        source="en", target="de", api_key="unused", custom_url=served.url + "/"
    )
    assert client.translate(EN) == en_de(served, EN)[0]
    assert client.translate_batch([EN, "A dog runs."]) == en_de(served, [EN, "A dog runs."])
