"""The stream under trouble, with real processes, real sockets and real Redis: a client that
keeps dropping its connection, a stream server killed with SIGKILL, and a Redis restarted
without its data.  In each, real jobs run in a Celery worker while a subscriber watches, and
what the subscriber got is compared with the sync log itself."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import select
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bulkjobs.synclog import SyncLog
from models import Job
from models.engine import get_engine
from models.seed import SeedResult
from stream.client import StreamClient
from tests.e2e import procfile
from tests.e2e.conftest import Proc, System, free_port, wait_for
from tests.e2e.helpers import Api, Subscriber, terminal_of
from tests.e2e.redis_server import PrivateRedis, private_redis_server

pytestmark = pytest.mark.e2e

#: Upper bound on waiting for something that must happen; reaching it fails the test.
WAIT = 60.0


def logged(r: redis.Redis, space: str, after: int, project: str | None = None
           ) -> list[dict[str, Any]]:
    """Every event of ``space`` after cursor ``after`` as the sync log holds it (of
    ``project`` only, for the ``cc`` space), following pages."""
    out: list[dict[str, Any]] = []
    for page in SyncLog(r).pages(space, after):
        assert page.recovered, f"the log lost events of {space} after {after}"
        out += [e.as_dict() for e in page.events if project is None or e.project == project]
        if page.events:
            after = page.events[-1].cursor
    return out


def ids(events: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(e["type"], e["cursor"]) for e in events]


def split(events: list[dict[str, Any]], project: str) -> tuple[list[Any], list[Any]]:
    """``(cc events, project-space events)`` of what one connection received, in order."""
    return ([e for e in events if e["type"] == "cc"],
            [e for e in events if e["type"] == project])


def queue_jobs(api: Api, heads: list[str]) -> list[str]:
    """One job per head: delete its 9 children (and their subtrees): a processing and a few
    progress events each in ``cc``, 99 record events each in the project space."""
    return [api.queue("records/bulk/delete", [{"children": h}]) for h in heads]


# -- a client that keeps dropping its connection -----------------------------------------


async def abort(ws: ClientConnection) -> None:
    """Drop the TCP connection without a close handshake, as a crashing client would."""
    ws.transport.abort()
    try:
        await ws.wait_closed()
    except ConnectionClosed:
        pass


async def flaky_reader(url: str, jwt: str, project: str, *, cc: int, cursor: int,
                       done: Any, rng: random.Random) -> tuple[list[dict[str, Any]], list[Any]]:
    """Subscribe to ``project`` from the cursors, take a random number of events (maybe
    none, maybe stopping inside a frame), drop the connection, resume from the last cursors
    taken; until ``done(events)``.  Returns the events taken and the ``subscribed`` replies."""
    got: list[dict[str, Any]] = []
    replies: list[dict[str, Any]] = []
    while True:
        ws = await connect(url, max_size=None, compression=None)
        await ws.send(json.dumps({"op": "auth", "jwt": jwt}))
        await ws.send(json.dumps({"op": "subscribe", "project": project, "cc_cursor": cc,
                                  "cursor": cursor}))
        budget = rng.randint(-1, 15)  # -1: drop before even the subscribed reply
        taken = 0
        async with asyncio.timeout(WAIT):
            while budget >= 0:
                msg = json.loads(await ws.recv())
                if msg["op"] == "auth":
                    assert msg["ok"] is True, msg
                    continue
                if msg["op"] == "subscribed":
                    replies.append(msg)
                    continue
                assert msg["op"] == "sync", (msg, len(replies), len(got))
                for event in msg["sync"]:
                    if taken == budget:
                        break
                    got.append(event)
                    taken += 1
                    if event["type"] == "cc":
                        cc = event["cursor"]
                    else:
                        cursor = event["cursor"]
                if taken == budget:
                    break
                if done(got):
                    await ws.close()
                    return got, replies
        await abort(ws)
        if done(got):
            return got, replies


def test_random_disconnects_during_jobs_lose_and_duplicate_nothing(
        system: System, seeded: SeedResult, redis_client: redis.Redis):
    """A subscriber that drops its connection at random points while jobs run, resuming
    each time from its last cursors, ends up with exactly the log's events of its project
    in both spaces: in order, none missing, none twice."""
    project = seeded.projects[0]
    api = Api(system.web_url, project.gid)
    assert api.auth(project.api_key)["success"]
    cc_start = api.cc_cursor()
    p_start = SyncLog(redis_client).cursor(project.gid)
    seed_value = random.randrange(2**32)
    rng = random.Random(seed_value)
    tokens: list[str] = []
    final: dict[str, int] = {}

    def done(events: list[dict[str, Any]]) -> bool:
        if not tokens or not all(terminal_of(t)(events) for t in tokens):
            return False
        if not final:  # record events come before their job's terminal event
            final["space"] = SyncLog(redis_client).cursor(project.gid)
        _, space = split(events, project.gid)
        return final["space"] == p_start or bool(space and space[-1]["cursor"] == final["space"])

    async def scenario() -> tuple[list[dict[str, Any]], list[Any]]:
        reader = asyncio.create_task(flaky_reader(
            system.stream_url, api.jwt, project.gid, cc=cc_start, cursor=p_start, done=done,
            rng=rng))
        tokens.extend(await asyncio.to_thread(queue_jobs, api, project.heads[:4]))
        return await reader

    got, replies = asyncio.run(scenario())
    expected_cc = logged(redis_client, "cc", cc_start, project.gid)
    expected_space = logged(redis_client, project.gid, p_start)
    cc, space = split(got, project.gid)
    assert len(got) == len(cc) + len(space)
    assert ids(cc) == ids(expected_cc), f"random seed {seed_value}"
    assert ids(space) == ids(expected_space), f"random seed {seed_value}"
    assert cc == expected_cc and space == expected_space  # the very same events
    assert len(expected_space) == 4 * 99 and len(expected_cc) >= 4 * 3
    assert len(replies) >= 5, "too few reconnects to test anything"
    assert all(r["recovered"] is True for r in replies), replies


# -- a stream server killed ---------------------------------------------------------------


def test_stream_server_killed_mid_job_client_resumes_exactly_once(
        system: System, seeded: SeedResult, redis_client: redis.Redis):
    """The stream process is SIGKILLed while jobs run and started again on its port; the
    product's client reconnects by itself and gets every event of the project exactly once,
    in order."""
    project = seeded.projects[0]
    api = Api(system.web_url, project.gid)
    assert api.auth(project.api_key)["success"]
    port = free_port()
    url = f"ws://127.0.0.1:{port}/sync"
    procs: list[Proc] = [procfile.stream(port)]

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, int, int]:
        got: list[dict[str, Any]] = []
        notices: list[dict[str, Any]] = []
        async with StreamClient(url, api.jwt, max_backoff=0.2) as client:
            reply = await client.subscribe(project.gid)
            cc_start, p_start = reply["cc.cursor"], reply["cursor"]
            tokens = await asyncio.to_thread(queue_jobs, api, project.heads[4:8])
            killed = False
            async with asyncio.timeout(WAIT):
                async for item in client.events():
                    if "op" in item:
                        notices.append(item)
                        continue
                    got.append(item)
                    if not killed and len(got) >= 20:
                        # Mid-job: kill it, let events pass unseen, start it again.
                        procs[0].stop(9)
                        killed = True
                        await asyncio.to_thread(
                            wait_for, lambda: terminal_of(tokens[0])(
                                logged(redis_client, "cc", cc_start, project.gid)),
                            "the first job's end")
                        procs.append(await asyncio.to_thread(procfile.stream, port))
                    if all(terminal_of(t)(got) for t in tokens):
                        space = SyncLog(redis_client).cursor(project.gid)
                        if [e for e in got if e["type"] == project.gid][-1]["cursor"] == space:
                            break
            return got, notices, cc_start, p_start, client.reconnects

    try:
        got, notices, cc_start, p_start, reconnects = asyncio.run(scenario())
    finally:
        procfile.stop_all(procs)
    cc, space = split(got, project.gid)
    assert len(got) == len(cc) + len(space)
    assert ids(cc) == ids(logged(redis_client, "cc", cc_start, project.gid))
    assert ids(space) == ids(logged(redis_client, project.gid, p_start))
    assert len(set(ids(got))) == len(got)
    assert reconnects >= 1
    resumed = [n for n in notices if n["op"] == "subscribed"]
    assert resumed and all(n["recovered"] is True for n in resumed), notices


# -- Redis restarted without its data -----------------------------------------------------


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    with private_redis_server() as server:
        yield server


@pytest.fixture
def on_private_redis(private_redis: PrivateRedis, seeded: SeedResult
                     ) -> Iterator[tuple[str, str]]:
    """A web process, a worker and a stream server whose Redis (and broker) is the private
    server; ``(web base URL, stream URL)``."""
    env = {"REDIS_URL": private_redis.url, "BROKER_URL": private_redis.url}
    web_port, stream_port = free_port(), free_port()
    procs: list[Proc] = []
    try:
        procs.append(procfile.web(web_port, STREAM_PORT=str(stream_port), **env))
        procs.append(procfile.worker(f"lossy-{web_port}", concurrency=1, **env))
        procs.append(procfile.stream(stream_port, **env))
        yield f"http://127.0.0.1:{web_port}", f"ws://127.0.0.1:{stream_port}/sync"
    finally:
        procfile.stop_all(procs)


@pytest.mark.heavy
def test_redis_restarted_without_data_cursors_grow_and_resume_is_not_recovered(
        private_redis: PrivateRedis, on_private_redis: tuple[str, str], seeded: SeedResult):
    """Redis loses everything mid-job under a running stream server: cursors keep growing
    past every earlier one, resuming from an old cursor says ``recovered: false``, new events
    flow, and both the job in flight and one queued afterwards end ``done``."""
    web, stream_url = on_private_redis
    project = seeded.projects[0]
    api = Api(web, project.gid)
    assert api.auth(project.api_key)["success"]

    async def scenario() -> dict[str, Any]:
        async with Subscriber(stream_url, api.jwt) as old:
            await old.subscribe(project.gid, cc_cursor=api.cc_cursor())
            first = await asyncio.to_thread(api.queue, "records/bulk/delete",
                                            [{"children": project.heads[0]}])
            await old.until(lambda evs: any(
                e["data_key"] == first and e["data"]["status"] == "processing" for e in evs
                if e["type"] == "cc"))
            before = max(e["cursor"] for e in old.events if e["type"] == "cc")
            private_redis.restart(keep_data=False)
            # The old connection learns that history was lost: closed with 4008.
            try:
                await old.until(lambda evs: False, timeout=WAIT)
            except ConnectionClosed:
                pass
            assert old.ws.close_code == 4008, old.ws.close_code
            seen_before = list(old.events)
        api.auth(project.api_key)  # the JWT survives, but take a fresh one anyway
        async with Subscriber(stream_url, api.jwt) as new:
            resumed = await new.subscribe(project.gid, cc_cursor=before)
            second = await asyncio.to_thread(api.queue, "records/bulk/delete",
                                             [{"children": project.heads[1]}])
            await new.until(terminal_of(second), timeout=WAIT)
        return {"first": first, "second": second, "before": before, "old": seen_before,
                "resumed": resumed, "new": new.events}

    out = asyncio.run(scenario())
    assert out["resumed"]["recovered"] is False
    assert out["resumed"]["cc.cursor"] > out["before"]
    new_cc = [e["cursor"] for e in out["new"] if e["type"] == "cc"]
    assert new_cc and min(new_cc) > max(e["cursor"] for e in out["old"])
    assert new_cc == sorted(set(new_cc))
    for token in (out["first"], out["second"]):
        wait_for(lambda token=token: job_status(token) == "done", f"job {token} done",
                 timeout=WAIT)


def job_status(token: str) -> str:
    with get_engine().connect() as conn:
        return str(conn.execute(select(Job.status).where(Job.token == token)).scalar_one())
