"""Undelete over HTTP with the real worker, when a selected record was deleted with an
ancestor: it comes back with that ancestor when the same job undeletes it — whatever the
order of the items, and when the worker's batches (``BATCH_SIZE`` 7) put a record and its
ancestor apart — and fails with the documented reason when that ancestor stays deleted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import bindparam, select, text

from models import WorkflowEntry
from models.engine import get_engine
from models.seed import SeededProject, SeedResult
from tests.e2e.conftest import System, wait_for
from tests.e2e.helpers import Api

pytestmark = pytest.mark.e2e

#: Items per batch of the worker these tests run with: several subtrees of 100 records then
#: take many batches, and a record's ancestor is in an earlier one.
BATCH_SIZE = "7"


@pytest.fixture(scope="module")
def worker(system: System) -> Iterator[System]:
    with system.own_worker("undeleter", BATCH_SIZE=BATCH_SIZE):
        yield system


@pytest.fixture
def api(worker: System, seeded: SeedResult) -> Api:
    project = seeded.projects[0]
    client = Api(worker.web_url, project.gid)
    assert client.auth(project.api_key)["success"]
    return client


def run(api: Api, endpoint: str, selection: list[Any]) -> dict[str, Any]:
    """Queue a job over HTTP and poll ``jobs/get`` until it ends; the job."""
    token = api.queue(endpoint, selection)
    job: dict[str, Any] = {}

    def ended() -> bool:
        job.update(api.call("jobs/get", {"job": token})["result"]["job"])
        return job["status"] in ("done", "rejected")

    wait_for(ended, f"job {token}", timeout=120)
    return job


def children(gid: str) -> list[str]:
    with get_engine().connect() as conn:
        return list(conn.execute(text(
            "SELECT c.gid FROM record c JOIN record p ON p.id = c.parent_id WHERE p.gid = :g "
            "ORDER BY c.id"), {"g": gid}).scalars())


def deleted(project: SeededProject) -> set[str]:
    """The gids of the project's deleted records."""
    with get_engine().connect() as conn:
        return set(conn.execute(text(
            "SELECT r.gid FROM record r JOIN record_deletion d ON d.record_id = r.id "
            "WHERE r.project_gid = :p"), {"p": project.gid}).scalars())


def subtree(gid: str) -> set[str]:
    """The record and every record under it."""
    with get_engine().connect() as conn:
        return set(conn.execute(text(
            "SELECT r.gid FROM record r, record top WHERE top.gid = :g "
            "AND r.mpath LIKE top.mpath || '%'"), {"g": gid}).scalars())


def undeleted_by(token: str) -> set[str]:
    """The gids of the records the job wrote an undelete workflow entry on."""
    w = WorkflowEntry.__table__.c
    with get_engine().connect() as conn:
        ids = list(conn.execute(select(w.record_id).where(
            w.job_token == token, w.action == "undelete")).scalars())
        return set(conn.execute(text("SELECT gid FROM record WHERE id IN :ids").bindparams(
            bindparam("ids", expanding=True)), {"ids": ids or [0]}).scalars())


def delete(api: Api, gids: list[str]) -> None:
    job = run(api, "records/bulk/delete", gids)
    assert job["status"] == "done" and job["info"]["failed"] == 0, job


@pytest.mark.parametrize("head_first", [True, False], ids=["head-child", "child-head"])
def test_a_child_deleted_with_its_head_comes_back_when_the_job_undeletes_the_head(
    api: Api, seeded: SeedResult, head_first: bool,
) -> None:
    """A head deleted with its subtree, then undeleted together with one of its children
    (the child named first or second): the job ends ``done`` with nothing failed, the head's
    whole subtree is back and the child has a workflow entry of its own."""
    project = seeded.projects[0]
    head = project.heads[0]
    child = children(head)[4]
    delete(api, [head])
    assert subtree(head) <= deleted(project)
    job = run(api, "records/bulk/undelete", [head, child] if head_first else [child, head])
    assert job["status"] == "done", job
    assert job["info"] == {"total": 2, "remaining": 0, "failed": 0, "errors": []}
    assert not subtree(head) & deleted(project)
    assert undeleted_by(job["token"]) == {head, child}


def test_an_undelete_by_search_brings_back_subtrees_deleted_apart_and_within_each_other(
    api: Api, seeded: SeedResult,
) -> None:
    """Subtrees deleted by several jobs — two heads, a child of a third head on its own, a
    grandchild on its own and then its head — and the project's deleted seed subtree, all
    found by one search entry and undeleted in batches of 7: nothing fails and every record
    is back."""
    project = seeded.projects[0]
    heads = project.heads
    lone_child = children(heads[2])[3]
    grandchild = children(children(heads[3])[1])[2]
    delete(api, [heads[0], heads[1]])
    delete(api, [lone_child])
    delete(api, [grandchild])
    delete(api, [heads[3]])
    gone = deleted(project)
    expected = {g for top in (heads[0], heads[1], lone_child, heads[3]) for g in subtree(top)}
    assert expected < gone  # with the subtree the seed deleted
    selection = [{"search": {"language": "en", "filter": ["ancestor", "is", project.root]}}]
    preview = api.call("records/bulk/preview", {"job": "undelete", "selection": selection})
    assert preview["result"]["total"] == len(gone), preview
    job = run(api, "records/bulk/undelete", selection)
    assert job["status"] == "done", job
    assert job["info"] == {"total": len(gone), "remaining": 0, "failed": 0, "errors": []}
    assert deleted(project) == set()
    assert undeleted_by(job["token"]) == gone


def test_a_child_whose_deleted_head_stays_deleted_fails_with_the_reason(
    api: Api, seeded: SeedResult,
) -> None:
    """Undeleting a child deleted with its head, without the head: that item fails ("deleted
    with an ancestor; undelete that ancestor"), the job still ends ``done``, and the child
    stays deleted; so does a child of the head the seed deleted."""
    project = seeded.projects[0]
    head = project.heads[0]
    child = children(head)[2]
    seed_deleted = next(h for h in project.heads if h in deleted(project))
    other = children(seed_deleted)[0]
    delete(api, [head])
    job = run(api, "records/bulk/undelete", [child, other])
    reason = "deleted with an ancestor; undelete that ancestor"
    assert job["status"] == "done", job
    assert job["info"]["failed"] == 2 and job["info"]["remaining"] == 0, job
    assert sorted(job["info"]["errors"], key=lambda e: e["gid"]) == sorted(
        [{"gid": child, "reason": reason}, {"gid": other, "reason": reason}],
        key=lambda e: e["gid"])
    assert {child, other} <= deleted(project)
    assert undeleted_by(job["token"]) == set()
    failures = api.call("jobs/failures", {"job": job["token"]})["result"]["failures"]
    assert sorted(f["gid"] for f in failures) == sorted([child, other])
