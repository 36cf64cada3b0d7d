"""The OpenAPI schema with the limits this server enforces, read from its settings.

pydantic states the fixed bounds (max_length 1..1024, alternatives >= 0); the configurable
ones (characters per text, texts per request, beam sizes) are written in here, so /docs and
generated clients see the same limits the translator checks. The checks themselves stay in
the translator, whose errors name the fault (empty_text, input_too_long, too_many_texts).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service.settings import Settings


def _text(max_chars: int, what: str) -> dict[str, Any]:
    # "\S": a text of only whitespace is refused as empty.
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": max_chars,
        "pattern": r"\S",
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
    schemas = spec.get("components", {}).get("schemas", {})
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
