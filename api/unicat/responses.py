"""Success bodies of the Unicat dialect, for the OpenAPI document.

Routes return the plain envelope built by :func:`api.unicat.envelope.ok`; these models only
document it (``responses={200: {"model": …}}``), and the schema-driven test
(``tests/api/test_openapi_fuzz.py``) checks every answer against them.  ``result`` is typed
per route; ``data`` holds full objects keyed by type then gid, as Unicat's client caches
them.  Keys with dots (``cc.cursor``, ``page.cursor``) are aliases.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bulkjobs.statuses import JobStatus


def answers(model: type[BaseModel]) -> dict[str, Any]:
    """Route options documenting ``model`` as the 200 body (the route's own dict is sent)."""
    return {"response_model": None, "responses": {200: {"model": model}}}


class Out(BaseModel):
    """``{"success": true, "result": {…}, "data": {…}}``."""

    success: Literal[True]
    result: dict[str, Any]
    data: dict[str, Any]


class Result(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


# --- objects in ``data`` ------------------------------------------------------------------------


class RecordPublic(BaseModel):
    """A record in the Unicat shape (:func:`models.queries.records_public`)."""

    gid: str
    parent: str | None
    canonical: str
    backlinks: list[str]
    is_link: bool
    treelevel: int
    path: list[str]
    childcount: int
    definition: str | None
    title: dict[str, Any]
    status: str
    channels: list[str]
    orderings: dict[str, Any]
    fields: dict[str, Any]
    created_on: float
    updated_on: float


class SchemaItemPublic(BaseModel):
    """A definition, class, field or layout (:func:`models.queries.schema_public`); the
    keys beyond these depend on the type."""

    gid: str
    name: str
    label: dict[str, Any]
    is_new: bool
    is_working_copy: bool
    original: str | None
    metadata: dict[str, Any]


class RecordsData(BaseModel):
    records: dict[str, RecordPublic]


class SchemaData(BaseModel):
    """Schema items by kind; an answer holds the kinds it touched."""

    definitions: dict[str, SchemaItemPublic] = {}
    classes: dict[str, SchemaItemPublic] = {}
    fields: dict[str, SchemaItemPublic] = {}
    layouts: dict[str, SchemaItemPublic] = {}


class RecordsAndSchemaData(SchemaData):
    records: dict[str, RecordPublic]


class UserPublic(BaseModel):
    gid: str
    username: str
    name: str


class ProjectPublic(BaseModel):
    gid: str
    name: str
    status: str
    options: dict[str, Any]


class MemberPublic(BaseModel):
    project_gid: str
    user_gid: str
    status: Literal["active", "invited"]
    roles: list[str]
    options: dict[str, Any]


class UsersData(BaseModel):
    cc_users: dict[str, UserPublic] = Field(alias="cc.users")


class InitData(SchemaData):
    cc_users: dict[str, UserPublic] = Field(alias="cc.users")
    cc_projects: dict[str, ProjectPublic] = Field(alias="cc.projects")
    cc_projects_members: list[MemberPublic] = Field(alias="cc.projects_members")
    cc_languages: dict[str, str] = Field(alias="cc.languages")
    queries: dict[str, Any]
    modules: dict[str, Any]


# --- auth, login, init ------------------------------------------------------------------------


class InitResult(Result):
    user: str
    user_projects: dict[str, list[str]]
    project: str
    project_members: list[str]
    last_backed_up: float | None
    cc_version: str = Field(alias="cc.version")
    cc_cursor: int = Field(alias="cc.cursor")
    cursor: int


class InitOut(Out):
    result: InitResult
    data: InitData


class GlobalLoginResult(Result):
    user: str
    ops: bool
    projects: list[str]
    JWT: str


class GlobalLoginOut(Out):
    result: GlobalLoginResult
    data: UsersData


class UserResult(Result):
    user: str


class UserOut(Out):
    result: UserResult
    data: UsersData


# --- records ------------------------------------------------------------------------------------


class RootResult(Result):
    root: str


class RootOut(Out):
    result: RootResult
    data: RecordsData


class RecordsGetResult(Result):
    """``record`` when one was asked for, ``records`` (the gids found) for several."""

    record: str | None = None
    records: list[str] | None = None


class RecordsGetOut(Out):
    result: RecordsGetResult
    data: RecordsData


class ChildrenResult(Result):
    children: list[str]
    children_size: int = Field(alias="children.size")


class ChildrenOut(Out):
    result: ChildrenResult
    data: RecordsData


class RecordResult(Result):
    record: str


class RecordOut(Out):
    result: RecordResult
    data: RecordsData


class RecordsPageResult(Result):
    records: list[str]
    records_size: int = Field(alias="records.size")


class RecordsPageOut(Out):
    result: RecordsPageResult
    data: RecordsData


class RecordsBulkResult(RecordsPageResult):
    page_cursor: str | None = Field(alias="page.cursor", description="null at the end")


class RecordsBulkOut(Out):
    result: RecordsBulkResult
    data: RecordsData


class RecordsBulkPreviewResult(Result):
    total: int = Field(description="the job's total: the items it would take")
    entries: list[int] = Field(description="items each selection entry adds, in order")
    sample: list[str] = Field(description="the first 20 items, in the job's order")


class RecordsBulkPreviewOut(Out):
    result: RecordsBulkPreviewResult


class RecordDefinitionResult(Result):
    record: str
    definition: str


class RecordDefinitionOut(Out):
    result: RecordDefinitionResult
    data: RecordsAndSchemaData


# --- schema -------------------------------------------------------------------------------------


class SchemaGetResult(Result):
    """The one gid asked for under its type's name (``definition``…), or the gids found
    under the plural (``definitions``…)."""

    model_config = ConfigDict(extra="allow")


class SchemaOut(Out):
    result: SchemaGetResult
    data: SchemaData


class SchemaItemRef(BaseModel):
    type: Literal["definition", "class", "field", "layout"]
    item: str


class SchemaItemsResult(Result):
    schema_items: list[SchemaItemRef]
    schema_items_size: int = Field(alias="schema_items.size")


class SchemaItemsOut(Out):
    result: SchemaItemsResult
    data: SchemaData


class SchemaBulkResult(SchemaItemsResult):
    page_cursor: str | None = Field(alias="page.cursor", description="null at the end")


class SchemaBulkOut(Out):
    result: SchemaBulkResult
    data: SchemaData


# --- jobs ---------------------------------------------------------------------------------------


class JobQueuedResult(Result):
    job_token: str = Field(alias="job.token")


class JobQueuedOut(Out):
    result: JobQueuedResult


class PermanentDeleteResult(JobQueuedResult):
    parent: str | None


class PermanentDeleteOut(Out):
    result: PermanentDeleteResult


class JobPublic(BaseModel):
    token: str
    project_gid: str
    job: str
    status: JobStatus
    info: dict[str, Any]
    created_on: float
    updated_on: float


class JobStateResult(Result):
    job: JobPublic


class JobStateOut(Out):
    result: JobStateResult


class JobsPausedResult(Result):
    paused: bool = Field(description="whether the project's jobs are paused now (by the "
                                     "project's own pause or the one of every project)")


class JobsPausedOut(Out):
    result: JobsPausedResult


class JobsResumedResult(JobsPausedResult):
    resumed: list[str] = Field(description="tokens of the jobs whose messages were sent again")


class JobsResumedOut(Out):
    result: JobsResumedResult


class JobsListResult(Result):
    jobs: list[JobPublic]
    page_cursor: str | None = Field(alias="page.cursor", description="null at the end")


class JobsListOut(Out):
    result: JobsListResult


class JobFailure(BaseModel):
    gid: str
    reason: str


class JobFailuresResult(Result):
    job: str
    failures: list[JobFailure] = Field(description="in the order the job failed them")
    page_cursor: str | None = Field(alias="page.cursor", description="null at the end")


class JobFailuresOut(Out):
    result: JobFailuresResult


class JobDetail(JobPublic):
    model_config = ConfigDict(populate_by_name=True)

    started_on: float | None
    finished_on: float | None
    selection: list[Any] = Field(description="the selection it was given (its first 100 "
                                             "entries)")
    selection_size: int = Field(alias="selection.size", description="entries it has")
    params: dict[str, Any] = Field(description="its other parameters")


class JobDetailResult(Result):
    job: JobDetail
    events: list[dict[str, Any]] = Field(description="its sync events the log still holds, "
                                                     "in cursor order")
    events_complete: bool = Field(alias="events.complete",
                                  description="false when some may be missing (trimmed)")


class JobDetailOut(Out):
    result: JobDetailResult


# --- sync ---------------------------------------------------------------------------------------


class CursorsResult(Result):
    cc_cursor: int = Field(alias="cc.cursor")
    cursor: int | None = Field(default=None, description="the project's, when one was given")


class CursorsOut(Out):
    result: CursorsResult


class SyncEvent(BaseModel):
    """A sync event (SPEC §7)."""

    type: str
    cursor: int
    action: str
    data_type: str
    data_key: str


class SyncGetResult(Result):
    cc_cursor: int = Field(alias="cc.cursor")
    sync: list[SyncEvent]
    warning: str | None = Field(default=None, description="more events follow, or some "
                                                          "were lost below the floor")
    recovered: Literal[False] | None = Field(default=None, description="false when events "
                                                                        "were lost")


class SyncGetOut(Out):
    result: SyncGetResult


class WebhookPublic(BaseModel):
    gid: str
    url: str
    events: list[str]
    created_by: str
    created_on: float


class WebhookResult(Result):
    webhook: dict[str, Any] = Field(description="the webhook (its gid alone on delete); "
                                                "never its secret")


class WebhookOut(Out):
    result: WebhookResult


class WebhookListResult(Result):
    webhooks: list[WebhookPublic]


class WebhookListOut(Out):
    result: WebhookListResult


class WebhookDeliveriesResult(Result):
    deliveries: list[dict[str, Any]] = Field(description="newest first: delivery (the "
                                             "X-Bulkjobs-Delivery id), event, job, status "
                                             "(pending, delivered, failed), attempts (each "
                                             "started_on, duration_ms, status_code, error)")
    page_cursor: str | None = Field(alias="page.cursor", description="null at the end")


class WebhookDeliveriesOut(Out):
    result: WebhookDeliveriesResult
