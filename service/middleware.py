"""ASGI middleware: request metrics by route template, the request body size limit,
`Connection: close` while draining for shutdown, and per-client rate limits."""

from __future__ import annotations

import hmac
import json
import time

from starlette.datastructures import Headers, MutableHeaders, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BodyTooLarge, NotReady, RateLimited, error_response, rejection
from service.metrics import Metrics
from service.ratelimit import RateLimiter, key_label
from service.routes.deps import header_key
from service.shutdown import RETRY_AFTER_S, Draining


class RequestMetricsMiddleware:
    """Counts requests and their latency by route template (not raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.request_latency.labels(template).observe(time.perf_counter() - start)


class BodyLimitMiddleware:
    """413 for bodies over max_bytes: at once from Content-Length, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"the request body is over {self.max_bytes} bytes"
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            refusal = rejection(self.metrics, BodyTooLarge.status_code, BodyTooLarge.type, message)
            await refusal(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the route's body read, so the error handlers answer it.
                    raise HTTPException(413, message)
            return msg

        await self.app(scope, counting_receive, send)


class ConnectionCloseMiddleware:
    """While the service drains for shutdown, every response closes its connection; past the
    grace window, new requests get 503 with Retry-After (service.shutdown)."""

    def __init__(self, app: ASGIApp, draining: Draining) -> None:
        self.app = app
        self.draining = draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.draining.refusing:
            headers = {"Retry-After": str(RETRY_AFTER_S), "Connection": "close"}
            refusal = error_response(
                NotReady.status_code, NotReady.type, "the service is shutting down", headers
            )
            await refusal(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self.draining.active:
                MutableHeaders(scope=message)["connection"] = "close"
            await send(message)

        await self.app(scope, receive, send_closing)


class RateLimitMiddleware:
    """Per-client request and character limits on every POST (the translation routes).

    It reads the body first (BodyLimitMiddleware, outside it, still bounds it) to count the
    characters of `text` (own API), `q` (LibreTranslate, JSON or form) or an uploaded `file`
    (/translate_file), and to find LibreTranslate's `api_key` field, then hands the same
    body to the route.
    """

    def __init__(self, app: ASGIApp, limiter: RateLimiter, api_keys: list[str]) -> None:
        self.app = app
        self.limiter = limiter
        self.api_keys = api_keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not self.limiter.enabled:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        try:
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
        except HTTPException as exc:  # the body limit, raised inside receive
            refusal = rejection(
                self.limiter.metrics, exc.status_code, BodyTooLarge.type, str(exc.detail)
            )
            await refusal(scope, receive, send)
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then the disconnect the routes watch for

        data = await _read_fields(Request(scope, replay))
        replayed = False
        decision = await self.limiter.check(
            self._identity(scope, data), _count_chars(data.get("text", data.get("q")))
        )
        if not decision.allowed:
            refusal = rejection(
                self.limiter.metrics,
                RateLimited.status_code,
                RateLimited.type,
                decision.message,
                decision.headers,
            )
            await refusal(scope, replay, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in decision.headers.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, replay, send_with_headers)

    def _identity(self, scope: Scope, data: dict[str, object]) -> str:
        """The key's label when it is one of the service's keys, else the client address."""
        key = header_key(Request(scope))
        if key is None and isinstance(data.get("api_key"), str):
            key = str(data["api_key"])
        if self.api_keys and key is not None:
            matches = [hmac.compare_digest(key.encode(), k.encode()) for k in self.api_keys]
            if any(matches):
                return key_label(key)
        client = scope.get("client")
        return f"address:{client[0] if client else 'unknown'}"


async def _read_fields(request: Request) -> dict[str, object]:
    """The body's fields, or none when it is not an object (the route answers that error)."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("application/json"):
            data = json.loads(await request.body())
            return data if isinstance(data, dict) else {}
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            async with request.form() as form:
                fields: dict[str, object] = {
                    k: v[0] if len(v := form.getlist(k)) == 1 else v for k in form
                }
                # A file to translate (/translate_file) counts as its text.
                upload = fields.get("file")
                if isinstance(upload, UploadFile) and "q" not in fields:
                    fields["q"] = (await upload.read()).decode("utf-8", errors="replace")
                return fields
    except (ValueError, HTTPException):
        pass
    return {}


def _count_chars(text: object) -> int:
    if isinstance(text, str):
        return len(text)
    if isinstance(text, list):
        return sum(len(t) for t in text if isinstance(t, str))
    return 0
