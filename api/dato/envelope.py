"""The DatoCMS envelope: JSON:API resources and ``api_error`` bodies.

Errors are mapped here, and only here, from the core's errors (and from a failed job's
result) to DatoCMS's shape::

    {"data": [{"id": "<hex>", "type": "api_error",
               "attributes": {"code": "NOT_FOUND", "details": {...}, "transient": true?}}]}

HTTP status → code (DatoCMS's documented codes): 400 ``INVALID_PARAMS``, 401
``INVALID_AUTHORIZATION_HEADER``, 403 ``INSUFFICIENT_PERMISSIONS``, 404 ``NOT_FOUND``, 405
``INVALID_ENDPOINT``, 409 ``INVALID_REQUEST`` (``transient``: a request with the same
``Idempotency-Key`` is still being handled), 413 ``INVALID_REQUEST``, 422 ``INVALID_FIELD``
(field and selection errors, application codes 1000–1006) or ``INVALID_REQUEST`` (an
operation not possible on the entity), 429 ``RATE_LIMIT_EXCEEDED``, 503
``SERVICE_UNAVAILABLE`` (``transient``: the client retries), anything else ``EXCEPTION``.
``details`` holds the error's ``message`` and its ``info``.

Resources: an item's ``attributes`` are its fields in the project's first language plus
``title``.  Records without a definition have a null ``item_type``.  Timestamps are ISO 8601
UTC.  An item's ``meta``:

* ``created_at``, ``updated_at``; ``current_version`` (the current version's id);
* ``status``: ``draft``, ``published`` (the published version is the current one) or
  ``updated`` (published, with newer changes);
* ``published_at`` (last publication; null unless published) and ``first_published_at``
  (null when the history shows no publication), from the record's ``publish`` workflow
  entries (:meth:`models.history_reads.Marks.publication_times`);
* ``publication_scheduled_at``, ``unpublishing_scheduled_at``: always null — there is no
  scheduled publishing here;
* ``stage``: always null — records go through no workflow stages (DatoCMS's null without a
  workflow);
* ``is_current_version_valid``: true — content is validated when it is written
  (``records/create`` and ``records/update`` refuse what the definition does not allow)
  and there are no other validators, so a stored version is valid;
  ``is_published_version_valid`` likewise, null when no version is published.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi.responses import JSONResponse

from api.error_codes import http_status, is_application_error
from bulkjobs.errors import BulkJobsError
from models.history_reads import Marks, iso_utc
from models.versions import RecordVersion

CODES = {
    400: "INVALID_PARAMS", 401: "INVALID_AUTHORIZATION_HEADER", 403: "INSUFFICIENT_PERMISSIONS",
    404: "NOT_FOUND", 405: "INVALID_ENDPOINT", 409: "INVALID_REQUEST", 413: "INVALID_REQUEST",
    422: "INVALID_REQUEST", 429: "RATE_LIMIT_EXCEEDED", 503: "SERVICE_UNAVAILABLE",
}
TRANSIENT = frozenset({409, 503})


def error_code(status: int, app_code: int | None = None) -> str:
    if status == 422 and is_application_error(app_code):
        return "INVALID_FIELD"
    return CODES.get(status, "EXCEPTION")


def error_body(status: int, message: str, info: dict[str, Any] | None = None, *,
               app_code: int | None = None) -> dict[str, Any]:
    """A DatoCMS error body for an HTTP status, a message and structured details."""
    attributes: dict[str, Any] = {"code": error_code(status, app_code),
                                  "details": {**(info or {}), "message": message}}
    if status in TRANSIENT:
        attributes["transient"] = True
    return {"data": [{"id": secrets.token_hex(3), "type": "api_error",
                      "attributes": attributes}]}


def error_response(exc: BulkJobsError) -> JSONResponse:
    """The renderer registered for ``/dato`` in :data:`api.errors.RENDERERS`."""
    status = http_status(exc)
    return JSONResponse(error_body(status, exc.message, exc.info, app_code=exc.code),
                        status_code=status)


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def ref(type_: str, id_: str | None) -> dict[str, Any]:
    return {"data": {"type": type_, "id": id_} if id_ else None}


def content(title: Any, fields: Any, lang: str) -> dict[str, Any]:
    """Attributes of an item or a version: the fields of ``lang``, plus ``title``."""
    values = (fields or {}).get(lang) if isinstance(fields, dict) else None
    attributes = dict(values) if isinstance(values, dict) else {}
    attributes["title"] = (title or {}).get(lang) if isinstance(title, dict) else None
    return attributes


def item_status(status: str, marks: Marks) -> str:
    if status != "published":
        return "draft"
    return "published" if marks.published == marks.current else "updated"


def item(public: dict[str, Any], lang: str, marks: Marks) -> dict[str, Any]:
    """An ``item`` resource from a record in its public shape
    (:func:`models.queries.records_public`)."""
    return {
        "id": public["gid"],
        "type": "item",
        "attributes": content(public.get("title"), public.get("fields"), lang),
        "relationships": {"item_type": ref("item_type", public.get("definition"))},
        "meta": item_meta(public, marks),
    }


def item_meta(public: dict[str, Any], marks: Marks) -> dict[str, Any]:
    """An item's ``meta``, every key DatoCMS gives (see the module docstring for what each
    one means here)."""
    published = public["status"] == "published"
    published_at, first_published_at = marks.publication_times(published=published)
    return {
        "created_at": iso_utc(public["created_on"]),
        "updated_at": iso_utc(public["updated_on"]),
        "published_at": _iso_or_none(published_at),
        "first_published_at": _iso_or_none(first_published_at),
        "publication_scheduled_at": None,
        "unpublishing_scheduled_at": None,
        "status": item_status(public["status"], marks),
        "is_current_version_valid": True,
        "is_published_version_valid": True if marks.published else None,
        "current_version": marks.current,
        "stage": None,
    }


def _iso_or_none(ts: float | None) -> str | None:
    return iso_utc(ts) if ts is not None else None


def item_version(version: RecordVersion, record_gid: str, lang: str) -> dict[str, Any]:
    """An ``item_version`` resource: the snapshot's content and who made it."""
    snapshot = version.snapshot or {}
    editor = version.editor or {}
    return {
        "id": version.id,
        "type": "item_version",
        "attributes": content(snapshot.get("title"), snapshot.get("fields"), lang),
        "meta": {"created_at": iso_utc(version.created_at),
                 "is_published": bool(version.is_published),
                 "is_current": bool(version.is_current)},
        "relationships": {
            "item": ref("item", record_gid),
            "item_type": ref("item_type", snapshot.get("definition")),
            "editor": ref(str(editor.get("type") or "user"), str(editor.get("id") or "") or None),
        },
    }
