"""Retention of the sync log, without I/O: where a trim cuts (:func:`cutoff`) and which
minute marks it leaves behind (:func:`stale_minutes`).  :meth:`SyncLog.trim
<bulkjobs.synclog.SyncLog.trim>` drives them (see the contract in :mod:`bulkjobs.synclog`)."""

from __future__ import annotations

from typing import Any

from bulkjobs.synclog.read import text_of


def cutoff(*, last: int, keep: int, marks: dict[Any, Any], older_than: float) -> int:
    """The lowest cursor a trim keeps: below it an entry is both beyond the last ``keep``
    events and appended before ``older_than`` (a time)."""
    return min(last - keep + 1, _time_cutoff(marks, older_than))


def stale_minutes(marks: dict[Any, Any], floor: int) -> list[Any]:
    """The minute fields of a marks hash whose first cursor is below ``floor``."""
    return [m for m, c in _minute_marks(marks) if c < floor]


def _time_cutoff(marks: dict[Any, Any], older_than: float) -> int:
    """The first cursor appended at or after the newest minute mark that is fully older than
    ``older_than``: everything below it is older than the time bound."""
    limit_minute = int(older_than // 60)
    eligible = [c for m, c in _minute_marks(marks) if int(m) <= limit_minute]
    # The minute *after* the last eligible one starts at a cursor we do not know; the mark of
    # the newest eligible minute is a safe (conservative) cutoff.
    return max(eligible) if eligible else 0


def _minute_marks(marks: dict[Any, Any]) -> list[tuple[Any, int]]:
    """``(minute field, first cursor)`` pairs of a marks hash, without its ``run`` field."""
    return [(m, int(c)) for m, c in marks.items() if text_of(m).isdigit()]
