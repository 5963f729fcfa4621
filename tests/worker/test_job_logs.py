"""Job log lines (``worker/submit.py``, ``worker/runner.py``): one INFO line per state change
(queued, processing, done or rejected), one DEBUG line per committed batch, each carrying the
job token in ``extra`` (the JSON log format writes it as a ``job`` field)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bulkjobs import logs
from bulkjobs.synclog import SyncLog
from models.seed import SeedResult
from tests.worker.helpers import cfg, job_row, new_job, run_to_end
from worker.submit import cancel

pytestmark = pytest.mark.services

LOGGERS = ("worker.submit", "worker.runner")


def job_lines(caplog: pytest.LogCaptureFixture, token: str) -> list[logging.LogRecord]:
    """The records of the job's loggers that mention the token."""
    return [r for r in caplog.records if r.name in LOGGERS and token in r.getMessage()]


def test_a_done_job_logs_each_state_once_and_each_batch_at_debug(
    caplog: pytest.LogCaptureFixture, log: SyncLog, seeded: SeedResult
) -> None:
    """Seven items in batches of three: queued, processing, three batch lines, done — every
    line with ``record.job == token``."""
    project = seeded.projects[0]
    caplog.set_level(logging.DEBUG)
    token = new_job(log, project, "bulk_delete_records", project.heads[:7])
    assert run_to_end(token, log, cfg(batch_size=3))[-1] == "done"
    assert job_row(token).info["total"] == 7

    lines = job_lines(caplog, token)
    assert lines and all(getattr(r, "job", None) == token for r in lines)
    info = [r.getMessage() for r in lines if r.levelno == logging.INFO]
    assert info == [
        f"job {token}: queued (bulk_delete_records in project {project.gid})",
        f"job {token}: processing 7 items",
        f"job {token}: done",
    ]
    batches = [r for r in lines if "batch of" in r.getMessage()]
    assert [r.levelno for r in batches] == [logging.DEBUG] * 3
    assert [r.getMessage() for r in batches] == [
        f"job {token}: batch of {n} committed, {left} remaining"
        for n, left in ((3, 4), (3, 1), (1, 0))
    ]


def test_a_cancelled_job_logs_the_request_and_its_rejection(
    caplog: pytest.LogCaptureFixture, log: SyncLog, seeded: SeedResult
) -> None:
    """A job cancelled before it ran logs queued, cancel requested and rejected (cancelled),
    each with the token, and no processing or batch line."""
    project = seeded.projects[0]
    caplog.set_level(logging.DEBUG)
    token = new_job(log, project, "bulk_delete_records", project.heads[:2])
    cancel(project_gid=project.gid, token=token, log=log)
    assert job_row(token).status == "rejected"

    lines = job_lines(caplog, token)
    assert all(getattr(r, "job", None) == token for r in lines)
    assert [r.getMessage() for r in lines if r.levelno == logging.INFO] == [
        f"job {token}: queued (bulk_delete_records in project {project.gid})",
        f"job {token}: cancel requested",
        f"job {token}: rejected (cancelled)",
    ]
    assert not [r for r in lines if "batch of" in r.getMessage() or "processing" in
                r.getMessage()]


def test_json_format_writes_the_token_as_a_field_of_every_job_line(
    log: SyncLog, seeded: SeedResult
) -> None:
    """With LOG_FORMAT=json a job's lines are JSON objects whose ``job`` is the token."""
    project = seeded.projects[0]
    stream = io.StringIO()
    handler = logs.setup(level="DEBUG", fmt="json", stream=stream)
    try:
        token = new_job(log, project, "bulk_delete_records", project.heads[:4])
        assert run_to_end(token, log, cfg(batch_size=2))[-1] == "done"
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = [r for r in lines if r["logger"] in LOGGERS and token in r["message"]]
    assert {r["job"] for r in mine} == {token}
    assert [r["level"] for r in mine if "batch of" in r["message"]] == ["DEBUG", "DEBUG"]
    assert sum(r["message"].endswith(": done") for r in mine) == 1
