"""Errors do not leak internals: a job that fails on a database error ends with an
``info.error`` that names the kind of failure only (no SQL statement, no bound parameters, no
stack text), in the job row, in ``jobs/get`` and in its terminal event; the worker's log keeps
the traceback but not the parameters.  A request of any dialect that meets a database error
is answered the dialect's 500 envelope, and a websocket request the frame
``{"op": "error", "code": 500, "message": "internal error"}``, with none of it either."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlmodel import col

from bulkjobs import keys
from bulkjobs.synclog import SyncLog
from models.engine import get_engine, get_write_engine
from models.records import Record
from models.seed import SeedResult
from models.versions import RecordVersion
from tests.security.conftest import call, jwt_of
from tests.stream.conftest import WAIT
from tests.stream.threaded import ThreadedServer, open_client
from tests.worker.helpers import cfg, deps, job_row, new_job, space_events
from worker import runner
from worker.retry import RetryLater

INTERNALS = ("UPDATE", "SELECT", "INSERT", "[SQL", "parameters", "Traceback", "File \"",
             "probe refused", "record.")


@contextmanager
def refusing_inserts(table: str) -> Iterator[None]:
    """The database refuses every row inserted into ``table``: a trigger raises the
    database's own error, whose text holds the statement and its parameters."""
    engine = get_write_engine()
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text(f"CREATE TRIGGER leak_probe BEFORE INSERT ON {table} "
                              "BEGIN SELECT RAISE(ABORT, 'probe refused'); END"))
        else:
            conn.execute(text("CREATE FUNCTION leak_probe() RETURNS trigger AS $$ BEGIN "
                              "RAISE EXCEPTION 'probe refused'; END $$ LANGUAGE plpgsql"))
            conn.execute(text(f"CREATE TRIGGER leak_probe BEFORE INSERT ON {table} "
                              "FOR EACH ROW EXECUTE FUNCTION leak_probe()"))
    try:
        yield
    finally:
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                conn.execute(text("DROP TRIGGER leak_probe"))
            else:
                conn.execute(text(f"DROP TRIGGER leak_probe ON {table}"))
                conn.execute(text("DROP FUNCTION leak_probe()"))


@pytest.fixture
def refusing_record(seeded: SeedResult) -> Iterator[str]:
    """A record the database refuses to delete: every delete writes a workflow entry, which
    the database refuses, so the job fails inside its batch statement."""
    with refusing_inserts("workflow_entry"):
        yield seeded.projects[0].heads[0]


def test_a_database_error_reaches_clients_as_its_kind_only(
    redis_client: redis.Redis, seeded: SeedResult, refusing_record: str, client: TestClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    project = seeded.projects[0]
    log = SyncLog(redis_client, dedupe_ttl=600)
    token = new_job(log, project, "bulk_delete_records", [refusing_record])
    caplog.set_level(logging.INFO)
    for _ in range(3):
        with pytest.raises(RetryLater):
            runner.run(token, deps=deps(log), cfg=cfg(stale_after=0.0), requeue=pytest.fail)
    assert runner.run(token, deps=deps(log), cfg=cfg(), requeue=pytest.fail) == "rejected"

    error = job_row(token).info["error"]
    assert error.split(":")[0] in ("IntegrityError", "ProgrammingError")  # the kind is kept
    answer = call(client, f"/api/p/{project.gid}/jobs/get", jwt_of(seeded), {"job": token})
    assert answer.status_code == 200, answer.text
    terminal = space_events(log, keys.CC_SPACE, token)[-1]
    assert terminal["data"]["status"] == "rejected"
    for shown in (error, answer.text, str(terminal["data"]["info"])):
        for internal in INTERNALS + (refusing_record,):
            assert internal not in shown, (internal, shown)

    # The worker's log has the traceback and the statement, never the bound values.
    logged = "\n".join(r.getMessage() + "\n" + (caplog.text if r.exc_info else "")
                       for r in caplog.records if r.name.startswith("worker"))
    assert "probe refused" in logged and "Traceback" in caplog.text
    assert "parameters hidden" in caplog.text
    assert refusing_record not in caplog.text


ROOT = Path(__file__).resolve().parents[2]

#: What a client may learn of an unexpected server error, per dialect (DatoCMS's error id
#: is random and left out).
FIVE_HUNDREDS: dict[str, Any] = {
    "unicat": {"success": False, "data": {},
               "result": {"code": 500, "message": "Internal server error", "info": {}}},
    "dato": {"data": [{"type": "api_error", "attributes": {
        "code": "EXCEPTION", "details": {"message": "Internal server error"}}}]},
    "plone": {"type": "InternalServerError", "message": "Internal server error"},
}


def _first_version(gid: str) -> str:
    with get_engine().connect() as conn:
        return str(conn.execute(
            select(RecordVersion.id).join(Record, col(Record.id) == RecordVersion.record_id)
            .where(Record.gid == gid, RecordVersion.number == 0)).scalar_one())


def _without_ids(body: Any) -> Any:
    if isinstance(body, dict) and body.get("type") == "api_error":
        return {k: v for k, v in body.items() if k != "id"}
    if isinstance(body, dict):
        return {k: _without_ids(v) for k, v in body.items()}
    if isinstance(body, list):
        return [_without_ids(v) for v in body]
    return body


def assert_no_internals(shown: str, *values: str) -> None:
    """``shown`` holds no SQL, stack text, file path, database message or any of ``values``
    (the request's parameters)."""
    for internal in (*INTERNALS, "sqlalchemy", "psycopg", "sqlite", ".py", str(ROOT),
                     *values):
        assert internal.lower() not in shown.lower(), (internal, shown)


@pytest.mark.parametrize("dialect", sorted(FIVE_HUNDREDS))
def test_a_database_error_is_answered_as_the_dialects_bare_500(
    seeded: SeedResult, client: TestClient, dialect: str,
) -> None:
    """A request whose job row the database refuses to write is answered exactly the
    dialect's 500 envelope, with nothing of the statement, its parameters or the stack."""
    project = seeded.projects[0]
    gid = project.heads[0]
    version = _first_version(gid)
    method, path, body = {
        "unicat": ("POST", f"/api/p/{project.gid}/records/bulk/delete", {"selection": [gid]}),
        "dato": ("POST", f"/dato/p/{project.gid}/versions/{version}/restore", None),
        "plone": ("PATCH", f"/plone/p/{project.gid}/{gid}/@history", {"version": 0}),
    }[dialect]
    with refusing_inserts("job"):
        answer = call(client, path, jwt_of(seeded), body, method=method)
    assert answer.status_code == 500, answer.text
    assert _without_ids(answer.json()) == FIVE_HUNDREDS[dialect]
    assert_no_internals(answer.text, gid, version)


@contextmanager
def renamed_column(table: str, column: str, to: str) -> Iterator[None]:
    """``table.column`` is called ``to`` meanwhile: every statement that names it fails in
    the database."""
    with get_write_engine().begin() as conn:
        conn.execute(text(f'ALTER TABLE "{table}" RENAME COLUMN "{column}" TO "{to}"'))
    try:
        yield
    finally:
        with get_write_engine().begin() as conn:
            conn.execute(text(f'ALTER TABLE "{table}" RENAME COLUMN "{to}" TO "{column}"'))


def _next_reply(ws: Any) -> str:
    """The next frame that is not a sync frame, as sent."""
    while True:
        frame = str(ws.recv(timeout=WAIT))
        if json.loads(frame)["op"] != "sync":
            return frame


def test_a_database_error_on_the_websocket_is_a_bare_500(seeded: SeedResult) -> None:
    """A subscribe whose job snapshot the database cannot read is answered exactly
    ``{"op": "error", "code": 500, "message": "internal error"}`` with the request's id, and
    the connection serves the next request."""
    project = seeded.projects[0].gid
    watched = str(uuid.uuid4())  # a parameter of the failing statement
    request = {"op": "subscribe", "project": project, "jobs": [watched], "id": 7}
    with ThreadedServer() as stream:
        ws = open_client(stream.url, jwt_of(seeded))
        with renamed_column("job", "info", "info_elsewhere"):
            ws.send(json.dumps(request))
            frame = _next_reply(ws)
        assert json.loads(frame) == {"op": "error", "code": 500, "message": "internal error",
                                     "id": 7}
        assert_no_internals(frame, watched, "info_elsewhere")
        ws.send(json.dumps(request))
        assert json.loads(_next_reply(ws))["op"] == "subscribed"
        ws.close()
