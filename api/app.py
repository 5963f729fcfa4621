"""The web process: the HTTP API in its dialects, ops pages, health and metrics."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from api import docs, errors, health, metrics, openapi, ops
from api.bodylimit import LimitBody
from api.dato import routes as dato
from api.plone import routes as plone
from api.ratelimit import RateLimitHeaders
from api.unicat import auth, jobs, record_definitions, records, schema, sync, webhooks
from api.unicat.openapi import ERRORS as UNICAT_ERRORS
from bulkjobs import __version__, logs
from bulkjobs.settings import settings_or_exit

logger = logging.getLogger(__name__)


def create_app() -> FastAPI:
    settings_or_exit()  # a bad setting stops the web process here, in one line
    app = FastAPI(
        title="bulkjobs", version=__version__,
        description="Bulk content jobs with a live, resumable event stream. Unicat, DatoCMS "
                    "and Plone dialects over one core.",
        # Metrics are Prometheus's (api.metrics); FastAPI's OpenTelemetry hooks would look
        # for a provider on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url=None, redoc_url=None,  # api.docs serves /docs from the product's own files
    )
    openapi.install(app)  # security schemes and response headers in /openapi.json
    logs.setup()
    errors.install(app)

    # Jobs first: routes are matched in order, and queueing is the hot path (P8).
    for module in (jobs, auth, records, record_definitions, schema, sync, webhooks):
        app.include_router(module.router, responses=UNICAT_ERRORS)
    app.include_router(dato.router)
    app.include_router(plone.router)
    app.add_middleware(RateLimitHeaders)  # X-RateLimit-* on every counted answer
    app.add_middleware(LimitBody)  # 413 before a body over 10 MB is read
    app.include_router(health.router)
    docs.install(app)
    app.include_router(ops.router, responses=UNICAT_ERRORS)
    app.mount("/ops/static", ops.static_files(), name="ops-static")
    metrics.install(app)  # last: the outermost middleware, so it counts every answer
    return app


app = create_app()
