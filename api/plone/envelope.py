"""The Plone envelope: ``@history`` entries, historical versions, and errors.

Errors are mapped here, and only here, to plone.restapi's JSON error ``{"type", "message"}``
with the HTTP status of the core error (:func:`api.error_codes.http_status`: application
codes 1000–1006 as 422).  ``type`` names the HTTP error as Zope does: ``BadRequest`` (400),
``Unauthorized`` (401), ``Forbidden`` (403), ``NotFound`` (404), ``MethodNotAllowed``
(405), ``Conflict`` (409), ``RequestEntityTooLarge`` (413), ``UnprocessableEntity`` (422),
``TooManyRequests`` (429), ``ServiceUnavailable`` (503), ``InternalServerError`` otherwise.

History entries follow plone.restapi: versioning entries (``@id``, ``action`` — ``"Create"``
for version 0, ``"Edited"`` after —, ``actor``, ``comments``, ``may_revert``, ``time``,
``transition_title``, ``type``, ``version``) and workflow entries (``action``, ``actor``,
``comments``, ``review_state``, ``state_title``, ``time``, ``transition_title``, ``type``).
``actor`` is ``{"@id": <site>/@users/<id>, "fullname", "id", "username"}`` (null names for
editors that are not users, e.g. the seeder).
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from api.error_codes import http_status
from bulkjobs.errors import BulkJobsError
from models.auth import User
from models.history_reads import HistoryEntry, iso_utc
from models.records import Record
from models.versions import RecordVersion

TYPES = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
    405: "MethodNotAllowed", 409: "Conflict", 413: "RequestEntityTooLarge",
    422: "UnprocessableEntity", 429: "TooManyRequests", 503: "ServiceUnavailable",
}
STATE_TITLES = {"draft": "Draft", "published": "Published", "deleted": "Deleted"}


def error_response(exc: BulkJobsError) -> JSONResponse:
    """The renderer registered for ``/plone`` in :data:`api.errors.RENDERERS`."""
    status = http_status(exc)
    return JSONResponse({"type": TYPES.get(status, "InternalServerError"),
                         "message": exc.message}, status_code=status)


def actor(site: str, who: dict[str, Any], users: dict[str, User]) -> dict[str, Any]:
    uid = str(who.get("id") or "")
    user = users.get(uid)
    return {"@id": f"{site}/@users/{uid}",
            "fullname": (user.name or user.username) if user else None,
            "id": uid, "username": user.username if user else None}


def history_entry(entry: HistoryEntry, *, obj_url: str, site: str, users: dict[str, User],
                  may_revert: bool) -> dict[str, Any]:
    who = actor(site, entry.actor, users)
    if entry.version is not None:
        number = entry.version.number
        action = "Create" if number == 0 else "Edited"
        return {"@id": f"{obj_url}/@history/{number}", "action": action, "actor": who,
                "comments": entry.comment, "may_revert": may_revert,
                "time": iso_utc(entry.time), "transition_title": action,
                "type": "versioning", "version": number}
    return {"action": entry.action, "actor": who, "comments": entry.comment,
            "review_state": entry.review_state,
            "state_title": STATE_TITLES.get(entry.review_state,
                                            entry.review_state.replace("_", " ").title()),
            "time": iso_utc(entry.time),
            "transition_title": entry.action.replace("_", " ").capitalize(),
            "type": "workflow"}


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


RESERVED = ("@id", "@type", "UID", "id", "title", "review_state", "version", "language",
            "created", "modified", "changeNote", "definition", "channels", "is_current")


def historical(record: Record, version: RecordVersion, *, obj_url: str, lang: str
               ) -> dict[str, Any]:
    """The record as it was at ``version``: Plone's content serialization of the snapshot —
    metadata first, then the fields of ``lang`` (a field never hides a metadata key)."""
    snapshot = version.snapshot or {}
    title = as_dict(snapshot.get("title"))
    values = as_dict(as_dict(snapshot.get("fields")).get(lang))
    out: dict[str, Any] = {k: v for k, v in values.items() if k not in RESERVED}
    out.update({
        "@id": obj_url, "@type": "Record", "UID": record.gid, "id": record.gid,
        "title": title.get(lang), "review_state": snapshot.get("status"),
        "version": version.number, "language": lang,
        "created": iso_utc(record.created_on), "modified": iso_utc(version.created_at),
        "changeNote": version.comment, "definition": snapshot.get("definition"),
        "channels": snapshot.get("channels"), "is_current": bool(version.is_current),
    })
    return out
