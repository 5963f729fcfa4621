"""Revocation notices: what tells the stream relays that a user's access was cut.

Authority is read from the database on every HTTP request, so a revocation (a user disabled,
the ``ops`` flag taken away, an API key revoked) counts there from the next request on.  An
open websocket is judged when it authenticates and subscribes, and then only by the relay's
periodic refresh (``MEMBERSHIP_REFRESH``).  So, once the revocation is committed, a notice
naming the user is appended to :func:`bulkjobs.keys.revocations`; each relay's reader reads
that stream in the same ``XREAD`` as the sync streams and has the user's connections judged
again before it hands over any event of that read.  Redis serves an ``XREAD`` atomically:
an event appended after the notice is never read before it, so it never reaches a
connection the revocation concerns.

A notice that cannot be written (Redis unavailable) is logged and dropped: the revocation
stands in the database, and the relays' refresh applies it within ``MEMBERSHIP_REFRESH``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import redis
from redis.exceptions import RedisError

from bulkjobs import keys
from bulkjobs.connections import get_redis
from bulkjobs.synclog import fields_of

logger = logging.getLogger(__name__)

#: Notices kept in the stream (about; a relay reads them within moments of their append).
NOTICES_KEPT = 1000


def announce(user_gid: str, *, client: redis.Redis | None = None) -> bool:
    """Tell the stream relays that ``user_gid``'s access was cut (call after the commit);
    False, with a warning logged, when Redis is unavailable."""
    try:
        (client or get_redis()).xadd(keys.revocations(), {"user": user_gid},
                                     maxlen=NOTICES_KEPT, approximate=True)
    except (RedisError, OSError) as exc:
        logger.warning("revocation of user %s not announced to open websockets (Redis "
                       "unavailable: %s); they learn of it within MEMBERSHIP_REFRESH seconds",
                       user_gid, exc)
        return False
    return True


def users_of(entries: Iterable[Any]) -> set[str]:
    """The users named by notices as ``XREAD`` returns them (``(id, fields)`` pairs)."""
    out: set[str] = set()
    for _, raw in entries:
        fields = fields_of(raw)
        user = fields.get(b"user", fields.get("user"))
        if user is not None:
            out.add(user.decode() if isinstance(user, bytes) else str(user))
    return out
