"""Page cursors: the opaque ``page.cursor`` strings of every paged listing (``jobs/list``,
``records/bulk/get``, ``schema/bulk/get``), one codec for all.

A cursor is a short list of values (a position, a sort key, a read token) as compact JSON,
URL-safe base64 without padding.  Clients only hand a cursor back, so its content is no
contract: decoding checks that it holds exactly the values of the expected ``shape`` and
answers anything else — bad base64, bad JSON, another shape — with one clean error,
``invalid page.cursor``.  What the values mean (a token that must exist, a position in
range) is for the caller to check.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any

from bulkjobs.errors import BadRequest, BulkJobsError

#: The message of every cursor that does not decode.
INVALID = "invalid page.cursor"


def encode(values: Sequence[str | int | float]) -> str:
    """The opaque cursor holding ``values``."""
    raw = json.dumps(list(values), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(
    cursor: str, shape: Sequence[type], *,
    error: Callable[[str], BulkJobsError] = BadRequest,
) -> tuple[Any, ...]:
    """The values of ``cursor``, one of each type of ``shape`` (``str``, ``int`` or
    ``float``; a ``float`` may be written as an integer, a ``bool`` is neither), as a
    tuple.  Raises ``error(INVALID)`` (a :class:`BadRequest` unless told) for anything
    else."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, RecursionError) as exc:
        raise error(INVALID) from exc
    if not (isinstance(values, list) and len(values) == len(shape)
            and all(_fits(v, t) for v, t in zip(values, shape, strict=True))):
        raise error(INVALID)
    return tuple(float(v) if t is float else v for v, t in zip(values, shape, strict=True))


def _fits(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)
