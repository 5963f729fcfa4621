"""The sync log (``bulkjobs/synclog/``) against the real Redis (database 9, flushed per test)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis

from bulkjobs import keys
from bulkjobs.connections import make_async_redis
from bulkjobs.synclog import (
    AsyncSyncLog,
    NewEvent,
    SyncLog,
    TerminalWaiters,
    job_event,
    record_event,
)
from bulkjobs.synclog import append as appending
from tests.e2e.redis_server import private_redis_server

pytestmark = pytest.mark.services

PROJECT = "0b6f1f63-2c55-4c8e-9d57-3a3c5d1b9e11"


@pytest.fixture
def log(redis_client: redis.Redis) -> SyncLog:
    return SyncLog(redis_client, dedupe_ttl=60)


def rec(i: int) -> NewEvent:
    return record_event(project=PROJECT, data_type="records", gid=f"gid-{i}", action="UPDATE")


def job(token: str = "tok-1", status: str = "processing", **info: Any) -> NewEvent:
    return job_event(token=token, project=PROJECT, job="bulk_delete_records", status=status,
                     info=info, created_on=1613565541.4195538, updated_on=1613565542.5)


class FakeClock:
    """Stands in for the client's clock (``bulkjobs.synclog.append._now_us``), in microseconds."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, start_us: int) -> None:
        self.us = start_us
        monkeypatch.setattr(appending, "_now_us", lambda: self.us)

    def at_minute(self, minute: int) -> None:
        self.us = minute * 60_000_000 + 1_000_000


def test_cursors_strictly_increase_and_are_dense(log: SyncLog) -> None:
    """Cursors of one space are handed out consecutively, one per event, batch or not."""
    last, floor = log.cursors("cc")
    assert floor == last + 1
    got: list[int] = []
    got += log.append("cc", [job()])
    got += log.append("cc", [job(), job(), job()])
    got += log.append(PROJECT, [rec(0)])  # another space does not take cursors from this one
    got += log.append("cc", [job() for _ in range(50)])
    cc = [c for c in got if c != got[4]]
    assert cc == list(range(last + 1, last + 1 + 54))
    assert log.cursors("cc") == (cc[-1], floor)
    assert log.cursor(PROJECT) == got[4]


def test_empty_space_is_seeded_from_the_clock(log: SyncLog) -> None:
    """A space never written to starts near the clock in microseconds, floor just above it."""
    before = int(time.time() * 1e6)
    last, floor = log.cursors(PROJECT)
    after = int(time.time() * 1e6)
    assert before - 5_000_000 <= last <= after + 5_000_000
    assert floor == last + 1
    assert log.cursors(PROJECT) == (last, floor)  # asking again changes nothing
    assert log.append(PROJECT, [rec(1)]) == [floor]


def test_append_nothing_takes_no_cursor(log: SyncLog) -> None:
    """An empty append returns no cursors and does not move the counter."""
    last, _ = log.cursors("cc")
    assert log.append("cc", []) == []
    assert log.cursor("cc") == last


@pytest.mark.parametrize(
    ("space", "event", "expected"),
    [
        pytest.param(
            "cc", job(token="t-9", status="processing", total=3, remaining=2),
            {"action": "UPDATE", "data_type": "jobs", "data_key": "t-9", "data": {
                "project_gid": PROJECT, "job": "bulk_delete_records", "status": "processing",
                "info": {"total": 3, "remaining": 2}, "created_on": 1613565541.4195538,
                "updated_on": 1613565542.5}},
            id="job-update",
        ),
        pytest.param(
            "cc", job_event(token="t-1", project=PROJECT, job="bulk_undelete_records",
                            status="queued", info={}, created_on=1.5, updated_on=1.5,
                            insert=True),
            {"action": "INSERT", "data_type": "jobs", "data_key": "t-1", "data": {
                "project_gid": PROJECT, "job": "bulk_undelete_records", "status": "queued",
                "info": {}, "created_on": 1.5, "updated_on": 1.5}},
            id="job-insert",
        ),
        pytest.param(
            "cc", job(token="t-2", status="rejected", error="naïve “quotes” \\ and \n"),
            {"action": "UPDATE", "data_type": "jobs", "data_key": "t-2", "data": {
                "project_gid": PROJECT, "job": "bulk_delete_records", "status": "rejected",
                "info": {"error": "naïve “quotes” \\ and \n"}, "created_on": 1613565541.4195538,
                "updated_on": 1613565542.5}},
            id="job-odd-characters",
        ),
        pytest.param(
            PROJECT, record_event(project=PROJECT, data_type="records", gid="g-1",
                                  action="DELETE"),
            {"action": "DELETE", "data_type": "records", "data_key": "g-1"},
            id="record-no-data",
        ),
    ],
)
def test_event_text_is_the_spec_shape(
    log: SyncLog, space: str, event: NewEvent, expected: dict[str, Any]
) -> None:
    """``Event.text`` is exactly SPEC §7's object: type and cursor first, then action,
    data_type, data_key, data; it parses back to the same dict."""
    [cursor] = log.append(space, [event])
    [read] = log.read(space, cursor - 1).events
    whole = {"type": space, "cursor": cursor, **expected}
    assert read.text == json.dumps(whole, separators=(",", ":"))
    assert list(json.loads(read.text)) == list(whole)
    assert json.loads(read.text) == read.as_dict() == whole
    assert (read.space, read.cursor, read.project, read.key) == (
        space, cursor, PROJECT, expected["data_key"])
    assert read.status == expected.get("data", {}).get("status", "")
    assert read.terminal == (read.status in ("done", "rejected"))


def test_counter_lost_with_the_data_is_reseeded_above_earlier_cursors(
    log: SyncLog, redis_client: redis.Redis
) -> None:
    """After Redis loses everything, cursors keep growing and old readers are told
    ``recovered=False``; their page starts at the oldest retained event."""
    old = log.append("cc", [job() for _ in range(500)])
    old += log.append("cc", [job() for _ in range(500)])
    _lose_everything(redis_client)  # simulated data loss: counter, floor and stream are gone
    new = log.append("cc", [job(token=f"new-{i}") for i in range(3)])
    assert new[0] > max(old)
    assert new == list(range(new[0], new[0] + 3))
    last, floor = log.cursors("cc")
    assert (last, floor) == (new[-1], new[0])
    for after in (old[0] - 1, old[500], old[-1]):
        page = log.read("cc", after)
        assert page.recovered is False
        assert [e.cursor for e in page.events] == new  # no partial replay: the oldest retained
        assert page.floor == floor and page.last == last and page.more is False
    assert log.read("cc", floor - 1).recovered is True
    assert [e.cursor for e in log.read("cc", floor - 1).events] == new


def test_reseed_ignores_a_client_clock_that_is_behind(
    log: SyncLog, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose clock lags (another machine, an NTP step back) that happens to append
    first after a data loss still gets cursors above every earlier one."""
    old = log.append("cc", [job() for _ in range(10)])
    _lose_everything(redis_client)
    FakeClock(monkeypatch, int(time.time() * 1e6) - 30_000_000)  # 30 s behind
    [new] = log.append("cc", [job()])
    assert new > max(old)
    assert log.read("cc", max(old)).recovered is False


def test_redis_back_from_an_older_snapshot_never_hands_out_a_cursor_twice() -> None:
    """Redis restarted from a snapshot older than the last cursors handed out: new cursors
    are above all of them, and a reader holding any earlier cursor is told
    ``recovered=False``, with no partial replay."""
    with private_redis_server() as server:
        log = SyncLog(server.client())
        early = log.append("cc", [job() for _ in range(5)])
        server.save()
        late = log.append("cc", [job() for _ in range(5)])
        server.restart(keep_data=True)
        log = SyncLog(server.client())
        assert int(server.client().get(keys.sync_counter("cc"))) == early[-1]  # the snapshot's
        new = log.append("cc", [job(token="after-restart") for _ in range(2)])
        assert new[0] > late[-1]
        assert new == [new[0], new[0] + 1]
        for after in (early[0], early[-1], late[0], late[-1]):
            page = log.read("cc", after)
            assert page.recovered is False, after
            assert [e.cursor for e in page.events] == new
        assert log.read("cc", new[0] - 1).recovered is True
        assert [e.cursor for e in log.read("cc", new[0] - 1).events] == new


def test_read_pages_with_more(log: SyncLog) -> None:
    """``read`` returns at most ``count`` events after the cursor, in order, and says when
    more follow."""
    start = log.cursor("cc")
    cursors = log.append("cc", [job(token=f"t-{i}") for i in range(25)])
    seen: list[int] = []
    mores: list[bool] = []
    after = start
    while True:
        page = log.read("cc", after, count=10)
        assert page.recovered is True
        seen += [e.cursor for e in page.events]
        mores.append(page.more)
        if not page.more:
            break
        after = page.events[-1].cursor
    assert seen == cursors
    assert mores == [True, True, False]
    assert [e.key for e in log.read("cc", cursors[12], count=3).events] == ["t-13", "t-14", "t-15"]
    empty = log.read("cc", cursors[-1])
    assert (empty.events, empty.more, empty.recovered) == ([], False, True)


def test_read_ahead_of_the_log_is_not_recovered(log: SyncLog) -> None:
    """A cursor beyond the space's last one (from an older epoch) cannot be trusted."""
    [c] = log.append("cc", [job()])
    page = log.read("cc", c + 1000)
    assert page.recovered is False
    assert [e.cursor for e in page.events] == [c]


def test_trim_keeps_at_least_keep_events_and_raises_the_floor(
    log: SyncLog, monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis
) -> None:
    """Trimming drops only events beyond both bounds (count and age) and raises the floor;
    a reader below the new floor is told ``recovered=False``."""
    clock = FakeClock(monkeypatch, 0)
    base = int(time.time() // 60)
    clock.at_minute(base)
    first = log.append("cc", [job(token=f"a{i}") for i in range(30)])
    _, floor0 = log.cursors("cc")
    assert floor0 == first[0]
    clock.at_minute(base + 5)
    second = log.append("cc", [job(token=f"b{i}") for i in range(30)])

    def stream_len() -> int:
        return int(redis_client.xlen(keys.sync_stream("cc")))

    # everything is younger than the time bound: nothing goes, however small ``keep``
    assert log.trim("cc", keep=1, keep_seconds=3600, now=(base + 6) * 60) == floor0
    assert stream_len() == 60
    # everything is old, but ``keep`` protects the last 45
    kept = (first + second)[-45]
    assert log.trim("cc", keep=45, keep_seconds=60, now=(base + 60) * 60) == kept
    assert stream_len() == 45
    # old by count, but minute base+5 is younger than the time bound: nothing more goes
    assert log.trim("cc", keep=5, keep_seconds=300, now=(base + 6) * 60) == kept
    assert stream_len() == 45
    # both bounds passed: back to the first event of the newest old minute (conservative)
    clock.at_minute(base + 20)
    third = log.append("cc", [job(token=f"c{i}") for i in range(30)])
    floor = log.trim("cc", keep=10, keep_seconds=60, now=(base + 30) * 60)
    assert floor == third[0]
    assert stream_len() == 30
    assert log.cursors("cc") == (third[-1], floor)
    # a trim never lowers the floor
    assert log.trim("cc", keep=1000, keep_seconds=60, now=(base + 30) * 60) == floor
    # marks of trimmed minutes are forgotten
    marks = redis_client.hgetall(keys.sync_marks("cc"))
    assert {int(m) for m in marks if m.isdigit()} == {base + 20}
    # readers: from below the floor, not recovered, page starts at the oldest retained event
    page = log.read("cc", second[10])
    assert page.recovered is False and page.events[0].cursor == third[0]
    assert log.read("cc", floor - 2).recovered is False  # missed event floor - 1, trimmed
    assert log.read("cc", floor - 1).recovered is True


def test_once_key_appends_only_once(log: SyncLog, redis_client: redis.Redis) -> None:
    """With a once-key an append happens at most once; repeats take no cursor."""
    once = keys.job_terminal("tok-1")
    [c] = log.append("cc", [job(status="done")], once_key=once)
    assert log.append("cc", [job(status="done")], once_key=once) == []
    assert log.append("cc", [job(status="done")], once_key=once) == []
    assert log.append("cc", [job(token="tok-2", status="done")],
                      once_key=keys.job_terminal("tok-2")) == [c + 1]
    assert redis_client.xlen(keys.sync_stream("cc")) == 2
    assert 0 < redis_client.ttl(once) <= 60


def test_spaces_lists_every_written_space(log: SyncLog) -> None:
    """``spaces`` names each space that has events (for the trimmer)."""
    log.cursors("never-written")
    log.append("cc", [job()])
    log.append(PROJECT, [rec(1)])
    assert log.spaces() == sorted(["cc", PROJECT])


async def async_wait(token: str, *, after: int, timeout: float,
                     meanwhile: list[NewEvent] | None = None, log: SyncLog | None = None
                     ) -> tuple[bool, float]:
    """:meth:`TerminalWaiters.wait` of waiters of its own; ``meanwhile`` is appended (with
    ``log``) one event at a time once the wait has begun.  Its answer and how long it took."""
    started = time.monotonic()
    waiting = asyncio.create_task(
        TerminalWaiters(make_async_redis).wait(token, after=after, timeout=timeout))
    for event in meanwhile or []:
        await asyncio.sleep(0.05)
        assert not waiting.done()
        assert log is not None
        log.append("cc", [event])
    return await waiting, time.monotonic() - started


def test_async_wait_sees_a_terminal_event_appended_before_the_call(log: SyncLog) -> None:
    """A job that ended after the cursor was taken but before the wait began is seen at
    once."""
    after = log.cursor("cc")
    log.append("cc", [job(token="job-a", status="rejected")])
    seen, took = asyncio.run(async_wait("job-a", after=after, timeout=5))
    assert seen and took < 1


def test_async_wait_ends_at_the_jobs_terminal_event(log: SyncLog) -> None:
    """While the wait runs, another job's end and the job's own non-terminal events do not
    end it; the job's ``done`` does, well before the timeout."""
    after = log.cursor("cc")
    meanwhile = [job(token="job-b", status="done"), job(token="job-a", status="processing"),
                 job(token="job-a", status="done")]
    seen, took = asyncio.run(async_wait("job-a", after=after, timeout=10,
                                        meanwhile=meanwhile, log=log))
    assert seen and took < 5


def test_async_wait_times_out_without_the_jobs_terminal_event(log: SyncLog) -> None:
    """A terminal event at or before the cursor, or another job's, does not count: the wait
    answers False at its timeout."""
    log.append("cc", [job(token="job-a", status="done")])
    after = log.cursor("cc")
    log.append("cc", [job(token="job-b", status="rejected")])
    seen, took = asyncio.run(async_wait("job-a", after=after, timeout=0.3))
    assert not seen and 0.25 < took < 3


def test_sync_wait_sees_the_terminal_event_after_the_cursor_only(log: SyncLog) -> None:
    """:meth:`SyncLog.wait_terminal` (the same wait, blocking): the job's terminal event
    after the cursor is seen; without one it times out."""
    log.append("cc", [job(token="job-a", status="done")])
    after = log.cursor("cc")
    assert log.wait_terminal("job-a", after=after, timeout=0.3) is False
    log.append("cc", [job(token="job-a", status="processing"), job(token="job-a", status="done")])
    assert log.wait_terminal("job-a", after=after, timeout=5) is True


def _lose_everything(client) -> None:  # type: ignore[no-untyped-def]
    """Simulate a Redis restart that lost its data, for this session's keys only (a FLUSHDB
    would also wipe other test sessions sharing the server)."""
    doomed = list(client.scan_iter(match=f"{keys.prefix()}*", count=1000))
    if doomed:
        client.delete(*doomed)


# -- packed entries -------------------------------------------------------------------------


def gids(n: int, prefix: str = "g") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def append_mixed(log: SyncLog) -> list[tuple[int, str, str]]:
    """Singles and packs in one project space; returns every event's (cursor, action, gid)."""
    out: list[tuple[int, str, str]] = []
    [c] = log.append(PROJECT, [rec(0)])
    out.append((c, "UPDATE", "gid-0"))
    cursors = log.append_records(PROJECT, [("records", "UPDATE", gids(2500)),
                                           ("records", "DELETE", gids(3, "d"))])
    out += zip(cursors, ["UPDATE"] * 2500 + ["DELETE"] * 3, gids(2500) + gids(3, "d"),
               strict=True)
    [c] = log.append(PROJECT, [rec(1)])
    out.append((c, "UPDATE", "gid-1"))
    cursors = log.append_records(PROJECT, [("records", "UPDATE", gids(5, "e"))])
    out += zip(cursors, ["UPDATE"] * 5, gids(5, "e"), strict=True)
    return out


def test_append_records_packs_a_batch_into_few_entries(
    log: SyncLog, redis_client: redis.Redis
) -> None:
    """2,500 UPDATEs and 3 DELETEs take 2,503 consecutive cursors in four entries (packs of
    at most PACK events), each entry's id its last cursor; the metrics count events."""
    before = log.cursor(PROJECT)
    got = log.append_records(PROJECT, [("records", "UPDATE", gids(2500)),
                                       ("records", "DELETE", ["x", "y", "z"])])
    assert got == range(before + 1, before + 2504)
    raw = redis_client.xrange(keys.sync_stream(PROJECT))
    assert [int(eid.split(b"-")[0]) - before for eid, _ in raw] == [1000, 2000, 2500, 2503]
    assert [int(f[b"n"]) for _, f in raw] == [1000, 1000, 500, 3]
    assert int(redis_client.hget(keys.metrics(), "events:project")) == 2503
    assert log.append_records(PROJECT, [("records", "UPDATE", [])]) == range(0)
    assert log.cursor(PROJECT) == before + 2503
    events = log.read(PROJECT, before, count=5000).events
    assert [(e.cursor - before, e.key) for e in events] == list(
        zip(range(1, 2504), gids(2500) + ["x", "y", "z"], strict=True))
    assert events[2500].as_dict() == {"type": PROJECT, "cursor": before + 2501,
                                      "action": "DELETE", "data_type": "records",
                                      "data_key": "x"}


def test_append_records_refuses_a_gid_with_a_space(log: SyncLog) -> None:
    """Gids are joined by spaces, so a gid holding one cannot be packed."""
    before = log.cursor(PROJECT)
    with pytest.raises(ValueError):
        log.append_records(PROJECT, [("records", "UPDATE", ["a b"])])
    assert log.cursor(PROJECT) == before


@pytest.mark.parametrize("count", [1, 7, 999, 1000, 1001, 5000])
def test_read_pages_through_packed_entries_by_events(log: SyncLog, count: int) -> None:
    """Pages hold at most ``count`` events and may end inside a packed entry; reading on
    from each page's last cursor yields every event once, in order; the async read pages
    the same way."""
    start = log.cursor(PROJECT)
    expected = append_mixed(log)

    def pages(read: Any) -> list[list[tuple[int, str, str]]]:
        out, after = [], start
        while True:
            page = read(after)
            assert page.recovered is True and len(page.events) <= count
            out.append([(e.cursor, e.as_dict()["action"], e.key) for e in page.events])
            if not page.more:
                return out
            assert len(page.events) == count
            after = page.events[-1].cursor

    got = pages(lambda after: log.read(PROJECT, after, count=count))
    assert [e for p in got for e in p] == expected

    async def async_pages() -> list[list[tuple[int, str, str]]]:
        client = make_async_redis()
        try:
            alog = AsyncSyncLog(client)
            out, after = [], start
            while True:
                page = await alog.read(PROJECT, after, count=count)
                out.append([(e.cursor, e.as_dict()["action"], e.key) for e in page.events])
                if not page.more:
                    return out
                after = page.events[-1].cursor
        finally:
            await client.aclose()

    assert asyncio.run(async_pages()) == got


def test_pages_follow_a_space_from_a_cursor_to_its_end(log: SyncLog) -> None:
    """``pages`` reads on from each page's last cursor: every event after the cursor once, in
    order, in pages of at most ``count``; only the last page has no ``more``."""
    start = log.cursor(PROJECT)
    expected = append_mixed(log)
    pages = list(log.pages(PROJECT, start, count=999))
    assert [len(p.events) for p in pages] == [999, 999, 512]
    assert [p.more for p in pages] == [True, True, False]
    assert [(e.cursor, e.key) for p in pages for e in p.events] == [(c, g) for c, _, g in expected]
    assert [len(p.events) for p in log.pages(PROJECT, expected[-1][0])] == [0]


@pytest.mark.parametrize("offset", [1, 2, 500, 1000, 1001, 2499, 2502, 2503, 2504, 2509])
def test_read_resumes_from_a_cursor_inside_a_packed_entry(log: SyncLog, offset: int) -> None:
    """From any cursor, inside a pack or on an entry's boundary, a read returns exactly the
    events after it."""
    expected = append_mixed(log)
    after = expected[offset - 1][0]
    page = log.read(PROJECT, after, count=10_000)
    assert page.recovered is True and page.more is False
    assert [(e.cursor, e.key) for e in page.events] == [(c, g) for c, _, g in expected[offset:]]


def test_trim_inside_a_packed_entry_keeps_the_floor_rule(
    log: SyncLog, monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis
) -> None:
    """Trimming by count (``keep`` counts events) with the cutoff inside a pack removes only
    whole entries below it and keeps the straddling pack whole: the floor is the cutoff,
    every event from the floor on is read back, a reader at ``floor - 1`` is recovered and
    one below it is not (its page starts at the floor)."""
    clock = FakeClock(monkeypatch, 0)
    base = int(time.time() // 60)
    clock.at_minute(base)
    expected = append_mixed(log)  # 2,510 events in 6 entries
    clock.at_minute(base + 20)
    later = log.append_records(PROJECT, [("records", "UPDATE", gids(10, "z"))])
    cursors = [c for c, _, _ in expected] + list(later)
    keep = 2020  # the cutoff falls inside the first pack (events 1..1000, the second entry)
    floor = log.trim(PROJECT, keep=keep, keep_seconds=60, now=(base + 30) * 60)
    assert floor == cursors[-keep] == cursors[500]
    assert log.cursors(PROJECT) == (cursors[-1], floor)
    ids = [int(eid.split(b"-")[0]) for eid, _ in redis_client.xrange(keys.sync_stream(PROJECT))]
    assert ids[0] == cursors[1000]  # the pack holding cursors[1..1000] is whole; 0 is gone
    assert int(redis_client.hget(keys.metrics(), "events:project")) == len(cursors)
    page = log.read(PROJECT, floor - 1, count=10_000)
    assert page.recovered is True
    assert [e.cursor for e in page.events] == cursors[500:]
    below = log.read(PROJECT, floor - 2, count=10_000)
    assert below.recovered is False
    assert [e.cursor for e in below.events] == cursors[500:]
    # a trim whose cutoff is an entry's last cursor + 1 removes that entry
    floor = log.trim(PROJECT, keep=len(cursors) - 1001, keep_seconds=60, now=(base + 30) * 60)
    assert floor == cursors[1001]
    ids = [int(eid.split(b"-")[0]) for eid, _ in redis_client.xrange(keys.sync_stream(PROJECT))]
    assert ids[0] == cursors[2000]
    assert [e.cursor for e in log.read(PROJECT, floor - 1, count=10_000).events] == cursors[1001:]


def test_append_records_with_a_once_key_happens_once(log: SyncLog) -> None:
    """A packed append under a once-key that was used already adds nothing (the outbox's
    re-append after a crash); under a new key it appends as usual."""
    once, twice = keys.outbox_appended(1, 0), keys.outbox_appended(1, 1)
    first = log.append_records(PROJECT, [("records", "DELETE", gids(30))], once_key=once)
    again = log.append_records(PROJECT, [("records", "DELETE", gids(30))], once_key=once)
    other = log.append_records(PROJECT, [("records", "DELETE", gids(2, "o"))], once_key=twice)
    assert len(first) == 30 and len(again) == 0 and len(other) == 2
    page = log.read(PROJECT, first[0] - 1)
    assert [e.key for e in page.events] == gids(30) + gids(2, "o")
