"""``/docs``: Swagger UI over ``/openapi.json``, served entirely by the web process.

The page, its script, its style sheet and its icon come from ``api/static/swagger-ui/`` (the
``swagger-ui-dist`` release named in its ``VERSION`` file), so the documentation works with no
internet access and asks no other host for anything.  (FastAPI's own ``/docs`` and ``/redoc``
load their assets from a CDN; both are switched off in :func:`api.app.create_app`.)
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(__file__).parent / "static" / "swagger-ui"
PREFIX = "/docs/static"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
def docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json", title="bulkjobs API",
        swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{PREFIX}/favicon-32x32.png",
    )


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(PREFIX, StaticFiles(directory=ASSETS), name="docs-static")
