"""A run takes the job row back from the statements that write it (``UPDATE … RETURNING``,
:func:`worker.lease.claim_row`, :func:`worker.lease.commit_row`, :func:`worker.lease.finish`),
so that no transaction of a small job reads the row again after writing it."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import event

from bulkjobs.synclog import SyncLog
from models.engine import get_engine
from models.seed import SeededProject
from tests.worker.helpers import cfg, deps, job_row, new_job
from worker.runner import run

pytestmark = pytest.mark.services

#: A statement that writes the job row, and one that reads the job row (alone, by token).
_WRITES_JOB = re.compile(r"^\s*UPDATE job\b", re.IGNORECASE)
_READS_JOB = re.compile(r"^\s*SELECT\b.*\bFROM job\s+WHERE job\.token\b", re.IGNORECASE | re.DOTALL)


@pytest.fixture
def transactions() -> Iterator[list[list[str]]]:
    """The statements of the calling thread, one list per transaction begun meanwhile."""
    me = threading.get_ident()
    seen: list[list[str]] = []

    def begin(conn: object) -> None:
        if threading.get_ident() == me:
            seen.append([])

    def statement(conn: object, cursor: object, sql: str, *args: object) -> None:
        if threading.get_ident() == me and seen:
            seen[-1].append(sql)

    engine = get_engine()
    event.listen(engine, "begin", begin)
    event.listen(engine, "before_cursor_execute", statement)
    try:
        yield seen
    finally:
        event.remove(engine, "begin", begin)
        event.remove(engine, "before_cursor_execute", statement)


def _read_back(statements: list[str]) -> list[str]:
    """The reads of the job row that follow the transaction's first write of it."""
    written = next((i for i, sql in enumerate(statements) if _WRITES_JOB.match(sql)), None)
    if written is None:
        return []
    return [sql for sql in statements[written + 1:] if _READS_JOB.match(sql)]


def test_no_transaction_of_a_small_job_reads_back_the_row_it_wrote(
        log: SyncLog, project: SeededProject, transactions: list[list[str]]) -> None:
    token = new_job(log, project, "bulk_delete_records", project.heads[:1])
    transactions.clear()
    assert run(token, deps=deps(log), cfg=cfg(), requeue=pytest.fail) == "done"
    writing = [t for t in transactions if any(_WRITES_JOB.match(sql) for sql in t)]
    assert len(writing) == 2, writing  # the claim (with the resolution), the batch and end
    assert any("job_item" in sql for sql in writing[0])  # resolved in the claim's transaction
    assert [_read_back(t) for t in writing] == [[], []]
    row = job_row(token)
    assert row.status == "done" and row.info["total"] == 1 and row.info["remaining"] == 0


def test_the_checker_sees_a_read_back() -> None:
    """The rule bites: a read of the job row after a write of it is reported."""
    statements = ["SELECT job.token FROM job WHERE job.token = ?",
                  "UPDATE job SET owner=? WHERE job.token = ?",
                  "SELECT job.token, job.info \nFROM job \nWHERE job.token = ?"]
    assert _read_back(statements) == statements[2:]
