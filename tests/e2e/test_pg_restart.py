"""PostgreSQL restarted under a running job: a real worker process, on a private cluster the
test starts (not the shared database), sees its database stop mid-job (``pg_ctl stop -m
immediate`` or ``fast``) and come back seconds later; the job carries on by
itself, ends ``done`` with every item applied exactly once, and the outage counts as no
failure (``worker/retry.py``, "The database or Redis away")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from models import Job, WorkflowEntry
from models.engine import make_engine, migrate
from models.seed import seed
from tests.e2e import pg_cluster, procfile
from tests.e2e.conftest import Proc, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.heavy]

BIN = Path(sys.executable).parent
jobs_t = Job.__table__
workflow_t = WorkflowEntry.__table__
TARGETS = 300  # one per batch: the job runs for seconds, the restart falls inside it


@pytest.fixture
def cluster() -> Iterator[pg_cluster.Cluster]:
    """A private PostgreSQL cluster, removed after the test; the test is skipped where none
    can be made (no ``initdb``), except in CI, where that is a failure."""
    why = pg_cluster.missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"no private PostgreSQL cluster in CI: {why}")
        pytest.skip(why)
    with pg_cluster.private_cluster() as made:
        yield made


@pytest.fixture
def private_env(cluster: pg_cluster.Cluster, redis_client) -> Iterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    """The private cluster as the database, and a Redis prefix of the test's own (no other
    worker of the session takes its job); the prefix's keys are removed after the test."""
    prefix = f"{os.environ['REDIS_PREFIX']}-pgr{os.getpid()}"
    yield {"DATABASE_URL": cluster.url, "REDIS_PREFIX": prefix}
    for pattern in (f"{prefix}*", f"_kombu.binding*.{prefix}*"):  # kombu's queue bindings
        for key in redis_client.scan_iter(pattern):
            redis_client.delete(key)


def live_leaves(engine: Engine, project_gid: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT r.gid FROM record r WHERE r.project_gid = :p AND r.treelevel = 3 "
            "AND NOT EXISTS (SELECT 1 FROM record_deletion d WHERE d.record_id = r.id) "
            "ORDER BY r.id"), {"p": project_gid}).scalars())


def job_row(engine: Engine, token: str) -> Any:
    """The job's row, or ``None`` while the database is away."""
    try:
        with engine.connect() as conn:
            return conn.execute(select(jobs_t).where(jobs_t.c.token == token)).one()
    except Exception:
        engine.dispose()
        return None


def processed(engine: Engine, token: str) -> int:
    row = job_row(engine, token)
    info = (row.info if row is not None else None) or {}
    total, remaining = info.get("total"), info.get("remaining")
    return total - remaining if isinstance(total, int) and isinstance(remaining, int) else 0


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["immediate", "fast"])
def test_a_job_survives_a_postgresql_restart_and_applies_every_item_once(
    cluster: pg_cluster.Cluster, private_env: dict[str, str], mode: str,
) -> None:
    """PostgreSQL stopped mid-job (``immediate``: killed; ``fast``: connections closed) and
    started again a few seconds later: the job ends ``done`` without a reaper, no failure
    counted, every record deleted and one workflow entry written per record."""
    engine = make_engine(cluster.url)
    migrate(engine)
    with engine.begin() as conn:
        project = seed(conn, records=1000, seed_value=7, deleted_every=10_000).projects[0]
    targets = live_leaves(engine, project.gid)[:TARGETS]
    assert len(targets) == TARGETS

    worker: Proc = procfile.worker("pg-restart", concurrency=1, BATCH_SIZE="1",
                                   SLICE_SECONDS="1000", PROGRESS_INTERVAL="0.05",
                                   **private_env)
    try:
        submitted = subprocess.run(
            [str(BIN / "bulkjobs"), "submit", "bulk_delete_records", "--project", project.gid,
             "--selection", json.dumps(targets)],
            env={**os.environ, **private_env}, capture_output=True, text=True, timeout=120)
        assert submitted.returncode == 0, submitted.stderr
        token = submitted.stdout.strip()

        wait_for(lambda: processed(engine, token) >= 10, "the job under way", timeout=120)
        engine.dispose()
        cluster.stop(mode)
        assert job_row(engine, token) is None  # the database is away
        time.sleep(3)
        cluster.start()

        def finished() -> bool:
            row = job_row(engine, token)
            return row is not None and row.status in ("done", "rejected")

        # A liveness guard, not a speed test.
        wait_for(finished, "the job finished after the restart", timeout=400)
        row = job_row(engine, token)
        assert row.status == "done", (row.info, worker.output()[-4000:])
        assert row.failures == 0 and "error" not in row.info
        assert (row.info["total"], row.info["remaining"], row.info["failed"]) == (TARGETS, 0, 0)
        assert row.attempts >= 2  # the outage ended the first run: the job ran again
        assert not set(targets) & set(live_leaves(engine, project.gid))
        with engine.connect() as conn:
            ids = dict(conn.execute(text(
                "SELECT r.gid, r.id FROM record r JOIN record_deletion d ON d.record_id = r.id "
                "WHERE r.project_gid = :p"), {"p": project.gid}).tuples().all())
            written = Counter(conn.execute(select(workflow_t.c.record_id).where(
                workflow_t.c.action == "delete",
                workflow_t.c.comment.contains(token))).scalars())
        assert set(targets) <= set(ids)  # every target deleted
        assert written == Counter({ids[g]: 1 for g in targets})  # each exactly once
    finally:
        procfile.stop_all([worker])
        engine.dispose()
