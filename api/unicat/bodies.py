"""Request bodies of the Unicat dialect (they also document the API in OpenAPI)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ApiKeyBody(Body):
    api_key: str = Field(max_length=200)
    omit_extended_definitions: bool = False


class LoginBody(Body):
    username: str = Field(max_length=200)
    password: str = Field(max_length=1000)


class InitBody(Body):
    omit_extended_definitions: bool = False


class RecordsGetBody(Body):
    record: str | None = Field(default=None, max_length=64)
    records: list[str] | None = Field(default=None, max_length=10_000)


class ChildrenBody(Body):
    record: str = Field(max_length=64)
    channel: str | None = Field(default=None, max_length=64)
    ordering: str | None = Field(default=None, max_length=64)
    page_top: int = Field(default=0, alias="page.top", ge=0, le=10**9)
    page_size: int = Field(default=100, alias="page.size", ge=1, le=1000)


class SelectionBody(Body):
    selection: Any = Field(description="the selection (SPEC §4): a list of gids, children "
                                       "entries and search entries")


class JobBody(Body):
    job: str = Field(max_length=64)


class JobsListBody(Body):
    status: str | None = Field(default=None, max_length=20)
    page_cursor: str | None = Field(default=None, alias="page.cursor", max_length=100)
    page_size: int = Field(default=100, alias="page.size", ge=1, le=1000)


class SyncCursorsBody(Body):
    project: str | None = Field(default=None, max_length=64)


class SyncGetBody(Body):
    cc_cursor: int = Field(default=0, ge=0, le=2**62)
    project: str | None = Field(default=None, max_length=64)
    cursor: int | None = Field(default=None, ge=0, le=2**62)


class RecordCreateBody(Body):
    parent: str = Field(max_length=64)
    title: dict[str, str] | None = None
    fields: dict[str, dict[str, Any]] | None = None
    definition: str | None = Field(default=None, max_length=64)
    channels: list[str] | None = Field(default=None, max_length=1000)


class RecordUpdateBody(Body):
    record: str = Field(max_length=64)
    title: dict[str, str] | None = None
    fields: dict[str, dict[str, Any]] | None = None
    channels: list[str] | None = Field(default=None, max_length=1000)
    orderings: dict[str, int] | None = None


class RecordBody(Body):
    record: str = Field(max_length=64)
