"""Schema items: definitions, classes, fields and layouts, with working copies."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

import models.records  # noqa: F401  (the record table, indexed below)

_RECORD = SQLModel.metadata.tables["record"]

SCHEMA_TYPES = ("definition", "class", "field", "layout")


class SchemaItem(SQLModel, table=True):
    __tablename__ = "schema_item"
    # (layout, project_gid): the items pointing at a layout, which a schema job repoints or
    # counts when that layout goes away (migration 0018).  Layout first: a statement that
    # only has the project to go on keeps the indexes it had.
    __table_args__ = (Index("ix_schema_item_project_type", "project_gid", "type"),
                      Index("ix_schema_item_project_name", "project_gid", "name"),
                      Index("ix_schema_item_layout_project", "layout", "project_gid"))

    id: int | None = Field(default=None, primary_key=True)
    gid: str = Field(unique=True, index=True, max_length=36)
    project_gid: str = Field(foreign_key="project.gid", max_length=36)
    type: str  # definition | class | field | layout
    name: str = ""
    label: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON))
    is_new: bool = True
    is_working_copy: bool = False
    original: str | None = Field(default=None, max_length=36, index=True)
    is_base: bool = False
    is_extended: bool = False
    classes: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    fields: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    layout: str | None = Field(default=None, max_length=36)
    body: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_on: float = 0.0
    updated_on: float = 0.0


#: The records using a definition: a schema job moves them off a definition working copy
#: that goes away, and a new definition that records use cannot be reverted.  Without it
#: both scan every record of the project (migration 0018).  Definition first, as above.
#: Declared here, with the schema lookups it serves, on the record table.
RECORD_DEFINITION = Index("ix_record_definition_project", _RECORD.c.definition,
                          _RECORD.c.project_gid)
