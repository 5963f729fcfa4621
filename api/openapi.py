"""The OpenAPI document (``/openapi.json``, shown at ``/docs``): what FastAPI derives from the
routes, completed with what they cannot say themselves.

:func:`document` adds, per operation,

* its **security scheme**, by dialect: ``UnicatJWT`` (``Authorization: Bearer <JWT>``, or the
  bare JWT as Unicat hands it out) for the Unicat routes and the ops API, ``DatoCMSToken``
  and ``PloneToken`` (``Authorization: Bearer <API key or JWT>``) for theirs.  An operation
  that declares its own ``security`` (``[]`` on the public ones: ``auth``, ``login``,
  health, metrics, the dashboard page) keeps it;
* the **response headers**: ``X-RateLimit-Limit``/``-Remaining``/``-Reset`` on every answer of
  an operation that takes credentials (:mod:`api.ratelimit`; absent while no limit is set),
  the renewed JWT in ``Authorization`` on every success of a Unicat operation,
  ``WWW-Authenticate`` on a Unicat 401 and ``Retry-After`` on every 429 (too many requests,
  or too many failed logins).

The error bodies of each dialect are declared where its routers are (``responses=`` of the
routers, :data:`api.unicat.openapi.ERRORS` and the dato and plone ``schemas.ERRORS``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "UnicatJWT": {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "The JWT from `auth` or `login` (also accepted without `Bearer`). "
                       "Every success carries a renewed one in `Authorization`.",
    },
    "DatoCMSToken": {
        "type": "http", "scheme": "bearer",
        "description": "`Authorization: Bearer <API token>`: an API key of the project, or "
                       "a JWT from Unicat's `auth`.",
    },
    "PloneToken": {
        "type": "http", "scheme": "bearer",
        "description": "`Authorization: Bearer <token>`: a JWT from Unicat's `auth`, or an "
                       "API key of the project.",
    },
}

#: Path prefix -> security scheme; other paths are Unicat's.
SCHEME_BY_PREFIX = {"/dato/": "DatoCMSToken", "/plone/": "PloneToken"}
UNICAT_SCHEME = "UnicatJWT"

RATE_LIMIT_HEADERS: dict[str, dict[str, Any]] = {
    "X-RateLimit-Limit": {"description": "requests allowed per window",
                          "schema": {"type": "integer"}},
    "X-RateLimit-Remaining": {"description": "requests left in this window",
                              "schema": {"type": "integer"}},
    "X-RateLimit-Reset": {"description": "seconds until the window resets",
                          "schema": {"type": "integer"}},
}
JWT_HEADER: dict[str, Any] = {
    "description": "the renewed JWT (no `Bearer` prefix): use it from now on",
    "required": True, "schema": {"type": "string"},
}
WWW_AUTHENTICATE: dict[str, Any] = {
    "description": 'Bearer realm="JWT access to bulkjobs."', "required": True,
    "schema": {"type": "string"},
}

RETRY_AFTER: dict[str, Any] = {
    "description": "seconds to wait before trying again", "required": True,
    "schema": {"type": "integer"},
}

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def install(app: FastAPI) -> None:
    """Serve :func:`document` of ``app``'s routes as its OpenAPI document (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def scheme_of(path: str) -> str:
    for prefix, scheme in SCHEME_BY_PREFIX.items():
        if path.startswith(prefix):
            return scheme
    return UNICAT_SCHEME


def document(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` completed in place (see the module docstring); returned for convenience."""
    components = spec.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in spec.get("paths", {}).items():
        scheme = scheme_of(path)
        for method, operation in operations.items():
            if method not in METHODS:
                continue
            operation.setdefault("security", [{scheme: []}])
            secured = bool(operation["security"])
            for status, response in operation.get("responses", {}).items():
                headers = response.setdefault("headers", {})
                if secured:
                    headers.update(RATE_LIMIT_HEADERS)
                if scheme == UNICAT_SCHEME and str(status).startswith("2") and (
                        secured or path.startswith("/api/")):
                    headers["Authorization"] = JWT_HEADER
                if scheme == UNICAT_SCHEME and str(status) == "401":
                    headers["WWW-Authenticate"] = WWW_AUTHENTICATE
                if str(status) == "429":
                    headers["Retry-After"] = RETRY_AFTER
                if not headers:
                    del response["headers"]
    return spec
