"""A job's selection is parsed once, at submit: the parsed form is stored with the job
(``job.selection``) and its run resolves that, not the request's JSON again."""

from __future__ import annotations

from sqlalchemy import select, update

from bulkjobs.synclog import SyncLog
from models.engine import get_engine, get_write_engine
from models.jobs import Job
from models.seed import SeededProject
from models.selection import parse_selection
from models.selection_store import dump
from tests.worker.helpers import cfg, job_row, new_job, run_to_end

jobs = Job.__table__
DELETE = "bulk_delete_records"


def stored(token: str) -> object:
    with get_engine().connect() as conn:
        return conn.execute(select(jobs.c.selection).where(jobs.c.token == token)).scalar()


def test_submit_stores_the_parsed_selection(log: SyncLog, project: SeededProject):
    """The job row holds the parsed form of its selection."""
    selection = [project.heads[0], {"children": project.heads[1], "exclude": ["x"]}]
    token = new_job(log, project, DELETE, selection)
    assert stored(token) == dump(parse_selection(selection))


def test_the_run_resolves_the_stored_form_not_the_request(log: SyncLog,
                                                          project: SeededProject):
    """With the request's selection made unparseable after submit, the run still resolves
    the stored form and finishes ``done`` over its items (parsing again would reject it)."""
    token = new_job(log, project, DELETE, [project.heads[0]])
    with get_write_engine().begin() as conn:
        conn.execute(update(jobs).where(jobs.c.token == token)
                     .values(params={"selection": "not a list"}))
    assert run_to_end(token, log, cfg())[-1] == "done"
    row = job_row(token)
    assert row.info["total"] == 1 and row.info["failed"] == 0


def test_a_row_without_a_stored_form_parses_its_request(log: SyncLog, project: SeededProject):
    """A job row of an older version (no stored form) is resolved from its request."""
    token = new_job(log, project, DELETE, [project.heads[0], project.heads[1]])
    with get_write_engine().begin() as conn:
        conn.execute(update(jobs).where(jobs.c.token == token).values(selection=None))
    assert run_to_end(token, log, cfg())[-1] == "done"
    assert job_row(token).info["total"] == 2
