"""The Unicat envelope: success and error bodies, and the mapping of every error to them.

``{"success": true, "result": {...}, "data": {...}}`` on success; errors are
``{"success": false, "result": {"code", "message", "info"}, "data": {}}`` with the HTTP status
equal to the code, except application codes 1000–1006, which go out as HTTP 422
(:func:`api.error_codes.http_status`).  A 401
carries ``WWW-Authenticate``.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from api.error_codes import http_status
from bulkjobs.errors import BulkJobsError

REALM = 'Bearer realm="JWT access to bulkjobs."'


def ok(result: dict[str, Any] | None = None, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"success": True, "result": result or {}, "data": data or {}}


def error_body(code: int, message: str, info: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"success": False, "result": {"code": code, "message": message, "info": info or {}},
            "data": {}}


def error_response(exc: BulkJobsError) -> JSONResponse:
    status = http_status(exc)
    headers = {"WWW-Authenticate": REALM} if status == 401 else None
    return JSONResponse(error_body(exc.code, exc.message, exc.info), status_code=status,
                        headers=headers)
