"""LibreTranslate-compatible POST /translate and GET /languages (libretranslatepy works as is)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from service.errors import InvalidJSON, InvalidRequest, UnsupportedFormat
from service.routes.deps import (
    SettingsDep,
    TranslatorDep,
    check_api_key,
    header_key,
    unless_disconnected,
)
from service.routes.translate import ERRORS
from service.schemas import LanguageResponse, LibreTranslateRequest, LibreTranslateResponse

router = APIRouter(tags=["libretranslate"])

LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "cs": "Czech"}


async def libretranslate_body(request: Request, settings: SettingsDep) -> LibreTranslateRequest:
    """LibreTranslate takes JSON or a form; its api_key may come in the body or a header."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(await request.body())
        except ValueError:
            raise InvalidJSON("the request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise InvalidRequest("the JSON body must be an object")
    else:
        form = await request.form()
        data = {k: v[0] if len(v := form.getlist(k)) == 1 else v for k in form}
    try:
        body = LibreTranslateRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from None
    check_api_key(settings, header_key(request) or body.api_key)
    return body


_BODY_SCHEMA = LibreTranslateRequest.model_json_schema()


@router.post(
    "/translate",
    responses=ERRORS,
    response_model_exclude_none=True,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _BODY_SCHEMA},
                "application/x-www-form-urlencoded": {"schema": _BODY_SCHEMA},
            },
        }
    },
)
async def translate(
    request: Request,
    body: Annotated[LibreTranslateRequest, Depends(libretranslate_body)],
    translator: TranslatorDep,
) -> LibreTranslateResponse:
    """Translate like LibreTranslate: `translatedText` (a list when `q` is a list)."""
    if body.format != "text":
        raise UnsupportedFormat("only format=text is supported")
    texts = [body.q] if isinstance(body.q, str) else body.q
    result = await unless_disconnected(
        request,
        translator.translate(texts, body.source, body.target, alternatives=body.alternatives),
    )
    single = isinstance(body.q, str)
    alternatives: Any = None
    if body.alternatives:
        alternatives = result.alternatives[0] if single else result.alternatives
    return LibreTranslateResponse(
        translatedText=result.texts[0] if single else result.texts, alternatives=alternatives
    )


@router.get("/languages")
async def languages(translator: TranslatorDep) -> list[LanguageResponse]:
    """The languages served, each with every language it translates into: by its own model,
    or through English."""
    targets: dict[str, list[str]] = {}
    for route in translator.reachable().values():
        source = translator.runners[route[0]].active.source_lang
        target = translator.runners[route[-1]].active.target_lang
        targets.setdefault(source, []).append(target)
    return [
        LanguageResponse(code=code, name=LANGUAGE_NAMES.get(code, code), targets=t)
        for code, t in sorted(targets.items())
    ]
