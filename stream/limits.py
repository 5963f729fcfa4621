"""Limits of one websocket connection, as plain values (no I/O): how many requests it may send
per second (:class:`OpBudget`) and how many events one subscribe may replay
(:func:`replay_size`).  The server applies them; their sizes are settings
(``STREAM_OPS_PER_SECOND``, ``STREAM_MAX_REPLAY``)."""

from __future__ import annotations

from typing import Literal

from stream.protocol import Subscribe

Verdict = Literal["serve", "refuse", "close"]


class OpBudget:
    """Requests of one connection, counted in windows of one second (a window starts with the
    first request after the previous one ended).  Up to ``per_second`` requests of a window
    are served; beyond that each is refused (not read: the server answers an error 429);
    beyond twice as many the connection is to be closed (4029)."""

    __slots__ = ("per_second", "start", "count")

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self.start = float("-inf")
        self.count = 0

    def take(self, now: float) -> Verdict:
        """Count one request arriving at ``now`` (monotonic seconds)."""
        if now - self.start >= 1.0:
            self.start, self.count = now, 0
        self.count += 1
        if self.count <= self.per_second:
            return "serve"
        return "refuse" if self.count <= 2 * self.per_second else "close"


def replay_size(req: Subscribe, cc_last: int, p_last: int | None) -> int:
    """How many events a recoverable subscribe would replay: those of the ``cc`` space after
    its ``cc_cursor`` and, for one project without a ``jobs`` filter, those of the project's
    space after its ``cursor`` (cursors are dense: one per event)."""
    size = cc_last - req.cc_cursor if req.cc_cursor is not None else 0
    if req.cursor is not None and p_last is not None and req.jobs is None:
        size += p_last - req.cursor
    return max(0, size)
