"""Dependencies shared by the routes, as Annotated aliases; resources live on app.state.

Every dependency is `async def`: FastAPI runs a plain `def` one in its thread pool, a
thread hand-off per dependency per request that an engine thread then waits on for the
GIL (docs/decisions.md).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request

from service.errors import ClientDisconnected, Unauthorized
from service.metrics import Metrics
from service.settings import Settings
from service.translator import Translator

T = TypeVar("T")


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_translator(request: Request) -> Translator:
    return request.app.state.translator


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
TranslatorDep = Annotated[Translator, Depends(get_translator)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


def header_key(request: Request) -> str | None:
    """The key from `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key")


def check_api_key(settings: Settings, key: str | None) -> None:
    """Raise Unauthorized unless keys are off or this is one of them."""
    if not settings.api_keys:
        return
    if key is None:
        raise Unauthorized("an API key is required (Authorization: Bearer, X-API-Key or api_key)")
    # Compare against every key, in constant time, so timing reveals nothing.
    matches = [hmac.compare_digest(key.encode(), k.encode()) for k in settings.api_keys]
    if not any(matches):
        raise Unauthorized("invalid API key")


async def require_api_key(request: Request, settings: SettingsDep) -> None:
    check_api_key(settings, header_key(request))


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Run work, cancelling it (and so dropping its queued sentences) if the client leaves."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        # The body is already read: the next message is the disconnect (or the response end).
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        left = not task.done()
        if left:
            task.cancel()
    if left:
        raise ClientDisconnected("the client disconnected")
    return task.result()
