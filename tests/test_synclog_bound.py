"""The sync log's hard bound (``SYNC_MAX_EVENTS``): every append keeps its space to the last
``max_events`` events (plus the older part of one pack straddling the cut), raising the
floor, so a burst between two trims cannot grow Redis without bound; a reader whose cursor
the cut passed is told ``recovered = False``.  Against the real Redis."""

from __future__ import annotations

import uuid

import pytest
import redis

from bulkjobs import keys
from bulkjobs.synclog import PACK, SyncLog, decode_items, record_event

pytestmark = pytest.mark.services

PROJECT = "6f0b1f63-2c55-4c8e-9d57-3a3c5d1b9e11"


def held(redis_client: redis.Redis, space: str) -> int:
    """Events the space's stream holds (a packed entry counts its events)."""
    entries = redis_client.xrange(keys.sync_stream(space))
    return sum(item.n for item in decode_items(space, entries))


def test_single_events_beyond_the_bound_are_cut_as_they_are_appended(
        redis_client: redis.Redis) -> None:
    """A burst of 250 events into a space bounded at 100 leaves the last 100, the floor at
    the first of them; a reader from before the floor gets recovered False and a page that
    starts at the floor, one from just below it recovers."""
    log = SyncLog(redis_client, dedupe_ttl=60, max_events=100)
    cursors: list[int] = []
    for burst in range(25):
        cursors += log.append(PROJECT, [
            record_event(project=PROJECT, data_type="records", gid=f"g{burst}-{i}",
                         action="UPDATE") for i in range(10)])
        assert held(redis_client, PROJECT) <= 100
    assert held(redis_client, PROJECT) == 100
    last, floor = log.cursors(PROJECT)
    assert last == cursors[-1] and floor == cursors[-100]
    page = log.read(PROJECT, cursors[0])
    assert page.recovered is False and page.events[0].cursor == floor
    assert len(page.events) == 100
    assert log.read(PROJECT, floor - 1).recovered is True


def test_packed_events_count_by_event_not_by_entry(redis_client: redis.Redis) -> None:
    """Packed record events are bounded by their number of events: 10 batches of 1,000
    into a space bounded at 2,500 leave at most 2,500 events plus the older part of one
    pack, every event from the floor on is there, and the floor is 2,500 events back."""
    log = SyncLog(redis_client, dedupe_ttl=60, max_events=2500)
    appended: list[int] = []
    for _ in range(10):
        gids = [str(uuid.uuid4()) for _ in range(1000)]
        appended += log.append_records(PROJECT, [("records", "DELETE", gids)])
        assert held(redis_client, PROJECT) < 2500 + PACK
    last, floor = log.cursors(PROJECT)
    assert last == appended[-1] and floor == last - 2500 + 1
    page = log.read(PROJECT, floor - 1, count=5000)
    assert page.recovered is True
    assert [e.cursor for e in page.events] == list(range(floor, last + 1))
    assert log.read(PROJECT, appended[0]).recovered is False


def test_the_bound_applies_to_each_space_on_its_own(redis_client: redis.Redis) -> None:
    """A space that is under its bound keeps everything while another one is cut."""
    log = SyncLog(redis_client, dedupe_ttl=60, max_events=10)
    other = str(uuid.uuid4())
    log.append(other, [record_event(project=other, data_type="records", gid="x",
                                    action="UPDATE")])
    log.append_records(PROJECT, [("records", "UPDATE", [f"g{i}" for i in range(50)])])
    assert held(redis_client, other) == 1
    assert log.cursors(other)[1] <= log.cursors(other)[0]
    assert log.read(other, log.cursors(other)[1] - 1).recovered is True
