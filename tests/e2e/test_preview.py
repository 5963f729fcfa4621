"""``records/bulk/preview`` through the real web process, beside the real worker: it answers
what the job would take (``total``, items per entry after dedupe and excludes, the first
items in the job's order) without queueing or writing anything, and the job then queued with
the same selection starts with exactly that ``total``."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import text

from models.engine import get_engine
from models.seed import SeedResult
from tests.e2e.conftest import System
from tests.e2e.helpers import Api

pytestmark = pytest.mark.e2e

TABLES = ("job", "job_item", "workflow_entry", "record_deletion", "record_tombstone")


def row_counts() -> dict[str, int]:
    with get_engine().connect() as conn:
        return {t: int(conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one())
                for t in TABLES}


def finished(api: Api, token: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.call("jobs/get", {"job": token})["result"]["job"]
        if job["status"] in ("done", "rejected"):
            return job
        time.sleep(0.1)
    raise TimeoutError(f"job {token} did not finish")


def preview_then_run(api: Api, job: str, selection: list[Any]) -> tuple[dict[str, Any], int]:
    """The preview's result (checked to leave every table and the sync log as they were),
    then the ``total`` of the job queued with the same selection."""
    before, cursor = row_counts(), api.cc_cursor()
    answer = api.call("records/bulk/preview", {"selection": selection, "job": job})
    assert answer["_status"] == 200 and answer["success"], answer
    assert row_counts() == before
    assert api.cc_cursor() == cursor
    token = api.queue(f"records/bulk/{job}", selection)
    return answer["result"], int(finished(api, token)["info"]["total"])


def test_preview_of_a_delete_counts_what_the_job_takes(system: System, seeded: SeedResult):
    project = seeded.projects[0]
    api = Api(system.web_url, project.gid)
    assert api.auth(project.api_key)["success"]
    live = project.heads[:9]  # the seed deletes every tenth subtree
    selection: list[Any] = [
        {"children": project.root, "exclude": [live[0]]},  # the live heads but the first
        live[1],  # again: counts for the entry above
        live[0],  # excluded above, taken here
        "no-such-gid",
        {"children": live[2]},  # children of a head the first entry took: items of their own
    ]
    result, total = preview_then_run(api, "delete", selection)
    with get_engine().connect() as conn:
        children_of_head = int(conn.execute(text(
            "SELECT COUNT(*) FROM record c JOIN record h ON h.id = c.parent_id "
            "WHERE h.gid = :h"), {"h": live[2]}).scalar_one())
    assert result["entries"] == [8, 0, 1, 0, children_of_head]
    assert result["total"] == total == 9 + children_of_head
    assert len(set(result["sample"])) == len(result["sample"]) == min(20, total)
    assert result["sample"][:8] == [h for h in live if h != live[0]][:8]


def test_preview_of_an_undelete_counts_what_the_job_takes(system: System, seeded: SeedResult):
    """An undelete preview in the job's own order (parents first), with a record deleted with
    its head and a live gid among the items, as the job counts them."""
    project = seeded.projects[1]
    api = Api(system.web_url, project.gid)
    assert api.auth(project.api_key)["success"]
    deleted_head = project.heads[9]
    with get_engine().connect() as conn:
        child = conn.execute(text(
            "SELECT c.gid FROM record c JOIN record h ON h.id = c.parent_id WHERE h.gid = :h "
            "ORDER BY c.id LIMIT 1"), {"h": deleted_head}).scalar_one()
    selection = [child, {"children": project.root}, project.heads[0]]
    result, total = preview_then_run(api, "undelete", selection)
    assert result["entries"] == [1, 1, 1]
    assert result["total"] == total == 3
    # Parents first, as the job takes them: the two heads (by id, within their level), then
    # the child.
    with get_engine().connect() as conn:
        heads = list(conn.execute(text("SELECT gid FROM record WHERE gid IN (:a, :b) "
                                       "ORDER BY id"),
                                  {"a": deleted_head, "b": project.heads[0]}).scalars())
    assert result["sample"] == [*heads, child]


@pytest.mark.parametrize(("body", "status"), [
    ({"selection": ["x"], "job": "explode"}, 400),
    ({"selection": [{"children": 5}], "job": "delete"}, 422),
    ({"selection": "not a list", "job": "delete"}, 422),
    ({"job": "delete"}, 400),
])
def test_a_bad_preview_is_refused_in_the_envelope(
    system: System, seeded: SeedResult, body: dict[str, Any], status: int,
):
    project = seeded.projects[0]
    api = Api(system.web_url, project.gid)
    assert api.auth(project.api_key)["success"]
    before = row_counts()
    answer = api.call("records/bulk/preview", body)
    assert answer["_status"] == status and answer["success"] is False, answer
    assert answer["result"]["message"]
    assert row_counts() == before
