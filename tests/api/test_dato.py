"""The DatoCMS dialect over HTTP (in-process ASGI client, real database and Redis): JSON:API
shapes of items and versions, paging, restore as an asynchronous job with job results, and
every error code in the ``api_error`` envelope."""

from __future__ import annotations

import base64
import re
import time
from typing import Any

import jwt as pyjwt
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import exists, select

import api.dato.routes
from api.dato import envelope
from bulkjobs.errors import SelectionError, ValidationError
from bulkjobs.settings import get_settings
from bulkjobs.tokens import issue
from models import Job, Record, RecordDeletion, WorkflowEntry
from models.engine import get_engine
from models.seed import SeededProject, SeedResult
from tests.api.dialects import (
    add_versions,
    bearer,
    history_record,
    jwt_of,
    run_job,
    stranger,
    versions_of,
)
from tests.api.pool import holding_at

pytestmark = pytest.mark.services

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def base(project: SeededProject) -> str:
    return f"/dato/p/{project.gid}"


def get(client: TestClient, project: SeededProject, path: str, token: str | None = None,
        **params: Any) -> Any:
    return client.get(base(project) + path, params=params,
                      headers=bearer(token or project.api_key))


def assert_api_error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert list(body) == ["data"] and len(body["data"]) == 1
    error = body["data"][0]
    assert error["type"] == "api_error" and isinstance(error["id"], str)
    assert error["attributes"]["code"] == code
    assert isinstance(error["attributes"]["details"], dict)
    return dict(error["attributes"])


def test_item_is_a_json_api_item(client: TestClient, project: SeededProject) -> None:
    """An item carries its first-language fields and title, its model, and meta with ISO
    times, status and the current version's id."""
    rec = history_record(project)
    r = get(client, project, f"/items/{rec.gid}")
    assert r.status_code == 200, r.text
    item = r.json()["data"]
    assert (item["id"], item["type"]) == (rec.gid, "item")
    assert item["attributes"] == {**rec.fields["en"], "title": rec.title["en"]}
    assert item["relationships"]["item_type"]["data"] == {"type": "item_type",
                                                          "id": rec.definition}
    meta = item["meta"]
    assert ISO.match(meta["created_at"]) and ISO.match(meta["updated_at"])
    current = versions_of(rec.id)[-1]
    assert meta["current_version"] == current.id
    # DatoCMS: "published" when the current version is the published one, "updated" when
    # the record changed since it was published
    expected = ("draft" if rec.status == "draft"
                else "published" if current.is_published else "updated")
    assert meta["status"] == expected


#: The keys of an item's ``meta`` in DatoCMS's own example (the item seed), in its order.
ITEM_META_KEYS = ["created_at", "updated_at", "published_at", "first_published_at",
                  "publication_scheduled_at", "unpublishing_scheduled_at", "status",
                  "is_current_version_valid", "is_published_version_valid", "current_version",
                  "stage"]


def iso(ts: float) -> str:
    return envelope.iso_utc(ts)


def publish_times(record_id: int) -> list[float]:
    with get_engine().connect() as conn:
        return [t for (t,) in conn.execute(
            select(WorkflowEntry.time).where(WorkflowEntry.record_id == record_id,
                                             WorkflowEntry.action == "publish")
            .order_by(WorkflowEntry.id))]


def test_item_meta_has_every_key_of_datocms(client: TestClient, project: SeededProject) -> None:
    """An item's meta has the keys of DatoCMS's item, in its order; scheduling and stage are
    null (no such thing here) and the current version is valid."""
    rec = history_record(project)
    meta = get(client, project, f"/items/{rec.gid}").json()["data"]["meta"]
    assert list(meta) == ITEM_META_KEYS
    assert meta["publication_scheduled_at"] is None
    assert meta["unpublishing_scheduled_at"] is None
    assert meta["stage"] is None
    assert meta["is_current_version_valid"] is True


def test_seeded_item_meta_publication(client: TestClient, project: SeededProject) -> None:
    """A seeded published record (no publish entry) was published when its published version
    was written; a seeded draft was never published and has no published version."""
    with get_engine().connect() as conn:
        rows = {status: conn.execute(select(Record.__table__).where(
            Record.project_gid == project.gid, Record.status == status,
            ~exists().where(RecordDeletion.record_id == Record.id))
            .order_by(Record.id).limit(1)).one() for status in ("published", "draft")}
    published = versions_of(rows["published"].id)
    [version] = [v for v in published if v.is_published]
    meta = get(client, project, f"/items/{rows['published'].gid}").json()["data"]["meta"]
    assert meta["published_at"] == meta["first_published_at"] == iso(version.created_at)
    assert meta["is_published_version_valid"] is True
    draft = get(client, project, f"/items/{rows['draft'].gid}").json()["data"]["meta"]
    assert draft["status"] == "draft"
    assert draft["published_at"] is None and draft["first_published_at"] is None
    assert draft["is_published_version_valid"] is None


def test_item_meta_follows_publish_and_unpublish(client: TestClient,
                                                 project: SeededProject) -> None:
    """published_at is the last publication while published, null once unpublished;
    first_published_at keeps the first one; an edit leaves both (status "updated")."""
    with get_engine().connect() as conn:
        rec = conn.execute(select(Record.__table__).where(
            Record.project_gid == project.gid, Record.status == "draft",
            ~exists().where(RecordDeletion.record_id == Record.id),
            Record.parent_id.is_not(None)).order_by(Record.id).limit(1)).one()
    jwt = jwt_of(client, project)

    def unicat(action: str, **body: Any) -> None:
        r = client.post(f"/api/p/{project.gid}/records/{action}",
                        json={"record": rec.gid, **body}, headers={"Authorization": jwt})
        assert r.status_code == 200, r.text

    def meta() -> dict[str, Any]:
        return dict(get(client, project, f"/items/{rec.gid}").json()["data"]["meta"])

    unicat("publish")
    [first] = publish_times(rec.id)
    assert meta()["published_at"] == meta()["first_published_at"] == iso(first)
    assert meta()["status"] == "published" and meta()["is_published_version_valid"] is True
    unicat("update", title={"en": "Edited after publishing"})
    edited = meta()
    assert edited["status"] == "updated"
    assert edited["published_at"] == edited["first_published_at"] == iso(first)
    unicat("unpublish")
    gone = meta()
    assert gone["status"] == "draft" and gone["published_at"] is None
    assert gone["first_published_at"] == iso(first)
    assert gone["is_published_version_valid"] is None
    time.sleep(0.002)  # a later publication, in milliseconds too
    unicat("publish")
    again = meta()
    last = publish_times(rec.id)[-1]
    assert last > first
    assert (again["published_at"], again["first_published_at"]) == (iso(last), iso(first))


def test_jwt_works_as_well_as_the_api_key(client: TestClient, project: SeededProject) -> None:
    """A JWT from the Unicat auth endpoint is accepted as the bearer token too."""
    rec = history_record(project)
    r = get(client, project, f"/items/{rec.gid}", jwt_of(client, project))
    assert r.status_code == 200 and r.json()["data"]["id"] == rec.gid


def test_versions_are_newest_first_with_their_shape(client: TestClient,
                                                    project: SeededProject) -> None:
    """The version list is newest first; each version has a 22-character URL-safe base64 id,
    the snapshot's content, meta and its item, model and editor."""
    rec = history_record(project)
    stored = versions_of(rec.id)
    r = get(client, project, f"/items/{rec.gid}/versions")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["meta"] == {"total_count": 3}
    assert [v["id"] for v in body["data"]] == [v.id for v in reversed(stored)]
    first = body["data"][-1]
    assert len(first["id"]) == 22 and len(base64.urlsafe_b64decode(first["id"] + "==")) == 16
    assert first["type"] == "item_version"
    assert first["attributes"] == {**stored[0].snapshot["fields"]["en"],
                                   "title": stored[0].snapshot["title"]["en"]}
    assert ISO.match(first["meta"]["created_at"])
    assert first["meta"]["is_current"] is False and body["data"][0]["meta"]["is_current"]
    assert first["relationships"] == {
        "item": {"data": {"type": "item", "id": rec.gid}},
        "item_type": {"data": {"type": "item_type", "id": stored[0].snapshot["definition"]}},
        "editor": {"data": {"type": "user", "id": "seed"}},
    }
    one = get(client, project, f"/versions/{first['id']}")
    assert one.status_code == 200 and one.json() == {"data": first}


def test_versions_page_with_offset_and_limit(client: TestClient, project: SeededProject) -> None:
    """``page[limit]`` defaults to 15 and may be up to 50; ``page[offset]`` skips the newest."""
    rec = history_record(project)
    add_versions(rec.id, 17)  # 20 in all
    ids = [v.id for v in reversed(versions_of(rec.id))]
    default = get(client, project, f"/items/{rec.gid}/versions").json()
    assert [v["id"] for v in default["data"]] == ids[:15]
    assert default["meta"]["total_count"] == 20
    page = get(client, project, f"/items/{rec.gid}/versions",
               **{"page[offset]": 15, "page[limit]": 50}).json()
    assert [v["id"] for v in page["data"]] == ids[15:]
    middle = get(client, project, f"/items/{rec.gid}/versions",
                 **{"page[offset]": 3, "page[limit]": 2}).json()
    assert [v["id"] for v in middle["data"]] == ids[3:5]
    past = get(client, project, f"/items/{rec.gid}/versions", **{"page[offset]": 100}).json()
    assert past["data"] == [] and past["meta"]["total_count"] == 20


@pytest.mark.parametrize("params", [{"page[limit]": 51}, {"page[limit]": 0},
                                    {"page[offset]": -1}, {"page[limit]": "many"}])
def test_bad_paging_is_invalid_params(client: TestClient, project: SeededProject,
                                      params: dict[str, Any]) -> None:
    """Paging out of bounds answers 400 ``INVALID_PARAMS``."""
    rec = history_record(project)
    assert_api_error(get(client, project, f"/items/{rec.gid}/versions", **params), 400,
                     "INVALID_PARAMS")


def test_restore_is_a_job_whose_result_is_404_then_the_item(client: TestClient,
                                                            project: SeededProject) -> None:
    """Restore answers 202 with a job id; its job result is 404 while the job has not run,
    then 200 with status 200 and the restored item; the record has a new current version
    with the old content."""
    rec = history_record(project)
    old = versions_of(rec.id)
    r = client.post(f"{base(project)}/versions/{old[0].id}/restore",
                    headers=bearer(project.api_key))
    assert r.status_code == 202, r.text
    data = r.json()["data"]
    assert data["type"] == "job" and list(r.json()) == ["data"]
    token = data["id"]
    pending = get(client, project, f"/job-results/{token}")
    assert_api_error(pending, 404, "NOT_FOUND")
    assert run_job(token).status == "done"
    done = get(client, project, f"/job-results/{token}")
    assert done.status_code == 200, done.text
    result = done.json()["data"]
    assert (result["type"], result["id"]) == ("job_result", token)
    assert result["attributes"]["status"] == 200
    [item] = result["attributes"]["payload"]["data"]
    now = versions_of(rec.id)
    assert len(now) == 4 and now[-1].is_current
    assert item["id"] == rec.gid and item["type"] == "item"
    assert item["attributes"]["title"] == old[0].snapshot["title"]["en"]
    assert item["meta"]["current_version"] == now[-1].id
    listed = get(client, project, f"/items/{rec.gid}/versions").json()["data"]
    assert listed[0]["id"] == now[-1].id
    assert listed[0]["attributes"] == listed[-1]["attributes"]
    fresh = get(client, project, f"/items/{rec.gid}").json()["data"]
    assert fresh["attributes"]["title"] == old[0].snapshot["title"]["en"]


def test_restore_queues_its_job_without_holding_a_database_connection(
        client: TestClient, project: SeededProject, monkeypatch: pytest.MonkeyPatch) -> None:
    """The request hands its session's connection back before it queues the job
    (:mod:`tests.api.pool`)."""
    rec = history_record(project)
    with holding_at(monkeypatch, api.dato.routes, "queue_job") as held:
        r = client.post(f"{base(project)}/versions/{versions_of(rec.id)[0].id}/restore",
                        headers=bearer(project.api_key))
    assert r.status_code == 202, r.text
    assert held == [False]


def test_failed_restore_reports_its_error_inside_the_result(client: TestClient,
                                                            project: SeededProject) -> None:
    """A restore whose record was deleted before the job ran ends with a 200 job result whose
    attributes carry the error status and an api_error body."""
    rec = history_record(project)
    vid = versions_of(rec.id)[0].id
    token = client.post(f"{base(project)}/versions/{vid}/restore",
                        headers=bearer(project.api_key)).json()["data"]["id"]
    jwt = jwt_of(client, project)
    gone = client.post(f"/api/p/{project.gid}/records/delete", json={"record": rec.gid},
                       headers={"Authorization": f"Bearer {jwt}"})
    assert gone.status_code == 200, gone.text
    assert run_job(token).status == "rejected"
    r = get(client, project, f"/job-results/{token}")
    assert r.status_code == 200, r.text
    attributes = r.json()["data"]["attributes"]
    assert attributes["status"] == 422
    [error] = attributes["payload"]["data"]
    assert error["type"] == "api_error" and error["attributes"]["code"] == "INVALID_REQUEST"
    assert error["attributes"]["details"] == {"message": "The record is deleted",
                                              "record": rec.gid}


def test_job_results_of_unknown_or_foreign_jobs_are_404(client: TestClient,
                                                        seeded: SeedResult) -> None:
    """A job of another project is as unknown as a made-up token."""
    a, b = seeded.projects
    rec = history_record(a)
    vid = versions_of(rec.id)[0].id
    token = client.post(f"{base(a)}/versions/{vid}/restore",
                        headers=bearer(a.api_key)).json()["data"]["id"]
    run_job(token)
    assert get(client, a, f"/job-results/{token}").status_code == 200
    assert_api_error(get(client, b, f"/job-results/{token}"), 404, "NOT_FOUND")
    assert_api_error(get(client, a, "/job-results/nope"), 404, "NOT_FOUND")


def test_unknown_foreign_and_deleted_things_are_not_found(client: TestClient,
                                                          seeded: SeedResult) -> None:
    """Unknown items and versions, another project's, and deleted records answer 404
    ``NOT_FOUND`` — restore included, and nothing is queued."""
    a, b = seeded.projects
    rec_b = history_record(b)
    vid_b = versions_of(rec_b.id)[0].id
    for path in (f"/items/{rec_b.gid}", f"/items/{rec_b.gid}/versions", f"/versions/{vid_b}",
                 "/items/unknown", "/versions/AAAAAAAAAAAAAAAAAAAAAA", "/no/such/route"):
        assert_api_error(get(client, a, path), 404, "NOT_FOUND")
    r = client.post(f"{base(a)}/versions/{vid_b}/restore", headers=bearer(a.api_key))
    assert_api_error(r, 404, "NOT_FOUND")
    deleted = next(h for h in a.heads if get(client, a, f"/items/{h}").status_code == 404)
    assert deleted


@pytest.mark.parametrize("version_id", ["2147483648", "9223372036854775808", "9" * 40])
def test_number_like_version_ids_are_not_found(client: TestClient, project: SeededProject,
                                               version_id: str) -> None:
    """A version id that is a number too large for any integer column is an unknown version:
    404 ``NOT_FOUND`` on read and on restore (never a database error); nothing is queued."""
    assert_api_error(get(client, project, f"/versions/{version_id}"), 404, "NOT_FOUND")
    r = client.post(f"{base(project)}/versions/{version_id}/restore",
                    headers=bearer(project.api_key))
    assert_api_error(r, 404, "NOT_FOUND")
    with get_engine().connect() as conn:
        assert list(conn.execute(select(Job.__table__))) == []


def _forged(user: str) -> dict[str, str]:
    now = int(time.time())
    payload = {"sub": user, "iat": now, "exp": now + 600}
    return {
        "wrong secret": pyjwt.encode(payload, "not-the-secret", algorithm="HS256"),
        "expired": pyjwt.encode({**payload, "exp": now - 10},
                                get_settings().effective_jwt_secret, algorithm="HS256"),
        "alg none": pyjwt.encode(payload, None, algorithm="none"),  # type: ignore[arg-type]
        "wrong api key": "not-a-key",
    }


@pytest.mark.parametrize("kind", ["missing", "wrong secret", "expired", "alg none",
                                  "wrong api key", "other project's key"])
def test_bad_credentials_are_invalid_authorization_header(
    client: TestClient, seeded: SeedResult, kind: str
) -> None:
    """Missing, forged, expired and alg-none tokens and wrong API keys (another project's
    included) answer 401 ``INVALID_AUTHORIZATION_HEADER``."""
    a, b = seeded.projects
    rec = history_record(a)
    if kind == "missing":
        headers: dict[str, str] = {}
    elif kind == "other project's key":
        headers = bearer(b.api_key)
    else:
        headers = bearer(_forged(seeded.users[0].gid)[kind])
    r = client.get(f"{base(a)}/items/{rec.gid}", headers=headers)
    assert_api_error(r, 401, "INVALID_AUTHORIZATION_HEADER")


def test_non_member_is_insufficient_permissions(client: TestClient,
                                                project: SeededProject) -> None:
    """A valid JWT of a user who is not a member answers 403 ``INSUFFICIENT_PERMISSIONS``."""
    rec = history_record(project)
    r = get(client, project, f"/items/{rec.gid}", issue(stranger()))
    assert_api_error(r, 403, "INSUFFICIENT_PERMISSIONS")


def test_wrong_method_and_oversized_body(client: TestClient, project: SeededProject) -> None:
    """A method a route does not take is 405 ``INVALID_ENDPOINT``; a body over 10 MB is 413
    ``INVALID_REQUEST``."""
    rec = history_record(project)
    vid = versions_of(rec.id)[0].id
    r = client.delete(f"{base(project)}/versions/{vid}", headers=bearer(project.api_key))
    assert_api_error(r, 405, "INVALID_ENDPOINT")
    big = client.post(f"{base(project)}/versions/{vid}/restore", content=b"x" * (10 * 2**20 + 1),
                      headers={**bearer(project.api_key), "Content-Type": "application/json"})
    assert_api_error(big, 413, "INVALID_REQUEST")


def test_unavailable_redis_is_transient_and_crashes_are_exceptions(
    client: TestClient, project: SeededProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis failing while a restore is queued answers 503 ``SERVICE_UNAVAILABLE`` with
    ``transient: true`` (the client retries); an unexpected error is 500 ``EXCEPTION``."""
    rec = history_record(project)
    vid = versions_of(rec.id)[0].id

    def down(*_: Any, **__: Any) -> str:
        raise redis.ConnectionError("down")

    monkeypatch.setattr(api.dato.routes, "queue_job", down)
    r = client.post(f"{base(project)}/versions/{vid}/restore", headers=bearer(project.api_key))
    attributes = assert_api_error(r, 503, "SERVICE_UNAVAILABLE")
    assert attributes["transient"] is True

    def crash(*_: Any, **__: Any) -> str:
        raise RuntimeError("boom")

    monkeypatch.setattr(api.dato.routes, "queue_job", crash)
    r = client.post(f"{base(project)}/versions/{vid}/restore", headers=bearer(project.api_key))
    attributes = assert_api_error(r, 500, "EXCEPTION")
    assert "transient" not in attributes


@pytest.mark.parametrize(("exc", "code"), [
    (SelectionError("bad", entry=0), "INVALID_FIELD"),
    (ValidationError("bad field"), "INVALID_FIELD"),
])
def test_application_errors_map_to_invalid_field(exc: Exception, code: str) -> None:
    """Application errors 1000–1006 render as 422 ``INVALID_FIELD`` with their info."""
    r = envelope.error_response(exc)  # type: ignore[arg-type]
    assert r.status_code == 422
    import json

    body = json.loads(bytes(r.body))
    assert body["data"][0]["attributes"]["code"] == code
    assert body["data"][0]["attributes"]["details"]["message"] == str(exc)


def test_x_api_version_is_accepted(client: TestClient, project: SeededProject) -> None:
    """Any ``X-Api-Version`` is accepted (version 3 is served)."""
    rec = history_record(project)
    for version in ("3", "2", "anything"):
        r = client.get(f"{base(project)}/items/{rec.gid}",
                       headers={"Authorization": f"Bearer {project.api_key}",
                                "X-Api-Version": version})
        assert r.status_code == 200
