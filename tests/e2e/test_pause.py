"""``jobs/pause`` and ``jobs/resume`` through the real web process, beside the real worker: a
job queued while its project is paused is held by the worker (its event says
``info.paused: true``, status ``queued``) and the web's resume sends its message again, so
the worker runs it to ``done``.  (A pause in the middle of a job, the reaper and cancel are
pinned with real workers in ``tests/worker/test_pause.py``.)"""

from __future__ import annotations

import time
from typing import Any

import pytest

from models.seed import SeedResult
from tests.e2e.conftest import System
from tests.e2e.helpers import Api

pytestmark = pytest.mark.e2e


def flags(events: list[dict[str, Any]], token: str) -> list[tuple[str, bool]]:
    return [(e["data"]["status"], e["data"]["info"]["paused"]) for e in events
            if e["data_key"] == token and "paused" in e["data"]["info"]]


def test_a_job_queued_while_paused_waits_for_the_resume_over_http(
    system: System, seeded: SeedResult,
) -> None:
    """Pause over HTTP (the project owner's API key), queue a delete: the worker holds it,
    ``jobs/get`` shows it queued and paused; resume over HTTP answers its token and the
    worker finishes it ``done``, its events saying paused, then resumed."""
    project = seeded.projects[0]
    api = Api(system.web_url, project.gid)
    assert api.auth(project.api_key)["success"]
    cursor = api.cc_cursor()
    paused = api.call("jobs/pause")
    assert paused["_status"] == 200 and paused["result"] == {"paused": True}, paused
    token = api.queue("records/bulk/delete", project.heads[:2])
    deadline = time.monotonic() + 60
    while not flags(api.events_since(cursor), token):
        assert time.monotonic() < deadline, "the worker did not hold the job"
        time.sleep(0.1)
    job = api.call("jobs/get", {"job": token})["result"]["job"]
    assert (job["status"], job["info"]) == ("queued", {"paused": True})

    resumed = api.call("jobs/resume")
    assert resumed["_status"] == 200, resumed
    assert resumed["result"] == {"paused": False, "resumed": [token]}
    while (job := api.call("jobs/get", {"job": token})["result"]["job"])["status"] not in (
            "done", "rejected"):
        assert time.monotonic() < deadline + 60, "the job did not finish after resume"
        time.sleep(0.1)
    assert job["status"] == "done" and job["info"]["failed"] == 0
    assert "paused" not in job["info"]
    assert flags(api.events_since(cursor), token) == [("queued", True), ("queued", False)]
