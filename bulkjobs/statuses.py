"""The four job statuses of SPEC §6, spelled once for every layer.

:class:`JobStatus` members equal their plain strings, so a status read from a row, an event
or a request compares equal to its member."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """The four statuses of SPEC §6 (each equal to its plain string)."""

    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    REJECTED = "rejected"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def unfinished(self) -> bool:
        return self in UNFINISHED


QUEUED, PROCESSING, DONE, REJECTED = (JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.DONE,
                                      JobStatus.REJECTED)
#: Statuses that end a job: its ``cc`` event with one of them is its last.
TERMINAL = (DONE, REJECTED)
#: Statuses of a job still to run or running.
UNFINISHED = (QUEUED, PROCESSING)
#: ``info.error`` of a cancelled job; its ``info.cancelled`` is true besides.
CANCELLED = "cancelled"
