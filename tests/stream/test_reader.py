"""The sync-log reader (stream/reader.py) against the real Redis, with a list as its sink."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import redis

from bulkjobs import keys
from bulkjobs.connections import get_redis
from bulkjobs.revocations import announce
from bulkjobs.settings import get_settings
from bulkjobs.synclog import Item
from stream.reader import Reader
from tests.stream.conftest import WAIT, append_job, append_record, log

pytestmark = pytest.mark.anyio


class ListSink:
    """Records what the reader hands over, in order: ("events", space, cursors) / ("gap",
    space) / ("revoked", users joined by commas)."""

    def __init__(self) -> None:
        self.wanted: set[str] = set()
        self.calls: list[tuple[str, str, list[int]]] = []
        self.items: list[tuple[str, int, int]] = []  # (space, first, last cursor) per item
        self.revocations: list[set[str]] = []

    def spaces(self) -> set[str]:
        return set(self.wanted)

    def deliver(self, events: list[Item]) -> None:
        assert len({e.space for e in events}) == 1
        self.calls.append(("events", events[0].space,
                           [c for e in events for c in range(e.first, e.cursor + 1)]))
        self.items += [(e.space, e.first, e.cursor) for e in events]

    def gap(self, space: str) -> None:
        self.calls.append(("gap", space, []))

    async def revoked(self, users: set[str]) -> None:
        self.calls.append(("revoked", ",".join(sorted(users)), []))
        self.revocations.append(users)

    def revoked_before(self, cursor: int) -> set[str]:
        """The users of the notices handed over before the event ``cursor`` of cc."""
        out: set[str] = set()
        for kind, who, cursors in self.calls:
            if kind == "events" and cursor in cursors:
                return out
            if kind == "revoked":
                out.update(who.split(","))
        raise AssertionError(f"event {cursor} was not handed over")

    def cursors(self, space: str) -> list[int]:
        return [c for kind, s, cs in self.calls if kind == "events" and s == space for c in cs]


@contextlib.asynccontextmanager
async def running(reader: Reader) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(reader.run())
    try:
        await until(lambda: reader.connected)
        yield task
    finally:
        reader.stop()
        task.cancel()
        await asyncio.wait([task], timeout=WAIT)


async def until(cond: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not cond():
            await asyncio.sleep(0.01)


def new_reader(sink: ListSink) -> Reader:
    return Reader(sink, url=get_settings().redis_url, block_ms=100)


async def test_reader_hands_over_cc_events_in_cursor_order(redis_client):
    """Events appended after the reader started reach the sink once each, in order."""
    sink = ListSink()
    reader = new_reader(sink)
    async with running(reader):
        appended = [append_job("p", str(uuid.uuid4())) for _ in range(25)]
        await until(lambda: len(sink.cursors("cc")) >= 25)
    assert sink.cursors("cc") == appended


async def test_new_project_space_is_read_from_the_wanted_cursor(redis_client):
    """A space asked for with cursor c delivers every event after c, including earlier ones."""
    sink = ListSink()
    reader = new_reader(sink)
    async with running(reader):
        start = log().cursor("proj")
        early = [append_record("proj") for _ in range(3)]
        sink.wanted.add("proj")
        reader.want("proj", start)
        late = [append_record("proj") for _ in range(2)]
        await until(lambda: len(sink.cursors("proj")) >= 5)
        assert sink.cursors("proj") == early + late
        sink.wanted.clear()
        await until(lambda: "proj" not in reader.positions)


async def test_packs_reach_the_sink_whole_from_a_cursor_inside_one(redis_client):
    """A packed entry is handed over as one item, not an event each; a space read from a
    cursor inside a pack starts right after that cursor, with no gap reported."""
    sink = ListSink()
    reader = new_reader(sink)
    async with running(reader):
        cursors = log().append_records("proj", [("records", "UPDATE",
                                                 [f"g{i}" for i in range(2500)])])
        sink.wanted.add("proj")
        reader.want("proj", cursors[1234])
        more = log().append_records("proj", [("records", "DELETE", ["x", "y"])])
        await until(lambda: len(sink.cursors("proj")) >= 2500 - 1235 + 2)
    assert sink.cursors("proj") == list(cursors[1235:]) + list(more)
    assert sink.items == [("proj", cursors[1235], cursors[1999]),
                          ("proj", cursors[2000], cursors[2499]), ("proj", more[0], more[1])]
    assert not [c for c in sink.calls if c[0] == "gap"]


async def test_lost_history_is_reported_before_later_events(redis_client):
    """A reseeded counter (Redis lost data) is a gap, reported before post-gap events."""
    sink = ListSink()
    reader = new_reader(sink)
    async with running(reader):
        before = append_job("p", "t1")
        await until(lambda: sink.cursors("cc") == [before])
        redis_client.delete(keys.sync_stream("cc"), keys.sync_counter("cc"),
                            keys.sync_floor("cc"))
        after = append_job("p", "t2")
        await until(lambda: after in sink.cursors("cc"))
    assert sink.calls == [("events", "cc", [before]), ("gap", "cc", []), ("events", "cc", [after])]


async def test_reader_reconnects_after_losing_redis_without_loss_or_duplicates(redis_client):
    """Killing the reader's connection: it reconnects and resumes from its last cursor."""
    sink = ListSink()
    reader = new_reader(sink)
    async with running(reader):
        first = append_job("p", "t1")
        await until(lambda: sink.cursors("cc") == [first])
        assert reader._client_id is not None
        get_redis().client_kill_filter(_id=reader._client_id)
        more = [append_job("p", "t1") for _ in range(5)]
        await until(lambda: len(sink.cursors("cc")) >= 6)
        assert reader.reconnects >= 1
    assert sink.cursors("cc") == [first] + more
    assert all(kind == "events" for kind, _, _ in sink.calls)


async def test_data_loss_while_disconnected_is_found_on_reconnect(redis_client):
    """A floor above the last cursor read, seen on reconnect, is reported as a gap."""
    sink = ListSink()
    reader = new_reader(sink)
    async with running(reader):
        first = append_job("p", "t1")
        await until(lambda: sink.cursors("cc") == [first])
        redis_client.delete(keys.sync_stream("cc"), keys.sync_counter("cc"),
                            keys.sync_floor("cc"))
        log().cursors("cc")  # reseeds the counter and floor, as any client would
        get_redis().client_kill_filter(_id=reader._client_id)
        await until(lambda: ("gap", "cc", []) in sink.calls)


async def test_revocation_notices_reach_the_sink_before_events_appended_after_them(
        redis_client):
    """Each revocation notice is handed over before any event appended after it (whether
    they are read together or apart); notices from before the reader started are not."""
    announce("before-start")
    sink = ListSink()
    reader = new_reader(sink)
    async with running(reader):
        announce("u1")
        first = append_job("p", str(uuid.uuid4()))
        announce("u2")
        second = append_job("p", str(uuid.uuid4()))
        await until(lambda: second in sink.cursors("cc"))
    assert sink.revocations and set().union(*sink.revocations) == {"u1", "u2"}
    assert sink.revoked_before(first) >= {"u1"}
    assert sink.revoked_before(second) == {"u1", "u2"}


async def test_reader_dies_loudly_on_a_non_connection_error(redis_client):
    """A Redis error that is not a lost connection ends run() with that error."""
    redis_client.set(keys.sync_stream("cc"), "not a stream")
    reader = new_reader(ListSink())
    try:
        with pytest.raises(redis.ResponseError):
            async with asyncio.timeout(WAIT):
                await reader.run()
    finally:  # the session's later tests (and processes) read this space
        redis_client.delete(keys.sync_stream("cc"))
