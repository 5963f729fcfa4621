"""``bulkjobs jobs show``: one job in full as the dashboard's detail shows it (selection,
parameters, times, duration, rate, counts, cancelled and paused), as a table and as JSON;
and ``jobs retry``'s refusals (typer's CliRunner, on the test database)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from bulkjobs.connections import get_synclog
from cli.job_detail import seconds_text, timing
from cli.main import app
from models import Job
from models.engine import get_engine
from models.seed import SeedResult
from tests.worker.helpers import cfg, new_job, records, run_to_end


def cli(*args: str, columns: int = 200) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)})


def jobs_count() -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Job)).scalar_one())


def live_leaves(seeded: SeedResult, n: int) -> list[str]:
    recs = records(seeded.projects[0].gid)
    return sorted(g for g, r in recs.items() if r.status != "deleted" and r.treelevel == 3)[:n]


@pytest.mark.services
def test_jobs_show_a_finished_job_in_full(seeded: SeedResult) -> None:
    """--json: the job's detail (selection, params, started/finished times) with processed,
    duration and rate; the table on a narrow terminal prints the token whole."""
    gids = live_leaves(seeded, 3)
    token = new_job(get_synclog(), seeded.projects[0], "bulk_delete_records", gids)
    assert run_to_end(token, get_synclog(), cfg())[-1] == "done"
    result = cli("jobs", "show", token, "--json")
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    assert (job["token"], job["status"], job["job"]) == (token, "done", "bulk_delete_records")
    assert job["selection"] == gids and job["selection.size"] == 3 and job["params"] == {}
    assert job["info"]["total"] == 3 and job["processed"] == 3
    assert job["started_on"] <= job["finished_on"]
    assert job["duration"] == pytest.approx(job["finished_on"] - job["started_on"])
    assert job["rate"] == (3 / job["duration"] if job["duration"] else None)
    table = cli("jobs", "show", token, columns=40)
    assert table.exit_code == 0, table.output
    assert token in table.stdout and "done" in table.stdout and "duration" in table.stdout


@pytest.mark.services
def test_jobs_show_says_a_job_was_cancelled(seeded: SeedResult) -> None:
    """A cancelled job shows info.cancelled (yes in the table), without a start."""
    token = new_job(get_synclog(), seeded.projects[0], "bulk_delete_records",
                    live_leaves(seeded, 1))
    assert cli("jobs", "cancel", token).exit_code == 0
    job = json.loads(cli("jobs", "show", token, "--json").stdout)
    assert job["status"] == "rejected" and job["info"]["cancelled"] is True
    assert job["started_on"] is None and job["duration"] is None and job["rate"] is None
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in cli("jobs", "show", token).stdout.splitlines() if "│" in line}
    assert rows["cancelled"] == "yes" and rows["paused"] == "" and rows["started"] == ""


@pytest.mark.services
def test_jobs_show_of_an_unknown_job_exits_1(seeded: SeedResult) -> None:
    result = cli("jobs", "show", "no-such-job", "--json")
    assert result.exit_code == 1 and "no job no-such-job" in result.stderr
    assert result.stdout == ""


@pytest.mark.services
def test_jobs_retry_refuses_an_unfinished_or_unknown_job(seeded: SeedResult) -> None:
    """Retry of a job that has not finished exits 1 with the API's reason; of an unknown
    job, exit 1 "no job"; neither queues anything."""
    token = new_job(get_synclog(), seeded.projects[0], "bulk_delete_records",
                    live_leaves(seeded, 1))
    before = jobs_count()
    unfinished = cli("jobs", "retry", token)
    assert unfinished.exit_code == 1
    assert "the job has not finished" in unfinished.stderr
    unknown = cli("jobs", "retry", "no-such-job")
    assert unknown.exit_code == 1 and "no job" in unknown.stderr
    assert jobs_count() == before


BASE = {"status": "processing", "info": {"total": 100, "remaining": 40},
        "created_on": 90.0, "updated_on": 115.0, "started_on": 100.0, "finished_on": None}


@pytest.mark.parametrize(("changes", "expected"), [
    ({}, {"processed": 60, "duration": 20.0, "rate": 3.0}),  # running until now (120)
    ({"status": "done", "finished_on": 110.0, "info": {"total": 100, "remaining": 0}},
     {"processed": 100, "duration": 10.0, "rate": 10.0}),
    ({"status": "rejected"}, {"processed": 60, "duration": 15.0, "rate": 4.0}),  # updated_on
    ({"status": "queued", "started_on": None, "info": {}},
     {"processed": None, "duration": None, "rate": None}),
    ({"info": {"total": 100}}, {"processed": None, "duration": 20.0, "rate": None}),
    ({"info": {"total": 5, "remaining": 9}}, {"processed": 0, "duration": 20.0, "rate": 0.0}),
])
def test_timing_reckons_like_the_dashboard(changes: dict[str, Any],
                                           expected: dict[str, Any]) -> None:
    """Processed items, seconds run and rate: a run ends when the job finished, at its last
    update for a finished job without finished_on, else now."""
    assert timing({**BASE, **changes}, now=120.0) == expected


@pytest.mark.parametrize(("seconds", "text"), [
    (0.004, "0.00 s"), (0.42, "0.42 s"), (3.25, "3.2 s"), (12.4, "12 s"), (59.4, "59 s"),
    (185, "3 min 5 s"), (7440, "2 h 4 min"),
])
def test_seconds_text_writes_durations_like_the_dashboard(seconds: float, text: str) -> None:
    assert seconds_text(seconds) == text
