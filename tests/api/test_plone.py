"""The Plone dialect over HTTP (in-process ASGI client, real database and Redis): ``@history``
listing and historical versions, revert through the job queue (waited for, or 202), and
every error in Plone's ``{"type", "message"}`` shape."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import event, select

import api.plone.routes
import api.queueing
from bulkjobs.tokens import issue
from models import Job
from models.engine import get_engine, get_write_engine
from models.seed import SeededProject, SeedResult
from tests.api.dialects import (
    ThreadWorker,
    bearer,
    history_record,
    jwt_of,
    stranger,
    versions_of,
)
from tests.worker.helpers import make_link

pytestmark = pytest.mark.services

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def url(project: SeededProject, gid: str, rest: str = "@history") -> str:
    return f"/plone/p/{project.gid}/{gid}/{rest}"


def assert_plone_error(r: Any, status: int, type_: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"type", "message"} and body["type"] == type_
    return str(body["message"])


def unicat(client: TestClient, project: SeededProject, path: str, body: dict[str, Any]) -> Any:
    r = client.post(f"/api/p/{project.gid}/{path}", json=body,
                    headers={"Authorization": f"Bearer {jwt_of(client, project)}"})
    assert r.status_code == 200, r.text
    return r.json()


def jobs() -> list[Any]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(Job.__table__)))


def test_history_is_newest_first_with_versions_and_workflow(
    client: TestClient, project: SeededProject, seeded: SeedResult
) -> None:
    """Versions and workflow entries come newest first; version 0 is the "Create" entry;
    versioning entries link to themselves and may be reverted; workflow entries carry the
    review state and its title; actors are described."""
    rec = history_record(project)
    unicat(client, project, "records/publish", {"record": rec.gid})
    unicat(client, project, "records/update", {"record": rec.gid, "title": {"en": "New"}})
    r = client.get(url(project, rec.gid), headers=bearer(project.api_key))
    assert r.status_code == 200, r.text
    entries = r.json()
    assert [(e["type"], e.get("version"), e["action"]) for e in entries] == [
        ("versioning", 3, "Edited"), ("workflow", None, "publish"),
        ("versioning", 2, "Edited"), ("versioning", 1, "Edited"),
        ("versioning", 0, "Create")]
    times = [e["time"] for e in entries]
    assert all(ISO.match(t) for t in times) and times == sorted(times, reverse=True)
    newest, publish, *_, create = entries
    base = f"http://testserver/plone/p/{project.gid}"
    user = seeded.users[0]
    assert newest == {
        "@id": f"{base}/{rec.gid}/@history/3", "action": "Edited",
        "actor": {"@id": f"{base}/@users/{user.gid}", "fullname": newest["actor"]["fullname"],
                  "id": user.gid, "username": user.username},
        "comments": "Edited", "may_revert": True, "time": newest["time"],
        "transition_title": "Edited", "type": "versioning", "version": 3,
    }
    assert publish == {
        "action": "publish", "actor": newest["actor"], "comments": "",
        "review_state": "published", "state_title": "Published", "time": publish["time"],
        "transition_title": "Publish", "type": "workflow",
    }
    assert create["transition_title"] == "Create" and create["comments"] == "Initial version"
    assert create["actor"] == {"@id": f"{base}/@users/seed", "fullname": None, "id": "seed",
                               "username": None}


def test_record_without_history_answers_an_empty_list(client: TestClient,
                                                      project: SeededProject) -> None:
    """A record with neither versions nor workflow entries (a link) has history ``[]``."""
    link = make_link(project, history_record(project).gid)
    r = client.get(url(project, link), headers=bearer(project.api_key))
    assert r.status_code == 200 and r.json() == []


def test_historical_version_is_the_snapshot(client: TestClient, project: SeededProject) -> None:
    """``@history/<n>`` shows the record as it was at version n; ``current`` the newest."""
    rec = history_record(project)
    stored = versions_of(rec.id)
    r = client.get(url(project, rec.gid, "@history/0"), headers=bearer(project.api_key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["@id"] == f"http://testserver/plone/p/{project.gid}/{rec.gid}"
    assert (body["UID"], body["version"], body["title"]) == (
        rec.gid, 0, stored[0].snapshot["title"]["en"])
    assert body["review_state"] == stored[0].snapshot["status"]
    assert body["changeNote"] == "Initial version" and ISO.match(body["modified"])
    for name, value in stored[0].snapshot["fields"]["en"].items():
        assert body[name] == value
    current = client.get(url(project, rec.gid, "@history/current"),
                         headers=bearer(project.api_key)).json()
    assert current["version"] == 2 and current["title"] == rec.title["en"]


@pytest.mark.parametrize("version", ["99", "-1", "2147483648", "9223372036854775808",
                                     "100000000000000000000"])
def test_unknown_version_is_not_found(client: TestClient, project: SeededProject,
                                      version: str) -> None:
    """A version the record does not have is 404 ``NotFound``, never a 500 — numbers too
    large for the version column (32-bit) included."""
    rec = history_record(project)
    r = client.get(url(project, rec.gid, f"@history/{version}"),
                   headers=bearer(project.api_key))
    assert "not found" in assert_plone_error(r, 404, "NotFound").lower()


@pytest.mark.parametrize("version", ["abc", "1.5", "one"])
def test_non_integer_version_is_bad_request(client: TestClient, project: SeededProject,
                                            version: str) -> None:
    """A version that is not an integer (nor ``current``) is 400 ``BadRequest``."""
    rec = history_record(project)
    r = client.get(url(project, rec.gid, f"@history/{version}"),
                   headers=bearer(project.api_key))
    assert_plone_error(r, 400, "BadRequest")


def test_revert_waits_for_the_job_and_says_so(
    client: TestClient, project: SeededProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a worker running, PATCH waits for the revert job and answers 200 with Plone's
    message; the record has a new current version with version 1's content."""
    worker = ThreadWorker()
    monkeypatch.setattr(api.queueing.worker_app, "enqueue_many", worker.many)
    rec = history_record(project)
    old = versions_of(rec.id)
    r = client.patch(url(project, rec.gid), json={"version": 1},
                     headers=bearer(project.api_key))
    worker.join()
    assert r.status_code == 200, r.text
    title = old[1].snapshot["title"]["en"]
    assert r.json() == {"message": f"{title} has been reverted to revision 1."}
    now = versions_of(rec.id)
    assert len(now) == 4 and now[-1].is_current
    assert now[-1].comment == "Reverted to revision 1"
    assert now[-1].snapshot["title"] == old[1].snapshot["title"]
    history = client.get(url(project, rec.gid), headers=bearer(project.api_key)).json()
    assert history[0]["version"] == 3 and history[0]["comments"] == "Reverted to revision 1"


def test_revert_without_a_worker_answers_202_with_the_job(
    client: TestClient, project: SeededProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no worker to run it, PATCH gives up waiting and answers 202 with the job token;
    the job stays queued."""
    monkeypatch.setattr(api.plone.routes, "REVERT_WAIT", 0.3)
    rec = history_record(project)
    r = client.patch(url(project, rec.gid), json={"version": 0},
                     headers=bearer(project.api_key))
    assert r.status_code == 202, r.text
    body = r.json()
    [job] = jobs()
    assert body["job"] == job.token and body["status"] == "queued"
    assert body["message"].endswith("is being reverted to revision 0.")
    assert job.job == "revert_record_version" and job.params["version"] == 0
    assert len(versions_of(rec.id)) == 3


def test_revert_waits_without_a_thread_or_a_database_connection(
    client: TestClient, project: SeededProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While PATCH waits for the job, it holds no database connection and runs on the event
    loop (a coroutine, not a threadpool thread); its answer is unchanged (202 here).

    The connections are counted by the thread that took them from the pool: the process's
    message sender (:class:`api.queueing.Sender`) deletes outbox rows from a thread of its
    own, at any moment, and is not the request."""
    seen: dict[str, Any] = {}
    real_wait = api.plone.routes.wait_terminal
    holders: dict[int, str] = {}

    def checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        holders[id(record)] = threading.current_thread().name

    def checkin(dbapi_conn: Any, record: Any) -> None:
        holders.pop(id(record), None)

    pool = get_engine().pool
    assert get_write_engine().pool is pool
    event.listen(pool, "checkout", checkout)
    event.listen(pool, "checkin", checkin)

    async def spy(token: str, *, after: int, timeout: float) -> bool:
        seen["task"] = asyncio.current_task()
        seen["holders"] = sorted(name for name in holders.values() if name != "sending")
        return await real_wait(token, after=after, timeout=timeout)

    monkeypatch.setattr(api.plone.routes, "wait_terminal", spy)
    monkeypatch.setattr(api.plone.routes, "REVERT_WAIT", 0.2)
    rec = history_record(project)
    try:
        r = client.patch(url(project, rec.gid), json={"version": 0},
                         headers=bearer(project.api_key))
    finally:
        event.remove(pool, "checkout", checkout)
        event.remove(pool, "checkin", checkin)
    assert r.status_code == 202, r.text
    assert seen["task"] is not None
    assert seen["holders"] == []


def test_failed_revert_answers_the_jobs_error(
    client: TestClient, project: SeededProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revert job that fails (the record was deleted before it ran) answers with the job's
    error status and message in Plone's shape."""
    rec = history_record(project)

    def delete_first(token: str) -> None:
        unicat(client, project, "records/delete", {"record": rec.gid})

    worker = ThreadWorker(before=delete_first)
    monkeypatch.setattr(api.queueing.worker_app, "enqueue_many", worker.many)
    r = client.patch(url(project, rec.gid), json={"version": 1},
                     headers=bearer(project.api_key))
    worker.join()
    assert assert_plone_error(r, 422, "UnprocessableEntity") == "The record is deleted"


def test_revert_to_an_unknown_version_queues_nothing(client: TestClient,
                                                     project: SeededProject) -> None:
    """Reverting to a version the record lacks is 404 at once; no job is queued."""
    rec = history_record(project)
    r = client.patch(url(project, rec.gid), json={"version": 7},
                     headers=bearer(project.api_key))
    assert_plone_error(r, 404, "NotFound")
    assert jobs() == []


@pytest.mark.parametrize("version", [2**31, 2**63, 10**30])
def test_revert_to_a_number_beyond_the_column_queues_nothing(
    client: TestClient, project: SeededProject, version: int
) -> None:
    """A revision number too large for the version column is 404 at once (not a database
    error); no job is queued."""
    rec = history_record(project)
    r = client.patch(url(project, rec.gid), json={"version": version},
                     headers=bearer(project.api_key))
    assert assert_plone_error(r, 404, "NotFound") == f"Version {version} not found"
    assert jobs() == []


@pytest.mark.parametrize("body", [{}, {"version": "1"}, {"version": True}, {"version": 1.5},
                                  [1], None])
def test_bad_revert_bodies_are_bad_requests(client: TestClient, project: SeededProject,
                                            body: Any) -> None:
    """A missing or non-integer ``version`` is 400 ``BadRequest``; nothing is queued."""
    rec = history_record(project)
    r = client.patch(url(project, rec.gid), json=body, headers=bearer(project.api_key))
    assert_plone_error(r, 400, "BadRequest")
    assert jobs() == []


def test_auth_and_membership_errors(client: TestClient, seeded: SeedResult) -> None:
    """No token, a forged token and another project's API key are 401 ``Unauthorized``; a
    non-member is 403 ``Forbidden``; a JWT works like the API key."""
    a, b = seeded.projects
    rec = history_record(a)
    assert_plone_error(client.get(url(a, rec.gid)), 401, "Unauthorized")
    assert_plone_error(client.get(url(a, rec.gid), headers=bearer("a.b.c")), 401,
                       "Unauthorized")
    assert_plone_error(client.get(url(a, rec.gid), headers=bearer(b.api_key)), 401,
                       "Unauthorized")
    assert_plone_error(client.get(url(a, rec.gid), headers=bearer(issue(stranger()))), 403,
                       "Forbidden")
    assert client.get(url(a, rec.gid), headers=bearer(jwt_of(client, a))).status_code == 200


def test_unknown_foreign_and_deleted_records_are_not_found(client: TestClient,
                                                           seeded: SeedResult) -> None:
    """Unknown records, another project's and deleted ones answer 404 ``NotFound``."""
    a, b = seeded.projects
    other = history_record(b)
    deleted = next(h for h in a.heads
                   if client.get(url(a, h), headers=bearer(a.api_key)).status_code == 404)
    for gid in ("unknown", other.gid, deleted):
        assert_plone_error(client.get(url(a, gid), headers=bearer(a.api_key)), 404,
                           "NotFound")
        assert_plone_error(client.patch(url(a, gid), json={"version": 0},
                                        headers=bearer(a.api_key)), 404, "NotFound")


def test_wrong_method_oversized_body_and_failures(
    client: TestClient, project: SeededProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """405 ``MethodNotAllowed``, 413 ``RequestEntityTooLarge``, 503 ``ServiceUnavailable``
    when Redis fails, 500 ``InternalServerError`` on a crash — all in Plone's shape."""
    rec = history_record(project)
    assert_plone_error(client.delete(url(project, rec.gid), headers=bearer(project.api_key)),
                       405, "MethodNotAllowed")
    big = client.patch(url(project, rec.gid), content=b"x" * (10 * 2**20 + 1),
                       headers={**bearer(project.api_key), "Content-Type": "application/json"})
    assert_plone_error(big, 413, "RequestEntityTooLarge")

    def down(*_: Any, **__: Any) -> str:
        raise redis.ConnectionError("down")

    monkeypatch.setattr(api.plone.routes, "queue_job", down)
    r = client.patch(url(project, rec.gid), json={"version": 0}, headers=bearer(project.api_key))
    assert_plone_error(r, 503, "ServiceUnavailable")

    def crash(*_: Any, **__: Any) -> str:
        raise RuntimeError("boom")

    monkeypatch.setattr(api.plone.routes, "queue_job", crash)
    r = client.patch(url(project, rec.gid), json={"version": 0}, headers=bearer(project.api_key))
    assert_plone_error(r, 500, "InternalServerError")
