"""Batched queueing (``api/queueing.py``): concurrent job requests share one batch, each
request gets its own outcome, a refused request queues nothing, the rate limit and its
headers hold on the batched routes, and a broker that refuses the messages does not fail
the requests."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select

import api.queueing
import worker.submit
from api.app import app
from api.queueing import BATCH_SIZE, Ask, process
from bulkjobs import keys
from bulkjobs.connections import get_synclog
from bulkjobs.errors import BadRequest, Forbidden, SelectionError
from bulkjobs.settings import get_settings
from bulkjobs.tokens import Claims, issue
from models.auth import Member
from models.engine import get_engine
from models.jobs import Job
from models.outbox import SyncOutbox
from models.seed import SeededProject
from tests.api.dialects import jwt_of
from tests.stream.conftest import make_user
from worker.reaper import reap
from worker.submit import Submission

pytestmark = pytest.mark.services

BULK_DELETE = "bulk_delete_records"


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens whose Celery messages were sent (instead of sending them)."""
    tokens: list[str] = []
    monkeypatch.setattr(api.queueing.worker_app, "enqueue_many", tokens.extend)
    return tokens


def member_of(project: SeededProject) -> str:
    with get_engine().connect() as conn:
        return str(conn.execute(select(Member.user_gid).where(
            Member.project_gid == project.gid)).scalars().first())


def wait_sent(sent: list[str], n: int) -> list[str]:
    """``sent`` once the sending thread has sent ``n`` messages (it sends after the answer)."""
    for _ in range(500):
        if len(sent) >= n:
            break
        time.sleep(0.01)
    return sent


def job_count() -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Job.__table__)).scalar_one())


def queued_events() -> list[str]:
    return [e.key for e in get_synclog().read(keys.CC_SPACE, 0).events
            if e.status == "queued"]


def ask(project: SeededProject, user: str, selection: Any, *, job: str = BULK_DELETE,
        ops: bool = False) -> Ask:
    return Ask(Submission(project.gid, job, {"selection": selection},
                          {"type": "user", "id": user}),
               Claims(user=user, ops=ops, exp=4e9), project.gid)


def test_one_batch_gives_each_ask_its_own_outcome(project: SeededProject,
                                                  sent: list[str]) -> None:
    """In one batch: two good asks get tokens; a stranger gets 403, a bad selection and an
    unknown job their errors; an access-only ask gets neither token nor error; only the two
    good ones have a job row, a queued event and a sent message."""
    user = member_of(project)
    stranger = make_user()
    before = job_count()
    outcomes = process([
        ask(project, user, [project.heads[0]]),
        ask(project, stranger, [project.heads[0]]),
        ask(project, user, "not a list"),
        ask(project, user, [project.heads[0]], job="no_such_job"),
        Ask(claims=Claims(user=user, ops=False, exp=4e9), project_gid=project.gid),
        ask(project, user, [project.heads[1]]),
    ])
    good = [outcomes[0].token, outcomes[5].token]
    assert all(good) and good[0] != good[1]
    assert isinstance(outcomes[1].error, Forbidden) and outcomes[1].token is None
    assert isinstance(outcomes[2].error, SelectionError)
    assert isinstance(outcomes[3].error, BadRequest)
    assert outcomes[4].error is None and outcomes[4].token is None
    assert job_count() == before + 2
    assert sorted(queued_events()) == sorted(good)
    assert wait_sent(sent, 2) == good


def test_an_ops_user_may_queue_in_any_project(project: SeededProject,
                                              sent: list[str]) -> None:
    [outcome] = process([ask(project, make_user(ops=True), [project.heads[0]])])
    assert outcome.error is None and outcome.token in wait_sent(sent, 1)


def test_a_database_error_fails_the_whole_batch_and_queues_nothing(
        project: SeededProject, sent: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("database away")

    # (Redis away once the rows committed is no error: the jobs stand, their queued events
    # in the outbox; see tests/worker/test_submit.py.)
    monkeypatch.setattr(worker.submit, "get_write_engine", broken)
    user = member_of(project)
    before = job_count()
    outcomes = process([ask(project, user, [project.heads[0]]),
                        ask(project, user, [project.heads[1]])])
    assert all(isinstance(o.error, RuntimeError) for o in outcomes)
    assert job_count() == before and sent == []


def test_concurrent_requests_share_batches(project: SeededProject, client: TestClient,
                                           sent: list[str]) -> None:
    """Twenty requests at once on one event loop: every one gets its own token, and the
    queueing thread handled fewer batches than requests."""
    jwt = jwt_of(client, project)

    def count() -> float:
        return next(s.value for s in BATCH_SIZE.collect()[0].samples
                    if s.name.endswith("_count"))

    before = count()

    async def many() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await asyncio.gather(*(
                c.post(f"/api/p/{project.gid}/records/bulk/delete",
                       json={"selection": [project.heads[i % len(project.heads)]]},
                       headers={"Authorization": f"Bearer {jwt}"})
                for i in range(20)))

    answers = asyncio.run(many())
    assert [r.status_code for r in answers] == [200] * 20
    tokens = {r.json()["result"]["job.token"] for r in answers}
    assert len(tokens) == 20 and tokens == set(wait_sent(sent, 20))
    assert all(r.headers["authorization"].count(".") == 2 for r in answers)
    assert count() - before < 20


def test_rate_limit_holds_on_the_batched_routes(project: SeededProject, client: TestClient,
                                                sent: list[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The bulk routes are counted in their batch: headers on each answer, 429 past the
    limit in the Unicat envelope, and the refused request queues nothing."""
    jwt = jwt_of(client, project)
    monkeypatch.setattr(get_settings(), "rate_limit", 2)
    monkeypatch.setattr(get_settings(), "rate_limit_window", 60)
    url = f"/api/p/{project.gid}/records/bulk/delete"
    headers = {"Authorization": f"Bearer {jwt}"}
    answers = [client.post(url, json={"selection": [project.heads[0]]}, headers=headers)
               for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 429]
    assert [r.headers["x-ratelimit-remaining"] for r in answers] == ["1", "0", "0"]
    assert answers[2].json()["result"]["code"] == 429
    assert len(wait_sent(sent, 2)) == 2


def test_a_stranger_gets_403_whatever_the_body(project: SeededProject, client: TestClient,
                                               sent: list[str]) -> None:
    """Access is checked before the body: a user who is no member gets 403 for a good body,
    a malformed one and none; a member gets FastAPI's 400 for a malformed body."""
    url = f"/api/p/{project.gid}/records/bulk/delete"
    stranger = {"Authorization": f"Bearer {issue(make_user())}"}
    for body in ({"selection": [project.heads[0]]}, {"selection": 1}, None):
        r = client.post(url, json=body, headers=stranger)
        assert r.status_code == 403, (body, r.text)
    member = {"Authorization": f"Bearer {jwt_of(client, project)}"}
    for body in ({"nope": 1}, None):
        r = client.post(url, json=body, headers=member)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["result"]["info"]["errors"][0]["loc"][0] == "body"
    time.sleep(0.2)
    assert sent == []


def test_a_broker_refusing_the_messages_does_not_fail_the_requests(
        project: SeededProject, client: TestClient, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The job stands (queued, announced) and the refusal is logged for the reaper."""
    def refuse(tokens: Any) -> None:
        raise ConnectionError("broker away")

    monkeypatch.setattr(api.queueing.worker_app, "enqueue_many", refuse)
    jwt = jwt_of(client, project)
    with caplog.at_level(logging.WARNING, logger="worker.submit"):
        r = client.post(f"/api/p/{project.gid}/records/bulk/delete",
                        json={"selection": [project.heads[0]]},
                        headers={"Authorization": f"Bearer {jwt}"})
        token = r.json()["result"]["job.token"]
        for _ in range(500):
            if any(token in rec.getMessage() for rec in caplog.records):
                break
            time.sleep(0.01)
    assert r.status_code == 200
    assert token in queued_events()
    assert any(token in rec.getMessage() and "reaper" in rec.getMessage()
               for rec in caplog.records)


def test_redis_failing_after_the_commit_answers_the_token_and_the_event_follows_once(
        project: SeededProject, client: TestClient, sent: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis fails between the job row's commit and the ``queued`` event's append: the
    request is answered with its token (the job stands, its message is sent), the event
    waits in the outbox, and the reaper appends it — once, however often it comes."""
    jwt = jwt_of(client, project)

    def broken(*_: Any, **__: Any) -> None:
        raise redis.ConnectionError("Redis went away")

    log = get_synclog()
    with monkeypatch.context() as patch:
        patch.setattr(log, "append", broken, raising=False)
        patch.setattr(log, "append_each", broken, raising=False)
        r = client.post(f"/api/p/{project.gid}/records/bulk/delete",
                        json={"selection": [project.heads[0]]},
                        headers={"Authorization": f"Bearer {jwt}"})
    assert r.status_code == 200, r.text
    token = r.json()["result"]["job.token"]
    assert wait_sent(sent, 1) == [token]
    assert token not in queued_events()
    with get_engine().connect() as conn:
        assert conn.execute(select(SyncOutbox.job_token)).scalars().all() == [token]
    monkeypatch.setattr(time, "time", lambda real=time.time: real() + 60)
    for _ in range(2):
        reap(log=log, stale_after=30, queued_stale_after=120, requeue=pytest.fail)
    assert queued_events().count(token) == 1
    with get_engine().connect() as conn:
        assert conn.execute(select(func.count()).select_from(SyncOutbox)).scalar_one() == 0


def test_sync_routes_queue_in_the_same_batches(project: SeededProject, client: TestClient,
                                               sent: list[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests of a sync route (``schema/bulk/commit``, run in threadpool threads) and of
    an async one at once: every batch is handled by the queueing thread, never by a
    request's own thread, and there are fewer batches than requests."""
    jwt = jwt_of(client, project)
    threads: list[str] = []
    sizes: list[int] = []
    real = api.queueing.process_safely

    def spy(asks: Any) -> Any:
        threads.append(threading.current_thread().name)
        sizes.append(len(asks))
        return real(asks)

    monkeypatch.setattr(api.queueing, "process_safely", spy)

    async def many() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await asyncio.gather(*(
                c.post(f"/api/p/{project.gid}/schema/bulk/commit", json={"selection": []},
                       headers={"Authorization": f"Bearer {jwt}"}) if i % 2 else
                c.post(f"/api/p/{project.gid}/records/bulk/delete",
                       json={"selection": [project.heads[i % len(project.heads)]]},
                       headers={"Authorization": f"Bearer {jwt}"})
                for i in range(20)))

    answers = asyncio.run(many())
    assert [r.status_code for r in answers] == [200] * 20, [r.text for r in answers][:2]
    assert len({r.json()["result"]["job.token"] for r in answers}) == 20
    assert threads and all(name.startswith("queueing") for name in threads), threads
    assert sum(sizes) == 20 and len(sizes) < 20
