"""``webhooks/create|list|delete``: owners only, secrets never listed back, URLs checked."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from bulkjobs.tokens import issue
from models.engine import get_engine, get_write_engine
from models.seed import SeedResult
from models.webhook_deliveries import attempts, deliveries
from models.webhooks import MAX_PER_PROJECT, Webhook, check_url
from tests.api.test_unicat import auth, post

PUBLIC_URL = "https://93.184.215.14/hooks/jobs"  # an IP literal: no DNS needed
SECRET = "s3cret-s3cret-s3cret"


def hooks_count() -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Webhook)).scalar_one())


def user_gid(seeded: SeedResult, base: str) -> str:
    return next(u.gid for u in seeded.users if u.username.startswith(base))


def create(client: TestClient, project: str, jwt: str, **body: object):  # type: ignore[no-untyped-def]
    return post(client, f"/api/p/{project}/webhooks/create", jwt,
                {"url": PUBLIC_URL, "events": ["job.done"], "secret": SECRET, **body})


def test_an_owner_creates_lists_and_deletes_a_webhook(client: TestClient, seeded: SeedResult):
    """The owner's webhook is listed with its URL and events but never its secret, and is
    gone after delete."""
    project, jwt = auth(client, seeded)  # the API key is the owner's
    r = create(client, project, jwt, events=["job.rejected", "job.done", "job.done"])
    assert r.status_code == 200, r.text
    made = r.json()["result"]["webhook"]
    assert made["url"] == PUBLIC_URL and made["events"] == ["job.done", "job.rejected"]
    listed = post(client, f"/api/p/{project}/webhooks/list", jwt).json()["result"]["webhooks"]
    assert [h["gid"] for h in listed] == [made["gid"]]
    assert SECRET not in r.text and all("secret" not in h for h in listed)
    r = post(client, f"/api/p/{project}/webhooks/delete", jwt, {"webhook": made["gid"]})
    assert r.status_code == 200, r.text
    assert post(client, f"/api/p/{project}/webhooks/list", jwt).json()["result"]["webhooks"] == []
    assert hooks_count() == 0


def test_a_plain_member_gets_403_and_nothing_is_made(client: TestClient, seeded: SeedResult):
    """Members without the owner role may neither create nor list webhooks."""
    project = seeded.projects[0].gid
    jwt = issue(user_gid(seeded, "member"))
    r = create(client, project, jwt)
    assert r.status_code == 403, r.text
    assert r.json()["success"] is False
    assert post(client, f"/api/p/{project}/webhooks/list", jwt).status_code == 403
    assert hooks_count() == 0


def test_another_projects_webhook_cannot_be_deleted(client: TestClient, seeded: SeedResult):
    """A webhook is deleted only through its own project: 404 elsewhere, and it stays."""
    project, jwt = auth(client, seeded)
    made = create(client, project, jwt).json()["result"]["webhook"]
    other, other_jwt = auth(client, seeded, 1)
    r = post(client, f"/api/p/{other}/webhooks/delete", other_jwt, {"webhook": made["gid"]})
    assert r.status_code == 404, r.text
    assert hooks_count() == 1


@pytest.mark.parametrize("body, reason", [
    ({"url": "ftp://93.184.215.14/x"}, "http or https"),
    ({"url": "http://127.0.0.1:8000/x"}, "private, loopback or link-local"),
    ({"url": "http://10.1.2.3/x"}, "private, loopback or link-local"),
    ({"url": "http://169.254.169.254/latest/meta-data"}, "private, loopback or link-local"),
    ({"url": "http://[::1]/x"}, "private, loopback or link-local"),
    ({"url": "http://[::ffff:127.0.0.1]/x"}, "private, loopback or link-local"),
    ({"url": "http://user:pw@93.184.215.14/x"}, "credentials"),
    ({"url": "http:///x"}, "no host"),
    ({"events": []}, "at least one event"),
    ({"events": ["job.queued"]}, "Unknown webhook event"),
    ({"secret": "short"}, "secret"),
])
def test_bad_webhooks_are_422_and_nothing_is_made(client: TestClient, seeded: SeedResult,
                                                  body: dict[str, object], reason: str):
    """A URL the workers must not call, no or unknown events, or a short secret: 422 in the
    Unicat envelope with the reason; nothing stored."""
    project, jwt = auth(client, seeded)
    r = create(client, project, jwt, **body)
    assert r.status_code == 422, r.text
    assert reason in r.json()["result"]["message"]
    assert hooks_count() == 0


def test_a_project_has_a_bounded_number_of_webhooks(client: TestClient, seeded: SeedResult):
    """Past MAX_PER_PROJECT webhooks, create answers 422."""
    project, jwt = auth(client, seeded)
    for _ in range(MAX_PER_PROJECT):
        assert create(client, project, jwt).status_code == 200
    r = create(client, project, jwt)
    assert r.status_code == 422 and "at most" in r.json()["result"]["message"]
    assert hooks_count() == MAX_PER_PROJECT


def test_a_name_is_checked_by_every_address_it_resolves_to() -> None:
    """A host name with one private address among public ones is refused; allowed with
    WEBHOOKS_ALLOW_PRIVATE."""
    def resolver(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "192.168.1.5"]

    with pytest.raises(Exception, match="private"):
        check_url("https://hooks.example/x", allow_private=False, resolver=resolver)
    check_url("https://hooks.example/x", allow_private=True, resolver=resolver)


def test_deliveries_are_paged_newest_first_with_their_attempts(client: TestClient,
                                                               seeded: SeedResult):
    """``webhooks/deliveries`` pages a webhook's deliveries newest first with their attempts;
    another project's owner gets 404 for it, a bad cursor 400."""
    project, jwt = auth(client, seeded)
    gid = create(client, project, jwt).json()["result"]["webhook"]["gid"]
    now = time.time()
    with get_write_engine().begin() as conn:
        for i in range(3):
            [did] = conn.execute(deliveries.insert().returning(deliveries.c.id), [{
                "delivery": f"d{i}", "webhook_gid": gid, "project_gid": project,
                "job_token": f"t{i}", "event": "job.done", "body": "{}", "status": "pending",
                "attempts": 1, "next_attempt_on": now + 10, "created_on": now}]).scalars()
            conn.execute(attempts.insert().values(delivery_id=did, started_on=now,
                                                  duration_ms=12.5, status_code=500))
    seen, cursor = [], None
    while True:
        r = post(client, f"/api/p/{project}/webhooks/deliveries", jwt,
                 {"webhook": gid, "page.size": 2, **({"page.cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        seen += result["deliveries"]
        cursor = result["page.cursor"]
        if cursor is None:
            break
    assert [d["delivery"] for d in seen] == ["d2", "d1", "d0"]
    assert seen[0]["attempts"] == [{"started_on": now, "duration_ms": 12.5,
                                    "status_code": 500, "error": None}]
    assert seen[0]["status"] == "pending" and seen[0]["next_attempt_on"] == now + 10
    other, other_jwt = auth(client, seeded, 1)
    r = post(client, f"/api/p/{other}/webhooks/deliveries", other_jwt, {"webhook": gid})
    assert r.status_code == 404, r.text
    r = post(client, f"/api/p/{project}/webhooks/deliveries", jwt,
             {"webhook": gid, "page.cursor": "not-a-cursor"})
    assert r.status_code == 400, r.text


def test_a_webhook_is_created_after_another_writer_committed_since_the_sessions_read(
        seeded: SeedResult) -> None:
    """A request's session reads (its authorisation) before its route writes, and a job's
    batch may commit in between: the webhook is still created (on SQLite a transaction begun
    as a reader cannot take the write lock after that, "database is locked" at once)."""
    from sqlalchemy import insert
    from sqlmodel import Session

    from models.webhooks import create
    project, other = (p.gid for p in seeded.projects)
    before = hooks_count()
    with Session(get_engine(), expire_on_commit=False) as session:  # as the API's
        session.execute(select(func.count()).select_from(Webhook)).scalar_one()
        with get_write_engine().begin() as conn:  # another writer commits meanwhile
            conn.execute(insert(Webhook.__table__).values(
                gid="another-writers-hook", project_gid=other, url="https://93.184.215.14/o",
                events=["job.done"], secret="0123456789abcdef-secret", created_by="u",
                created_on=time.time()))
        hook = create(session, project_gid=project, url="https://93.184.215.14/a",
                      events=["job.done"], secret="0123456789abcdef-secret", user_gid="u",
                      allow_private=True)
    assert hook.project_gid == project and hooks_count() == before + 2
