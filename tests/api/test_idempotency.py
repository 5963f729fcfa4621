"""Idempotent submits (``Idempotency-Key``, :mod:`models.idempotency`): a retry under the same
key and body answers the first request's job and queues nothing, in every dialect; another
body is a 422, a request still in flight a 409, a bad key a 400, each in the dialect's
envelope; keys are per user and project, last 24 hours, are given back when queueing fails
and are removed by the hourly expiry task."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

import worker.submit
from api.queueing import Ask, Idempotency, process
from bulkjobs.errors import Conflict, Unprocessable
from bulkjobs.tokens import Claims, issue
from models import idempotency
from models.engine import get_engine, get_write_engine
from models.idempotency import IdempotencyKey, Key, Reservation, reserve
from models.jobs import Job
from models.seed import SeededProject, SeedResult
from tests.api.dialects import bearer, history_record, jwt_of
from tests.stream.conftest import make_user
from worker.submit import Submission, submit_each
from worker.tasks import expire_jobs

pytestmark = pytest.mark.services

KEY = "5f0c1e2a-retry-me"
keys = IdempotencyKey.__table__


def job_tokens() -> list[str]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(Job.__table__.c.token)).scalars())


def key_rows() -> list[Any]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(keys)))


def set_keys(**values: Any) -> None:
    with get_write_engine().begin() as conn:
        conn.execute(update(keys).values(**values))


def unicat(client: TestClient, project: SeededProject, path: str, body: Any, *,
           key: str | None = KEY, jwt: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {jwt or jwt_of(client, project)}",
               "content-type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    content = body if isinstance(body, str) else json.dumps(body)
    return client.post(f"/api/p/{project.gid}/{path}", content=content, headers=headers)


def dato_restore(client: TestClient, project: SeededProject, version_id: str,
                 key: str | None = KEY) -> Any:
    headers = bearer(project.api_key)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(f"/dato/p/{project.gid}/versions/{version_id}/restore", headers=headers)


def plone_revert(client: TestClient, project: SeededProject, gid: str, version: int,
                 key: str | None = KEY) -> Any:
    headers = bearer(project.api_key)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.patch(f"/plone/p/{project.gid}/{gid}/@history", json={"version": version},
                        headers=headers)


def version_ids(record_id: int) -> list[str]:
    from tests.api.dialects import versions_of
    return [str(v.id) for v in versions_of(record_id)]


def assert_unicat_error(r: Any, status: int) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False and body["result"]["code"] == status, body


def assert_dato_error(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    [error] = r.json()["data"]
    assert error["type"] == "api_error" and error["attributes"]["code"] == code, error


def assert_plone_error(r: Any, status: int, type_: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"type", "message"} and body["type"] == type_, body


@pytest.fixture(autouse=True)
def short_revert_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """No worker runs here: a Plone revert answers 202 after a short wait."""
    import api.plone.routes
    monkeypatch.setattr(api.plone.routes, "REVERT_WAIT", 0.2)


# -- replays --------------------------------------------------------------------------------


def test_same_key_and_body_answers_the_same_token_once(client: TestClient,
                                                        project: SeededProject) -> None:
    """A bulk delete sent again under its key, with the same body as parsed JSON (keys in
    another order, other spacing), answers the same Unicat body; one job is queued."""
    first = unicat(client, project, "records/bulk/delete", {"selection": [
        {"children": project.root, "exclude": [project.heads[0]]}]})
    head, root = project.heads[0], project.root
    again = unicat(client, project, "records/bulk/delete",
                   f'{{ "selection" : [ {{"exclude": ["{head}"], "children": "{root}"}} ] }}')
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert first.json() == again.json()
    assert job_tokens() == [first.json()["result"]["job.token"]]
    [row] = key_rows()
    assert row.job_token == first.json()["result"]["job.token"] and row.key == KEY


def test_schema_and_permanent_delete_routes_replay(client: TestClient,
                                                   project: SeededProject) -> None:
    """The routes whose dependency checks the access (schema bulk jobs, permanent delete)
    replay too: the same answer, one job each."""
    for path, body in (("schema/bulk/commit", {"selection": []}),
                       ("records/permanent_delete", {"record": project.heads[1]})):
        key = f"{KEY}-{path}"
        first = unicat(client, project, path, body, key=key)
        again = unicat(client, project, path, body, key=key)
        assert first.status_code == 200, first.text
        assert again.json() == first.json()
    assert len(job_tokens()) == 2


def test_a_permanent_delete_replays_after_its_job_removed_the_record(
        client: TestClient, project: SeededProject) -> None:
    """A permanent delete retried under its key after the job removed the record answers
    what the first request answered (token, parent, the parent in ``data``), not 422; the
    same request without the key still gets 422."""
    from tests.api.dialects import run_job
    from tests.api.test_permanent_delete_api import status

    head = next(h for h in project.heads if status(h) == "deleted")
    first = unicat(client, project, "records/permanent_delete", {"record": head})
    assert first.status_code == 200, first.text
    assert run_job(first.json()["result"]["job.token"]).status == "done"
    assert status(head) is None
    again = unicat(client, project, "records/permanent_delete", {"record": head})
    assert again.status_code == 200, again.text
    assert again.json()["result"] == first.json()["result"]
    assert set(again.json()["data"]["records"]) == {project.root}
    assert_unicat_error(unicat(client, project, "records/permanent_delete", {"record": head},
                               key=None), 422)
    assert len(job_tokens()) == 1


def test_dato_restore_and_plone_revert_replay(client: TestClient,
                                              project: SeededProject) -> None:
    """A DatoCMS restore and a Plone revert sent again under their keys answer the same job
    (202 with its id / its token); one job each."""
    rec = history_record(project)
    [v0, *_] = version_ids(rec.id)
    first = dato_restore(client, project, v0)
    again = dato_restore(client, project, v0)
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert again.json() == first.json()
    first = plone_revert(client, project, rec.gid, 1, key="plone-1")
    again = plone_revert(client, project, rec.gid, 1, key="plone-1")
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    assert again.json() == first.json()
    assert len(job_tokens()) == 2


def test_a_replay_of_a_finished_revert_answers_at_once(client: TestClient,
                                                       project: SeededProject,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A Plone revert whose job has ended is replayed with the job's answer without waiting
    for a terminal event that came before the retry."""
    import api.plone.routes
    from tests.api.dialects import run_job

    rec = history_record(project)
    first = plone_revert(client, project, rec.gid, 1)
    assert first.status_code == 202, first.text
    run_job(first.json()["job"])
    monkeypatch.setattr(api.plone.routes, "REVERT_WAIT", 60.0)  # a wait would show
    started = time.monotonic()
    again = plone_revert(client, project, rec.gid, 1)
    assert again.status_code == 200, again.text
    assert again.json()["message"].endswith("has been reverted to revision 1.")
    assert time.monotonic() - started < 30  # the wait (60 s) was not taken
    assert len(job_tokens()) == 1


# -- another request under the key: 422 -----------------------------------------------------


def test_same_key_with_another_body_is_422_in_every_dialect(client: TestClient,
                                                            project: SeededProject) -> None:
    """The key of a queued job sent with another body (or to another route) is refused
    with 422 in the dialect's envelope, and nothing more is queued."""
    assert unicat(client, project, "records/bulk/delete",
                  {"selection": [project.heads[0]]}).status_code == 200
    assert_unicat_error(unicat(client, project, "records/bulk/delete",
                               {"selection": [project.heads[1]]}), 422)
    assert_unicat_error(unicat(client, project, "records/bulk/undelete",
                               {"selection": [project.heads[0]]}), 422)
    assert_unicat_error(unicat(client, project, "schema/bulk/copy", {"selection": []}), 422)
    rec = history_record(project)
    v0, v1, _ = version_ids(rec.id)
    assert dato_restore(client, project, v0, key="dato").status_code == 202
    assert_dato_error(dato_restore(client, project, v1, key="dato"), 422, "INVALID_REQUEST")
    assert plone_revert(client, project, rec.gid, 0, key="plone").status_code == 202
    assert_plone_error(plone_revert(client, project, rec.gid, 1, key="plone"), 422,
                       "UnprocessableEntity")
    assert len(job_tokens()) == 3


# -- in flight: 409 ---------------------------------------------------------------------------


def test_a_retry_while_the_first_is_in_flight_is_409_in_every_dialect(
        client: TestClient, project: SeededProject) -> None:
    """While the key's first request has not queued its job yet (no job on the key), a
    retry is refused with 409 in the dialect's envelope and queues nothing."""
    rec = history_record(project)
    v0 = version_ids(rec.id)[0]
    assert unicat(client, project, "records/bulk/delete",
                  {"selection": [project.heads[0]]}).status_code == 200
    assert dato_restore(client, project, v0, key="dato").status_code == 202
    assert plone_revert(client, project, rec.gid, 0, key="plone").status_code == 202
    set_keys(job_token=None, created_on=time.time())  # as if each were still being handled
    assert_unicat_error(unicat(client, project, "records/bulk/delete",
                               {"selection": [project.heads[0]]}), 409)
    assert_dato_error(dato_restore(client, project, v0, key="dato"), 409, "INVALID_REQUEST")
    assert_plone_error(plone_revert(client, project, rec.gid, 0, key="plone"), 409,
                       "Conflict")
    assert len(job_tokens()) == 3


def test_one_batch_with_a_key_three_times_queues_one_job(project: SeededProject) -> None:
    """Requests of one batch under one key: the first queues the job, a repeat of it is
    answered the same token, one asking for something else 422."""
    user = make_user(ops=True)
    submission = Submission(project.gid, "bulk_delete_records",
                            {"selection": [project.heads[0]]}, {"type": "user", "id": user})
    claims = Claims(user=user, ops=True, exp=4e9)
    first, again, other = process([
        Ask(submission, claims, project.gid, Idempotency(KEY, "f" * 64)),
        Ask(submission, claims, project.gid, Idempotency(KEY, "f" * 64)),
        Ask(submission, claims, project.gid, Idempotency(KEY, "e" * 64))])
    assert first.error is None and first.token is not None
    assert again.error is None and again.token == first.token
    assert isinstance(other.error, Unprocessable)
    assert job_tokens() == [first.token]


def test_an_abandoned_reservation_is_taken_over_and_its_request_writes_no_job(
        project: SeededProject, seeded: SeedResult) -> None:
    """A reservation still without a job after ABANDONED_AFTER is taken over by a retry;
    should its own request come back to queue, it writes no job (409): one job per key."""
    from bulkjobs.connections import get_synclog

    key = Key("user-1", project.gid, KEY, "f" * 64)
    now = time.time()
    [old] = reserve(get_engine(), [key], now=now - idempotency.ABANDONED_AFTER - 1)
    [new] = reserve(get_engine(), [key], now=now)
    assert isinstance(old, Reservation) and isinstance(new, Reservation)

    def submission(r: Reservation) -> Submission:
        return Submission(project.gid, "bulk_delete_records", {"selection": []},
                          {"type": "user", "id": "user-1"}, r)

    [lost] = submit_each([submission(old)], log=get_synclog(), enqueue=lambda tokens: None)
    assert isinstance(lost, Conflict) and job_tokens() == []
    [token] = submit_each([submission(new)], log=get_synclog(), enqueue=lambda tokens: None)
    assert job_tokens() == [token] and key_rows()[0].job_token == token


# -- keys are per user and project, and last 24 hours --------------------------------------


def test_keys_are_per_user_and_project(client: TestClient, seeded: SeedResult) -> None:
    """One key used by another user of the project, and in another project, queues jobs of
    their own."""
    a, b = seeded.projects
    other = issue(make_user(ops=True), ops=True)
    answers = [unicat(client, a, "schema/bulk/commit", {"selection": []}),
               unicat(client, a, "schema/bulk/commit", {"selection": []}, jwt=other),
               unicat(client, b, "schema/bulk/commit", {"selection": []})]
    tokens = {r.json()["result"]["job.token"] for r in answers}
    assert len(tokens) == 3 and set(job_tokens()) == tokens
    assert len(key_rows()) == 3


def test_an_expired_key_queues_a_new_job(client: TestClient, project: SeededProject) -> None:
    """A key older than 24 hours is forgotten: the same request under it queues a new job,
    which the key names from then on."""
    body = {"selection": [project.heads[0]]}
    first = unicat(client, project, "records/bulk/delete", body).json()["result"]["job.token"]
    set_keys(created_on=time.time() - idempotency.TTL - 1)
    again = unicat(client, project, "records/bulk/delete", body).json()["result"]["job.token"]
    assert again != first and sorted(job_tokens()) == sorted([first, again])
    [row] = key_rows()
    assert row.job_token == again


def test_a_failed_queueing_gives_the_key_back(client: TestClient, project: SeededProject,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A request whose job could not be written (the database failing) leaves no key
    behind: the client's retry under the same key queues the job."""
    real = worker.submit.get_write_engine

    def broken() -> Any:
        raise OperationalError("BEGIN", {}, Exception("database away"))

    monkeypatch.setattr(worker.submit, "get_write_engine", broken)
    body = {"selection": [project.heads[0]]}
    assert_unicat_error(unicat(client, project, "records/bulk/delete", body), 503)
    assert key_rows() == [] and job_tokens() == []
    monkeypatch.setattr(worker.submit, "get_write_engine", real)
    r = unicat(client, project, "records/bulk/delete", body)
    assert r.status_code == 200, r.text
    assert job_tokens() == [r.json()["result"]["job.token"]]


# -- bad keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "   ", '""', "k" * 256, "tab\tinside"])
def test_a_bad_key_is_400_in_every_dialect(client: TestClient, project: SeededProject,
                                           key: str) -> None:
    """An empty, over-long (256 characters) or unprintable key is refused with 400 in the
    dialect's envelope; nothing is queued and no key kept."""
    rec = history_record(project)
    assert_unicat_error(unicat(client, project, "records/bulk/delete",
                               {"selection": [project.heads[0]]}, key=key), 400)
    assert_unicat_error(unicat(client, project, "schema/bulk/copy", {"selection": []},
                               key=key), 400)
    assert_dato_error(dato_restore(client, project, version_ids(rec.id)[0], key=key), 400,
                      "INVALID_PARAMS")
    assert_plone_error(plone_revert(client, project, rec.gid, 0, key=key), 400, "BadRequest")
    assert job_tokens() == [] and key_rows() == []


def test_a_key_of_255_characters_and_a_quoted_key_are_taken(client: TestClient,
                                                            project: SeededProject) -> None:
    """The longest key (255 characters) is taken; a key sent as a Structured Field string
    (``"…"``) is the same key as its bare text."""
    body = {"selection": [project.heads[0]]}
    assert unicat(client, project, "records/bulk/delete", body,
                  key="k" * 255).status_code == 200
    bare = unicat(client, project, "records/bulk/undelete", body, key="abc").json()
    quoted = unicat(client, project, "records/bulk/undelete", body, key='"abc"').json()
    assert bare == quoted and len(job_tokens()) == 2


# -- expiry ------------------------------------------------------------------------------------


def test_the_expiry_task_deletes_keys_older_than_24_hours(services: Any) -> None:
    """The hourly expiry task deletes every key older than 24 hours (over several slices)
    and keeps the younger ones."""
    now = time.time()
    with get_write_engine().begin() as conn:
        conn.execute(keys.insert(), [
            {"user_gid": "u", "project_gid": "p", "key": f"old-{i}", "fingerprint": "f",
             "job_token": None, "created_on": now - idempotency.TTL - 10 - i}
            for i in range(50)] + [
            {"user_gid": "u", "project_gid": "p", "key": "young", "fingerprint": "f",
             "job_token": "t", "created_on": now - idempotency.TTL + 600}])
    expire_jobs()
    with get_engine().connect() as conn:
        assert list(conn.execute(select(keys.c.key)).scalars()) == ["young"]
        assert conn.execute(select(func.count()).select_from(keys)).scalar_one() == 1
