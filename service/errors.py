"""Domain errors, and the one place that maps them (and every other failure) to JSON."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.schemas import ErrorResponse

if TYPE_CHECKING:
    from service.metrics import Metrics

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error a client should see: an HTTP status, a stable type name and a message."""

    status_code = 500
    type = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class InvalidJSON(ServiceError):
    status_code = 400
    type = "invalid_json"


class UnsupportedLanguagePair(ServiceError):
    status_code = 400
    type = "unsupported_language_pair"


class UnsupportedFormat(ServiceError):
    status_code = 400
    type = "unsupported_format"


class LanguageNotDetected(ServiceError):
    """Source "auto", and the text has nothing a detector can go by."""

    status_code = 400
    type = "language_not_detected"


class InvalidMarkup(ServiceError):
    """HTML over the size or nesting limits."""

    status_code = 422
    type = "invalid_markup"


class InvalidFile(ServiceError):
    """A file that cannot be translated: unknown kind, not UTF-8 text, or over the limits."""

    status_code = 400
    type = "invalid_file"


class FileTooLarge(InvalidFile):
    status_code = 413
    type = "file_too_large"


class FileNotFound(ServiceError):
    """An unknown or expired download id."""

    status_code = 404
    type = "file_not_found"


class Unauthorized(ServiceError):
    status_code = 401
    type = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class InvalidRequest(ServiceError):
    status_code = 422
    type = "validation_error"


class EmptyText(InvalidRequest):
    type = "empty_text"


class InputTooLong(InvalidRequest):
    type = "input_too_long"


class TooManyTexts(InvalidRequest):
    type = "too_many_texts"


class BeamSizeOutOfRange(InvalidRequest):
    type = "beam_size_out_of_range"


class RetryLater(ServiceError):
    """A refusal that passes: Retry-After tells the client when to try again."""

    retry_after_s = 5

    def __init__(self, message: str, *, retry_after_s: int | None = None) -> None:
        seconds = self.retry_after_s if retry_after_s is None else retry_after_s
        super().__init__(message, headers={"Retry-After": str(seconds)})


class QueueFull(RetryLater):
    status_code = 429
    type = "queue_full"


class ClientDisconnected(ServiceError):
    """The client left before its answer; its queued work was dropped (nginx's 499)."""

    status_code = 499
    type = "client_disconnected"


class BodyTooLarge(ServiceError):
    status_code = 413
    type = "body_too_large"


class RateLimited(ServiceError):
    """Over a per-key or per-address request or character limit (Retry-After, X-RateLimit-*)."""

    status_code = 429
    type = "rate_limited"


class NotReady(RetryLater):
    """Models still loading, none could be loaded, or the service is shutting down."""

    status_code = 503
    type = "not_ready"


class DeadlineExceeded(ServiceError):
    status_code = 504
    type = "deadline_exceeded"


class InferenceFailed(ServiceError):
    """Every engine failed on this text, even alone; its batch-mates were still served."""

    status_code = 500
    type = "inference_failed"


# The error responses an API route documents in /docs: every failure has the same body.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": what}
    for code, what in {
        400: "Invalid JSON, an unsupported language pair or format, or a language that "
        "could not be detected",
        401: "Missing or invalid API key",
        413: "Request body too large",
        415: "Body not sent as application/json",
        422: "Empty text, text too long, too many texts, beam size out of range, wrong types",
        429: "Queue full, or over a rate limit (see Retry-After)",
        503: "Models loading or shutting down (see Retry-After)",
        504: "Not translated before the request deadline",
    }.items()
}

_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: BodyTooLarge.type,
}


def error_response(
    status_code: int, type_: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The one error body: {"error": {"type", "message"}}."""
    return JSONResponse(
        {"error": {"type": type_, "message": message}}, status_code=status_code, headers=headers
    )


def rejection(
    metrics: Metrics | None,
    status_code: int,
    type_: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error response, counted in nmt_rejections_total by its type (when there are
    metrics): what the error handlers and the middleware answer a refused request with."""
    if metrics is not None:
        metrics.rejections.labels(reason=type_).inc()
    return error_response(status_code, type_, message, headers)


def _describe_validation(errors: list[Any]) -> str:
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors, framework errors and crashes to JSON; count every rejection."""

    def reject(
        request: Request,
        status_code: int,
        type_: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> JSONResponse:
        metrics = getattr(request.app.state, "metrics", None)
        return rejection(metrics, status_code, type_, message, headers)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return reject(request, exc.status_code, exc.type, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return reject(request, 400, InvalidJSON.type, "the request body is not valid JSON")
        content_type = request.headers.get("content-type", "")
        if any(
            tuple(e.get("loc", ())) == ("body",) for e in errors
        ) and not content_type.startswith("application/json"):
            # FastAPI reads a body as JSON only when it is labelled so.
            return reject(
                request,
                415,
                "unsupported_media_type",
                "send a JSON object with Content-Type: application/json",
            )
        return reject(request, 422, InvalidRequest.type, _describe_validation(errors))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = _HTTP_TYPES.get(exc.status_code, "http_error")
        message = {
            404: f"no route {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        return reject(request, exc.status_code, type_, message, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error")
