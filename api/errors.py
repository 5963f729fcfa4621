"""Exception handlers: every error becomes its dialect's envelope, chosen by path prefix.

No route builds an error response by hand.  Unexpected exceptions are logged and answered
with a 500 in the envelope (never a bare stack trace); Redis being down is a 503.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from api.dato import envelope as dato
from api.plone import envelope as plone
from api.unicat import envelope as unicat
from bulkjobs.errors import BadRequest, BulkJobsError, ServiceUnavailable

logger = logging.getLogger(__name__)

Renderer = Callable[[BulkJobsError], JSONResponse]

#: Path prefix -> renderer; the Unicat envelope is the default.
RENDERERS: dict[str, Renderer] = {
    "/dato/": dato.error_response,
    "/plone/": plone.error_response,
}


def render(request: Request, exc: BulkJobsError) -> JSONResponse:
    renderer = next((r for prefix, r in RENDERERS.items() if request.url.path.startswith(prefix)),
                    unicat.error_response)
    response = renderer(exc)
    # A 429 says when to come back, in every dialect (its envelope may have no room for it).
    wait = exc.info.get("retry_after", exc.info.get("reset")) if exc.status == 429 else None
    if isinstance(wait, int):
        response.headers["Retry-After"] = str(wait)
    return response


#: Seconds a client is told to wait (``Retry-After``) after a 503 for Redis being unavailable.
REDIS_RETRY_AFTER = 1


def _from_status(status: int, detail: str) -> BulkJobsError:
    exc = BulkJobsError(detail)
    exc.status = exc.code = status
    return exc


def install(app: FastAPI) -> None:
    @app.exception_handler(BulkJobsError)
    async def _bulkjobs(request: Request, exc: BulkJobsError) -> JSONResponse:
        return render(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
                  for e in exc.errors()[:20]]
        return render(request, BadRequest("Bad request: missing or invalid parameters",
                                          info={"errors": errors}))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return render(request, _from_status(exc.status_code, str(exc.detail)))

    @app.exception_handler(redis.RedisError)
    async def _redis(request: Request, exc: redis.RedisError) -> JSONResponse:
        logger.warning("redis unavailable: %s", exc)
        response = render(request, ServiceUnavailable("Redis is unavailable; try again shortly"))
        # Redis comes back, or Sentinel promotes a replica, within seconds: say when to retry.
        response.headers["Retry-After"] = str(REDIS_RETRY_AFTER)
        return response

    # Text the database cannot bind — NUL in PostgreSQL text (DataError), an unpaired
    # surrogate that JSON let through (UnicodeEncodeError, on both databases) — or a number
    # out of its range came from the request: the client's fault, not a 500.
    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        logger.warning("value refused by the database on %s: %s", request.url.path, exc.orig)
        return render(request, BadRequest("Bad request: a value the database cannot store"))

    @app.exception_handler(UnicodeEncodeError)
    async def _unencodable(request: Request, exc: UnicodeEncodeError) -> JSONResponse:
        return render(request, BadRequest("Bad request: text with unpaired surrogates"))

    @app.exception_handler(OperationalError)
    async def _db(request: Request, exc: OperationalError) -> JSONResponse:
        logger.warning("database unavailable: %s", exc)
        return render(request, ServiceUnavailable("The database is busy; try again shortly"))

    # The client closed its connection before its request was read: nobody is left to
    # answer, and it is no error of the server's (no traceback, no 500 in the metrics).
    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        logger.info("client went away before its request was read: %s %s", request.method,
                    request.url.path)
        return render(request, BadRequest("The connection closed before the request was read"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return render(request, BulkJobsError("Internal server error"))
