"""Request bodies of the Unicat dialect (they also document the API in OpenAPI)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from models.jobs import JobStatus


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
    status: JobStatus | None = Field(default=None, description="only jobs in this status")
    job: str | None = Field(default=None, max_length=64,
                            description="only jobs of this kind, e.g. bulk_delete_records")
    token_prefix: str | None = Field(default=None, alias="token.prefix", min_length=1,
                                     max_length=36, pattern=r"^[0-9a-f-]+$",
                                     description="only jobs whose token starts with this")
    created_after: float | None = Field(default=None, alias="created.after", ge=0,
                                        description="created at or after (epoch seconds)")
    created_before: float | None = Field(default=None, alias="created.before", ge=0,
                                         description="created before (epoch seconds)")
    page_cursor: str | None = Field(default=None, alias="page.cursor", max_length=100)
    page_size: int = Field(default=100, alias="page.size", ge=1, le=1000)


class JobFailuresBody(Body):
    job: str = Field(max_length=64)
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


class RecordClassBody(Body):
    record: str = Field(max_length=64)
    class_: str = Field(alias="class", max_length=64)


# --- schema items (definitions, classes, fields, layouts) --------------------------------------


def _gid() -> Any:
    return Field(default=None, max_length=64)


def _gids() -> Any:
    return Field(default=None, max_length=10_000)


class DefinitionsGetBody(Body):
    definition: str | None = _gid()
    definitions: list[str] | None = _gids()


class ClassesGetBody(Body):
    class_: str | None = Field(default=None, alias="class", max_length=64)
    classes: list[str] | None = _gids()


class FieldsGetBody(Body):
    field: str | None = _gid()
    fields: list[str] | None = _gids()


class LayoutsGetBody(Body):
    layout: str | None = _gid()
    layouts: list[str] | None = _gids()


class SchemaItemBody(Body):
    """What every schema item takes.  Only the keys sent are applied; ``label`` is merged per
    language."""

    name: str | None = Field(default=None, max_length=200)
    label: dict[str, str] | None = None
    metadata: dict[str, Any] | None = None


class DefinitionCreateBody(SchemaItemBody):
    classes: list[str] | None = _gids()
    fields: list[str] | None = _gids()
    layout: str | None = Field(default=None, max_length=64, description=(
        "a committed layout; leave it out to get a new layout, null for none"))
    titlefield: str | None = _gid()
    childdefinitions: list[str] | None = _gids()


class DefinitionModifyBody(DefinitionCreateBody):
    definition: str = Field(max_length=64)


class ClassCreateBody(SchemaItemBody):
    fields: list[str] | None = _gids()
    layout: str | None = Field(default=None, max_length=64, description=(
        "a committed layout; leave it out to get a new layout, null for none"))


class ClassModifyBody(ClassCreateBody):
    class_: str = Field(alias="class", max_length=64)


class FieldCreateBody(SchemaItemBody):
    type: str | None = Field(default=None, max_length=40)
    options: dict[str, Any] | None = None
    is_localized: bool | None = None
    is_required: bool | None = None
    initial: dict[str, Any] | None = None
    unit: str | None = Field(default=None, max_length=200)


class FieldModifyBody(FieldCreateBody):
    field: str = Field(max_length=64)


class LayoutCreateBody(SchemaItemBody):
    root: str | None = Field(default=None, max_length=200)
    components: dict[str, Any] | None = None


class LayoutModifyBody(LayoutCreateBody):
    layout: str = Field(max_length=64)


class SchemaBulkGetBody(SelectionBody):
    page_cursor: str | None = Field(default=None, alias="page.cursor", max_length=1000)
    page_size: int = Field(default=100, alias="page.size", ge=1, le=1000)


class SchemaSearchBody(Body):
    language: str = Field(max_length=64)
    q: str | None = Field(default=None, max_length=10_000)
    filter: Any = None
    page_top: int = Field(default=0, alias="page.top", ge=0, le=10**9)
    page_size: int = Field(default=10_000, alias="page.size", ge=1, le=10_000)


class RecordsSearchBody(Body):
    language: str = Field(max_length=35)
    q: str | None = Field(default=None, max_length=1000)
    filter: Any = None
    page_top: int = Field(default=0, alias="page.top", ge=0, le=10**9)
    page_size: int = Field(default=10, alias="page.size", ge=1, le=1000)


class RecordsBulkGetBody(Body):
    selection: Any = Field(description="the selection (SPEC §4)")
    page_cursor: str | None = Field(default=None, alias="page.cursor", max_length=200)
    page_size: int = Field(default=100, alias="page.size", ge=1, le=1000)


class RecordsBulkPreviewBody(Body):
    selection: Any = Field(description="the selection (SPEC §4)")
    job: str = Field(max_length=40, description="the job whose items to count: delete, "
                                                "undelete or permanent_delete")


class WebhookCreateBody(Body):
    url: str = Field(max_length=2048)
    events: list[str] = Field(max_length=10)
    secret: str = Field(max_length=256)


class WebhookBody(Body):
    webhook: str = Field(max_length=64)


class WebhookDeliveriesBody(WebhookBody):
    page_size: int = Field(default=100, alias="page.size", ge=1, le=1000)
    page_cursor: str | None = Field(default=None, alias="page.cursor", max_length=200)
