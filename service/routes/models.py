"""GET /v1/models: the pairs served and how, and the pairs served through a pivot."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.routes.deps import TranslatorDep, require_api_key
from service.schemas import ModelInfo, ModelsResponse, PivotInfo

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[Depends(require_api_key)])


@router.get("/models")
async def models(translator: TranslatorDep) -> ModelsResponse:
    """Each loaded pair: serving backend, fallback, device, precision and model version; and
    each pair without a model of its own, with the route that translates it."""
    out = []
    for pair, runner in sorted(translator.serving().items()):
        engine = runner.active
        out.append(
            ModelInfo(
                pair=pair,
                source_lang=engine.source_lang,
                target_lang=engine.target_lang,
                backend=engine.backend,
                degraded=runner.degraded,
                device=engine.device,
                fallback=runner.fallback.backend if runner.fallback and runner.primary else None,
                precision=engine.precision,
                version=engine.version,
            )
        )
    pivots = [
        PivotInfo(
            pair=pair,
            source_lang=translator.runners[route[0]].active.source_lang,
            target_lang=translator.runners[route[-1]].active.target_lang,
            route=route,
        )
        for pair, route in translator.reachable().items()
        if len(route) > 1
    ]
    return ModelsResponse(models=out, pivots=pivots)
