"""GET /metrics: Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.routes.deps import MetricsDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(metrics: MetricsDep) -> Response:
    """Requests, latency, queue, batches, tokens, inference time, fallbacks, rejections."""
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
