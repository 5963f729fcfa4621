"""The auto-resuming client (stream/client.py) against an in-process server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from bulkjobs import keys, tokens
from bulkjobs.connections import get_redis
from bulkjobs.settings import get_settings
from stream.client import AuthFailed, StreamClient, StreamError
from stream.server import StreamServer
from tests.stream.conftest import WAIT, append_job, append_record, jwt_for, make_user, url

pytestmark = pytest.mark.anyio


async def take(client: StreamClient, n: int) -> list[dict[str, Any]]:
    """The next ``n`` items of ``client.events()``."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(WAIT):
        async for item in client.events():
            out.append(item)
            if len(out) == n:
                break
    return out


async def test_client_yields_events_and_remembers_cursors(server, seeded):
    """Events come out in order and the client tracks the last cursor of each space."""
    project = seeded.projects[0].gid
    async with StreamClient(url(server), jwt_for(seeded, 0)) as client:
        assert client.user == seeded.users[0].gid
        reply = await client.subscribe(project)
        assert reply["op"] == "subscribed" and reply["recovered"] is True
        job = append_job(project, str(uuid.uuid4()))
        record = append_record(project)
        got = await take(client, 2)
        assert [(e["type"], e["cursor"]) for e in got] == [("cc", job), (project, record)]
        assert client.cursors == {project: {"cc_cursor": job, "cursor": record}}


async def test_client_resumes_after_a_server_restart_without_loss_or_duplicates(seeded):
    """Across a stream-server restart every event arrives exactly once, in order."""
    project = seeded.projects[0].gid
    token = str(uuid.uuid4())
    first = StreamServer(host="127.0.0.1", port=0, block_ms=200)
    await first.start()
    port = first.port
    async with StreamClient(f"ws://127.0.0.1:{port}/sync", jwt_for(seeded, 0),
                            max_backoff=0.2) as client:
        await client.subscribe(project, jobs=[token])
        before = [append_job(project, token, remaining=9 - i) for i in range(3)]
        assert [e["cursor"] for e in await take(client, 3)] == before
        await first.close()  # websockets closed with 1001
        missed = [append_job(project, token, remaining=5 - i) for i in range(4)]
        async with StreamServer(host="127.0.0.1", port=port, block_ms=200):
            got = await take(client, 1)
            assert got[0]["op"] == "subscribed" and got[0]["recovered"] is True
            live = append_job(project, token, status="done", remaining=0)
            got = await take(client, 5)
            assert [e["cursor"] for e in got] == missed + [live]
            assert client.reconnects == 1


async def test_client_surfaces_lost_history_as_recovered_false(server, seeded):
    """When the log lost events, the client resumes and yields recovered:false, then goes on."""
    project = seeded.projects[0].gid
    async with StreamClient(url(server), jwt_for(seeded, 0), max_backoff=0.2) as client:
        await client.subscribe(project)
        before = append_job(project, str(uuid.uuid4()))
        assert [e["cursor"] for e in await take(client, 1)] == [before]
        get_redis().delete(keys.sync_stream("cc"), keys.sync_counter("cc"),
                           keys.sync_floor("cc"))
        append_job(project, str(uuid.uuid4()))  # lost to the old cursor: closes with 4008
        notice = (await take(client, 1))[0]
        assert notice["op"] == "subscribed" and notice["recovered"] is False
        assert client.cursors[project]["cc_cursor"] == notice["cc.cursor"]
        live = append_job(project, str(uuid.uuid4()))
        assert [e["cursor"] for e in await take(client, 1)] == [live]


async def test_subscribe_to_a_foreign_project_raises_403(server, seeded):
    """A refused subscription raises StreamError with the server's code; the client goes on."""
    async with StreamClient(url(server), tokens.issue(make_user())) as client:
        with pytest.raises(StreamError) as info:
            await client.subscribe(seeded.projects[0].gid)
        assert info.value.code == 403
        assert client.subscriptions == {}
        reply = await client.subscribe("*")
        assert reply["jobs"] == []


async def test_bad_jwt_raises_auth_failed(server, seeded):
    """A rejected JWT raises AuthFailed when entering the client."""
    with pytest.raises(AuthFailed):
        async with StreamClient(url(server), "not-a-jwt"):
            pass


async def test_a_blocked_address_is_a_429_not_a_rejected_jwt(server, seeded, monkeypatch):
    """While the address has failed to log in too often, entering the client with a valid
    JWT raises StreamError 429, not AuthFailed (the token is fine: try again later)."""
    monkeypatch.setattr(get_settings(), "login_failures_per_address", 1)
    with pytest.raises(AuthFailed):
        async with StreamClient(url(server), "not-a-jwt"):
            pass
    with pytest.raises(StreamError) as info:
        async with StreamClient(url(server), jwt_for(seeded, 0)):
            pass
    assert info.value.code == 429 and not isinstance(info.value, AuthFailed)


async def test_unsubscribe_stops_events_for_that_project(server, seeded):
    """After unsubscribe the client gets no more events of that project."""
    a, b = seeded.projects[0].gid, seeded.projects[1].gid
    async with StreamClient(url(server), jwt_for(seeded, 0)) as client:
        await client.subscribe(a)
        await client.subscribe(b)
        await client.unsubscribe(a)
        assert set(client.cursors) == {b}
        append_job(a, str(uuid.uuid4()))
        mine = append_job(b, str(uuid.uuid4()))
        assert [e["cursor"] for e in await take(client, 1)] == [mine]
