"""A websocket resume from a cursor that the sync log's hard bound (``SYNC_MAX_EVENTS``)
cut away answers ``recovered: false``; one from the floor on is replayed whole."""

from __future__ import annotations

import uuid

import pytest

from bulkjobs.connections import get_redis
from bulkjobs.synclog import SyncLog
from tests.stream.conftest import events, jwt_for, open_ws, subscribe

pytestmark = pytest.mark.anyio


async def test_resume_below_the_bound_is_not_recovered(server, seeded):
    """Three batches of 1,000 record events into a project space bounded at 1,500: a
    subscriber resuming from the first batch is told recovered false; one resuming just
    below the floor gets every retained event, in order."""
    project = seeded.projects[0].gid
    log = SyncLog(get_redis(), dedupe_ttl=60, max_events=1500)
    appended: list[int] = []
    for _ in range(3):
        appended += log.append_records(
            project, [("records", "UPDATE", [str(uuid.uuid4()) for _ in range(1000)])])
    last, floor = log.cursors(project)
    assert floor == last - 1500 + 1
    ws = await open_ws(server, jwt_for(seeded, 0))
    reply = await subscribe(ws, project, cursor=appended[10])
    assert reply["recovered"] is False and reply["cursor"] == last
    await ws.close()
    ws = await open_ws(server, jwt_for(seeded, 0))
    reply = await subscribe(ws, project, cursor=floor - 1)
    assert reply["recovered"] is True
    got = await events(ws, 1500)
    assert [e["cursor"] for e in got] == list(range(floor, last + 1))
    await ws.close()
