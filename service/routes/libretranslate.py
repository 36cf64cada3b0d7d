"""LibreTranslate's API: /translate, /detect, /languages, /frontend/settings, /translate_file.

Every route reads its fields as LibreTranslate does: from a JSON body, a form (urlencoded or
multipart) or the query string; a body's fields win over the query string's.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from service.compose import (
    AUTO,
    Composed,
    detected_language,
    translate_documents,
    translate_pieces,
    translate_texts,
)
from service.detect import LANGUAGE_NAMES, Detection, detect_texts
from service.errors import (
    ERROR_RESPONSES,
    EmptyText,
    FileTooLarge,
    InvalidFile,
    InvalidJSON,
    InvalidRequest,
    LanguageNotDetected,
)
from service.files import FileStore, safe_name
from service.markup import MarkupLimits
from service.routes.deps import (
    SettingsDep,
    TranslatorDep,
    check_api_key,
    header_key,
    unless_disconnected,
)
from service.schemas import (
    DetectedLanguage,
    DetectRequest,
    ErrorResponse,
    FrontendSettingsResponse,
    LanguageResponse,
    LibreTranslateRequest,
    LibreTranslateResponse,
    TranslateFileResponse,
)
from service.settings import Settings

router = APIRouter(tags=["libretranslate"])

M = TypeVar("M", bound=BaseModel)
FILE_KINDS = {".txt": "text/plain; charset=utf-8", ".html": "text/html; charset=utf-8"}


async def read_fields(request: Request) -> dict[str, Any]:
    """The query string's fields, then the body's (JSON or form) over them."""
    data: dict[str, Any] = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        data[key] = values[0] if len(values) == 1 else values
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        raw = await request.body()
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                raise InvalidJSON("the request body is not valid JSON") from None
            if not isinstance(body, dict):
                raise InvalidRequest("the JSON body must be an object")
            data.update(body)
    elif content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        for key in form:
            parts = form.getlist(key)
            data[key] = parts[0] if len(parts) == 1 else parts
    return data


async def read_request(request: Request, settings: Settings, model: type[M]) -> M:
    """The fields as model, after the API key check (header or api_key field)."""
    data = await read_fields(request)
    try:
        body = model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from None
    check_api_key(settings, header_key(request) or getattr(body, "api_key", None))
    return body


async def libretranslate_body(request: Request, settings: SettingsDep) -> LibreTranslateRequest:
    return await read_request(request, settings, LibreTranslateRequest)


async def detect_body(request: Request, settings: SettingsDep) -> DetectRequest:
    return await read_request(request, settings, DetectRequest)


def _body_schema(model: type[BaseModel], *kinds: str) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {k: {"schema": schema} for k in kinds}}}


# Documented: JSON, and for /translate urlencoded forms too. Forms (multipart as well) and
# query strings are read on every route, as LibreTranslate reads them, but a form cannot
# carry a field's type, so a fuzzer's "wrong type" values would reach the server as text.
_FORMS = ("application/json", "application/x-www-form-urlencoded")


def _detected(detection: Detection) -> DetectedLanguage:
    return DetectedLanguage(language=detection.language or "", confidence=detection.confidence)


async def _translate(
    translator: Any, settings: Settings, body: LibreTranslateRequest, texts: list[str]
) -> Composed:
    if body.format == "html":
        translator.check_texts(texts)
        limits = MarkupLimits(settings.max_chars, settings.max_html_depth)
        return await translate_documents(
            translator, texts, body.source, body.target, limits, alternatives=body.alternatives
        )
    return await translate_texts(
        translator, texts, body.source, body.target, alternatives=body.alternatives
    )


@router.post(
    "/translate",
    responses=ERROR_RESPONSES,
    response_model_exclude_none=True,
    openapi_extra=_body_schema(LibreTranslateRequest, *_FORMS),
)
async def translate(
    request: Request,
    body: Annotated[LibreTranslateRequest, Depends(libretranslate_body)],
    translator: TranslatorDep,
    settings: SettingsDep,
) -> LibreTranslateResponse:
    """Translate like LibreTranslate: `translatedText` (a list when `q` is a list); with
    `source: "auto"`, `detectedLanguage` too; `format: "html"` keeps the markup."""
    single = isinstance(body.q, str)
    texts = [body.q] if isinstance(body.q, str) else body.q
    result = await unless_disconnected(request, _translate(translator, settings, body, texts))
    alternatives: Any = None
    if body.alternatives:
        alternatives = result.alternatives[0] if single else result.alternatives
    detected: Any = None
    if result.detections is not None:
        found = [_detected(d) for d in result.detections]
        detected = found[0] if single else found
    return LibreTranslateResponse(
        translatedText=result.texts[0] if single else result.texts,
        alternatives=alternatives,
        detectedLanguage=detected,
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


@router.post(
    "/detect", responses=ERROR_RESPONSES, openapi_extra=_body_schema(DetectRequest, _FORMS[0])
)
async def detect(
    body: Annotated[DetectRequest, Depends(detect_body)], settings: SettingsDep
) -> list[DetectedLanguage]:
    """The language of `q`, with a confidence of 0-100: `[{"language", "confidence"}]`."""
    if not body.q.strip():
        raise EmptyText("q is empty or blank")
    if len(body.q) > settings.max_chars:
        raise InvalidRequest(f"q has {len(body.q)} characters; at most {settings.max_chars}")
    (detection,) = await detect_texts([body.q])
    if detection.language is None:
        raise LanguageNotDetected("could not detect the language of q")
    return [_detected(detection)]


# How long the web page waits after the last keystroke before translating, ms.
FRONTEND_TIMEOUT_MS = 500


@router.get("/frontend/settings")
async def frontend_settings(
    translator: TranslatorDep, settings: SettingsDep
) -> FrontendSettingsResponse:
    """LibreTranslate's settings for web pages: limits, whether keys are needed, defaults."""
    pairs = sorted(translator.model_dirs)
    target = "de" if "en-de" in pairs else (pairs[0].split("-", 1)[1] if pairs else "en")
    return FrontendSettingsResponse(
        charLimit=settings.max_chars,
        frontendTimeout=FRONTEND_TIMEOUT_MS,
        keyRequired=bool(settings.api_keys),
        suggestions=False,
        filesTranslation=True,
        supportedFilesFormat=list(FILE_KINDS),
        language={
            "source": {"code": AUTO, "name": "Auto Detect"},
            "target": {"code": target, "name": LANGUAGE_NAMES.get(target, target)},
        },
    )


async def get_file_store(request: Request) -> FileStore:
    """The app's file store, made on first use in the configured directory."""
    store: FileStore | None = getattr(request.app.state, "file_store", None)
    if store is None:
        settings: Settings = request.app.state.settings
        store = FileStore(
            settings.resolved_files_dir(), ttl_s=settings.files_ttl_s, max_files=settings.max_files
        )
        request.app.state.file_store = store
    return store


FileStoreDep = Annotated[FileStore, Depends(get_file_store)]

_FILE_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "target"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "A .txt or .html file, UTF-8.",
                        },
                        "source": {"type": "string", "default": AUTO},
                        "target": {"type": "string"},
                        "api_key": {"type": "string"},
                    },
                }
            }
        },
    }
}


def _file_text(upload: UploadFile, data: bytes, settings: Settings) -> tuple[str, str]:
    """The suffix and text of an uploaded file, or why it cannot be translated."""
    name = upload.filename or ""
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    suffix = ".html" if suffix == ".htm" else suffix
    if suffix not in FILE_KINDS:
        raise InvalidFile(
            f"{suffix or 'a file without a suffix'} is not supported; "
            f"send {' or '.join(FILE_KINDS)}"
        )
    if len(data) > settings.max_file_bytes:
        raise FileTooLarge(f"the file is over {settings.max_file_bytes} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidFile("the file is not UTF-8 text") from None
    if "\x00" in text:
        raise InvalidFile("the file is not text (it holds NUL characters)")
    if len(text) > settings.max_file_chars:
        raise FileTooLarge(
            f"the file has {len(text)} characters; at most {settings.max_file_chars}"
        )
    if not text.strip():
        raise EmptyText("the file is empty")
    return suffix, text


@router.post("/translate_file", responses=ERROR_RESPONSES, openapi_extra=_FILE_FORM)
async def translate_file(
    request: Request, translator: TranslatorDep, settings: SettingsDep, store: FileStoreDep
) -> TranslateFileResponse:
    """Translate a .txt or .html file (multipart `file`, `source`, `target`); answers with
    `translatedFileUrl`, where the translation can be downloaded until it expires."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest("send the file as multipart/form-data, in a part named file")
    form = await request.form(max_files=1, max_fields=16)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidRequest("missing the multipart part 'file'")
    data = await upload.read(settings.max_file_bytes + 1)
    fields = {k: v for k, v in (await read_fields(request)).items() if k != "file"}
    try:
        body = LibreTranslateRequest.model_validate({**fields, "q": "-"})
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from None
    check_api_key(settings, header_key(request) or body.api_key)
    suffix, text = _file_text(upload, data, settings)
    limits = MarkupLimits(settings.max_file_chars, settings.max_html_depth)
    if suffix == ".html":
        work = translate_documents(translator, [text], body.source, body.target, limits)
    else:
        # A text file is an HTML-free document: each line is a piece.
        work = _translate_lines(translator, text, body.source, body.target)
    result = await unless_disconnected(request, work)
    name = safe_name(upload.filename or "file", suffix)
    stem = name[: -len(suffix)]
    stored = await asyncio.to_thread(
        store.put,
        result.texts[0].encode("utf-8"),
        f"{stem}.{body.target}{suffix}",
        FILE_KINDS[suffix],
    )
    url = request.url_for("download_file", file_id=stored.id)
    return TranslateFileResponse(translatedFileUrl=str(url))


async def _translate_lines(translator: Any, text: str, source: str, target: str) -> Composed:
    lines = text.splitlines(keepends=True)
    if source == AUTO:
        (detection,) = await detect_texts([text])
        source = detected_language(detection, "the file")
    out, composed = await translate_pieces(translator, lines, source, target)
    return Composed(["".join(out)], [[]], composed.models, composed.backends)


@router.get(
    "/download_file/{file_id}",
    name="download_file",
    responses={404: {"model": ErrorResponse, "description": "Unknown or expired id"}},
)
async def download_file(file_id: str, store: FileStoreDep) -> FileResponse:
    """A translated file, by the id /translate_file answered with, until it expires."""
    stored = await asyncio.to_thread(store.get, file_id)
    return FileResponse(stored.path, media_type=stored.media_type, filename=stored.name)
