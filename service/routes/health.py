"""Liveness and readiness probes (and the /v2 aliases KServe/Triton clients expect)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.routes.deps import TranslatorDep
from service.schemas import HealthResponse

router = APIRouter(tags=["health"])


@router.get("/health/live")
@router.get("/v2/health/live", include_in_schema=False)
async def live() -> HealthResponse:
    """The process answers; says nothing about the models."""
    return HealthResponse(status="live")


@router.get("/health/ready", responses={503: {"model": HealthResponse}})
@router.get("/v2/health/ready", include_in_schema=False)
async def ready(request: Request, translator: TranslatorDep) -> JSONResponse:
    """200 once models are loaded and warmed (status ok, or degraded on the fallback); else 503,
    from the first moment of a shutdown on (status stopping), while requests are still served."""
    health = translator.health()
    if request.app.state.draining.active:
        body = HealthResponse(status="stopping", models=health.models)
        return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "5"})
    peers = request.app.state.peers
    if health.ready and peers is not None and peers.waiting_for():
        # this worker is ready, another of its group (NMT_WORKERS) is still loading
        body = HealthResponse(status="loading", models=health.models)
        return JSONResponse(body.model_dump(), status_code=503)
    body = HealthResponse(status=health.status, models=health.models)
    return JSONResponse(body.model_dump(), status_code=200 if health.ready else 503)
