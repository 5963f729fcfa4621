"""``bulkjobs jobs failures`` exports every failed item of a job, ``bulkjobs jobs retry``
queues a job over exactly them (typer's CliRunner, on the test database)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from bulkjobs.connections import get_synclog
from cli.main import app
from models import Job
from models.engine import get_engine
from models.seed import SeedResult
from tests.worker.helpers import cfg, new_job, records, run_to_end

pytestmark = pytest.mark.services


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def finished_delete(seeded: SeedResult, selection: list[str]) -> str:
    project = seeded.projects[0]
    token = new_job(get_synclog(), project, "bulk_delete_records", selection)
    assert run_to_end(token, get_synclog(), cfg(batch_size=7))[-1] == "done"
    return token


def jobs() -> list[str]:
    with get_engine().connect() as conn:
        return sorted(conn.execute(select(Job.token)).scalars())


def already_deleted(seeded: SeedResult, n: int) -> list[str]:
    """``n`` grandchildren of the seeded deleted head, in id order: deleting them fails."""
    project = seeded.projects[0]
    recs = records(project.gid)
    head = next(h for h in project.heads if recs[h].status == "deleted")
    kids = [g for g, r in recs.items() if r.treelevel == 3 and r.mpath.startswith(recs[head].mpath)]
    return sorted(kids, key=lambda g: recs[g].id)[:n]


def test_jobs_failures_json_exports_every_failure(seeded: SeedResult) -> None:
    """--json prints one JSON array of every failed item (25, beyond info.errors' 20) as
    ``{gid, reason}`` in item order; the table shows them too; an unknown job exits 1."""
    bad = already_deleted(seeded, 25)
    token = finished_delete(seeded, bad)
    result = cli("jobs", "failures", token, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"gid": g, "reason": "already deleted"} for g in bad]
    table = cli("jobs", "failures", token)
    assert table.exit_code == 0 and all(g in table.stdout for g in bad)
    assert cli("jobs", "failures", "no-such-job", "--json").exit_code == 1


def test_jobs_retry_queues_a_job_over_the_failed_items(seeded: SeedResult) -> None:
    """``jobs retry`` prints the token of a job of the same kind whose selection names the
    failed job; a job without a failed item exits 1 and queues nothing."""
    recs = records(seeded.projects[0].gid)
    live = next(g for g, r in recs.items() if r.status != "deleted" and r.treelevel == 3)
    clean = finished_delete(seeded, [live])
    token = finished_delete(seeded, already_deleted(seeded, 3))
    result = cli("jobs", "retry", token)
    assert result.exit_code == 0, result.output
    again = result.stdout.strip()
    with get_engine().connect() as conn:
        row = conn.execute(select(Job.job, Job.params).where(Job.token == again)).one()
    assert (row.job, row.params) == ("bulk_delete_records",
                                     {"selection": [{"failures_of": token}]})
    before = jobs()
    refused = cli("jobs", "retry", clean)
    assert refused.exit_code == 1 and "no failed item" in refused.output
    assert jobs() == before
