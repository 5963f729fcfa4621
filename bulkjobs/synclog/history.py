"""One job's events as the ``cc`` space still holds them (:func:`job_events`): what the ops
dashboard's job detail shows beside the events it saw live.

The ``cc`` space is not indexed by job, so the read starts at the minute mark of the minute
before the job was created (its first event cannot be older; a minute of slack covers the
clocks of different hosts) and scans forward, bounded, until the job's terminal event."""

from __future__ import annotations

import json
from dataclasses import dataclass

from bulkjobs import keys
from bulkjobs.synclog.events import Event
from bulkjobs.synclog.log import SyncLog
from bulkjobs.synclog.read import text_of

#: The most events one call scans (other jobs' events included).
MAX_SCANNED = 50_000
#: The most of the job's own events one call returns (the newest).
MAX_RETURNED = 500


@dataclass(frozen=True, slots=True)
class JobHistory:
    events: list[Event]
    #: False when events of the job may be missing: its first (``INSERT``) event is not
    #: there (trimmed away), the scan bound was reached, or it has more than
    #: :data:`MAX_RETURNED` events.
    complete: bool


def start_cursor(log: SyncLog, created_on: float) -> int:
    """The cursor to read after: the first cursor of the newest minute mark at least a
    minute older than ``created_on``, less one; the floor's, less one, when there is none."""
    limit = int(created_on // 60) - 1
    marks = [int(c) for m, c in log.r.hgetall(keys.sync_marks(keys.CC_SPACE)).items()
             if text_of(m).isdigit() and int(text_of(m)) <= limit]
    floor = log.cursors(keys.CC_SPACE)[1]
    return max(floor, max(marks, default=0)) - 1


def job_events(log: SyncLog, token: str, *, created_on: float,
               max_scanned: int = MAX_SCANNED) -> JobHistory:
    """The events of job ``token`` (created at ``created_on``) in cursor order."""
    found: list[Event] = []
    scanned = 0
    complete = True
    ended = False
    for page in log.pages(keys.CC_SPACE, start_cursor(log, created_on)):
        for event in page.events:
            if event.key == token:
                found.append(event)
                if event.terminal:
                    ended = True
                    break
        scanned += len(page.events)
        if ended:
            break
        if scanned >= max_scanned and page.more:
            complete = False
            break
    complete = complete and bool(found) and json.loads(found[0].body).get("action") == "INSERT"
    if len(found) > MAX_RETURNED:
        found, complete = found[-MAX_RETURNED:], False
    return JobHistory(found, complete)
