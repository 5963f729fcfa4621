"""A guard around one failure of kombu's Redis transport (kombu 5.7) when the broker
connection is lost.

On a lost connection the Celery consumer closes it, and closing a channel restores the
messages it had delivered but not acknowledged (``QoS.restore_unacked``).  When the
transport's client has already been dropped, that restore makes a new connection pool from
``connection.client``, which is ``None`` by then: an ``AttributeError`` that kombu does not
take for a connection error, so it ends the worker ("Unrecoverable error") instead of
reconnecting (see celery/kombu#970 for the same path on shutdown).  The same happens later,
after the consumer has reconnected, when a task that was running through the outage ends and
its message (delivered on the old channel) is acknowledged or rejected (``QoS.ack``,
``QoS.reject``; late acknowledgement).

:func:`install` makes those calls give up instead, with a warning.  Nothing is lost: the
messages stay in the broker's unacked index, from which kombu restores them after the
visibility timeout (a job already finished ignores its message), and the jobs they carry are
re-sent by the reaper once their lease runs out, as after any worker crash
(:mod:`worker.reaper`).
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

logger = logging.getLogger(__name__)

_restore_unacked = kombu_redis.QoS.restore_unacked
_ack = kombu_redis.QoS.ack
_reject = kombu_redis.QoS.reject


def _gone(qos: Any) -> bool:
    """Whether the channel has lost its transport, or the transport its client (the
    connection is lost, or the channel closed with it)."""
    transport = qos.channel.connection
    return transport is None or transport.client is None


def _guarded_restore_unacked(self: Any, client: Any = None) -> Any:
    try:
        return _restore_unacked(self, client)
    except AttributeError:
        if not _gone(self):
            raise
        logger.warning("broker connection gone before its %d unacknowledged message(s) could "
                       "be restored; they stay in the unacked index", len(self._delivered))
        return None


def _settled_unless_gone(settle: Any, verb: str) -> Any:
    """``settle`` (kombu's ``ack`` or ``reject``), giving up with a warning when the channel's
    connection is gone: the message leaves this channel's bookkeeping and stays in the
    broker's unacked index."""
    def guarded(self: Any, delivery_tag: Any, *args: Any, **kwargs: Any) -> None:
        try:
            settle(self, delivery_tag, *args, **kwargs)
        except AttributeError:
            if not _gone(self):
                raise
            virtual.QoS.ack(self, delivery_tag)  # out of this channel's own bookkeeping
            logger.warning("broker connection gone before message %s could be %s; it stays "
                           "in the unacked index", delivery_tag, verb)
    return guarded


_guarded_ack = _settled_unless_gone(_ack, "acknowledged")
_guarded_reject = _settled_unless_gone(_reject, "rejected")


def install() -> None:
    """Guard ``restore_unacked``, ``ack`` and ``reject`` of kombu's Redis transport's QoS
    (idempotent)."""
    kombu_redis.QoS.restore_unacked = _guarded_restore_unacked  # type: ignore[method-assign]
    kombu_redis.QoS.ack = _guarded_ack  # type: ignore[method-assign]
    kombu_redis.QoS.reject = _guarded_reject  # type: ignore[method-assign]
