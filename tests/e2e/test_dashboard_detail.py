"""The ops dashboard's job detail, retry, pause and resume, search by token and history
paging in a real browser (the system's Chromium through Playwright) against real web, worker
and stream processes: the detail shows the selection, parameters, times and every failed
item a page at a time; a retry from it appears and finishes live; a project paused from the
page holds a job whose row and detail say `paused` until it is resumed; a token prefix finds
a job not on screen; "Load older" pages history; a member who is not an owner cannot pause.
Once loaded, job states come over the websocket only: the page calls jobs/detail once per
opening and never jobs/get.  A screenshot goes to ``test-artifacts/dashboard-detail.png``.

Needs ``/usr/bin/chromium`` and the ``playwright`` package (see tests/e2e/browser.py).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from models.engine import get_engine
from models.pauses import is_paused
from models.seed import SeedResult
from tests.e2e.conftest import System
from tests.e2e.helpers import Api
from tests.e2e.test_dashboard import (  # noqa: F401  (ops_web is a fixture)
    ARTIFACTS,
    WAIT_MS,
    Traffic,
    ops_web,
    settle_initial_load,
    wait_done,
)
from tests.worker.helpers import records

pytestmark = pytest.mark.e2e


def test_dashboard_detail_retry_pause_search_and_history(
    browser: Any, system: System, ops_web: str, seeded: SeedResult  # noqa: F811
):
    """Detail (selection, params, times, failures paged, events), retry-failed appearing
    live, pause/resume of a project with `paused` shown, search by token prefix and "Load
    older", with live states from the websocket and jobs/detail fetched once per opening."""
    from playwright.sync_api import expect

    first = seeded.projects[0]
    api = Api(system.web_url, first.gid)
    assert api.auth(first.api_key)["success"]
    recs = records(first.gid)
    live_heads = [h for h in first.heads if recs[h].status != "deleted"]

    # History: three older jobs, then a job failing 6 items ("not deleted"), newest last.
    old = []
    for head in live_heads[:3]:
        old.append(api.queue("records/bulk/undelete", [head]))
        wait_done(api, old[-1])
    failing_items = live_heads[3:9]
    failing = api.queue("records/bulk/undelete", failing_items)
    wait_done(api, failing)

    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    traffic = Traffic(page)
    page.goto(f"{ops_web}/ops?history=2&failures=4")
    page.fill("#username", seeded.users[2].username)
    page.fill("#password", seeded.users[2].password)
    page.click("#login-submit")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    loaded = settle_initial_load(page, traffic, len(seeded.projects))
    row = lambda token: page.locator(f'.job-row[data-token="{token}"]')  # noqa: E731

    # Two jobs a page: the newest two are on screen, the older ones not yet.
    expect(row(failing)).to_have_count(1)
    expect(row(old[2])).to_have_count(1)
    expect(row(old[1])).to_have_count(0)
    expect(row(old[0])).to_have_count(0)

    # Search by token prefix finds a job not on screen and shows only the matches.
    page.fill("#search", old[0][:8])
    page.click("#search-submit")
    expect(row(old[0])).to_be_visible(timeout=WAIT_MS)
    expect(row(failing)).to_be_hidden()
    expect(page.locator("#search-result")).to_have_text("1 job found")
    page.click("#search-clear")
    expect(row(failing)).to_be_visible()

    # "Load older" brings the next page, then there is nothing older.
    page.click("#load-older")
    expect(row(old[1])).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator("#load-older")).to_be_hidden()

    # The detail of the failing job: selection, params, times, failures four at a time.
    detail = page.locator("#detail")
    row(failing).locator("button.open").click()
    expect(detail).to_have_attribute("data-loaded", "true", timeout=WAIT_MS)
    expect(page.locator("#d-token")).to_have_text(failing)
    expect(page.locator("#d-status")).to_have_text("done")
    for gid in failing_items:
        expect(page.locator("#d-selection")).to_contain_text(gid)
    expect(page.locator("#d-selection-size")).to_have_text("6 entries")
    expect(page.locator("#d-params")).to_have_text("none")
    stamp = re.compile(r"\d\d:\d\d:\d\d")
    for fact in ("#d-created", "#d-started", "#d-finished"):
        expect(page.locator(fact)).to_have_text(stamp)
    expect(page.locator("#d-duration")).to_have_text(re.compile(r"\d"))
    expect(page.locator("#d-progress")).to_have_text("6 / 6 (6 failed)")
    expect(page.locator("#d-rate")).to_have_text(re.compile(r"items/s$"))
    expect(page.locator("#d-eta")).to_have_text("–")
    failures = page.locator("#d-failures li")
    expect(failures).to_have_count(4)
    page.click("#d-more-failures")
    expect(failures).to_have_count(6)
    expect(page.locator("#d-more-failures")).to_be_hidden()
    expect(failures).to_have_text([f"{gid} not deleted" for gid in failing_items])
    events = page.locator("#d-events .d-event")
    expect(events.first.locator(".status")).to_have_text("queued")
    expect(events.last.locator(".status")).to_have_text("done")
    expect(page.locator("#d-events-note")).to_contain_text("from the log")

    # Retry the failed items: the new job appears and finishes live; its detail opens.
    page.click("#d-retry")
    expect(page.locator("#d-retried")).to_have_attribute("data-token", re.compile("."),
                                                          timeout=WAIT_MS)
    retried = page.locator("#d-retried").get_attribute("data-token")
    assert retried and retried != failing
    expect(row(retried).locator(".badge")).to_have_text("done", timeout=WAIT_MS)
    page.locator("#d-retried button").click()
    expect(detail).to_have_attribute("data-token", retried)
    expect(detail).to_have_attribute("data-loaded", "true", timeout=WAIT_MS)
    expect(page.locator("#d-progress")).to_have_text("6 / 6 (6 failed)")

    # Pause the project from the page: a job queued now is held and says so, row and
    # detail; resume from the page and it finishes, followed live in the open detail.
    page.select_option("#filter-project", first.gid)
    expect(page.locator("#pause")).to_have_text("Pause project")
    page.click("#pause")
    expect(page.locator("#pause-state")).to_be_visible(timeout=WAIT_MS)
    held = api.queue("records/bulk/delete", [{"children": first.root}])
    expect(row(held).locator(".paused-flag")).to_be_visible(timeout=WAIT_MS)
    row(held).locator("button.open").click()
    expect(detail).to_have_attribute("data-loaded", "true", timeout=WAIT_MS)
    expect(page.locator("#d-paused")).to_be_visible()
    page.click("#resume")
    expect(page.locator("#pause-state")).to_be_hidden(timeout=WAIT_MS)
    expect(page.locator("#d-status")).to_have_text("done", timeout=WAIT_MS)
    expect(page.locator("#d-paused")).to_be_hidden()
    expect(row(held).locator(".paused-flag")).to_be_hidden()
    expect(page.locator("#d-progress")).to_have_text(re.compile(r"^(\d+) / \1 \(0 failed\)$"))
    # Opened while held, the detail's later events (resumed, processing, done) came live.
    expect(page.locator("#d-events .d-event", has_text="paused")).not_to_have_count(0)
    expect(page.locator("#d-events .d-event", has_text="resumed")).not_to_have_count(0)
    expect(page.locator("#d-events .d-event").last.locator(".status")).to_have_text("done")
    expect(page.locator("#d-events-note")).to_contain_text(re.compile(r"[1-9]\d* more seen live"))

    # Live states came over the websocket; HTTP only for what was clicked.
    for token in (retried, held):
        assert any(token in f and '"done"' in f for f in traffic.frames), token
    after = traffic.since(loaded)
    assert not [p for p in after if p.endswith("/jobs/get")], after
    assert sum(p.endswith("/jobs/detail") for p in after) == 3, after
    assert sum(p.endswith("/jobs/list") for p in after) == len(seeded.projects) + 1, after
    allowed = ("/ops/api/stats", "/jobs/detail", "/jobs/failures", "/jobs/retry",
               "/jobs/list", "/jobs/pause", "/jobs/resume")
    assert all(p.endswith(allowed) for p in after), after
    assert errors == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-detail.png"))

    # A member who is not an owner: no switch for every project; a project's pause is
    # refused (403) and nothing is paused.
    page.click("#logout")
    page.fill("#username", seeded.users[1].username)
    page.fill("#password", seeded.users[1].password)
    page.click("#login-submit")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    page.select_option("#filter-project", "")
    expect(page.locator("#pause")).to_be_hidden()
    expect(page.locator("#detail")).to_be_hidden()
    page.select_option("#filter-project", first.gid)
    page.click("#pause")
    expect(page.locator("#message")).to_contain_text("pause:", timeout=WAIT_MS)
    expect(page.locator("#pause-state")).to_be_hidden()
    with get_engine().connect() as conn:
        assert not is_paused(conn, first.gid)
    assert errors == []
    page.close()
