"""The web page at / and its static files (no CDN, no build step: it works offline)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parents[1] / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    """The translation page."""
    return FileResponse(STATIC / "web" / "index.html", media_type="text/html")


def install_web(app: FastAPI) -> None:
    """Serve the page at / and its files under /static."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
