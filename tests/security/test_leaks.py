"""Errors do not leak internals: a job that fails on a database error ends with an
``info.error`` that names the kind of failure only (no SQL statement, no bound parameters, no
stack text), in the job row, in ``jobs/get`` and in its terminal event; the worker's log keeps
the traceback but not the parameters."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import text

from bulkjobs import keys
from bulkjobs.synclog import SyncLog
from models.engine import get_write_engine
from models.seed import SeedResult
from tests.security.conftest import call, jwt_of
from tests.worker.helpers import cfg, deps, job_row, new_job, space_events
from worker import runner
from worker.retry import RetryLater

INTERNALS = ("UPDATE", "SELECT", "INSERT", "[SQL", "parameters", "Traceback", "File \"",
             "probe refused", "record.")


@pytest.fixture
def refusing_record(seeded: SeedResult) -> Iterator[str]:
    """A record the database refuses to delete: a trigger raises on every new workflow entry
    (every delete writes one), so the job fails inside its batch statement with the
    database's own error, whose text holds the statement and its parameters."""
    gid = seeded.projects[0].heads[0]
    engine = get_write_engine()
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("CREATE TRIGGER leak_probe BEFORE INSERT ON workflow_entry "
                              "BEGIN SELECT RAISE(ABORT, 'probe refused'); END"))
        else:
            conn.execute(text("CREATE FUNCTION leak_probe() RETURNS trigger AS $$ BEGIN "
                              "RAISE EXCEPTION 'probe refused'; END $$ LANGUAGE plpgsql"))
            conn.execute(text("CREATE TRIGGER leak_probe BEFORE INSERT ON workflow_entry "
                              "FOR EACH ROW EXECUTE FUNCTION leak_probe()"))
    try:
        yield gid
    finally:
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                conn.execute(text("DROP TRIGGER leak_probe"))
            else:
                conn.execute(text("DROP TRIGGER leak_probe ON workflow_entry"))
                conn.execute(text("DROP FUNCTION leak_probe()"))


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
