"""The HTTP API fuzzed from its own OpenAPI document (schemathesis, in-process ASGI): every
operation of every dialect, with valid credentials and the seeded project's gids mixed into
the generated paths, never answers a 5xx and never answers what its schema does not
document (status code, content type, body)."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup
from sqlalchemy import Engine, select, text
from sqlmodel import SQLModel

import api.plone.routes
from api.app import app
from bulkjobs.settings import get_settings
from bulkjobs.tokens import issue
from models import Record, RecordVersion
from models.engine import get_engine, get_write_engine
from models.search.index import clear as clear_search_index
from models.seed import seed

pytestmark = pytest.mark.services

api_schema = schemathesis.openapi.from_asgi("/openapi.json", app)
api_schema.config.phases.coverage.enabled = False
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance,
          response_headers_conformance,
          content_type_conformance]


@pytest.fixture(scope="module")
def world(schema: Engine) -> Iterator[dict[str, Any]]:
    """One small seeded project for the whole module (seeding per operation would dominate
    the run), a JWT of its member, and gids of real records and versions to aim at."""
    with get_write_engine().begin() as conn:
        for table in reversed(SQLModel.metadata.sorted_tables):
            conn.execute(text(f'DELETE FROM "{table.name}"'))
        clear_search_index(conn)
        seeded = seed(conn, records=101, projects=1, seed_value=3)
    project = seeded.projects[0]
    with get_engine().connect() as conn:
        records = [r[0] for r in conn.execute(select(Record.gid).where(
            Record.project_gid == project.gid).limit(20))]
        versions = [r[0] for r in conn.execute(select(RecordVersion.id).limit(20))]
        root_version = conn.execute(select(RecordVersion.id).join(
            Record, Record.id == RecordVersion.record_id).where(Record.gid == project.root)
        ).scalars().first()
    yield {"project": project.gid, "records": records, "versions": versions,
           "root": project.root, "root_version": root_version, "api_key": project.api_key,
           "headers": {"Authorization": f"Bearer {issue(seeded.users[0].gid)}"}}


@pytest.fixture
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """No rate limit (the fuzzer is one busy user) and no 30-second wait on reverts that no
    worker runs."""
    monkeypatch.setattr(get_settings(), "rate_limit", 0)
    monkeypatch.setattr(api.plone.routes, "REVERT_WAIT", 0.05)


def aim(case: Any, world: dict[str, Any]) -> None:
    """Point most generated paths at the seeded project and, half of the time, at real
    records and versions (the other half keeps the generated, mostly unknown, ids)."""
    params = case.path_parameters or {}
    rng = random.Random(repr(sorted(params.items())))
    if "project" in params:
        params["project"] = world["project"]
    for name, pool in (("record", "records"), ("item_id", "records"),
                       ("version_id", "versions")):
        if name in params and rng.random() < 0.5:
            params[name] = rng.choice(world[pool])


def test_every_route_is_documented() -> None:
    """Every route in the OpenAPI document has a one-line description, and every operation
    that takes credentials documents its dialect's error bodies."""
    from fastapi.routing import APIRoute

    for route in app.routes:
        if isinstance(route, APIRoute) and route.include_in_schema:
            text_ = (route.description or "").strip()
            assert text_ and "\n" not in text_, route.path
    spec = app.openapi()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if path in ("/healthz", "/livez", "/readyz", "/metrics", "/ops", "/ops/api/config"):
                continue
            assert {"400", "401", "403", "404", "429"} <= set(operation["responses"]), (
                method, path)


PUBLIC = {("post", "/api/p/{project}/auth"), ("post", "/api/p/{project}/login"),
          ("post", "/api/login"), ("get", "/healthz"), ("get", "/livez"), ("get", "/readyz"),
          ("get", "/metrics"), ("get", "/ops"),
          ("get", "/ops/api/config")}


def test_security_and_headers_are_documented() -> None:
    """Each operation names its dialect's security scheme (none for the public ones); the
    secured ones document the rate-limit headers, Unicat's successes the renewed JWT and its
    401 WWW-Authenticate."""
    spec = app.openapi()
    assert set(spec["components"]["securitySchemes"]) == {"UnicatJWT", "DatoCMSToken",
                                                          "PloneToken"}
    for path, operations in spec["paths"].items():
        scheme = ("DatoCMSToken" if path.startswith("/dato/") else
                  "PloneToken" if path.startswith("/plone/") else "UnicatJWT")
        for method, operation in operations.items():
            public = (method, path) in PUBLIC
            assert operation["security"] == ([] if public else [{scheme: []}]), (method, path)
            for status, response in operation["responses"].items():
                headers = response.get("headers", {})
                assert public or "X-RateLimit-Remaining" in headers, (method, path, status)
                if scheme == "UnicatJWT" and status == "401":
                    assert headers["WWW-Authenticate"]["required"], (method, path)
                if scheme == "UnicatJWT" and status == "200" and path.startswith("/api/"):
                    assert headers["Authorization"]["required"], (method, path)


@api_schema.parametrize()
@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_api(case: Any, world: dict[str, Any], quiet: None) -> None:
    """No operation answers 5xx or anything its schema does not document."""
    aim(case, world)
    case.call_and_validate(headers=world["headers"], checks=CHECKS)


def _doctor_root_result(spec: dict[str, Any]) -> None:
    spec["components"]["schemas"]["RootResult"]["properties"]["root"] = {"type": "integer"}


def _doctor_root_status(spec: dict[str, Any]) -> None:
    spec["paths"][ROOT]["post"]["responses"].pop("200")


def _doctor_root_header(spec: dict[str, Any]) -> None:
    spec["paths"][ROOT]["post"]["responses"]["200"]["headers"]["X-Never-Sent"] = {
        "required": True, "schema": {"type": "string"}}


def _doctor_root_content_type(spec: dict[str, Any]) -> None:
    response = spec["paths"][ROOT]["post"]["responses"]["200"]
    response["content"] = {"text/plain": response["content"]["application/json"]}


ROOT = "/api/p/{project}/records/root"


@pytest.mark.parametrize(("doctor", "check"), [
    (_doctor_root_result, response_schema_conformance),
    (_doctor_root_status, status_code_conformance),
    (_doctor_root_header, response_headers_conformance),
    (_doctor_root_content_type, content_type_conformance),
])
def test_the_checks_catch_a_wrong_document(world: dict[str, Any], quiet: None,
                                           monkeypatch: pytest.MonkeyPatch, doctor: Any,
                                           check: Any) -> None:
    """The fuzz test can fail: the same answer that passes against the real document fails
    each check against a document doctored to be wrong in that check's respect."""
    real = schemathesis.openapi.from_asgi("/openapi.json", app)
    case = real[ROOT]["POST"].Case(path_parameters={"project": world["project"]})
    case.call_and_validate(headers=world["headers"], checks=[check])
    doctored = copy.deepcopy(app.openapi())
    doctor(doctored)
    monkeypatch.setattr(app, "openapi_schema", doctored)
    wrong = schemathesis.openapi.from_asgi("/openapi.json", app)
    case = wrong[ROOT]["POST"].Case(path_parameters={"project": world["project"]})
    with pytest.raises(FailureGroup):
        case.call_and_validate(headers=world["headers"], checks=[check])


#: Requests that succeed, one or more per kind of answer: generated requests mostly fail
#: validation, so these make sure every success body is checked against its model.
#: (method, path, path parameters from the world, body)
SUCCESSES: list[tuple[str, str, dict[str, str], Any]] = [
    ("POST", "/api/p/{project}/auth", {}, {"api_key": "$api_key"}),
    ("POST", "/api/p/{project}/init", {}, {}),
    ("POST", "/api/init", {}, {}),
    ("POST", "/api/p/{project}/records/root", {}, None),
    ("POST", "/api/p/{project}/records/get", {}, {"record": "$root"}),
    ("POST", "/api/p/{project}/records/get", {}, {"records": ["$root", "unknown"]}),
    ("POST", "/api/p/{project}/records/children", {}, {"record": "$root"}),
    ("POST", "/api/p/{project}/records/search", {}, {"language": "en"}),
    ("POST", "/api/p/{project}/records/bulk/get", {}, {"selection": ["$root"]}),
    ("POST", "/api/p/{project}/definitions/get", {}, {"definitions": []}),
    ("POST", "/api/p/{project}/schema/search", {}, {"language": "en"}),
    ("POST", "/api/p/{project}/schema/bulk/get", {}, {"selection": []}),
    ("POST", "/api/p/{project}/jobs/list", {}, {}),
    ("POST", "/sync/cursors", {}, {"project": "$project"}),
    ("POST", "/sync/get", {}, {"cc_cursor": 0, "project": "$project"}),
    ("GET", "/ops/api/stats", {}, None),
    ("GET", "/ops/api/config", {}, None),
    ("GET", "/healthz", {}, None),
    ("GET", "/livez", {}, None),
    ("GET", "/readyz", {}, None),
    ("GET", "/dato/p/{project}/items/{item_id}", {"item_id": "$root"}, None),
    ("GET", "/dato/p/{project}/items/{item_id}/versions", {"item_id": "$root"}, None),
    ("GET", "/dato/p/{project}/versions/{version_id}", {"version_id": "$root_version"}, None),
    ("GET", "/plone/p/{project}/{record}/@history", {"record": "$root"}, None),
    ("GET", "/plone/p/{project}/{record}/@history/{version}",
     {"record": "$root", "version": "0"}, None),
]


def _fill(value: Any, world: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("$"):
        return world[value[1:]]
    if isinstance(value, list):
        return [_fill(v, world) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, world) for k, v in value.items()}
    return value


@pytest.mark.parametrize(("method", "path", "params", "body"), SUCCESSES,
                         ids=[f"{m} {p}" for m, p, _, _ in SUCCESSES])
def test_successes_conform(world: dict[str, Any], quiet: None, method: str, path: str,
                           params: dict[str, str], body: Any) -> None:
    """A request that succeeds answers 2xx with the body, content type and headers its
    schema documents."""
    operation = api_schema[path][method]
    kwargs: dict[str, Any] = {"path_parameters": {
        **({"project": world["project"]} if "{project}" in path else {}),
        **_fill(params, world)}}
    if body is not None:
        kwargs.update(body=_fill(body, world), media_type="application/json")
    case = operation.Case(**kwargs)
    response = case.call_and_validate(headers=world["headers"], checks=CHECKS)
    assert 200 <= response.status_code < 300, response.text
