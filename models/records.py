"""Records: the content tree.

Public shape (SPEC §3) is produced by :func:`models.queries.records_public`; the extra
columns exist to make subtree and selection queries set-based:

* ``id`` — an internal integer key; every join and every batch works on it, gids are only
  translated at the edges.
* ``mpath`` — materialised path of internal ids, ``/<root id>/…/<own id>/``.  A subtree is
  the range ``mpath >= p AND mpath < p[:-1] + '0'`` (``'0'`` sorts right after ``'/'``), which
  an index answers on SQLite and, with ``COLLATE "C"``, on PostgreSQL.
* ``deleted_root`` — the delete-generation marker: the id of the record whose deletion
  deleted this one.  Undeleting a record restores exactly the rows carrying its id (its
  subtree and the links that went with it), and nothing that had been deleted on its own
  before.
* ``prev_status`` — the status to return to on undelete.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

LIVE_STATUSES = ("draft", "published")
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
    status: str = "draft"
    prev_status: str | None = None
    deleted_root: int | None = Field(default=None, index=True)
    channels: list[str] = Field(default_factory=lambda: ["__all__"], sa_column=Column(JSON))
    orderings: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON))
    created_on: float = 0.0
    updated_on: float = 0.0


def subtree_upper(mpath: str) -> str:
    """Exclusive upper bound of the subtree range that starts at ``mpath``."""
    return mpath[:-1] + "0"


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
