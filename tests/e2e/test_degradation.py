"""Graceful degradation with real processes.

* Redis down — killed (connections refused) or frozen (``SIGSTOP``: connections accepted,
  nothing answered): a web process on a private ``redis-server`` keeps answering — 503 in
  its envelope for what needs Redis, 200 for what does not — and never hangs (every request
  runs under a bounded client timeout, far above the expected fail-fast time); nothing is
  left queued behind a 503; once Redis is back it recovers by itself.
* Database locked: while another connection holds the write lock (SQLite ``BEGIN
  IMMEDIATE`` on the file; PostgreSQL ``LOCK TABLE … IN EXCLUSIVE MODE``) running jobs wait
  and carry on; they all end ``done`` with every item processed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from models import Job
from models.engine import get_engine
from models.seed import SeedResult
from tests.e2e import procfile
from tests.e2e.conftest import System, free_port, wait_for
from tests.e2e.helpers import Api, Subscriber, job_events, terminal_of
from tests.e2e.redis_server import PrivateRedis, private_redis_server

pytestmark = [pytest.mark.e2e, pytest.mark.heavy]

#: Upper bound on any one request while a service is down: the server must answer well
#: within it (a hang shows up as a client timeout, failing the test).  Not a timing target.
BOUND = 8.0


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    with private_redis_server() as server:
        yield server


@pytest.fixture
def web_on_private_redis(private_redis: PrivateRedis, seeded: SeedResult) -> Iterator[str]:
    """A web process (the Procfile's command) whose Redis and broker are the private server;
    its base URL."""
    port = free_port()
    proc = procfile.web(port, REDIS_URL=private_redis.url, BROKER_URL=private_redis.url)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def jobs_count() -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Job)).scalar_one())


class Client:
    """Unicat-dialect calls with a bounded timeout, returning status and body."""

    def __init__(self, base: str, project: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=BOUND)
        self.project = project
        self.jwt = ""

    def post(self, endpoint: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        path = endpoint if endpoint.startswith("/") else f"/api/p/{self.project}/{endpoint}"
        headers = {"Authorization": f"Bearer {self.jwt}"} if self.jwt else {}
        try:
            r = self.http.post(path, json=body or {}, headers=headers)
        except httpx.TimeoutException:
            pytest.fail(f"{path} did not answer within {BOUND} s: the server hangs")
        if r.status_code == 200 and "authorization" in r.headers:
            self.jwt = r.headers["authorization"]
        return r.status_code, r.json()

    def healthz(self) -> int:
        try:
            return self.http.get("/healthz").status_code
        except httpx.TimeoutException:
            pytest.fail(f"/healthz did not answer within {BOUND} s: the server hangs")


def needs_redis(project: Any) -> list[tuple[str, dict[str, Any]]]:
    """Requests that cannot be answered without Redis (cursors, the sync log, queueing)."""
    return [
        ("auth", {"api_key": project.api_key}),
        ("records/bulk/delete", {"selection": [project.heads[0]]}),
        ("/sync/cursors", {}),
        ("/sync/get", {"cc_cursor": 0}),
    ]


def assert_degraded(client: Client, project: Any) -> None:
    """Again and again (no request may wait on the dead server): what needs Redis is a 503
    in the envelope, /healthz is 503, a read the database alone serves is 200."""
    for _ in range(3):
        for endpoint, body in needs_redis(project):
            status, answer = client.post(endpoint, body)
            assert status == 503, (endpoint, status, answer)
            assert answer["success"] is False and answer["result"]["code"] == 503, answer
        assert client.healthz() == 503
        status, answer = client.post("records/root")
        assert status == 200, answer


def assert_recovered(client: Client, project: Any) -> None:
    wait_for(lambda: client.healthz() == 200, "recovery of /healthz", timeout=30)
    for endpoint, body in needs_redis(project):
        status, answer = client.post(endpoint, body)
        assert status == 200, (endpoint, status, answer)


@pytest.mark.parametrize("outage", ["killed", "frozen"])
def test_redis_down_is_503_without_hanging_and_recovers_by_itself(
        private_redis: PrivateRedis, web_on_private_redis: str, seeded: SeedResult,
        outage: str):
    """With Redis killed or frozen, what needs it answers 503 in the envelope (no hang,
    nothing queued), what does not still answers 200; with Redis back, all answer again."""
    project = seeded.projects[0]
    client = Client(web_on_private_redis, project.gid)
    assert client.post("auth", {"api_key": project.api_key})[0] == 200
    assert client.healthz() == 200
    queued_before = jobs_count()

    if outage == "killed":
        private_redis.kill()
    else:
        private_redis.freeze()
    assert_degraded(client, project)
    assert jobs_count() == queued_before  # a 503 queued nothing, not even for later

    if outage == "killed":
        private_redis.start()
    else:
        private_redis.thaw()
    assert_recovered(client, project)
    assert jobs_count() == queued_before + 1


# -- a locked database --------------------------------------------------------------------


class Locker:
    """Holds the database's write lock from a connection of its own, in a thread."""

    def __init__(self) -> None:
        self.held = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="db-locker")
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            engine = get_engine()
            if engine.dialect.name == "sqlite":
                conn = sqlite3.connect(str(engine.url.database), isolation_level=None,
                                       timeout=60)
                conn.execute("BEGIN IMMEDIATE")
                self.held.set()
                self.release.wait(60)
                conn.execute("COMMIT")
                conn.close()
            else:
                with engine.connect() as sa_conn:
                    sa_conn.execute(text("LOCK TABLE record, job IN EXCLUSIVE MODE"))
                    self.held.set()
                    self.release.wait(60)
                    sa_conn.commit()
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.held.set()

    def __enter__(self) -> Locker:
        self.thread.start()
        assert self.held.wait(60) and self.error is None, self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(60)


def test_jobs_wait_out_a_locked_database_and_end_done(system: System, seeded: SeedResult):
    """Jobs running while the database's write lock is held elsewhere for a few seconds
    pause, then finish: all done, every item processed, nothing failed."""
    project = seeded.projects[0]
    api = Api(system.web_url, project.gid)
    assert api.auth(project.api_key)["success"]
    heads = project.heads[:6]  # live subtrees: a head, 9 children, 90 grandchildren

    async def scenario() -> tuple[list[dict[str, Any]], list[str]]:
        async with Subscriber(system.stream_url, api.jwt) as sub:
            await sub.subscribe(project.gid, cc_cursor=api.cc_cursor())
            # Each job: the 9 children of a head, three batches of 3 (BATCH_SIZE).
            tokens = [api.queue("records/bulk/delete", [{"children": h}]) for h in heads]
            # Lock once the first job is under way, so that batches meet the lock.
            await sub.until(lambda evs: any(e["data"]["status"] == "processing" for e in evs))
            with Locker():
                unfinished = [t for t in tokens if not terminal_of(t)(sub.events)]
                await asyncio.sleep(3)
            for token in tokens:
                await sub.until(terminal_of(token), timeout=120)
            return [job_events(sub.events, t)[-1] for t in tokens], unfinished

    finals, unfinished = asyncio.run(scenario())
    assert unfinished, "every job ended before the lock was taken: nothing was tested"
    for event in finals:
        info = event["data"]["info"]
        assert event["data"]["status"] == "done", event
        assert info["total"] == 9 and info["remaining"] == 0 and info["failed"] == 0, info
        assert "error" not in info
    with get_engine().connect() as conn:
        deleted = conn.execute(text(
            "SELECT COUNT(*) FROM record r JOIN record_deletion d ON d.record_id = r.id "
            "WHERE r.project_gid = :p"),
            {"p": project.gid}).scalar_one()
    assert deleted == 99 * len(heads) + 100  # the seed had deleted one subtree already
