"""Helpers of the DatoCMS and Plone dialect tests (in-process ASGI client, real database and
Redis): credentials, a record with history, and running a queued job to its end."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import exists, select

from bulkjobs.connections import get_synclog
from models import Record, RecordDeletion, RecordVersion, User
from models.engine import get_engine, get_write_engine
from models.history import write_versions
from models.seed import SeededProject
from tests.worker.helpers import cfg, job_row, run_to_end

STRANGER = "a0000000-0000-4000-8000-00000000beef"


def jwt_of(client: TestClient, project: SeededProject) -> str:
    """A JWT of the project's API-key user, from the Unicat ``auth`` endpoint."""
    r = client.post(f"/api/p/{project.gid}/auth", json={"api_key": project.api_key})
    assert r.status_code == 200, r.text
    return str(r.headers["authorization"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Api-Version": "3"}


def stranger() -> str:
    """A user who is no member of any project; returns their gid."""
    with get_write_engine().begin() as conn:
        conn.execute(User.__table__.insert().values(gid=STRANGER, username="stranger", name="",
                                                    ops=False, password_hash=""))
    return STRANGER


def history_record(project: SeededProject) -> Any:
    """A live record the seed gave three versions (0, 1, 2; 2 current, titles differ)."""
    with get_engine().connect() as conn:
        counts = dict(conn.execute(
            select(RecordVersion.record_id, RecordVersion.number)
            .where(RecordVersion.number == 2)).all())
        rows = conn.execute(select(Record.__table__).where(
            Record.project_gid == project.gid,
            ~exists().where(RecordDeletion.record_id == Record.id),
            Record.id.in_(list(counts))).order_by(Record.id)).all()
    return rows[0]


def versions_of(record_id: int) -> list[Any]:
    """The record's versions, oldest first."""
    with get_engine().connect() as conn:
        return list(conn.execute(select(RecordVersion.__table__).where(
            RecordVersion.record_id == record_id).order_by(RecordVersion.number)))


def add_versions(record_id: int, n: int) -> None:
    """Write ``n`` more versions of a record (same content)."""
    with get_write_engine().begin() as conn:
        for i in range(n):
            write_versions(conn, [record_id], editor={"type": "user", "id": "tester"},
                           comment=f"extra {i}", now=2_000_000_000.0 + i)


def run_job(token: str) -> Any:
    """Run a queued job in-process to its end, as a worker would; its final row."""
    outcomes = run_to_end(token, get_synclog(), cfg())
    assert outcomes[-1] in ("done", "rejected"), outcomes
    return job_row(token)


class ThreadWorker:
    """Stands in for the Celery worker: each enqueued token runs in a thread (optionally after
    ``before(token)``)."""

    def __init__(self, before: Any = None) -> None:
        self.before = before
        self.threads: list[threading.Thread] = []

    def __call__(self, token: str) -> None:
        def work() -> None:
            if self.before is not None:
                self.before(token)
            run_job(token)

        thread = threading.Thread(target=work, daemon=True)
        self.threads.append(thread)
        thread.start()

    def many(self, tokens: Sequence[str]) -> None:
        """Stands in for :func:`worker.app.enqueue_many`."""
        for token in tokens:
            self(token)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=60)
