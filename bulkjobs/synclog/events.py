"""Events of the sync log: what an append takes (:class:`NewEvent`, built by
:func:`job_event` and :func:`record_event`) and what a read gives back (:class:`Event`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bulkjobs.statuses import TERMINAL


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append.  ``body`` holds ``action``, ``data_type``, ``data_key`` and
    optionally ``data``; ``type`` and ``cursor`` are added by the log."""

    project: str
    key: str
    body: dict[str, Any]
    status: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    """An event read back from the log."""

    space: str
    cursor: int
    project: str
    key: str
    status: str
    body: str  # JSON object text without type/cursor

    @property
    def text(self) -> str:
        """The event's wire JSON, exactly as SPEC §7 shapes it (``type`` and ``cursor`` first)."""
        return f'{{"type":{json.dumps(self.space)},"cursor":{self.cursor},{self.body[1:]}'

    def as_dict(self) -> dict[str, Any]:
        return json.loads(self.text)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def first(self) -> int:
        """The lowest cursor this item holds (:class:`~bulkjobs.synclog.Pack` holds several)."""
        return self.cursor

    @property
    def n(self) -> int:
        """Events this item holds."""
        return 1


def job_event(
    *, token: str, project: str, job: str, status: str, info: dict[str, Any],
    created_on: float, updated_on: float, insert: bool = False,
) -> NewEvent:
    """The ``cc`` event for one job state, shaped as SPEC §7 says."""
    body = {
        "action": "INSERT" if insert else "UPDATE",
        "data_type": "jobs",
        "data_key": token,
        "data": {
            "project_gid": project, "job": job, "status": status, "info": info,
            "created_on": created_on, "updated_on": updated_on,
        },
    }
    return NewEvent(project=project, key=token, body=body, status=status)


def record_event(*, project: str, data_type: str, gid: str, action: str) -> NewEvent:
    """A project-space notification (no ``data``): ``records`` UPDATE/DELETE and the like."""
    body = {"action": action, "data_type": data_type, "data_key": gid}
    return NewEvent(project=project, key=gid, body=body)
