"""Previews, every failure and retry-failed through the real web and worker processes: the
preview's total is the job's total, ``jobs/failures`` pages all of a job's failures beyond
``info.errors``' twenty, and ``jobs/retry`` runs a job over exactly those items."""

from __future__ import annotations

import time
from typing import Any

import pytest

from models.seed import SeedResult
from tests.e2e.conftest import System
from tests.e2e.helpers import Api
from tests.worker.test_failures import inside_deleted_head, live_grandchildren

pytestmark = pytest.mark.e2e


def finished(api: Api, token: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while (job := api.call("jobs/get", {"job": token})["result"]["job"])["status"] not in (
            "done", "rejected"):
        assert time.monotonic() < deadline, f"job {token} did not finish"
        time.sleep(0.1)
    return job


def all_failures(api: Api, token: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = api.call("jobs/failures", {"job": token, "page.size": 10,
                                          **({"page.cursor": cursor} if cursor else {})})
        assert page["_status"] == 200, page
        got += page["result"]["failures"]
        cursor = page["result"]["page.cursor"]
        if cursor is None:
            return got


def test_preview_failures_and_retry_over_http(system: System, seeded: SeedResult) -> None:
    """A delete of 25 already-deleted records and 3 live ones: the preview counts 28, the
    job's total is 28 with 25 failed, all 25 are paged with their reason, and the retry is a
    job of exactly those 25."""
    project = seeded.projects[0]
    api = Api(system.web_url, project.gid)
    assert api.auth(project.api_key)["success"]
    bad = inside_deleted_head(project, 25)
    selection = bad + live_grandchildren(project, 3)
    preview = api.call("records/bulk/preview", {"selection": selection,
                                                "job": "delete"})
    assert preview["_status"] == 200 and preview["result"]["total"] == 28, preview
    token = api.queue("records/bulk/delete", selection)
    job = finished(api, token)
    assert (job["status"], job["info"]["total"], job["info"]["failed"]) == ("done", 28, 25)
    assert len(job["info"]["errors"]) == 20
    failures = all_failures(api, token)
    assert sorted(f["gid"] for f in failures) == sorted(bad)
    assert {f["reason"] for f in failures} == {"already deleted"}
    again = api.call("jobs/retry", {"job": token})
    assert again["_status"] == 200, again
    retried = finished(api, again["result"]["job.token"])
    assert (retried["info"]["total"], retried["info"]["failed"]) == (25, 25)
    assert sorted(f["gid"] for f in all_failures(api, again["result"]["job.token"])) == \
        sorted(bad)
