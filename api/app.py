"""The web process: the HTTP API in its dialects, ops pages, health and metrics."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from api import errors, health, metrics, openapi, ops
from api.dato import routes as dato
from api.plone import routes as plone
from api.ratelimit import RateLimitHeaders
from api.unicat import auth, jobs, record_definitions, records, schema, sync
from api.unicat.openapi import ERRORS as UNICAT_ERRORS
from bulkjobs import __version__, logs
from bulkjobs.errors import PayloadTooLarge

MAX_BODY = 10 * 1024 * 1024

logger = logging.getLogger(__name__)


def create_app() -> FastAPI:
    app = FastAPI(
        title="bulkjobs", version=__version__,
        description="Bulk content jobs with a live, resumable event stream. Unicat, DatoCMS "
                    "and Plone dialects over one core.",
    )
    openapi.install(app)  # security schemes and response headers in /openapi.json
    logs.setup()
    errors.install(app)

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                         ) -> Response:
        # Declared sizes are checked before the body is read; chunked bodies are counted.
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return errors.render(request, PayloadTooLarge())
        if length is None and request.method in ("POST", "PUT", "PATCH"):
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY:
                    return errors.render(request, PayloadTooLarge())
            request._body = body  # starlette re-reads the cached body
        return await call_next(request)

    for module in (auth, records, record_definitions, schema, jobs, sync):
        app.include_router(module.router, responses=UNICAT_ERRORS)
    app.include_router(dato.router)
    app.include_router(plone.router)
    app.add_middleware(RateLimitHeaders)  # X-RateLimit-* on every counted answer
    app.include_router(health.router)
    app.include_router(ops.router, responses=UNICAT_ERRORS)
    app.mount("/ops/static", ops.static_files(), name="ops-static")
    metrics.install(app)  # last: the outermost middleware, so it counts every answer
    return app


app = create_app()
