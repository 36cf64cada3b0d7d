"""HTTP routes, one APIRouter per resource; each route only parses, calls and shapes."""

from fastapi import APIRouter

from service.routes import health, libretranslate, metrics, models, translate

api_router = APIRouter()
for module in (translate, libretranslate, models, health, metrics):
    api_router.include_router(module.router)

__all__ = ["api_router"]
