"""Awaiting a job's end on the sync log (real Redis): the terminal event of the job after the
cursor ends the wait, nothing else does, and a wait without it times out."""

from __future__ import annotations

import asyncio
import time

import pytest

from api.waiting import wait_terminal
from bulkjobs import keys
from bulkjobs.connections import get_synclog
from bulkjobs.synclog import job_event

pytestmark = pytest.mark.services

PROJECT = "a0000000-0000-4000-8000-000000000001"


def append(token: str, status: str) -> None:
    get_synclog().append(keys.CC_SPACE, [job_event(
        token=token, project=PROJECT, job="revert_record_version", status=status, info={},
        created_on=0.0, updated_on=0.0)])


def test_the_jobs_terminal_event_ends_the_wait(redis_client: object) -> None:
    """Events of other jobs and the job's own non-terminal ones do not end the wait; its
    ``done`` does, well before the timeout."""
    after = get_synclog().cursor(keys.CC_SPACE)

    async def scenario() -> tuple[bool, float]:
        started = time.monotonic()
        waiting = asyncio.create_task(wait_terminal("job-a", after=after, timeout=10))
        await asyncio.sleep(0.05)
        append("job-b", "done")
        append("job-a", "processing")
        await asyncio.sleep(0.05)
        assert not waiting.done()
        append("job-a", "done")
        return await waiting, time.monotonic() - started

    seen, took = asyncio.run(scenario())
    assert seen and took < 5


def test_a_terminal_event_before_the_cursor_is_not_seen(redis_client: object) -> None:
    """Only events after ``after`` count; without one the wait gives up at the timeout."""
    append("job-a", "rejected")
    after = get_synclog().cursor(keys.CC_SPACE)
    started = time.monotonic()
    assert asyncio.run(wait_terminal("job-a", after=after, timeout=0.3)) is False
    assert 0.25 < time.monotonic() - started < 3


def test_a_terminal_event_already_appended_after_the_cursor_is_seen(redis_client: object
                                                                    ) -> None:
    """A job that ended before the wait began (after the cursor was taken) is seen at once."""
    after = get_synclog().cursor(keys.CC_SPACE)
    append("job-a", "rejected")
    assert asyncio.run(wait_terminal("job-a", after=after, timeout=5)) is True
