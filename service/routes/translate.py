"""POST /v1/translate: the service's own translation API."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from service.compose import translate_documents, translate_texts
from service.detect import Detection
from service.errors import ERROR_RESPONSES
from service.markup import MarkupLimits
from service.routes.deps import TranslatorDep, require_api_key, unless_disconnected
from service.schemas import (
    DetectedLanguage,
    TranslateRequest,
    TranslateResponse,
    TranslationItem,
)

router = APIRouter(prefix="/v1", tags=["translate"], dependencies=[Depends(require_api_key)])


@router.post("/translate", response_model_exclude_none=True, responses=ERROR_RESPONSES)
async def translate(
    body: TranslateRequest, request: Request, translator: TranslatorDep
) -> TranslateResponse:
    """Translate one text or a list; multi-sentence texts keep their whitespace and lines.
    source_lang "auto" (the default) detects each text's language; format "html" keeps the
    markup."""
    texts = [body.text] if isinstance(body.text, str) else body.text
    if body.format == "html":
        translator.check_texts(texts)
        limits = MarkupLimits(translator.settings.max_chars, translator.settings.max_html_depth)
        work = translate_documents(
            translator,
            texts,
            body.source_lang,
            body.target_lang,
            limits,
            alternatives=body.alternatives,
        )
    else:
        work = translate_texts(
            translator,
            texts,
            body.source_lang,
            body.target_lang,
            beam_size=body.beam_size,
            max_length=body.max_length,
            alternatives=body.alternatives,
        )
    result = await unless_disconnected(request, work)
    detections: list[Detection | None] = [None] * len(texts)
    if result.detections is not None:
        detections = list(result.detections)
    return TranslateResponse(
        translations=[
            TranslationItem(
                text=t,
                alternatives=a if body.alternatives else None,
                detected_language=None
                if d is None
                else DetectedLanguage(language=d.language or "", confidence=d.confidence),
            )
            for t, a, d in zip(result.texts, result.alternatives, detections, strict=True)
        ],
        model=result.model,
        backend=result.backend,
        route=result.route,
    )
