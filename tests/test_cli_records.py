"""``bulkjobs records preview``: what a bulk record job of a selection would take (total,
per-entry counts, the first items), as ``records/bulk/preview`` answers it, without queueing
or writing anything; bad input exits 2 (typer's CliRunner, on the test database)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from cli.main import app
from models import Job
from models.engine import get_engine
from models.seed import SeedResult
from models.selection import parse_selection
from tests.worker.helpers import children, records
from worker.preview import preview

pytestmark = pytest.mark.services


def cli(*args: str, columns: int = 200) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)})


def counts() -> tuple[int, int]:
    """Jobs and records: a preview changes neither."""
    with get_engine().connect() as conn:
        jobs = conn.execute(select(func.count()).select_from(Job)).scalar_one()
        recs = conn.execute(select(func.count()).select_from(Job.metadata.tables["record"])
                            ).scalar_one()
    return int(jobs), int(recs)


def test_records_preview_prints_what_the_job_would_take(seeded: SeedResult) -> None:
    """--json is the preview's {total, entries, sample}: a live head and its live children;
    the job's catalogue name works as --job too; the table prints the total and the
    sample's gids whole on a narrow terminal; nothing is queued or written."""
    project = seeded.projects[0]
    recs = records(project.gid)
    head = next(h for h in project.heads if recs[h].status != "deleted")
    selection = [head, {"children": head}]
    before = counts()
    result = cli("records", "preview", "--project", project.gid, "--job", "delete",
                 "--selection", json.dumps(selection), "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    expected = preview(get_engine(), project_gid=project.gid, job="delete",
                       selection=parse_selection(selection)).public()
    assert shown == expected
    kids = [g for g in children(recs, head) if recs[g].status != "deleted"]
    assert shown["total"] == 1 + len(kids) and shown["entries"] == [1, len(kids)]
    assert shown["sample"][0] == head and set(shown["sample"]) <= {head, *kids}
    alias = cli("records", "preview", "--project", project.gid, "--job", "bulk_delete_records",
                "--selection", json.dumps(selection), "--json")
    assert json.loads(alias.stdout) == shown
    table = cli("records", "preview", "--project", project.gid, "--job", "delete",
                "--selection", json.dumps(selection), columns=40)
    assert table.exit_code == 0, table.output
    assert f"total {shown['total']}" in table.stdout
    assert all(gid in table.stdout for gid in shown["sample"])
    assert counts() == before


@pytest.mark.parametrize(("args", "message"), [
    (["--selection", "not json"], "not JSON"),
    (["--selection", '[{"bad": 1}]'], "entry 0"),
    (["--selection", '{"not": "a list"}'], "must be a list"),
    (["--job", "explode"], "--job must be one of"),
    (["--project", "no-such-project"], "no project 'no-such-project'"),
])
def test_records_preview_refuses_bad_input(seeded: SeedResult, args: list[str],
                                           message: str) -> None:
    """A bad selection, job or project exits 2 with the reason, printing nothing on stdout."""
    project = seeded.projects[0]
    base = {"--project": project.gid, "--job": "delete",
            "--selection": json.dumps([project.heads[0]])}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    before = counts()
    result = cli("records", "preview", *[x for pair in base.items() for x in pair])
    assert result.exit_code == 2
    assert message in result.stderr and result.stdout == ""
    assert counts() == before
