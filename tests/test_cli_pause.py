"""``bulkjobs jobs pause`` and ``jobs resume``: a project's jobs (``--project``) or every
project's (``--all``), exactly one of the two."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cli.main import app
from models.engine import get_engine
from models.pauses import EVERY_PROJECT, JobPause
from models.seed import SeedResult

pytestmark = pytest.mark.services


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def pauses() -> set[str]:
    with get_engine().connect() as conn:
        return set(conn.execute(select(JobPause.scope)).scalars())  # type: ignore[call-overload]


def test_jobs_pause_and_resume_a_project_or_every_project(seeded: SeedResult) -> None:
    """``--project`` pauses that project (twice says so), ``--all`` every project, and
    ``resume`` lifts each; neither option or both exit 2 with nothing paused."""
    gid = seeded.projects[0].gid
    for bad in ([], ["--project", gid, "--all"]):
        result = cli("jobs", "pause", *bad)
        assert result.exit_code == 2, result.output
    assert pauses() == set()
    assert cli("jobs", "pause", "--project", gid).exit_code == 0
    again = cli("jobs", "pause", "--project", gid)
    assert again.exit_code == 0 and "paused already" in again.output
    assert cli("jobs", "pause", "--all").exit_code == 0
    assert pauses() == {gid, EVERY_PROJECT}
    result = cli("jobs", "resume", "--project", gid)
    assert result.exit_code == 0, result.output
    assert pauses() == {EVERY_PROJECT}
    assert cli("jobs", "resume", "--all").exit_code == 0
    assert pauses() == set()
