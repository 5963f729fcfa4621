"""A guard around one failure of kombu's Redis transport (kombu 5.7) when the broker
connection is lost.

On a lost connection the Celery consumer closes it, and closing a channel restores the
messages it had delivered but not acknowledged (``QoS.restore_unacked``).  When the
transport's client has already been dropped, that restore makes a new connection pool from
``connection.client``, which is ``None`` by then: an ``AttributeError`` that kombu does not
take for a connection error, so it ends the worker ("Unrecoverable error") instead of
reconnecting (see celery/kombu#970 for the same path on shutdown).

:func:`install` makes that restore give up instead, with a warning.  Nothing is lost: the
unacknowledged messages stay in the broker's unacked index, from which kombu restores them
after the visibility timeout, and the jobs they carry are re-sent by the reaper once their
lease runs out, as after any worker crash (:mod:`worker.reaper`).
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis

logger = logging.getLogger(__name__)

_restore_unacked = kombu_redis.QoS.restore_unacked


def _guarded_restore_unacked(self: Any, client: Any = None) -> Any:
    try:
        return _restore_unacked(self, client)
    except AttributeError:
        if self.channel.connection.client is not None:
            raise
        logger.warning("broker connection gone before its %d unacknowledged message(s) could "
                       "be restored; they stay in the unacked index", len(self._delivered))
        return None


def install() -> None:
    """Guard ``QoS.restore_unacked`` of kombu's Redis transport (idempotent)."""
    kombu_redis.QoS.restore_unacked = _guarded_restore_unacked  # type: ignore[method-assign]
