"""Liveness and readiness probes (and the /v2 aliases KServe/Triton clients expect)."""

from __future__ import annotations

from fastapi import APIRouter
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
async def ready(translator: TranslatorDep) -> JSONResponse:
    """200 once models are loaded and warmed (status ok, or degraded on the fallback); else 503."""
    health = translator.health()
    body = HealthResponse(status=health.status, models=health.models)
    return JSONResponse(body.model_dump(), status_code=200 if health.ready else 503)
