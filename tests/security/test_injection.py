"""Injection through the HTTP API: SQL fragments (and NUL bytes, lone surrogates, edge
numbers, absurd nesting) in ``q``, ``filter`` operands, gids, selections, job tokens and
``page.cursor`` values change nothing in the database — every content table has the same rows
and checksum after as before, even once the jobs they queued have run — and every answer is
a clean one: success, or a 4xx error in the dialect's envelope; never a 5xx."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from models.seed import SeedResult
from tests.models.adversarial import SQL_FRAGMENTS
from tests.security.conftest import checksum, finish, jwt_of

#: What goes where a string belongs: SQL, and values databases choke on.
HOSTILE = [*SQL_FRAGMENTS, "a\x00b", "\ud800", "\U0010ffff", "x" * 65, "", " "]

#: What goes where a number or anything else belongs.
ODD_VALUES: list[Any] = [float("nan"), float("inf"), -float("inf"), 10**30, -(2**63) - 1,
                         2**64, 1e308, True, None, [], {}, [[[[["deep"]]]]], {"$ne": 1}]

CLEAN = {200, 400, 401, 403, 404, 409, 413, 422}


def b64(data: Any) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


#: ``page.cursor`` values: SQL, garbage base64, and well-formed base64 of hostile JSON.
CURSORS = [*SQL_FRAGMENTS, "!!!!", "=" * 10, b64(b"\xff\xfe"), b64("[" * 60),
           b64(["get-x", 10**30, 1]), b64(["get-x", -1, -1]), b64(["get-'; DROP", 0, 0]),
           b64([1e308, "'; DROP TABLE job; --"]), b64([float("nan"), "x"]), b64(["x"] * 3),
           b64({"a": 1}), b64(None), b64(9 * 10**70), b64([9 * 10**70, "x"])]


def json_of(value: Any) -> bytes:
    """JSON text as a hostile client sends it: NaN and Infinity allowed, lone surrogates
    escaped as ``\\udXXX`` (which the server's JSON parser turns back into them)."""
    return json.dumps(value, allow_nan=True).encode()


class Attack:
    """Sends hostile requests as a legitimate member of project A and checks every answer."""

    def __init__(self, client: TestClient, seeded: SeedResult) -> None:
        self.client, self.seeded = client, seeded
        self.jwt = jwt_of(seeded)
        self.base = f"/api/p/{seeded.projects[0].gid}"
        self.tokens: list[str] = []
        self.answers = 0

    def post(self, endpoint: str, body: Any) -> Any:
        path = endpoint if endpoint.startswith("/") else f"{self.base}/{endpoint}"
        r = self.client.post(path, content=json_of(body), headers={
            "Authorization": f"Bearer {self.jwt}", "Content-Type": "application/json"})
        self.answers += 1
        assert r.status_code in CLEAN, (endpoint, body, r.status_code, r.text[:300])
        answer = r.json()
        assert isinstance(answer, dict)
        if path.startswith(("/api/", "/sync/")):
            assert answer["success"] is (r.status_code == 200), answer
            if r.status_code != 200:
                assert answer["result"]["code"] in (400, 403, 404, 413, 422, 1006), answer
        if r.status_code == 200 and "job.token" in answer.get("result", {}):
            self.tokens.append(answer["result"]["job.token"])
        return r

    def run_queued_jobs(self) -> list[dict[str, Any]]:
        """Run every job the attack queued since the last call, in-process; their final
        ``info``."""
        tokens, self.tokens = self.tokens, []
        return [finish(token)["info"] for token in tokens]


@pytest.fixture
def attack(client: TestClient, seeded: SeedResult) -> Attack:
    return Attack(client, seeded)


def _unchanged(test: Callable[[Attack], None]) -> Callable[[Attack], None]:
    """Run ``test``, its queued jobs too, and assert every content table is unchanged."""
    def wrapped(attack: Attack) -> None:
        before = checksum()
        test(attack)
        attack.run_queued_jobs()
        assert checksum() == before
        assert attack.answers > 0
    wrapped.__doc__, wrapped.__name__ = test.__doc__, test.__name__
    return wrapped


@_unchanged
def test_q_with_sql_fragments(attack: Attack) -> None:
    """SQL and FTS syntax in `q` of searches and of bulk-job search entries is plain words."""
    for q in HOSTILE:
        attack.post("records/search", {"language": "en", "q": q})
        attack.post("schema/search", {"language": "en", "q": q})
        attack.post("records/bulk/get", {"selection": [{"search": {"language": "en", "q": q}}]})
        # A job over a search that can only match nothing, whatever q holds.
        attack.post("records/bulk/delete", {"selection": [{"search": {
            "language": "en", "q": q, "filter": ["parent", "is", "no-such-record"]}}]})


@_unchanged
def test_filter_operands_with_sql_fragments(attack: Attack) -> None:
    """SQL in every filter operand (field names, values, keys, gids) and odd numbers in
    numeric operands answer results or a 1006, and change nothing."""
    for s in HOSTILE:
        filters: list[Any] = [
            ["value", "is", [s, s]], ["value", "has", ["body", s]], ["value", "<", [s, 1]],
            ["value", "is_empty", [s]], ["classes", "has", s], ["definition", "is", s],
            ["channel", "has_not", s], ["parent", "is", s], ["ancestor", "is", s],
            ["status", "is", s], [s, "is", s], ["status", s, "draft"],
            ["and", "", [["value", "is", ["body", s]], ["not", "", ["channel", "has", s]]]],
        ]
        for f in filters:
            attack.post("records/search", {"language": "en", "filter": f})
        for f in (["name", "q", s], ["label", "is", s], ["type", "is", s]):
            attack.post("schema/search", {"language": "en", "filter": f})
        attack.post("records/search", {"language": s, "q": "apple"})
    for v in ODD_VALUES:
        for f in (["value", ">", ["price", v]], ["updated_on", "<", [v, "days"]],
                  ["created_on", "between", [v, v]], ["value", "is", ["price", v]]):
            attack.post("records/search", {"language": "en", "filter": f})


@_unchanged
def test_gids_and_selections_with_sql_fragments(attack: Attack) -> None:
    """SQL as gids, children, channels, orderings and excludes: reads find nothing, jobs
    resolve to nothing (total 0) once run, and no row changes."""
    for s in HOSTILE:
        selection = [s, {"children": s, "channel": s, "ordering": s, "exclude": [s]}]
        attack.post("records/get", {"record": s})
        attack.post("records/get", {"records": [s, s]})
        attack.post("records/children", {"record": s})
        attack.post("records/bulk/get", {"selection": selection})
        for job in ("records/bulk/delete", "records/bulk/undelete",
                    "records/bulk/permanent_delete"):
            attack.post(job, {"selection": selection})
        attack.post("schema/bulk/commit", {"selection": [s]})
        attack.post("records/permanent_delete", {"record": s})
        attack.post("records/delete", {"record": s})
        attack.post("records/update", {"record": s, "title": {"en": "x"}})
    for v in ODD_VALUES:
        attack.post("records/bulk/delete", {"selection": v})
        attack.post("records/bulk/delete", {"selection": [v]})
        attack.post("records/get", {"record": v})
    infos = attack.run_queued_jobs()
    assert infos and all(info.get("total", 0) == 0 for info in infos), infos


@_unchanged
def test_job_tokens_and_sync_values_with_sql_fragments(attack: Attack) -> None:
    """SQL as job tokens, statuses, projects and cursors of jobs/* and /sync/*."""
    for s in HOSTILE:
        attack.post("jobs/get", {"job": s})
        attack.post("jobs/cancel", {"job": s})
        attack.post("jobs/list", {"status": s})
        attack.post("/sync/get", {"cc_cursor": 0, "project": s})
        attack.post("/sync/cursors", {"project": s})
    for v in ODD_VALUES:
        attack.post("/sync/get", {"cc_cursor": v})
        attack.post("/sync/get", {"cc_cursor": 0, "project": attack.seeded.projects[0].gid,
                                  "cursor": v})
        attack.post("jobs/list", {"page.size": v})


@_unchanged
def test_page_cursors_with_sql_fragments_and_hostile_json(attack: Attack) -> None:
    """A forged `page.cursor` — SQL, bad base64, base64 of deep, huge or wrongly shaped JSON —
    is a clean error on records/bulk/get, schema/bulk/get and jobs/list."""
    root = attack.seeded.projects[0].root
    for cursor in CURSORS:
        attack.post("records/bulk/get", {"selection": [{"children": root}], "page.cursor": cursor})
        attack.post("schema/bulk/get", {"selection": [], "page.cursor": cursor})
        attack.post("jobs/list", {"page.cursor": cursor})


def test_malformed_json_bodies_are_clean_errors(client: TestClient, seeded: SeedResult):
    """Bodies that are not JSON, are nested 100,000 deep, hold a 5,000-digit number or bytes
    that are not UTF-8 are 4xx in the envelope, never 5xx."""
    jwt = jwt_of(seeded)
    path = f"/api/p/{seeded.projects[0].gid}/records/bulk/delete"
    bodies = [b"{", b"[" * 100_000, b'{"selection": [' * 50_000,
              b'{"selection": [' + b"9" * 5000 + b"]}", b'{"selection": ["\xff\xfe"]}',
              b'{"selection": [NaN, Infinity]}', b"\x00" * 100, b'{"selection": "a\\ud800"}',
              b'{"selection": [], "selection": ["x"]}']
    before = checksum()
    for body in bodies:
        r = client.post(path, content=body, headers={"Authorization": f"Bearer {jwt}",
                                                     "Content-Type": "application/json"})
        assert r.status_code in CLEAN, (body[:40], r.status_code, r.text[:300])
        assert r.json()["success"] in (True, False)
    assert checksum() == before
