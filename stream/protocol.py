"""The websocket protocol of SPEC §8 as data: client requests parsed into typed values, server
messages built as JSON text.  No I/O.

Client → server (JSON text frames; any request may carry an ``"id"`` (string or integer), which
the reply to that request echoes, so a client can match replies to requests):

* ``{"op": "auth", "jwt": "<JWT>"}``
* ``{"op": "subscribe", "project": "<gid>" | "*", "cc_cursor": N?, "cursor": M?,
  "jobs": ["<token>", …]?}`` — ``cursor`` (the project's own space) needs a single project:
  ``"*"`` gets live project-space events of every visible project but cannot replay them;
  ``jobs`` must be a non-empty list when given.
* ``{"op": "unsubscribe", "project": "<gid>" | "*"}``

Anything else — text that is not JSON, not an object, an unknown ``op``, a field of the wrong
type — raises :class:`ProtocolError` (sent back as ``{"op": "error", "code": 400, …}``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bulkjobs.errors import BadRequest, Unauthorized

#: Longest project gid / job token / request id accepted (UUIDs are 36 characters).
MAX_ID = 64
#: Most job tokens one ``jobs`` filter may name.
MAX_JOBS = 1000
#: Longest close reason, in bytes: a control frame's payload is at most 125 bytes, two of
#: which are the close code.
MAX_CLOSE_REASON = 123

RequestId = str | int | None


class ProtocolError(BadRequest):
    """A client message the server cannot act on (400).  ``request_id`` is echoed if known."""

    def __init__(self, message: str, *, request_id: RequestId = None) -> None:
        super().__init__(message)
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Auth:
    jwt: str
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    project: str  # a gid or "*"
    cc_cursor: int | None = None
    cursor: int | None = None
    jobs: frozenset[str] | None = None
    id: RequestId = None

    @property
    def replays(self) -> bool:
        """Did the client give a cursor to resume from?"""
        return self.cc_cursor is not None or self.cursor is not None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    project: str
    id: RequestId = None


Request = Auth | Subscribe | Unsubscribe


def parse(message: str | bytes) -> Request:
    """Parse one client frame or raise :class:`ProtocolError`."""
    if isinstance(message, bytes):
        raise ProtocolError("binary frames are not supported; send JSON text")
    try:
        data = json.loads(message)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise ProtocolError("invalid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("a message must be a JSON object")
    rid = data.get("id")
    if rid is not None and not (_is_int(rid) or (isinstance(rid, str) and len(rid) <= MAX_ID)):
        raise ProtocolError("id must be a short string or an integer")
    op = data.get("op")
    try:
        if op == "auth":
            jwt = data.get("jwt")
            if not isinstance(jwt, str) or not jwt:
                raise ProtocolError("auth needs a jwt string")
            return Auth(jwt=jwt, id=rid)
        if op == "subscribe":
            project = _project(data)
            cursor = _cursor(data, "cursor")
            if cursor is not None and project == "*":
                raise ProtocolError('cursor needs a single project, not "*"')
            return Subscribe(
                project=project, cc_cursor=_cursor(data, "cc_cursor"), cursor=cursor,
                jobs=_jobs(data), id=rid,
            )
        if op == "unsubscribe":
            return Unsubscribe(project=_project(data), id=rid)
    except ProtocolError as exc:
        exc.request_id = rid
        raise
    raise ProtocolError(f"unknown op: {str(op)[:40]!r}", request_id=rid)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_id(v: Any) -> bool:
    """A gid or token: a short string of printable characters.  NUL, other control
    characters and lone surrogates are refused here, as client errors: they never name
    anything, and PostgreSQL cannot even compare them (it would raise, not answer no)."""
    return isinstance(v, str) and 0 < len(v) <= MAX_ID and v.isprintable()


def _project(data: dict[str, Any]) -> str:
    project = data.get("project")
    if not _is_id(project):
        raise ProtocolError('project must be a project gid or "*"')
    return str(project)


def _cursor(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        raise ProtocolError(f"{name} must be a non-negative integer")
    return int(value)


def _jobs(data: dict[str, Any]) -> frozenset[str] | None:
    jobs = data.get("jobs")
    if jobs is None:
        return None
    if (
        not isinstance(jobs, list) or not jobs or len(jobs) > MAX_JOBS
        or not all(_is_id(t) for t in jobs)
    ):
        raise ProtocolError(f"jobs must be a non-empty list of up to {MAX_JOBS} job tokens")
    return frozenset(jobs)


# -- server messages ----------------------------------------------------------------------


def _dump(msg: dict[str, Any], request_id: RequestId) -> str:
    if request_id is not None:
        msg["id"] = request_id
    return json.dumps(msg, separators=(",", ":"))


def auth_ok(user: str, cc_cursor: int, *, request_id: RequestId = None) -> str:
    return _dump({"op": "auth", "ok": True, "user": user, "cc.cursor": cc_cursor}, request_id)


def subscribed(
    project: str, *, recovered: bool, cc_cursor: int, cursor: int | None,
    jobs: list[dict[str, Any]], request_id: RequestId = None,
) -> str:
    msg = {
        "op": "subscribed", "project": project, "recovered": recovered,
        "cc.cursor": cc_cursor, "cursor": cursor, "jobs": jobs,
    }
    return _dump(msg, request_id)


def unsubscribed(project: str, *, request_id: RequestId = None) -> str:
    return _dump({"op": "unsubscribed", "project": project}, request_id)


def error(
    code: int, message: str, *, request_id: RequestId = None, **extra: Any
) -> str:
    return _dump({"op": "error", "code": code, "message": message, **extra}, request_id)


def bearer(header: str) -> str:
    """The token of an ``Authorization: Bearer <JWT>`` header on the upgrade request, or
    :class:`Unauthorized` (a failed login, counted as one)."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <JWT>'")
    return token.strip()


def close_reason(text: str) -> str:
    """``text`` cut to fit a close frame: at most 123 bytes of UTF-8 (RFC 6455 §5.5).  Reasons
    may echo client input (``unknown op: …``); 100 *characters* of CJK text would be 300 bytes,
    and websockets would fail the handler (1011) instead of closing with our code."""
    return text.encode(errors="replace")[:MAX_CLOSE_REASON].decode(errors="ignore")
