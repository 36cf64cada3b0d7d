"""The OpenAPI schema with the limits this server enforces, read from its settings.

pydantic states the fixed bounds (max_length 1..1024, alternatives >= 0); the configurable
ones (characters per text, texts per request, beam sizes) are written in here, so /docs and
generated clients see the same limits the translator checks. The checks themselves stay in
the translator, whose errors name the fault (empty_text, input_too_long, too_many_texts).
"""

from __future__ import annotations

import sys
from typing import Any

from fastapi import FastAPI

from service.schemas import DetectRequest, LibreTranslateRequest
from service.settings import Settings


def _not_blank() -> str:
    """A pattern matching a character that is not whitespace as Python's str.strip() sees
    it (the translator's test for an empty text); ECMA's \\S differs (it counts U+FEFF as
    space and U+001C-U+001F as not)."""
    spaces = [c for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    ranges: list[tuple[int, int]] = []
    for c in spaces:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1] = (ranges[-1][0], c)
        else:
            ranges.append((c, c))
    cls = "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges)
    return f"[^{cls}]"


NOT_BLANK = _not_blank()


def _text(max_chars: int, what: str) -> dict[str, Any]:
    # A text of only whitespace is refused as empty.
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": max_chars,
        "pattern": NOT_BLANK,
        "description": what,
    }


def _texts(settings: Settings, what: str) -> dict[str, Any]:
    one = _text(settings.max_chars, f"{what}; at most {settings.max_chars} characters.")
    return {
        "anyOf": [
            one,
            {
                "type": "array",
                "items": _text(settings.max_chars, f"at most {settings.max_chars} characters"),
                "minItems": 1,
                "maxItems": settings.max_texts,
                "description": f"At most {settings.max_texts} texts.",
            },
        ],
        "description": f"{what}, or a list of 1 to {settings.max_texts} texts.",
    }


def _int(low: int, high: int, what: str, *, nullable: bool = False) -> dict[str, Any]:
    schema = {"type": "integer", "minimum": low, "maximum": high, "description": what}
    return {"anyOf": [schema, {"type": "null"}], "description": what} if nullable else schema


def add_limits(spec: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """spec (FastAPI's OpenAPI document) with its request bodies bounded by settings."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    # Bodies the LibreTranslate routes read themselves (JSON, form or query string).
    for model in (LibreTranslateRequest, DetectRequest):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    beams = settings.max_beam_size
    alternatives = _int(0, beams - 1, f"How many alternative translations to add (0-{beams - 1}).")
    if "TranslateRequest" in schemas:
        props = schemas["TranslateRequest"]["properties"]
        props["text"] = _texts(settings, "One text; it may hold several sentences and lines")
        props["beam_size"] = _int(
            1,
            beams,
            f"Beam size, 1 (greedy) to {beams}; default {settings.default_beam_size}.",
            nullable=True,
        )
        props["alternatives"] = alternatives
        props["max_length"] = _int(
            1,
            1024,
            "Most tokens per output sentence; default twice the source plus ten.",
            nullable=True,
        )
    if "LibreTranslateRequest" in schemas:
        props = schemas["LibreTranslateRequest"]["properties"]
        props["q"] = _texts(settings, "Text (plain, or HTML with format html)")
        props["alternatives"] = alternatives
    if "DetectRequest" in schemas:
        schemas["DetectRequest"]["properties"]["q"] = _text(
            settings.max_chars, f"The text, at most {settings.max_chars} characters."
        )
    return spec


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Serve FastAPI's schema with the limits added as /openapi.json."""
    made = app.openapi

    def openapi() -> dict[str, Any]:
        return add_limits(made(), settings)  # in place: cheap, and the same every time

    app.openapi = openapi  # type: ignore[method-assign]
