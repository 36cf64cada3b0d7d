"""GET /v1/models: the pairs served and how."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.routes.deps import TranslatorDep, require_api_key
from service.schemas import ModelInfo, ModelsResponse

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[Depends(require_api_key)])


@router.get("/models")
async def models(translator: TranslatorDep) -> ModelsResponse:
    """Each loaded pair: serving backend, fallback, device, precision and model version."""
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
    return ModelsResponse(models=out)
