"""The stream server over real sockets, real Redis (db 9) and the real test database."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import jwt as pyjwt
import pytest
from sqlmodel import Session
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bulkjobs import keys, tokens
from bulkjobs.connections import get_redis
from bulkjobs.synclog import job_event
from models.auth import Member, User
from models.engine import get_engine
from models.jobs import Job
from stream.server import Peer, StreamServer
from tests.stream.conftest import (
    WAIT,
    append_job,
    append_record,
    events,
    jwt_for,
    log,
    make_user,
    open_ws,
    recv,
    request,
    subscribe,
    trim_below,
    url,
)

pytestmark = pytest.mark.anyio


async def eventually(cond: Callable[[], bool], timeout: float = WAIT) -> None:
    """Wait until ``cond()`` holds; fail the test if it never does."""
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def close_code(ws: ClientConnection, timeout: float = WAIT) -> tuple[int | None, list[Any]]:
    """Read until the server closes; returns the close code and the messages read."""
    got: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            async for raw in ws:
                got.append(json.loads(raw))
    except ConnectionClosed:
        pass
    return ws.close_code, got


async def nothing_more(ws: ClientConnection, marker: Callable[[], int]) -> list[dict[str, Any]]:
    """Append a marker event the connection should get, and return every event received up to
    and including it: proves that nothing else arrived in between, without sleeping."""
    cursor = marker()
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(WAIT):
        while not out or out[-1]["cursor"] != cursor:
            msg = await recv(ws)
            assert msg["op"] == "sync", msg
            out.extend(msg["sync"])
    return out


def http_get(server: StreamServer, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=WAIT) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def new_token() -> str:
    return str(uuid.uuid4())


# -- authentication -----------------------------------------------------------------------


async def test_auth_by_message_replies_with_user_and_cc_cursor(server, seeded):
    """A valid auth message is answered with ok, the user gid and the current cc cursor."""
    ws = await open_ws(server)
    await ws.send(json.dumps({"op": "auth", "jwt": jwt_for(seeded, 0)}))
    reply = await recv(ws)
    assert reply == {
        "op": "auth", "ok": True, "user": seeded.users[0].gid, "cc.cursor": log().cursor("cc"),
    }
    await ws.close()


async def test_auth_by_bearer_header(server, seeded):
    """An Authorization: Bearer header authenticates the upgrade; the server speaks first."""
    ws = await open_ws(
        server, additional_headers={"Authorization": f"Bearer {jwt_for(seeded, 1)}"}
    )
    reply = await recv(ws)
    assert reply["op"] == "auth" and reply["user"] == seeded.users[1].gid
    await subscribe(ws, seeded.projects[0].gid)
    await ws.close()


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _bad_tokens(user: str) -> dict[str, str]:
    now = int(time.time())
    claims = {"sub": user, "iat": now, "exp": now + 600}
    return {
        "forged": pyjwt.encode(claims, "not-the-secret-but-long-enough-0123456789", "HS256"),
        "expired": tokens.issue(user, ttl=-60),
        "alg-none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        "garbage": "not-a-jwt",
    }


@pytest.mark.parametrize("kind", ["forged", "expired", "alg-none", "garbage"])
async def test_bad_token_in_message_closes_4001(server, seeded, kind):
    """Forged, expired, alg:none and malformed JWTs close the connection with 4001."""
    ws = await open_ws(server)
    await ws.send(json.dumps({"op": "auth", "jwt": _bad_tokens(seeded.users[0].gid)[kind]}))
    code, got = await close_code(ws)
    assert code == 4001 and got == []


@pytest.mark.parametrize("kind", ["forged", "alg-none"])
async def test_bad_token_in_header_closes_4001(server, seeded, kind):
    """A bad bearer header closes with 4001 before anything is sent."""
    token = _bad_tokens(seeded.users[0].gid)[kind]
    ws = await open_ws(server, additional_headers={"Authorization": f"Bearer {token}"})
    code, got = await close_code(ws)
    assert code == 4001 and got == []


async def test_no_auth_within_timeout_closes_4001(server, seeded):
    """A connection that never authenticates is closed with 4001 after auth_timeout."""
    ws = await open_ws(server)
    code, got = await close_code(ws)
    assert code == 4001 and got == []


async def test_subscribe_before_auth_closes_4001(server, seeded):
    """Any first message other than auth is an authentication failure."""
    ws = await open_ws(server)
    await ws.send(json.dumps({"op": "subscribe", "project": seeded.projects[0].gid}))
    code, _ = await close_code(ws)
    assert code == 4001


# -- live delivery ------------------------------------------------------------------------


async def test_live_events_arrive_in_order_with_strictly_increasing_cursors(server, seeded):
    """Appended job events reach a subscriber exactly as logged, in cursor order."""
    project = seeded.projects[0].gid
    ws = await open_ws(server, jwt_for(seeded, 0))
    reply = await subscribe(ws, project)
    assert reply["recovered"] is True and reply["cc.cursor"] == log().cursor("cc")
    tokens_ = [new_token() for _ in range(3)]
    appended = [append_job(project, tokens_[i % 3], remaining=30 - i) for i in range(30)]
    got = await events(ws, 30)
    assert [e["cursor"] for e in got] == appended
    assert all(a < b for a, b in zip(appended, appended[1:], strict=False))
    page = log().read("cc", reply["cc.cursor"])
    assert got == [e.as_dict() for e in page.events]
    await ws.close()


async def test_events_are_batched_into_sync_frames(server, seeded):
    """Events appended together go out together; every frame is a well-formed sync op."""
    project = seeded.projects[0].gid
    ws = await open_ws(server, jwt_for(seeded, 0))
    await subscribe(ws, project)
    batch = [job_event(token=new_token(), project=project, job="bulk_delete_records",
                       status="queued", info={}, created_on=1.0, updated_on=1.0, insert=True)
             for _ in range(50)]
    cursors = log().append("cc", batch)
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(WAIT):
        while sum(len(f["sync"]) for f in frames) < 50:
            frames.append(await recv(ws))
    assert all(f["op"] == "sync" for f in frames)
    assert len(frames) < 50
    assert [e["cursor"] for f in frames for e in f["sync"]] == cursors
    await ws.close()


async def test_project_space_events_are_delivered_and_replayed(server, seeded):
    """Record events of the subscribed project's own space arrive live and from a cursor."""
    project = seeded.projects[0].gid
    first = append_record(project)
    second = append_record(project, action="DELETE")
    ws = await open_ws(server, jwt_for(seeded, 0))
    reply = await subscribe(ws, project, cursor=first)
    assert reply["recovered"] is True and reply["cursor"] == second
    third = append_record(project)
    got = await events(ws, 2)
    assert [(e["type"], e["cursor"]) for e in got] == [(project, second), (project, third)]
    assert got[0]["action"] == "DELETE" and got[0]["data_type"] == "records"
    await ws.close()


async def test_no_cross_project_leakage(server, seeded):
    """A subscriber of one project never receives another project's cc or space events."""
    a, b = seeded.projects[0].gid, seeded.projects[1].gid
    ws = await open_ws(server, jwt_for(seeded, 0))
    await subscribe(ws, a)
    for _ in range(5):
        append_job(b, new_token())
        append_record(b)
    got = await nothing_more(ws, lambda: append_job(a, new_token()))
    assert len(got) == 1 and got[0]["data"]["project_gid"] == a
    await ws.close()


async def test_jobs_filter_narrows_to_those_jobs(server, seeded):
    """With a jobs filter only those jobs' cc events arrive, no other jobs, no records."""
    project = seeded.projects[0].gid
    mine, other = new_token(), new_token()
    ws = await open_ws(server, jwt_for(seeded, 0))
    await subscribe(ws, project, jobs=[mine])
    append_job(project, other)
    append_record(project)
    first = append_job(project, mine, remaining=5)
    append_job(project, other)
    got = await nothing_more(ws, lambda: append_job(project, mine, status="done"))
    assert [e["cursor"] for e in got][0] == first
    assert [e["data_key"] for e in got] == [mine, mine]
    await ws.close()


async def test_star_covers_every_visible_project_only(server, seeded):
    """"*" delivers job events of the user's projects and nothing of other projects."""
    a, b = seeded.projects[0].gid, seeded.projects[1].gid
    user = make_user()
    with Session(get_engine()) as session:
        session.add(Member(project_gid=a, user_gid=user))
        session.commit()
    ws = await open_ws(server, tokens.issue(user))
    reply = await subscribe(ws, "*")
    assert reply["cursor"] is None
    append_job(b, new_token())
    got = await nothing_more(ws, lambda: append_job(a, new_token()))
    assert [e["data"]["project_gid"] for e in got] == [a]
    ops = await open_ws(server, jwt_for(seeded, 2))
    await subscribe(ops, "*")
    cursors = [append_job(a, new_token()), append_job(b, new_token())]
    assert [e["cursor"] for e in await events(ops, 2)] == cursors
    await ws.close()
    await ops.close()


async def test_star_carries_live_project_space_events_of_visible_projects(server, seeded):
    """"*" without a jobs filter also delivers record events of every visible project, of no
    other, and of a project that becomes visible while it is open."""
    a, b = seeded.projects[0].gid, seeded.projects[1].gid
    user = make_user()
    with Session(get_engine()) as session:
        session.add(Member(project_gid=a, user_gid=user))
        session.commit()
    ws = await open_ws(server, tokens.issue(user))
    await subscribe(ws, "*")
    append_record(b)
    job = append_job(a, new_token())
    got = await nothing_more(ws, lambda: append_record(a))
    assert [(e["type"], e["data_type"]) for e in got] == [("cc", "jobs"), (a, "records")]
    assert got[0]["cursor"] == job
    with Session(get_engine()) as session:
        session.add(Member(project_gid=b, user_gid=user))
        session.commit()
    await eventually(lambda: all(b in p.allowed for p in server.hub.subscribers)
                     and b in server.reader.positions)
    got = await nothing_more(ws, lambda: append_record(b))
    assert [e["type"] for e in got] == [b]
    filtered = await open_ws(server, tokens.issue(user))
    await subscribe(filtered, "*", jobs=[new_token()])
    append_record(a)
    token = new_token()
    await subscribe(filtered, a, jobs=[token])
    got = await nothing_more(filtered, lambda: append_job(a, token))
    assert [e["type"] for e in got] == ["cc"]  # a jobs filter: no project-space events
    await ws.close()
    await filtered.close()


async def test_unsubscribe_stops_events(server, seeded):
    """After unsubscribe (answered with "unsubscribed") no more events of the project come."""
    a, b = seeded.projects[0].gid, seeded.projects[1].gid
    ws = await open_ws(server, jwt_for(seeded, 0))
    await subscribe(ws, a)
    await subscribe(ws, b)
    reply = await request(ws, {"op": "unsubscribe", "project": a, "id": 3})
    assert reply == {"op": "unsubscribed", "project": a, "id": 3}
    append_job(a, new_token())
    got = await nothing_more(ws, lambda: append_job(b, new_token()))
    assert [e["data"]["project_gid"] for e in got] == [b]
    await ws.close()


# -- snapshot -----------------------------------------------------------------------------


def _insert_jobs(rows: list[tuple[str, str, str]]) -> None:
    with Session(get_engine()) as session:
        for i, (token, project, status) in enumerate(rows):
            session.add(Job(
                token=token, project_gid=project, job="bulk_undelete_records", status=status,
                info={"total": 10, "remaining": 10 - i}, created_on=100.0 + i,
                updated_on=200.0 + i,
            ))
        session.commit()


async def test_snapshot_lists_the_projects_unfinished_jobs(server, seeded):
    """subscribed.jobs holds the current state of the project's queued/processing jobs."""
    a, b = seeded.projects[0].gid, seeded.projects[1].gid
    queued, processing, done, elsewhere = (new_token() for _ in range(4))
    _insert_jobs([(queued, a, "queued"), (processing, a, "processing"), (done, a, "done"),
                  (elsewhere, b, "processing")])
    ws = await open_ws(server, jwt_for(seeded, 0))
    reply = await subscribe(ws, a)
    assert reply["jobs"] == [
        {"token": queued, "project_gid": a, "job": "bulk_undelete_records", "status": "queued",
         "info": {"total": 10, "remaining": 10}, "created_on": 100.0, "updated_on": 200.0},
        {"token": processing, "project_gid": a, "job": "bulk_undelete_records",
         "status": "processing", "info": {"total": 10, "remaining": 9}, "created_on": 101.0,
         "updated_on": 201.0},
    ]
    star = await subscribe(ws, "*")
    assert {j["token"] for j in star["jobs"]} == {queued, processing, elsewhere}
    await ws.close()


async def test_snapshot_with_jobs_filter_includes_finished_jobs(server, seeded):
    """A watcher of named jobs learns their state even when they already ended."""
    a = seeded.projects[0].gid
    done, running = new_token(), new_token()
    _insert_jobs([(done, a, "done"), (running, a, "processing")])
    ws = await open_ws(server, jwt_for(seeded, 0))
    reply = await subscribe(ws, a, jobs=[done])
    assert [(j["token"], j["status"]) for j in reply["jobs"]] == [(done, "done")]
    await ws.close()


# -- replay and resume --------------------------------------------------------------------


async def test_replay_from_cc_cursor_then_live(server, seeded):
    """Given a cc cursor, the missed events come in order after "subscribed", then live ones."""
    project = seeded.projects[0].gid
    appended = [append_job(project, new_token()) for _ in range(10)]
    ws = await open_ws(server, jwt_for(seeded, 0))
    reply = await subscribe(ws, project, cc_cursor=appended[2])
    assert reply["recovered"] is True and reply["cc.cursor"] == appended[-1]
    live = append_job(project, new_token())
    got = await events(ws, 8)
    assert [e["cursor"] for e in got] == appended[3:] + [live]
    await ws.close()


async def test_replay_of_many_events_is_complete(server, seeded):
    """A replay longer than one page delivers every missed event once, in order."""
    project = seeded.projects[0].gid
    start = log().cursor("cc")
    appended: list[int] = []
    for _ in range(3):
        appended += log().append("cc", [
            job_event(token=new_token(), project=project, job="bulk_delete_records",
                      status="done", info={"total": 1}, created_on=1.0, updated_on=1.0)
            for _ in range(500)
        ])
    ws = await open_ws(server, jwt_for(seeded, 0))
    await subscribe(ws, project, cc_cursor=start)
    got = await events(ws, len(appended))
    assert [e["cursor"] for e in got] == appended
    await ws.close()


def record_dicts(project: str, cursors: range, action: str, gids: list[str]) -> list[dict]:
    return [{"type": project, "cursor": c, "action": action, "data_type": "records",
             "data_key": g} for c, g in zip(cursors, gids, strict=True)]


async def test_resume_from_inside_a_packed_entry_gets_exactly_the_rest_once(server, seeded):
    """A batch's record events are packed entries in the log; a subscriber resuming with a
    cursor inside one gets every later event exactly once, in order, each with its own
    cursor and the same JSON as a single event, then the live ones."""
    project = seeded.projects[0].gid
    gids = [str(uuid.uuid4()) for _ in range(2500)]
    cursors = log().append_records(project, [("records", "UPDATE", gids)])
    ws = await open_ws(server, jwt_for(seeded, 0))
    reply = await subscribe(ws, project, cursor=cursors[1234])
    assert reply["recovered"] is True and reply["cursor"] == cursors[-1]
    live = log().append_records(project, [("records", "DELETE", gids[:3])])
    got = await events(ws, 2500 - 1235 + 3)
    assert got == (record_dicts(project, cursors[1235:], "UPDATE", gids[1235:])
                   + record_dicts(project, live, "DELETE", gids[:3]))
    sentinel = append_record(project)  # nothing else came in between: no duplicate
    assert [e["cursor"] for e in await events(ws, 1)] == [sentinel]
    await ws.close()


async def test_resume_inside_a_pack_under_concurrent_packed_appends_is_gap_free(server, seeded):
    """Packs appended while a subscription resuming from inside an earlier pack is set up
    (replay, then the held live packs) arrive once each, with no gap."""
    project = seeded.projects[0].gid
    first = log().append_records(project, [("records", "UPDATE",
                                            [f"a{i}" for i in range(1500)])])
    stop = threading.Event()
    appended: list[int] = []

    def writer() -> None:
        i = 0
        while not stop.is_set() or len(appended) < 3000:
            i += 1
            n = 1 + (i * 37) % 700
            appended.extend(log().append_records(
                project, [("records", "UPDATE", [f"b{i}-{k}" for k in range(n)])]))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        await eventually(lambda: len(appended) >= 1000)
        ws = await open_ws(server, jwt_for(seeded, 0))
        await subscribe(ws, project, cursor=first[700])
    finally:
        stop.set()
        await asyncio.to_thread(thread.join)
    expected = list(first[701:]) + appended
    got = await events(ws, len(expected))
    assert [e["cursor"] for e in got] == expected
    await ws.close()


async def test_a_project_subscriber_follows_a_large_packed_job(server, seeded):
    """100,000 record events appended as a job appends them (packed, in two calls) reach a
    live project subscriber, every one in order, without it being closed as too slow."""
    project = seeded.projects[0].gid
    ws = await open_ws(server, jwt_for(seeded, 0))
    await subscribe(ws, project)
    gids = [f"r{i}" for i in range(100_000)]
    cursors = list(log().append_records(project, [("records", "DELETE", gids[:50_000])]))
    cursors += log().append_records(project, [("records", "DELETE", gids[50_000:])])
    got = await events(ws, len(gids), timeout=60)
    assert [e["cursor"] for e in got] == cursors
    assert [e["data_key"] for e in got] == gids
    assert server.slow_closed == 0
    assert server.deliveries >= len(gids)
    await ws.close()


async def test_cursor_below_floor_is_not_recovered_and_not_replayed(server, seeded):
    """Below the floor: recovered false, no partial replay, live events follow."""
    project = seeded.projects[0].gid
    appended = [append_job(project, new_token()) for _ in range(10)]
    floor = trim_below("cc", appended[7])
    assert floor == appended[7]
    ws = await open_ws(server, jwt_for(seeded, 0))
    reply = await subscribe(ws, project, cc_cursor=appended[0])
    assert reply["recovered"] is False and reply["cc.cursor"] == appended[-1]
    got = await nothing_more(ws, lambda: append_job(project, new_token()))
    assert len(got) == 1
    await ws.close()


async def test_cursor_at_floor_minus_one_is_recovered(server, seeded):
    """A cursor just below the retained history is still complete: recovered, replayed."""
    project = seeded.projects[0].gid
    appended = [append_job(project, new_token()) for _ in range(10)]
    floor = trim_below("cc", appended[7])
    ws = await open_ws(server, jwt_for(seeded, 0))
    reply = await subscribe(ws, project, cc_cursor=floor - 1)
    assert reply["recovered"] is True
    got = await events(ws, 3)
    assert [e["cursor"] for e in got] == appended[-3:]
    await ws.close()


async def test_disconnect_and_resume_gets_each_missed_event_once_in_order(server, seeded):
    """Reconnecting with the last cursor seen yields every missed event exactly once."""
    project = seeded.projects[0].gid
    token = new_token()
    ws = await open_ws(server, jwt_for(seeded, 0))
    await subscribe(ws, project)
    first = [append_job(project, token, remaining=100 - i) for i in range(5)]
    got = await events(ws, 5)
    last = got[-1]["cursor"]
    await ws.close()
    missed = [append_job(project, token, remaining=50 - i) for i in range(7)]
    ws = await open_ws(server, jwt_for(seeded, 0))
    await subscribe(ws, project, cc_cursor=last)
    live = append_job(project, token, status="done")
    got = await events(ws, 8)
    assert [e["cursor"] for e in got] == missed + [live]
    assert last == first[-1]
    await ws.close()


async def test_replay_live_handoff_is_gap_free_under_concurrent_appends(server, seeded):
    """Events appended while a resuming subscription is set up arrive once each, no gaps."""
    project = seeded.projects[0].gid
    start = append_job(project, new_token())
    stop = threading.Event()
    appended: list[int] = []

    def writer() -> None:
        while not stop.is_set() or len(appended) < 200:
            appended.append(append_job(project, new_token()))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        await eventually(lambda: len(appended) >= 50)
        ws = await open_ws(server, jwt_for(seeded, 0))
        await subscribe(ws, project, cc_cursor=start)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join)
    got = await events(ws, len(appended))
    assert [e["cursor"] for e in got] == appended
    await ws.close()


async def test_redis_data_loss_closes_4008_and_resume_is_not_recovered(server, seeded):
    """After Redis lost the log, subscribers are closed 4008 and resuming says recovered:false."""
    project = seeded.projects[0].gid
    ws = await open_ws(server, jwt_for(seeded, 0))
    await subscribe(ws, project)
    before = append_job(project, new_token())
    assert [e["cursor"] for e in await events(ws, 1)] == [before]
    r = get_redis()
    r.delete(keys.sync_stream("cc"), keys.sync_counter("cc"), keys.sync_floor("cc"))
    after = append_job(project, new_token())
    assert after > before
    code, got = await close_code(ws)
    assert code == 4008 and got == []  # nothing from the new epoch reached the old cursor
    ws = await open_ws(server, jwt_for(seeded, 0))
    reply = await subscribe(ws, project, cc_cursor=before)
    assert reply["recovered"] is False
    got = await nothing_more(ws, lambda: append_job(project, new_token()))
    assert len(got) == 1 and got[0]["cursor"] > after
    await ws.close()


async def test_reader_survives_losing_its_redis_connection(server, seeded):
    """Killing the reader's Redis connection loses and duplicates nothing."""
    project = seeded.projects[0].gid
    ws = await open_ws(server, jwt_for(seeded, 0))
    await subscribe(ws, project)
    appended = [append_job(project, new_token())]
    await events(ws, 1)
    r = get_redis()
    client_id = server.reader._client_id
    assert client_id is not None
    r.client_kill_filter(_id=client_id)
    appended = [append_job(project, new_token()) for _ in range(5)]
    got = await events(ws, 5)
    assert [e["cursor"] for e in got] == appended
    assert server.reader.reconnects >= 1
    await ws.close()


# -- authorisation ------------------------------------------------------------------------


async def test_non_member_gets_403_and_connection_stays_open(server, seeded):
    """Subscribing to a project the user may not see is a 403; the connection stays usable."""
    a = seeded.projects[0].gid
    ws = await open_ws(server, tokens.issue(make_user()))
    reply = await request(ws, {"op": "subscribe", "project": a, "id": "s1"})
    assert reply["op"] == "error" and reply["code"] == 403 and reply["id"] == "s1"
    append_job(a, new_token())
    star = await subscribe(ws, "*")
    assert star["jobs"] == []
    reply = await request(ws, {"op": "subscribe", "project": str(uuid.uuid4())})
    assert reply["code"] == 403
    await ws.close()


async def test_revoked_membership_unsubscribes_open_connection(server, seeded):
    """Revoking a membership stops its events on open connections, with a 403 notice."""
    a, b = seeded.projects[0].gid, seeded.projects[1].gid
    member = seeded.users[1].gid
    ws = await open_ws(server, jwt_for(seeded, 1))
    await subscribe(ws, a)
    await subscribe(ws, b)
    with Session(get_engine()) as session:
        row = session.get(Member, (a, member))
        assert row is not None
        row.status = "invited"
        session.add(row)
        session.commit()
    notice = await recv(ws)
    assert notice["op"] == "error" and notice["code"] == 403 and notice["project"] == a
    append_job(a, new_token())
    got = await nothing_more(ws, lambda: append_job(b, new_token()))
    assert [e["data"]["project_gid"] for e in got] == [b]
    await ws.close()


async def test_ops_flag_taken_away_reaches_open_connections(server, seeded):
    """Clearing a user's ops flag narrows its open "*" subscription to its memberships at the
    next refresh, although its token still claims ops."""
    a, b = seeded.projects[0].gid, seeded.projects[1].gid
    user = make_user(ops=True)
    with Session(get_engine()) as session:
        session.add(Member(project_gid=b, user_gid=user))
        session.commit()
    ws = await open_ws(server, tokens.issue(user, ops=True))
    await subscribe(ws, "*")
    got = await nothing_more(ws, lambda: append_job(a, new_token()))
    assert [e["data"]["project_gid"] for e in got] == [a]  # ops: sees every project
    with Session(get_engine()) as session:
        row = session.get(User, user)
        assert row is not None
        row.ops = False
        session.add(row)
        session.commit()
    notice = await recv(ws)
    assert notice["op"] == "error" and notice["code"] == 403 and notice["project"] == a
    append_job(a, new_token())
    got = await nothing_more(ws, lambda: append_job(b, new_token()))
    assert [e["data"]["project_gid"] for e in got] == [b]
    reply = await request(ws, {"op": "subscribe", "project": a})
    assert reply["op"] == "error" and reply["code"] == 403
    await ws.close()


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("frame", [
    "{nope", "[1, 2]", json.dumps({"op": "fly"}), json.dumps({"op": "subscribe"}),
    json.dumps({"op": "subscribe", "project": "*", "cursor": 5}), b"\x00\x01binary",
    "[" * 30_000,
])
async def test_bad_input_is_a_400_and_the_connection_stays_usable(server, seeded, frame):
    """Bad JSON, unknown ops and malformed requests get error 400; the socket keeps working."""
    project = seeded.projects[0].gid
    ws = await open_ws(server, jwt_for(seeded, 0))
    await ws.send(frame)
    reply = await recv(ws)
    assert reply["op"] == "error" and reply["code"] == 400 and reply["message"]
    await subscribe(ws, project)
    cursor = append_job(project, new_token())
    assert [e["cursor"] for e in await events(ws, 1)] == [cursor]
    await ws.close()


# -- slow consumers -----------------------------------------------------------------------


def _slow_socket(port: int) -> socket.socket:
    """A client socket with a tiny receive buffer, so the server's side congests quickly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


PAD = "x" * 4000  # makes each event big enough to fill socket buffers quickly


async def test_slow_consumer_gets_progress_coalesced_and_every_terminal(server, seeded):
    """A subscriber that stops reading gets the latest progress of a job, never its end lost."""
    project = seeded.projects[0].gid
    token = new_token()
    ws = await connect(url(server), sock=_slow_socket(server.port), max_queue=1,
                       compression=None, max_size=None)
    await ws.send(json.dumps({"op": "auth", "jwt": jwt_for(seeded, 0)}))
    await recv(ws)
    await subscribe(ws, project)
    appended = 0
    async with asyncio.timeout(60):
        while server.hub.coalesced < 20:
            last = append_job(project, token, info={"remaining": 10**6 - appended, "pad": PAD})
            appended += 1
            if appended % 20 == 0:
                await eventually(lambda last=last: server.reader.positions["cc"] >= last)
    final = append_job(project, token, status="done", info={"remaining": 0})
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(WAIT):
        while not got or got[-1]["cursor"] != final:
            msg = await recv(ws)
            assert msg["op"] == "sync"
            got.extend(msg["sync"])
    cursors = [e["cursor"] for e in got]
    assert cursors == sorted(set(cursors))
    assert len(got) < appended + 1
    assert got[-1]["data"]["status"] == "done"
    assert server.slow_closed == 0
    await ws.close()


async def test_slow_consumer_past_the_bound_is_closed_4008_and_can_resume(seeded):
    """Too far behind even after coalescing: closed with 4008; resuming loses nothing."""
    project = seeded.projects[0].gid
    async with StreamServer(host="127.0.0.1", port=0, outbox_limit=5, block_ms=200) as server:
        ws = await connect(url(server), sock=_slow_socket(server.port), max_queue=1,
                           compression=None, max_size=None)
        await ws.send(json.dumps({"op": "auth", "jwt": jwt_for(seeded, 0)}))
        await recv(ws)
        await subscribe(ws, project)
        appended: list[int] = []
        async with asyncio.timeout(60):
            while server.slow_closed == 0:
                appended.append(append_job(project, new_token(), info={"pad": PAD}))
                if len(appended) % 10 == 0:
                    await eventually(lambda: server.reader.positions["cc"] >= appended[-1])
        code, got = await close_code(ws)
        assert code == 4008
        received = [e["cursor"] for m in got for e in m["sync"]]
        assert received == appended[: len(received)] and len(received) < len(appended)
        ws = await open_ws(server, jwt_for(seeded, 0))
        await subscribe(ws, project, cc_cursor=received[-1] if received else appended[0] - 1)
        rest = await events(ws, len(appended) - len(received))
        assert [e["cursor"] for e in rest] == appended[len(received):]
        await ws.close()


# -- keepalive ----------------------------------------------------------------------------


async def test_server_answers_pings_and_keeps_serving(server, seeded):
    """A client's websocket pings are answered with pongs; the connection goes on serving."""
    project = seeded.projects[0].gid
    ws = await open_ws(server, jwt_for(seeded, 0))
    await subscribe(ws, project)
    for payload in (b"first", b"second"):
        pong = await ws.ping(payload)
        async with asyncio.timeout(WAIT):
            latency = await pong
        assert latency >= 0
    cursor = append_job(project, new_token())
    assert [e["cursor"] for e in await events(ws, 1)] == [cursor]
    await ws.close()


async def test_server_pings_its_connections(seeded):
    """The server sends keepalive pings itself: the client's pongs give it a latency."""
    async with StreamServer(host="127.0.0.1", port=0, ping_interval=0.1, block_ms=200) as srv:
        ws = await open_ws(srv, jwt_for(seeded, 0))
        await eventually(lambda: len(srv.hub.subscribers) == 1)
        [peer] = srv.hub.subscribers
        assert isinstance(peer, Peer)
        await eventually(lambda: peer.ws.latency > 0)
        await ws.close()


# -- plain HTTP ---------------------------------------------------------------------------


async def test_healthz_reports_redis_and_reader(server, seeded):
    """/healthz answers 200 with JSON while Redis and the reader are fine."""
    await eventually(lambda: server.reader.connected)
    status, ctype, body = await asyncio.to_thread(http_get, server, "/healthz")
    assert status == 200 and ctype == "application/json"
    assert json.loads(body) == {"status": "ok", "redis": True, "reader": True}


async def test_metrics_expose_connections_subscriptions_deliveries(server, seeded):
    """/metrics is Prometheus text with the stream's gauges and counters."""
    project = seeded.projects[0].gid
    ws = await open_ws(server, jwt_for(seeded, 0))
    await subscribe(ws, project)
    append_job(project, new_token())
    await events(ws, 1)
    status, ctype, body = await asyncio.to_thread(http_get, server, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    lines = dict(
        line.rsplit(" ", 1) for line in body.splitlines() if line and not line.startswith("#")
    )
    assert float(lines["bulkjobs_stream_connections"]) == 1
    assert float(lines["bulkjobs_stream_subscriptions"]) == 1
    assert float(lines["bulkjobs_stream_deliveries_total"]) == 1
    for name in ("bulkjobs_stream_coalesced_total", "bulkjobs_stream_reader_lag_seconds",
                 "bulkjobs_stream_slow_closed_total", "bulkjobs_stream_reader_connected"):
        assert name in lines
    await ws.close()


async def test_unknown_path_is_404(server, seeded):
    """Paths other than /sync, /healthz and /metrics are 404."""
    status, _, _ = await asyncio.to_thread(http_get, server, "/nope")
    assert status == 404
