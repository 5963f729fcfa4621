"""Records: the content tree.

Public shape (SPEC §3) is produced by :func:`models.queries.records_public`; the extra
columns exist to make subtree and selection queries set-based:

* ``id`` — an internal integer key; every join and every batch works on it, gids are only
  translated at the edges.
* ``mpath`` — materialised path of internal ids, ``/<root id>/…/<own id>/``.  A subtree is
  the range ``mpath >= p AND mpath < p[:-1] + '0'`` (``'0'`` sorts right after ``'/'``), which
  an index answers on SQLite and, with ``COLLATE "C"``, on PostgreSQL.

Soft deletion is kept out of the record row, in :class:`RecordDeletion`: a deleted record
has a row there, a live one has none.  ``record.status`` stays ``draft`` or ``published``
(what the record returns to when undeleted), and the public status is ``deleted`` while a
deletion row exists (:func:`deleted_sql`, :func:`deleted_ids`).  Deleting or undeleting a
subtree therefore writes one narrow row per record (or removes it) instead of rewriting the
wide record rows and all their indexes, and ``updated_on`` keeps the time of the last
change to the record's content: deletion and undeletion are in its workflow history.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import JSON, Column, Connection, Index, text
from sqlmodel import Field, SQLModel

from models import dialect

DELETED = "deleted"


class Record(SQLModel, table=True):
    __table_args__ = (
        Index("ix_record_parent_status", "parent_id", "status"),
        Index("ix_record_project_status", "project_gid", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    gid: str = Field(unique=True, index=True, max_length=36)
    project_gid: str = Field(foreign_key="project.gid", max_length=36)
    parent_id: int | None = None
    canonical_id: int | None = Field(default=None, index=True)
    is_link: bool = False
    treelevel: int = 0
    mpath: str = Field(default="", index=True)
    childcount: int = 0
    definition: str | None = Field(default=None, max_length=36)
    title: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON))
    fields: dict[str, dict[str, Any]] = Field(default_factory=dict, sa_column=Column(JSON))
    status: str = "draft"  # draft | published; deletion is a RecordDeletion row
    channels: list[str] = Field(default_factory=lambda: ["__all__"], sa_column=Column(JSON))
    orderings: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON))
    created_on: float = 0.0
    updated_on: float = 0.0


def subtree_upper(mpath: str) -> str:
    """Exclusive upper bound of the subtree range that starts at ``mpath``."""
    return mpath[:-1] + "0"


class RecordDeletion(SQLModel, table=True):
    """A soft-deleted record.  ``deleted_root`` is its delete generation: the id of the
    record whose deletion deleted this one.  Undeleting a record removes exactly the rows of
    its generation (its subtree and the links that went with it, one index range), and
    nothing that had been deleted on its own before."""

    __tablename__ = "record_deletion"

    record_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    deleted_root: int = Field(index=True)


def deleted_sql(alias: str = "r") -> str:
    """SQL that is true when the record ``alias`` is deleted."""
    return f"EXISTS (SELECT 1 FROM record_deletion dd WHERE dd.record_id = {alias}.id)"


def live_sql(alias: str = "r") -> str:
    """SQL that is true when the record ``alias`` is live."""
    return "NOT " + deleted_sql(alias)


def deleted_ids(conn: Connection, ids: Iterable[int]) -> set[int]:
    """Those of the record ids ``ids`` that are deleted (one query, whatever their number)."""
    ids = sorted(set(ids))
    if not ids:
        return set()
    return set(conn.execute(text(
        f"SELECT d.record_id FROM {dialect.id_rows(conn, 'ids')} "
        "JOIN record_deletion d ON d.record_id = j.value"
    ), {"ids": dialect.json_ids(ids)}).scalars())


def is_deleted(conn: Connection, record_id: int | None) -> bool:
    return record_id is not None and conn.execute(text(
        "SELECT 1 FROM record_deletion WHERE record_id = :id"), {"id": record_id}
    ).first() is not None



class RecordTombstone(SQLModel, table=True):
    """What is left of a permanently deleted record: enough to tell a later undelete (or a
    second permanent delete) of its gid that it is gone for good, rather than skipping it as
    unknown.  ``record_id`` is the internal id it had, so that a job whose item vanished
    while it ran (removed with an ancestor by an earlier batch) can still name its gid."""

    __tablename__ = "record_tombstone"

    id: int | None = Field(default=None, primary_key=True)
    gid: str = Field(unique=True, index=True, max_length=36)
    record_id: int = Field(index=True)
    project_gid: str = Field(max_length=36)
    parent_gid: str | None = Field(default=None, max_length=36)
    deleted_on: float = 0.0
