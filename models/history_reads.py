"""Reading a record's history, shared by the DatoCMS and Plone dialects.

* :func:`live_record` — a live record of a project by gid (deleted records have no readable
  history in these dialects: DatoCMS and Plone have no soft-deleted content);
* :func:`versions_page` — a record's versions, newest first, with their total;
* :func:`find_version` — one version of a project's record, by number or by id: the one
  rule of "version not found", the version jobs' too;
* :func:`version_marks` — each record's current and published version ids and its
  publication times;
* :func:`history` — versions and workflow entries merged, newest first;
* :func:`users_by_gid` — the users named by editors and actors;
* :func:`iso_utc` — timestamps as these dialects write them.

Every "not there" answer is :class:`~bulkjobs.errors.NotFound`, whatever the reason (unknown,
deleted, or another project's), so nothing leaks across projects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import defer
from sqlmodel import Session, col

from bulkjobs.errors import NotFound
from models.auth import User
from models.records import Record, is_deleted
from models.versions import RecordVersion, WorkflowEntry

#: Version numbers beyond this are not looked up (they cannot exist; the column is 32-bit).
MAX_NUMBER = 2**31 - 1


def iso_utc(ts: float) -> str:
    """``1587455831.124`` → ``"2020-04-21T07:57:11.124Z"`` (ISO 8601, UTC, milliseconds)."""
    stamp = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def live_record(session: Session, project_gid: str, gid: str) -> Record:
    """The project's live record ``gid``, or :class:`NotFound`."""
    rec = session.execute(select(Record).where(
        col(Record.gid) == gid, col(Record.project_gid) == project_gid)).scalars().first()
    if rec is None or is_deleted(session.connection(), rec.id):
        raise NotFound("Record not found", info={"record": gid})
    return rec


def versions_page(session: Session, record: Record, *, offset: int, limit: int
                  ) -> tuple[list[RecordVersion], int]:
    """A page of the record's versions, newest (highest number) first, and their count."""
    total = session.execute(select(func.count()).select_from(RecordVersion).where(
        col(RecordVersion.record_id) == record.id)).scalar_one()
    rows = session.execute(
        select(RecordVersion).where(col(RecordVersion.record_id) == record.id)
        .order_by(col(RecordVersion.number).desc()).offset(offset).limit(limit)
    ).scalars().all()
    return list(rows), int(total)


def find_version(session: Session, project_gid: str, *, record_id: int | None = None,
                 number: int | None = None, version_id: str | None = None,
                 live: bool = False) -> tuple[RecordVersion, Record]:
    """The version numbered ``number`` or with id ``version_id`` (give one of them) of a
    record of the project — of record ``record_id`` when given, of a live record only when
    ``live`` — with its record; else :class:`NotFound`.

    This is the one rule of "version not found", for the dialects and the version jobs.  A
    number outside ``0 … MAX_NUMBER`` cannot exist and is not found without asking the
    database, which would refuse it (SQLite has no integer that large, PostgreSQL's column
    is 32-bit)."""
    if (number is None) == (version_id is None):
        raise TypeError("find_version takes a number or a version_id")
    if number is not None:
        which = col(RecordVersion.number) == number
        missing = NotFound(f"Version {number} not found", info={"version": number})
    else:
        which = col(RecordVersion.id) == version_id
        missing = NotFound("Version not found", info={"version": version_id})
    if number is not None and not 0 <= number <= MAX_NUMBER:
        raise missing
    query = (select(RecordVersion, Record)
             .join(Record, col(Record.id) == col(RecordVersion.record_id))
             .where(which, col(Record.project_gid) == project_gid))
    if record_id is not None:
        query = query.where(col(RecordVersion.record_id) == record_id)
    row = session.execute(query).first()
    if row is None or (live and is_deleted(session.connection(), row[1].id)):
        raise missing
    return row[0], row[1]


def current_version(session: Session, record: Record) -> RecordVersion:
    """The record's most recent version, or :class:`NotFound` when it has none."""
    version = session.execute(
        select(RecordVersion).where(col(RecordVersion.record_id) == record.id)
        .order_by(col(RecordVersion.number).desc()).limit(1)
    ).scalars().first()
    if version is None:
        raise NotFound("The record has no versions", info={"record": record.gid})
    return version


@dataclass(frozen=True, slots=True)
class Marks:
    """A record's current and published version ids, and what its history shows of its
    publications: the published version's creation time and the times of the first and the
    last ``publish`` workflow entry."""

    current: str | None = None
    published: str | None = None
    published_version_at: float | None = None
    first_publish: float | None = None
    last_publish: float | None = None

    def publication_times(self, *, published: bool) -> tuple[float | None, float | None]:
        """``(published_at, first_published_at)`` of a record that is ``published`` or not.

        ``published_at`` (the last publication) is null unless the record is published: the
        time of its last ``publish`` entry, or — for content that was published without one,
        as the seeder writes it — the published version's creation time.
        ``first_published_at`` is the earliest publication the history shows (a ``publish``
        entry, or that fallback); null when it shows none."""
        last = None
        if published:
            last = self.last_publish if self.last_publish is not None \
                else self.published_version_at
        known = [t for t in (self.first_publish, last) if t is not None]
        return last, (min(known) if known else None)


def version_marks(session: Session, record_ids: Sequence[int]) -> dict[int, Marks]:
    """Record id → its :class:`Marks` (two queries)."""
    out: dict[int, Marks] = {}
    if not record_ids:
        return out
    ids = list(record_ids)
    rows = session.execute(
        select(col(RecordVersion.record_id), col(RecordVersion.id), col(RecordVersion.is_current),
               col(RecordVersion.is_published), col(RecordVersion.created_at))
        .where(col(RecordVersion.record_id).in_(ids),
               or_(col(RecordVersion.is_current), col(RecordVersion.is_published)))
    ).all()
    for rid, vid, is_current, is_published, created_at in rows:
        marks = out.get(rid, Marks())
        out[rid] = replace(marks, current=vid if is_current else marks.current,
                           published=vid if is_published else marks.published,
                           published_version_at=created_at if is_published
                           else marks.published_version_at)
    publishes = session.execute(
        select(col(WorkflowEntry.record_id), func.min(col(WorkflowEntry.time)),
               func.max(col(WorkflowEntry.time)))
        .where(col(WorkflowEntry.record_id).in_(ids), col(WorkflowEntry.action) == "publish")
        .group_by(col(WorkflowEntry.record_id))
    ).all()
    for rid, first, last in publishes:
        out[rid] = replace(out.get(rid, Marks()), first_publish=first, last_publish=last)
    return out


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One entry of a record's history: a version (``kind == "versioning"``) or a workflow
    entry (``kind == "workflow"``, with ``action`` and ``review_state``)."""

    kind: str
    time: float
    actor: dict[str, Any]
    comment: str
    version: RecordVersion | None = None
    action: str = ""
    review_state: str = ""


def history(session: Session, record: Record, *, limit: int) -> list[HistoryEntry]:
    """The newest ``limit`` versions and workflow entries of the record, merged, newest
    first.  At equal times a workflow entry comes before (is newer than) the version it
    followed, and versions and workflow entries keep their own order.

    At most ``limit`` rows of each kind are read (the newest ``limit`` of the merge are among
    them), and the versions without their snapshots: a record's history grows with every
    edit and every bulk job that touches it."""
    versions = session.execute(
        select(RecordVersion).options(defer(RecordVersion.snapshot))  # type: ignore[arg-type]
        .where(col(RecordVersion.record_id) == record.id)
        .order_by(col(RecordVersion.created_at).desc(), col(RecordVersion.number).desc())
        .limit(limit)).scalars().all()
    workflow = session.execute(
        select(WorkflowEntry).where(col(WorkflowEntry.record_id) == record.id)
        .order_by(col(WorkflowEntry.time).desc(), col(WorkflowEntry.id).desc())
        .limit(limit)).scalars().all()
    keyed: list[tuple[tuple[float, int, int], HistoryEntry]] = []
    for v in versions:
        keyed.append(((v.created_at, 0, v.number), HistoryEntry(
            kind="versioning", time=v.created_at, actor=dict(v.editor or {}),
            comment=v.comment or "", version=v)))
    for w in workflow:
        keyed.append(((w.time, 1, w.id or 0), HistoryEntry(
            kind="workflow", time=w.time, actor=dict(w.actor or {}), comment=w.comment or "",
            action=w.action, review_state=w.review_state)))
    keyed.sort(key=lambda pair: pair[0], reverse=True)
    return [entry for _, entry in keyed[:limit]]


def users_by_gid(session: Session, gids: Iterable[Any]) -> dict[str, User]:
    """The users among ``gids`` (non-strings and unknown gids are left out)."""
    wanted = {g for g in gids if isinstance(g, str)}
    if not wanted:
        return {}
    rows = session.execute(select(User).where(col(User.gid).in_(sorted(wanted)))).scalars().all()
    return {u.gid: u for u in rows}
