"""``bulkjobs jobs list``: the filters and paging of ``jobs/list`` (status, kind, time range,
token prefix, page size and cursor), through :func:`models.job_list.page`; bad filters exit 2
(typer's CliRunner, on the test database)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from bulkjobs.connections import get_synclog
from cli.jobs import parse_time
from cli.main import app
from models import Job
from models.engine import get_write_engine
from models.seed import SeedResult
from tests.worker.helpers import new_job


def cli(*args: str, columns: int = 200) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": str(columns)})


def listed(*args: str) -> list[str]:
    result = cli("jobs", "list", "--json", *args)
    assert result.exit_code == 0, result.output
    return [j["token"] for j in json.loads(result.stdout)]


@pytest.fixture
def three(seeded: SeedResult) -> list[str]:
    """Three jobs, created at epoch 1000 (a delete of project 0, done), 2000 (an undelete of
    project 0) and 3000 (a delete of project 1)."""
    p0, p1 = seeded.projects
    tokens = [new_job(get_synclog(), p0, "bulk_delete_records", [p0.heads[0]]),
              new_job(get_synclog(), p0, "bulk_undelete_records", [p0.heads[1]]),
              new_job(get_synclog(), p1, "bulk_delete_records", [p1.heads[0]])]
    with get_write_engine().begin() as conn:
        for at, token in zip((1000.0, 2000.0, 3000.0), tokens, strict=True):
            conn.execute(update(Job).where(Job.token == token).values(created_on=at))
        conn.execute(update(Job).where(Job.token == tokens[0]).values(status="done"))
    return tokens


@pytest.mark.services
def test_jobs_list_filters_like_the_api(seeded: SeedResult, three: list[str]) -> None:
    """--project, --status, --job, --prefix and --since/--until (epoch or ISO; since
    inclusive, until exclusive) each narrow the listing, newest first."""
    a, b, c = three
    assert listed() == [c, b, a]
    assert listed("--project", seeded.projects[0].gid) == [b, a]
    assert listed("--status", "done") == [a]
    assert listed("--job", "bulk_undelete_records") == [b]
    assert listed("--prefix", a[:8]) == [a]
    assert listed("--since", "2000", "--until", "3000") == [b]
    assert listed("--since", "1970-01-01T00:25:00+00:00") == [c, b]
    assert listed("--until", "1970-01-01T00:16:40Z") == []  # 1000 itself is not before it


@pytest.mark.services
def test_jobs_list_pages_with_the_printed_cursor(three: list[str]) -> None:
    """--limit cuts a page and prints the next page's --cursor on stderr (stdout stays one
    JSON array); that cursor gives the rest, and the last page prints none."""
    a, b, c = three
    first = cli("jobs", "list", "--json", "--limit", "2")
    assert first.exit_code == 0, first.output
    assert [j["token"] for j in json.loads(first.stdout)] == [c, b]
    cursor = first.stderr.split("--cursor", 1)[1].split()[0]
    rest = cli("jobs", "list", "--json", "--limit", "2", "--cursor", cursor)
    assert [j["token"] for j in json.loads(rest.stdout)] == [a]
    assert "--cursor" not in rest.stderr
    table = cli("jobs", "list", "--limit", "2", "--cursor", cursor, columns=40)
    assert table.exit_code == 0 and a in table.stdout


@pytest.mark.services
@pytest.mark.parametrize(("args", "message"), [
    (["--job", "no_such_job"], "unknown job"),
    (["--since", "yesterday"], "--since"),
    (["--until", "-5"], "--until"),
    (["--prefix", "XYZ"], "--prefix"),
    (["--cursor", "%%%"], "invalid page.cursor"),
    (["--project", "no-such-project"], "no project"),
    (["--status", "bogus"], "bogus"),
    (["--limit", "0"], "--limit"),
])
def test_jobs_list_refuses_a_bad_filter(seeded: SeedResult, args: list[str],
                                        message: str) -> None:
    """Each bad filter exits 2 naming what is wrong, with nothing on stdout."""
    result = cli("jobs", "list", "--json", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert result.stdout == ""


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0.0),
    ("1700000000.5", 1700000000.5),
    ("2024-01-31T12:00:00+00:00", 1706702400.0),
    ("2024-01-31T12:00:00Z", 1706702400.0),
    ("2024-01-31T13:00:00+01:00", 1706702400.0),
])
def test_parse_time_reads_epoch_seconds_and_iso_times(text: str, seconds: float) -> None:
    """--since/--until: epoch seconds, or an ISO time with its zone."""
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "2024-13-01", "-1", "nan", "inf"])
def test_parse_time_refuses_what_is_not_a_time(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)
