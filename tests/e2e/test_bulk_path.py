"""The whole path: a bulk job queued over HTTP, run by a real Celery worker, watched live over
a real websocket stream server."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from sqlalchemy import text

from models.engine import get_engine
from models.seed import SeedResult
from tests.e2e.conftest import System
from tests.e2e.helpers import Api, Subscriber, assert_lifecycle, job_events, terminal_of

pytestmark = pytest.mark.e2e


# A record is deleted while it has a ``record_deletion`` row; ``record.status`` is then the
# draft/published it returns to when undeleted.
LIVE_SQL = "NOT EXISTS (SELECT 1 FROM record_deletion d WHERE d.record_id = r.id)"


def status_counts(project: str) -> dict[str, int]:
    """Records of a project by public status (``deleted`` while a deletion row exists)."""
    with get_engine().connect() as conn:
        rows = conn.execute(text(
            "SELECT CASE WHEN d.record_id IS NULL THEN r.status ELSE 'deleted' END AS s, "
            "COUNT(*) FROM record r LEFT JOIN record_deletion d ON d.record_id = r.id "
            "WHERE r.project_gid = :p GROUP BY 1"
        ), {"p": project})
        return {status: count for status, count in rows}


def test_bulk_delete_then_undelete_over_http_and_websocket(system: System, seeded: SeedResult):
    """A subscriber sees INSERT queued → processing (total = remaining) → … → done for a bulk
    delete and a bulk undelete, and the database ends in the expected state."""
    project = seeded.projects[0]
    api = Api(system.web_url, project.gid)
    assert api.auth(project.api_key)["success"]
    live_heads = project.heads[:9]  # the seed deletes every tenth subtree (here: the tenth)
    before = status_counts(project.gid)
    assert before.get("deleted") == 100

    async def scenario() -> tuple[list, list]:
        async with Subscriber(system.stream_url, api.jwt) as sub:
            subscribed = await sub.subscribe(project.gid, cc_cursor=api.cc_cursor())
            assert subscribed["recovered"] is True
            delete = api.queue("records/bulk/delete", [{"children": project.root}])
            await sub.until(terminal_of(delete))
            undelete = api.queue("records/bulk/undelete", live_heads)
            await sub.until(terminal_of(undelete))
            return job_events(sub.events, delete), job_events(sub.events, undelete)

    deleted_events, undeleted_events = asyncio.run(scenario())
    assert_lifecycle(deleted_events, deleted_events[0]["data_key"], total=9)
    assert_lifecycle(undeleted_events, undeleted_events[0]["data_key"], total=9)
    assert deleted_events[-1]["data"]["job"] == "bulk_delete_records"
    assert undeleted_events[-1]["data"]["job"] == "bulk_undelete_records"
    assert deleted_events[-1]["data"]["info"]["failed"] == 0
    assert status_counts(project.gid) == before


def test_state_after_delete_is_whole_subtrees(system: System, seeded: SeedResult):
    """Bulk delete of two heads soft-deletes exactly their two subtrees of 100 records."""
    project = seeded.projects[1]
    api = Api(system.web_url, project.gid)
    api.auth(project.api_key)
    cursor = api.cc_cursor()
    token = api.queue("records/bulk/delete", project.heads[:2] + ["not-a-gid"])

    async def wait() -> None:
        async with Subscriber(system.stream_url, api.jwt) as sub:
            await sub.subscribe(project.gid, cc_cursor=cursor)
            await sub.until(terminal_of(token))

    asyncio.run(wait())
    with get_engine().connect() as conn:
        heads = conn.execute(text(
            "SELECT id FROM record WHERE gid IN (:a, :b)"), dict(
                a=project.heads[0], b=project.heads[1])).scalars().all()
        stamped = conn.execute(text(
            "SELECT d.deleted_root, COUNT(*) FROM record_deletion d "
            "JOIN record r ON r.id = d.record_id "
            "WHERE r.project_gid = :p GROUP BY d.deleted_root"), {"p": project.gid}).all()
    counts = dict(stamped)
    assert counts[heads[0]] == 100 and counts[heads[1]] == 100
    assert sum(counts.values()) == 300  # plus the subtree the seed had deleted


def test_resume_after_disconnect_gets_every_missed_event_once(system: System,
                                                               seeded: SeedResult):
    """A subscriber that drops mid-job and reconnects with its last cursor receives every
    event it missed exactly once, in order."""
    project = seeded.projects[0]
    api = Api(system.web_url, project.gid)
    api.auth(project.api_key)
    start = api.cc_cursor()
    with get_engine().connect() as conn:
        gids = conn.execute(text(
            "SELECT r.gid FROM record r WHERE r.project_gid = :p AND r.parent_id IS NOT NULL "
            f"AND {LIVE_SQL} ORDER BY r.id DESC"), {"p": project.gid}).scalars().all()

    async def scenario() -> tuple[str, list]:
        async with Subscriber(system.stream_url, api.jwt) as first:
            await first.subscribe(project.gid, cc_cursor=start)
            token = api.queue("records/bulk/delete", list(gids))
            # Leave after the processing event and at least one progress event or the end.
            await first.until(lambda ev: len(job_events(ev, token)) >= 3)
            received = job_events(first.events, token)
        await asyncio.sleep(0.2)  # the job goes on while nobody listens
        async with Subscriber(system.stream_url, api.jwt) as second:
            sub = await second.subscribe(project.gid, cc_cursor=received[-1]["cursor"])
            assert sub["recovered"] is True
            await second.until(terminal_of(token))
            received += job_events(second.events, token)
        return token, received

    token, received = asyncio.run(scenario())
    expected = job_events(api.events_since(start), token)
    assert [e["cursor"] for e in received] == [e["cursor"] for e in expected]
    assert received == expected
    assert_lifecycle(received, token, total=len(gids))


def test_official_unicat_client_tracks_an_undelete_to_done(system: System, seeded: SeedResult):
    """The official `unicat` client from PyPI connects with an API key, queues a bulk
    undelete and follows it to `done` with its own `track_job`."""
    from unicat.api import UnicatApi

    project = seeded.projects[1]
    client = UnicatApi(system.web_url, project.gid)
    ok, result = client.connect(project.api_key)
    assert ok, result
    assert result["project"] == project.gid
    deleted_head = project.heads[9]
    cursor = client.prepare_for_job()
    ok, result = client.call("/records/bulk/undelete", {"selection": [deleted_head]})
    assert ok, result
    token = result["job.token"]
    statuses = [p["status"] for p in client.track_job(cursor, token, timeout_in_seconds=60,
                                                       poll_interval_in_seconds=0.2)]
    assert statuses[0] == "queued" and statuses[-1] == "done"
    ok, result = client.call("/records/get", {"record": deleted_head})
    assert ok and client.data["records"][deleted_head]["status"] != "deleted"


def test_official_unicat_client_walks_pages_runs_jobs_and_syncs(
    system: System, seeded: SeedResult, tmp_path: object,
):
    """The official client walks the whole live tree reading every record's fields, pages
    `records/bulk/get` to its end, follows a bulk delete, undelete and permanent delete to
    `done` with `track_job`, and its `sync()` catches up with both cursor spaces."""
    from unicat import Unicat

    project = seeded.projects[0]
    u = Unicat(system.web_url, project.gid, project.api_key, str(tmp_path))
    assert u.connect()
    with get_engine().connect() as conn:
        live = conn.execute(text(
            f"SELECT COUNT(*) FROM record r WHERE r.project_gid = :p AND {LIVE_SQL}"),
            {"p": project.gid}).scalar_one()
    walked = [(r.gid, {lang: {k: f.value for k, f in fs.items()} for lang, fs in r.fields.items()})
              for r in u.walk_record_tree()]
    assert len(walked) == len({g for g, _ in walked}) == live
    assert any(fields["en"].get("body") for _, fields in walked)
    api = u.api
    request: dict[str, object] = {"selection": [{"children": project.root}], "page.size": 4}
    paged: list[str] = []
    while True:
        ok, result = api.call("/records/bulk/get", request)
        assert ok, result
        paged += result["records"]
        if not result["page.cursor"]:
            break
        request["page.cursor"] = result["page.cursor"]
    assert len(paged) == result["records.size"] == 9 and len(set(paged)) == 9
    for endpoint, selection in (("/records/bulk/delete", [project.heads[0]]),
                                ("/records/bulk/undelete", [project.heads[0]]),
                                ("/records/bulk/delete", [project.heads[1]]),
                                ("/records/bulk/permanent_delete", [project.heads[1]])):
        cursor = api.prepare_for_job()
        ok, result = api.call(endpoint, {"selection": selection})
        assert ok, result
        statuses = [p["status"] for p in api.track_job(
            cursor, result["job.token"], timeout_in_seconds=60, poll_interval_in_seconds=0.2)]
        assert (statuses[0], statuses[-1]) == ("queued", "done"), (endpoint, statuses)
    assert u.sync()
    api_web = Api(system.web_url, project.gid)
    api_web.auth(project.api_key)
    cursors = api_web.call("/sync/cursors", {"project": project.gid})["result"]
    assert api.cc_cursor == cursors["cc.cursor"] and api.project_cursor == cursors["cursor"]


def test_cli_watch_follows_a_job_to_done(system: System, seeded: SeedResult):
    """`bulkjobs watch <token>` follows a job over the stream and exits 0 when it is done."""
    import subprocess
    import sys
    from pathlib import Path

    project = seeded.projects[0]
    api = Api(system.web_url, project.gid)
    api.auth(project.api_key)
    token = api.queue("records/bulk/delete", project.heads[:3])
    cli = Path(sys.executable).parent / "bulkjobs"
    done = subprocess.run([str(cli), "watch", token, "--stream-url", system.stream_url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"job {token}: done" in done.stderr
    unknown = subprocess.run([str(cli), "watch", "no-such-job", "--stream-url",
                              system.stream_url], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 1 and "no job" in unknown.stderr


def test_cli_submit_watch_queues_and_follows_with_a_progress_bar(system: System,
                                                                 seeded: SeedResult):
    """`bulkjobs submit … --watch` prints the token, draws a rich progress bar up to total/total
    while a real worker runs the job, and exits 0 at done; a version restore submitted with
    `--param version=<id>` runs the same way and restores that version's content."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.worker.helpers import records, versions

    project = seeded.projects[1]
    cli = Path(sys.executable).parent / "bulkjobs"
    env = {**os.environ, "COLUMNS": "120"}
    heads = project.heads[:4]
    run = subprocess.run(
        [str(cli), "submit", "bulk_delete_records", "--project", project.gid, "--selection",
         json.dumps(heads), "--watch", "--stream-url", system.stream_url],
        capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    token = run.stdout.strip()
    assert token and "\n" not in token
    assert f"job {token}: done" in run.stderr
    bar = [line for line in run.stderr.splitlines() if "bulk_delete_records [done]" in line]
    assert bar and "━" in bar[-1] and "4/4" in bar[-1], run.stderr
    assert status_counts(project.gid)["deleted"] >= 400

    rec = next(r for r in records(project.gid).values()
               if r.status != "deleted" and len(versions(r.id)) == 3)
    first = versions(rec.id)[0]
    restore = subprocess.run(
        [str(cli), "submit", "restore_record_version", "--project", project.gid, "--selection",
         json.dumps([rec.gid]), "--param", f"version={first.id}", "--watch", "--stream-url",
         system.stream_url], capture_output=True, text=True, timeout=120, env=env)
    assert restore.returncode == 0, restore.stderr
    assert "restore_record_version [done]" in restore.stderr and "1/1" in restore.stderr
    assert records(project.gid)[rec.gid].title == first.snapshot["title"]
