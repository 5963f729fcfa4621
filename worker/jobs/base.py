"""What every job handler gets and returns.

A handler is a plain function ``batch(conn, ctx, item_ids) -> failures``: it applies the
operation to one batch of selected items inside the caller's transaction, guarded by the
state it changes (so running it twice is a no-op), and returns the items it could not
process with a reason.  It never commits; the runner commits the batch together with the
job's progress.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from models.resolve import Mode
from models.selection import Kind, Selection


@dataclass(frozen=True, slots=True)
class Result:
    """What a job returns (SPEC §3: the result ``status`` + ``payload`` of, e.g., a version
    restore).  A ``status`` of 400 or more rejects the job: ``info.error`` is the payload's
    ``error.message``, and the status and payload stay on the job row for the dialects."""

    status: int
    payload: dict[str, Any]

    @property
    def failed(self) -> bool:
        return self.status >= 400


def error_result(status: int, code: str, message: str, **details: Any) -> Result:
    """A failed :class:`Result` in the core's neutral error shape (the dialects map it)."""
    return Result(status, {"error": {"status": status, "code": code, "message": message,
                                     "details": details}})


#: The data type of record events; the only one ``RECORD_EVENTS`` switches off.
RECORDS = "records"


@dataclass(slots=True)
class Effects:
    """What a batch did besides its failures, handed to the runner with the batch.

    * ``changed(action, gids, data_type)`` notes items whose public state changed, for the
      project space's events (SPEC §7): ``records`` (the default) and the schema types
      (``definitions``, ``classes``, ``fields``, ``layouts``).  Record events are collected
      only when ``collect_events`` is true (``RECORD_EVENTS``, for very large jobs), and
      handlers only ask the database for those gids (``RETURNING gid``) then, so switching
      them off costs nothing per row.  Schema events are always collected: a schema job
      changes a handful of items, and clients cannot do without them.
    * ``result`` is the job's result (single-item jobs); the runner commits it on the job row
      in the same transaction as the batch.

    The runner writes the noted events into the sync outbox with the batch
    (:mod:`models.outbox`) and appends them after the commit.
    """

    collect_events: bool = False
    # (data type, action) -> gids, in the order noted
    events: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    result: Result | None = None

    def changed(self, action: str, gids: Iterable[str], data_type: str = RECORDS) -> None:
        if self.collect_events or data_type != RECORDS:
            self.events.setdefault((data_type, action), []).extend(gids)

    def returning(self, column: str = "record.gid") -> str:
        """`` RETURNING <column>`` when record events are collected, else nothing."""
        return f" RETURNING {column}" if self.collect_events else ""


@dataclass(frozen=True, slots=True)
class Context:
    """What a batch function is given: the job (``token``; empty for a single-record edit
    outside any job, :meth:`single_edit`), its project, actor, parameters and time."""

    token: str
    project_gid: str
    actor: dict[str, Any]
    params: dict[str, Any]
    now: float
    # Filled in by the handler; a fresh one per batch.
    effects: Effects = field(default_factory=Effects)

    @classmethod
    def single_edit(cls, *, project_gid: str, actor: dict[str, Any], now: float) -> Context:
        """The context of an edit of one record by a route, not a job: no token, so the
        workflow entries it writes name no job."""
        return cls(token="", project_gid=project_gid, actor=actor, params={}, now=now)


@dataclass(frozen=True, slots=True)
class Failure:
    gid: str
    reason: str


Batch = Callable[[Connection, Context, Sequence[int]], list[Failure]]
# Runs once after resolution, in the same transaction, with the job token, its project and
# its parsed selection (e.g. to reorder the job's items).
Prepare = Callable[[Connection, str, str, Selection], None]


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A job of the catalogue: its name, what its selection selects, and its batch step."""

    name: str
    kind: Kind
    mode: Mode
    batch: Batch
    # What the endpoint accepts besides the selection (validated before queueing).
    params: tuple[str, ...] = field(default_factory=tuple)
    prepare: Prepare | None = None
    # Single-item jobs that return a result (restore, revert, permanent_delete_record): the
    # result stored when the selection matched nothing (e.g. an unknown record).
    no_item_result: Result | None = None
