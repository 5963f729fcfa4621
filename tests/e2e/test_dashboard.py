"""The ops dashboard in a real browser (the system's Chromium, headless, driven by Playwright)
against real web, worker and stream processes: log in as the ops user, watch a bulk job's bar
reach 100% and its status turn ``done`` without a reload — its progress over the websocket,
with no HTTP request for job states once the page has loaded — filter, cancel a job nobody
runs, follow a job that ran while the stream was down (resumed from the last cursor), show a
failed item with its reason, save a screenshot to ``test-artifacts/dashboard.png``
(``UPDATE_DOCS_SCREENSHOT=1`` also copies it to ``docs/dashboard.png`` for the README), and
then hold 1,000 more jobs on screen (a count; ``bench/dashboard.py`` measures the timing).

Needs ``/usr/bin/chromium`` (``scripts/test.sh`` installs it as root) and the ``playwright``
package; without them the test is skipped — except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from models.seed import SeedResult
from tests.e2e.conftest import ENV_FOR_JOBS, Proc, System, free_port, wait_for
from tests.e2e.helpers import Api

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def ops_web(system: System) -> Iterator[str]:
    """A web process of its own that knows the session's stream port (the ``system`` web
    runs with the default ``STREAM_PORT``, so its ``/ops/api/config`` would point the browser
    at the wrong port).  Same database, Redis and secret; returns its base URL."""
    port = free_port()
    stream_port = system.stream_url.rsplit(":", 1)[1].split("/")[0]
    proc = Proc("web-ops", [sys.executable, "-m", "uvicorn", "api.app:app", "--host",
                            "127.0.0.1", "--port", str(port), "--timeout-keep-alive", "75"],
                {**os.environ, **ENV_FOR_JOBS, "STREAM_PORT": stream_port}).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200, "ops web")
        yield url
    finally:
        proc.stop()


def wait_done(api: Api, token: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = api.call("jobs/get", {"job": token})["result"]["job"]["status"]
        if status in ("done", "rejected"):
            return
        time.sleep(0.1)
    raise TimeoutError(f"job {token} did not finish")


class Traffic:
    """What the page sends: HTTP request paths (in order, finished ones too) and the text
    frames its websockets receive."""

    def __init__(self, page: Any) -> None:
        self.requests: list[str] = []
        self.finished: list[str] = []
        self.frames: list[str] = []
        self.sockets = 0
        page.on("request", lambda r: self.requests.append(urlsplit(r.url).path))
        page.on("requestfinished", lambda r: self.finished.append(urlsplit(r.url).path))
        page.on("websocket", self._socket)

    def _socket(self, ws: Any) -> None:
        self.sockets += 1
        ws.on("framereceived", lambda payload: self.frames.append(
            payload if isinstance(payload, str) else payload.decode()))

    def since(self, mark: int) -> list[str]:
        return self.requests[mark:]


def settle_initial_load(page: Any, traffic: Traffic, projects: int) -> int:
    """Wait until the page's load-time requests (one ``jobs/list`` per project) are answered;
    returns the request mark from which no job state may be fetched over HTTP."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while sum(p.endswith("/jobs/list") for p in traffic.finished) < projects:
        assert time.monotonic() < deadline, f"initial load incomplete: {traffic.requests}"
        page.wait_for_timeout(50)
    return len(traffic.requests)


def test_dashboard_follows_jobs_live_cancels_and_resumes(
    browser: Any, system: System, ops_web: str, seeded: SeedResult
):
    """Login, a bulk job live to 100% and done with its progress from the websocket (no HTTP
    request for job states after the initial load), filters, cancel, resume after a stream
    restart, a failed item's reason — all without reloading the page."""
    from playwright.sync_api import expect

    first, second = seeded.projects
    ops_user = seeded.users[2]
    api = Api(system.web_url, first.gid)
    assert api.auth(first.api_key)["success"]
    api2 = Api(system.web_url, second.gid)
    assert api2.auth(second.api_key)["success"]

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console_errors: list[str] = []
    page.on("pageerror", lambda exc: console_errors.append(str(exc)))
    traffic = Traffic(page)
    page.goto(f"{ops_web}/ops")
    page.fill("#username", ops_user.username)
    page.fill("#password", ops_user.password)
    page.click("#login-submit")
    conn = page.locator("#conn")
    expect(conn).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    expect(page.locator("#workers-alive")).to_have_text(re.compile(r"^\d+$"), timeout=WAIT_MS)
    page.evaluate("window.__sameDocument = true")  # gone if the page ever reloads
    loaded = settle_initial_load(page, traffic, len(seeded.projects))

    # A bulk job queued through the API appears and runs to done, live.
    token = api.queue("records/bulk/delete", [{"children": first.root}])
    row = page.locator(f'.job-row[data-token="{token}"]')
    expect(row.locator(".badge")).to_have_text("done", timeout=WAIT_MS)
    expect(row.locator('[role="progressbar"]')).to_have_attribute("aria-valuenow", "100")
    expect(row.locator(".pct")).to_contain_text("9 / 9")
    expect(row.locator("button.cancel")).to_be_hidden()
    expect(row.locator(".project")).to_have_text("Demo project 1")
    # Its processing and progress states came over the websocket, not over HTTP.
    frames = [f for f in traffic.frames if token in f]
    assert any('"processing"' in f for f in frames), frames
    assert any('"done"' in f for f in frames), frames

    # A job no worker runs stays queued until cancelled from its row.
    system.procs["worker"].stop()
    try:
        blocked = api2.queue("records/bulk/delete", second.heads[:1])
        blocked_row = page.locator(f'.job-row[data-token="{blocked}"]')
        expect(blocked_row.locator(".badge")).to_have_text("queued", timeout=WAIT_MS)
        blocked_row.locator("button.cancel").click()
        expect(blocked_row.locator(".badge")).to_have_text("rejected", timeout=WAIT_MS)
        expect(blocked_row.locator(".failed")).to_contain_text("cancelled")
        expect(blocked_row.locator("button.cancel")).to_be_hidden()
    finally:
        system.worker()

    # Filters hide rows in place.
    page.select_option("#filter-status", "rejected")
    expect(row).to_be_hidden()
    expect(blocked_row).to_be_visible()
    page.select_option("#filter-status", "")
    page.select_option("#filter-project", second.gid)
    expect(row).to_be_hidden()
    page.select_option("#filter-project", "")
    expect(row).to_be_visible()
    expect(page.locator('.chip[data-status="done"] b')).to_have_text("1")
    expect(page.locator('.chip[data-status="rejected"] b')).to_have_text("1")

    # A job that runs while the stream is down arrives when the page resumes from its cursor.
    system.procs["stream"].stop()
    expect(conn).not_to_have_attribute("data-state", "live", timeout=WAIT_MS)
    missed = api.queue("records/bulk/undelete", first.heads[:2])
    wait_done(api, missed)
    system.stream()
    expect(conn).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    missed_row = page.locator(f'.job-row[data-token="{missed}"]')
    expect(missed_row.locator(".badge")).to_have_text("done", timeout=WAIT_MS)
    expect(missed_row.locator('[role="progressbar"]')).to_have_attribute("aria-valuenow", "100")

    # A few more jobs for a fuller picture, then the screenshot.
    more = [api2.queue("records/bulk/delete", [head]) for head in second.heads[1:5]]
    for t in more:
        expect(page.locator(f'.job-row[data-token="{t}"] .badge')).to_have_text("done",
                                                                           timeout=WAIT_MS)

    # An undelete of a live record: the job is done with one failed item and its reason.
    live_head = second.heads[5]
    partial = api2.queue("records/bulk/undelete", [live_head, second.heads[1]])
    partial_row = page.locator(f'.job-row[data-token="{partial}"]')
    expect(partial_row.locator(".badge")).to_have_text("done", timeout=WAIT_MS)
    failed = partial_row.locator(".failed")
    expect(failed.locator("summary")).to_have_text("1 failed")
    failed.locator("summary").click()
    expect(failed.locator("li")).to_have_text(f"{live_head[:8]} not deleted")
    expect(failed.locator("li")).to_have_attribute("title", live_head)

    # Job states never came over HTTP once the page had loaded: only the stats it polls
    # for queue depth and workers, and the one cancel that was clicked.
    after_load = traffic.since(loaded)
    cancel_path = f"/api/p/{second.gid}/jobs/cancel"
    assert set(after_load) <= {"/ops/api/stats", cancel_path}, after_load
    assert after_load.count(cancel_path) == 1
    assert traffic.sockets >= 2  # the first connection and the one after the restart

    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
    assert console_errors == []
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    page.wait_for_timeout(1200)  # let the chart's once-a-second redraw include the last jobs
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, ROOT / "docs" / "dashboard.png")

    # 1,000 jobs on screen: the events of 1,000 more jobs (queued, then done), appended to the
    # sync log as fast as Redis takes them, each become a row that ends done.
    prefix = f"many-{uuid.uuid4().hex[:8]}-"
    append_job_events(first.gid, [f"{prefix}{i:04d}" for i in range(1000)])
    many = page.locator(f'.job-row[data-token^="{prefix}"]')
    expect(page.locator(f'.job-row[data-token^="{prefix}"][data-status="done"]')).to_have_count(
        1000, timeout=WAIT_MS)
    expect(many).to_have_count(1000)
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
    assert console_errors == []
    page.close()


def append_job_events(project: str, tokens: list[str]) -> None:
    """Append each job's ``queued`` INSERT and ``done`` UPDATE to the cc space, as a worker
    would, in chunks of 100 events."""
    from bulkjobs import keys
    from bulkjobs.connections import get_synclog
    from bulkjobs.synclog import job_event

    log, now = get_synclog(), time.time()
    done = {"total": 1, "remaining": 0, "failed": 0, "errors": []}
    events = [job_event(token=t, project=project, job="bulk_delete_records", status="queued",
                        info={}, created_on=now, updated_on=now, insert=True) for t in tokens]
    events += [job_event(token=t, project=project, job="bulk_delete_records", status="done",
                         info=done, created_on=now, updated_on=now) for t in tokens]
    for i in range(0, len(events), 100):
        log.append(keys.CC_SPACE, events[i : i + 100])
