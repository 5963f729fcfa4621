"""Waits for jobs' ends on one reader per event loop (:class:`TerminalWaiters`), against the
real Redis: the waits share a connection, a wait behind the reader reads back over the gap,
the reader stops when no wait is left, and Redis failing ends the waits with the error."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bulkjobs.connections import make_async_redis
from bulkjobs.synclog import SyncLog, TerminalWaiters
from tests.test_synclog import job

pytestmark = pytest.mark.services


class Counted:
    """A client factory that counts the connections it makes."""

    def __init__(self) -> None:
        self.made = 0

    def __call__(self) -> redis.asyncio.Redis:
        self.made += 1
        return make_async_redis()


@pytest.fixture
def log(redis_client: redis.Redis) -> SyncLog:
    return SyncLog(redis_client, dedupe_ttl=60)


def test_many_waits_share_one_reader_and_each_sees_its_own_end(log: SyncLog) -> None:
    """Twenty waits at once: one connection, one reader; each ends at its own job's
    terminal event, not at another job's or at its own progress."""
    tokens = [f"job-{i}" for i in range(20)]

    async def scenario() -> list[bool]:
        made = Counted()
        waiters = TerminalWaiters(made)
        after = log.cursor("cc")
        waits = [asyncio.create_task(waiters.wait(t, after=after, timeout=10)) for t in tokens]
        await asyncio.sleep(0.2)
        log.append("cc", [job(token=t, status="processing") for t in tokens])
        await asyncio.sleep(0.2)
        assert not any(w.done() for w in waits)  # progress is not an end
        log.append("cc", [job(token=t, status="done") for t in tokens[:10]])
        log.append("cc", [job(token=t, status="rejected") for t in tokens[10:]])
        seen = await asyncio.gather(*waits)
        assert (made.made, waiters.readers) == (1, 1)
        return seen

    assert asyncio.run(scenario()) == [True] * 20


def test_a_wait_behind_the_reader_sees_an_end_the_reader_already_passed(log: SyncLog) -> None:
    """A wait that begins after the reader has read past its cursor (its request queued the
    job earlier) reads back over the gap: the job's end there is seen at once."""

    async def scenario() -> tuple[bool, bool, int]:
        made = Counted()
        waiters = TerminalWaiters(made)
        after = log.cursor("cc")
        first = asyncio.create_task(waiters.wait("job-a", after=after, timeout=10))
        await asyncio.sleep(0.2)
        log.append("cc", [job(token="job-b", status="done"), job(token="job-c", status="queued")])
        await asyncio.sleep(0.3)  # the reader is past job-b's end now
        late = await asyncio.wait_for(waiters.wait("job-b", after=after, timeout=10), 2)
        log.append("cc", [job(token="job-a", status="done")])
        return late, await first, made.made

    late, first, made = asyncio.run(scenario())
    assert (late, first) == (True, True)
    assert made == 1  # the read back is served by the reader's client (another of its pool)


def test_the_reader_stops_with_the_last_wait_and_the_next_wait_starts_another(
    log: SyncLog,
) -> None:
    """No wait left: the reader ends (its connection closed); a later wait starts a new one,
    from that wait's cursor."""

    async def scenario() -> tuple[bool, bool, bool, int]:
        waiters = TerminalWaiters(make_async_redis)
        after = log.cursor("cc")
        log.append("cc", [job(token="job-a", status="done")])
        first = await waiters.wait("job-a", after=after, timeout=5)
        for _ in range(40):  # the reader notices within one XREAD slice
            if waiters._reader is None:
                break
            await asyncio.sleep(0.1)
        stopped = waiters._reader is None
        after = log.cursor("cc")
        second = asyncio.create_task(waiters.wait("job-b", after=after, timeout=5))
        await asyncio.sleep(0.1)
        log.append("cc", [job(token="job-b", status="done")])
        return first, stopped, await second, waiters.readers

    assert asyncio.run(scenario()) == (True, True, True, 2)


def test_a_timed_out_wait_leaves_nothing_behind(log: SyncLog) -> None:
    """A wait that times out answers False and is forgotten: its job's later end wakes
    nothing, and the reader stops."""

    async def scenario() -> tuple[bool, dict[str, object]]:
        waiters = TerminalWaiters(make_async_redis)
        seen = await waiters.wait("job-a", after=log.cursor("cc"), timeout=0.3)
        return seen, dict(waiters._waits)

    assert asyncio.run(scenario()) == (False, {})


def test_redis_failing_ends_every_wait_with_the_error() -> None:
    """The reader's connection refused: each wait in progress raises the error (the route
    answers it as Redis being away), instead of hanging until its timeout."""

    def nowhere() -> redis.asyncio.Redis:
        return redis.asyncio.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1,
                                   retry=Retry(NoBackoff(), 0))

    async def scenario() -> list[BaseException | bool]:
        waiters = TerminalWaiters(nowhere)
        waits = [waiters.wait(f"job-{i}", after=0, timeout=30) for i in range(3)]
        return await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 10)

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, redis.ConnectionError) for o in outcomes), outcomes
