"""Response shapes of the DatoCMS dialect, for the OpenAPI document (routes return plain
JSON built by :mod:`api.dato.envelope`; tests check it against these)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Ref(BaseModel):
    type: str
    id: str


class Relationship(BaseModel):
    data: Ref | None


class ItemMeta(BaseModel):
    created_at: str
    updated_at: str
    published_at: str | None
    first_published_at: str | None
    publication_scheduled_at: None = Field(description="always null: no scheduled publishing")
    unpublishing_scheduled_at: None = Field(description="always null: no scheduled publishing")
    status: Literal["draft", "updated", "published"]
    is_current_version_valid: bool
    is_published_version_valid: bool | None
    current_version: str | None
    stage: None = Field(description="always null: records go through no workflow stages")


class Item(BaseModel):
    id: str
    type: Literal["item"]
    attributes: dict[str, Any]
    relationships: dict[str, Relationship]
    meta: ItemMeta


class ItemOut(BaseModel):
    data: Item


class VersionMeta(BaseModel):
    created_at: str
    is_published: bool
    is_current: bool


class ItemVersion(BaseModel):
    id: str
    type: Literal["item_version"]
    attributes: dict[str, Any]
    meta: VersionMeta
    relationships: dict[str, Relationship]


class VersionOut(BaseModel):
    data: ItemVersion


class ListMeta(BaseModel):
    total_count: int


class VersionsOut(BaseModel):
    data: list[ItemVersion]
    meta: ListMeta


class JobRef(BaseModel):
    type: Literal["job"]
    id: str


class JobOut(BaseModel):
    data: JobRef


class JobResultAttributes(BaseModel):
    status: int
    payload: dict[str, Any] | None


class JobResult(BaseModel):
    type: Literal["job_result"]
    id: str
    attributes: JobResultAttributes


class JobResultOut(BaseModel):
    data: JobResult


class ApiErrorAttributes(BaseModel):
    code: str
    details: dict[str, Any]
    transient: bool | None = None


class ApiError(BaseModel):
    id: str
    type: Literal["api_error"]
    attributes: ApiErrorAttributes


class ApiErrorBody(BaseModel):
    data: list[ApiError]


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ApiErrorBody, "description": description}
    for status, description in (
        (400, "INVALID_PARAMS: missing or invalid parameters"),
        (401, "INVALID_AUTHORIZATION_HEADER: missing or invalid JWT or API key"),
        (403, "INSUFFICIENT_PERMISSIONS: not a member of this project"),
        (404, "NOT_FOUND"),
        (413, "INVALID_REQUEST: body over 10 MB"),
        (422, "INVALID_FIELD / INVALID_REQUEST"),
        (429, "RATE_LIMIT_EXCEEDED: wait X-RateLimit-Reset seconds"),
        (503, "SERVICE_UNAVAILABLE (transient)"),
    )
}
