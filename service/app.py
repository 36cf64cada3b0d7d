"""The FastAPI application: create_app(settings) wires routes, errors, metrics and lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from service.errors import install_error_handlers
from service.metrics import Metrics
from service.middleware import (
    BodyLimitMiddleware,
    ConnectionCloseMiddleware,
    RateLimitMiddleware,
    RequestMetricsMiddleware,
)
from service.openapi import install_openapi
from service.ratelimit import RateLimiter
from service.routes import api_router
from service.routes.web import install_web
from service.settings import Settings
from service.shutdown import Draining
from service.translator import Translator
from service.workers import Peers

DESCRIPTION = """Self-hosted machine translation: a Transformer trained from scratch on Multi30k,
served by ONNX Runtime (PyTorch as the automatic fallback) behind a dynamic batcher.

Every error has the body `{"error": {"type": ..., "message": ...}}`."""


class OrjsonResponse(JSONResponse):
    """JSONResponse rendered by orjson (Rust) instead of json.dumps: the same compact UTF-8
    body (non-ASCII as it is, not escaped). FastAPI's own ORJSONResponse is deprecated."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A ready-to-serve app; models load in the background once the lifespan starts."""
    settings = settings or Settings()
    metrics = Metrics()
    # Both read their configuration now, so that a bad one fails before serving.
    rate_limiter = RateLimiter(settings, metrics)
    draining = Draining()
    peers = Peers.of_this_process()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await rate_limiter.start()
        translator = Translator(settings, metrics)
        app.state.translator = translator
        await translator.start()
        # A worker of several (NMT_WORKERS) tells the others once it is ready.
        announcing = (
            asyncio.create_task(
                peers.announce_when_loaded(translator.loaded, lambda: translator.health().ready)
            )
            if peers is not None
            else None
        )
        try:
            yield
        finally:
            if announcing is not None:
                announcing.cancel()
            await translator.stop()

    # NMT_JSON_RESPONSE=fastapi leaves FastAPI's default (pydantic-core serializes routes
    # with a response model): the A/B against orjson.
    rendering: dict[str, Any] = (
        {"default_response_class": OrjsonResponse} if settings.json_response == "orjson" else {}
    )
    # /docs and /redoc with their assets served from the app (fastapi-offline): no CDN.
    app = FastAPIOffline(
        title="NMT service",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        **rendering,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.draining = draining
    app.state.peers = peers
    app.state.rate_limiter = rate_limiter
    install_error_handlers(app)
    app.include_router(api_router)
    install_web(app)
    install_openapi(app, settings)
    # The last added runs first: metrics see every response, the 413s and 429s included.
    app.add_middleware(RateLimitMiddleware, limiter=rate_limiter, api_keys=settings.api_keys)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, metrics=metrics)
    app.add_middleware(ConnectionCloseMiddleware, draining=draining)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return app
