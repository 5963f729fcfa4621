"""A ``records/bulk/get`` ``page.cursor`` pages only for the project and the user it was made
for: taken to another project's route, by another user, or kept by a member who was removed,
it answers exactly as an unknown cursor does and shows none of the records."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from models.engine import get_write_engine
from models.reads import _encode
from models.seed import SeedResult
from tests.security.conftest import Outsider, call, jwt_of
from tests.security.test_isolation import records_of


def _page(client: TestClient, project: str, jwt: str, cursor: str | None) -> Any:
    body: dict[str, Any] = {"selection": ["placeholder"], "page.size": 10}
    if cursor is not None:
        body["page.cursor"] = cursor
    return call(client, f"/api/p/{project}/records/bulk/get", jwt, body)


def _refused_as_unknown(r: Any, unknown: Any, hidden: set[str]) -> None:
    assert (r.status_code, r.json()) == (unknown.status_code, unknown.json()), r.text
    assert not hidden & set(json.dumps(r.json()).replace('"', " ").split()), r.text


def test_page_cursor_is_bound_to_its_project_and_user(client: TestClient, seeded: SeedResult,
                                                      outsider: Outsider):
    """A's cursor of the member: through B (the member, or a member of B only) or used by A's
    owner it answers as an unknown cursor; the member pages on; once removed from A the
    member gets 403 on A and still nothing through B."""
    a, b = seeded.projects
    member, owner = jwt_of(seeded, 1), jwt_of(seeded, 0)
    a_gids = records_of(a.gid)
    first = call(client, f"/api/p/{a.gid}/records/bulk/get", member,
                 {"selection": sorted(a_gids)[:30], "page.size": 10})
    assert first.status_code == 200, first.text
    cursor = first.json()["result"]["page.cursor"]
    assert cursor is not None
    unknown = _page(client, b.gid, member, _encode("get-00000000-" + "0" * 20, 0, 100))
    assert unknown.status_code == 422 and unknown.json()["result"]["code"] == 1006

    _refused_as_unknown(_page(client, b.gid, member, cursor), unknown, a_gids)
    _refused_as_unknown(_page(client, b.gid, outsider.jwt, cursor), unknown, a_gids)
    _refused_as_unknown(_page(client, a.gid, owner, cursor), unknown, a_gids)

    second = _page(client, a.gid, member, cursor)
    assert second.status_code == 200, second.text
    assert set(second.json()["result"]["records"]) <= a_gids
    assert len(second.json()["result"]["records"]) == 10

    with get_write_engine().begin() as conn:
        conn.execute(text("DELETE FROM member WHERE project_gid = :p AND user_gid = :u"),
                     {"p": a.gid, "u": seeded.users[1].gid})
    assert _page(client, a.gid, member, cursor).status_code == 403
    _refused_as_unknown(_page(client, b.gid, member, cursor), unknown, a_gids)
