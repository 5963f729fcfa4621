"""Request and response shapes of the Plone dialect, for the OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt


class RevertBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: StrictInt = Field(description="the revision to revert to (0, 1, 2 …)")


class Actor(BaseModel):
    at_id: str = Field(alias="@id")
    fullname: str | None
    id: str
    username: str | None


class HistoryEntry(BaseModel):
    """A versioning entry (``@id``, ``may_revert``, ``version``) or a workflow entry
    (``review_state``, ``state_title``)."""

    at_id: str | None = Field(default=None, alias="@id")
    action: str
    actor: Actor
    comments: str
    time: str
    transition_title: str
    type: Literal["versioning", "workflow"]
    may_revert: bool | None = None
    version: int | None = None
    review_state: str | None = None
    state_title: str | None = None


class HistoricalVersion(BaseModel):
    """The record as it was at one version; its fields follow the metadata."""

    model_config = ConfigDict(extra="allow")

    at_id: str = Field(alias="@id")
    at_type: str = Field(alias="@type")
    UID: str
    id: str
    title: str | None
    review_state: str | None
    version: int
    language: str
    created: str
    modified: str
    changeNote: str


class Reverted(BaseModel):
    message: str


class RevertRunning(BaseModel):
    message: str
    job: str
    status: str


class PloneError(BaseModel):
    type: str
    message: str


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": PloneError, "description": description}
    for status, description in (
        (400, "BadRequest: missing or invalid parameters"),
        (401, "Unauthorized: missing or invalid JWT or API key"),
        (403, "Forbidden: not a member of this project"),
        (404, "NotFound: no such record or version"),
        (413, "RequestEntityTooLarge: body over 10 MB"),
        (422, "UnprocessableEntity: the revert is not possible"),
        (429, "TooManyRequests: wait X-RateLimit-Reset seconds"),
        (503, "ServiceUnavailable"),
    )
}
