"""Record versions and workflow entries: together, a record's history."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel


class RecordVersion(SQLModel, table=True):
    __tablename__ = "record_version"
    __table_args__ = (UniqueConstraint("record_id", "number"),)

    id: str = Field(primary_key=True, max_length=22)  # URL-safe base64 UUID, as DatoCMS
    record_id: int = Field(index=True)
    number: int = 0
    created_at: float = 0.0
    editor: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    comment: str = ""
    snapshot: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    is_published: bool = False
    is_current: bool = False


class WorkflowEntry(SQLModel, table=True):
    __tablename__ = "workflow_entry"

    id: int | None = Field(default=None, primary_key=True)
    record_id: int = Field(index=True)
    action: str  # publish | unpublish | delete | undelete | ...
    review_state: str
    actor: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    time: float = 0.0
    comment: str = ""
    # The bulk job that wrote the entry (NULL for a single-record edit): how a job knows its
    # own entries.  ``comment`` is for display only.
    job_token: str | None = Field(default=None, max_length=36)
