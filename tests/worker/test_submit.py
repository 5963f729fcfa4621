"""Queueing (``worker/submit.py``) when a service fails half-way: a job whose row committed
stands, with its ``queued`` event in the outbox until it is in the log — exactly once, who
ever appends it (the submitter, the job's run, the reaper) — and is never lost."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from bulkjobs import keys
from bulkjobs.connections import get_synclog
from bulkjobs.synclog import NewEvent, SyncLog
from models import Job
from models.engine import get_engine
from models.outbox import SyncOutbox
from models.seed import SeedResult
from tests.worker.helpers import cfg, deps, job_events
from worker import runner
from worker.outbox import drain_outbox
from worker.reaper import reap
from worker.submit import submit

ACTOR = {"type": "user", "id": "tester"}


def jobs() -> list[Any]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(Job.token, Job.status)))


def outbox_rows() -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(SyncOutbox)).scalar_one())


class DeadLog(SyncLog):
    """A sync log whose Redis went down right after the job rows committed (as good as a
    web process that died before appending)."""

    def append(self, *args: Any, **kwargs: Any) -> list[int]:
        raise redis.ConnectionError("Redis is down")

    def append_each(self, *args: Any, **kwargs: Any) -> list[list[int]]:
        raise redis.ConnectionError("Redis is down")


class LostReplyLog(SyncLog):
    """A sync log whose first append goes through but whose reply is lost."""

    lost = 0

    def append(self, space: str, events: Sequence[NewEvent], *,
               once_key: str | None = None) -> list[int]:
        cursors = super().append(space, events, once_key=once_key)
        return self._lose(cursors)

    def append_each(self, space: str, appends: Sequence[tuple[Sequence[NewEvent], str]]
                    ) -> list[list[int]]:
        return self._lose(super().append_each(space, appends))

    def _lose(self, reply: Any) -> Any:
        self.lost += 1
        if self.lost == 1:
            raise redis.ConnectionError("connection reset before the reply")
        return reply


def queued_events(token: str) -> list[str]:
    return [e["data"]["status"] for e in job_events(get_synclog(), token)
            if e["data"]["status"] == "queued"]


@pytest.mark.parametrize("drain", ["run", "reaper"])
def test_a_job_whose_queued_event_was_not_appended_stands_and_gets_it_once(
    seeded: SeedResult, drain: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis away between the job row's commit and the append (or the web process gone): the
    job stands with its token answered and its ``queued`` event in the outbox, committed
    with it; the job's run (before its ``processing`` event) or the reaper appends it, once
    however often they come."""
    sent: list[str] = []
    token = submit(project_gid=seeded.projects[0].gid, job="bulk_delete_records",
                   params={"selection": [seeded.projects[0].heads[0]]}, actor=ACTOR,
                   log=DeadLog(get_synclog().r), enqueue=sent.append)
    assert [tuple(r) for r in jobs()] == [(token, "queued")] and sent == [token]
    assert queued_events(token) == [] and outbox_rows() == 1
    log = get_synclog()
    if drain == "run":
        assert runner.run(token, deps=deps(log), cfg=cfg(), requeue=pytest.fail) == "done"
        statuses = [e["data"]["status"] for e in job_events(log, token)]
        assert statuses[:2] == ["queued", "processing"] and statuses[-1] == "done"
    else:
        reap(log=log, stale_after=30, queued_stale_after=120, requeue=pytest.fail)
        assert outbox_rows() == 1  # the submitter's moment: not yet
        monkeypatch.setattr(time, "time", lambda real=time.time: real() + 60)
        for _ in range(2):
            reap(log=log, stale_after=30, queued_stale_after=120, requeue=pytest.fail)
    assert queued_events(token) == ["queued"] and outbox_rows() == 0
    drain_outbox(deps(log), token)  # nothing left, nothing appended again
    assert queued_events(token) == ["queued"]


def test_a_queued_event_whose_reply_was_lost_is_in_the_log_once(seeded: SeedResult) -> None:
    """The append of the ``queued`` event goes through but its reply is lost: the submitter
    tries again, the once-key keeps the event from being appended twice, and the job stands
    (neither a job without its event nor an event without its job)."""
    log = LostReplyLog(get_synclog().r)
    sent: list[str] = []
    token = submit(project_gid=seeded.projects[0].gid, job="bulk_delete_records",
                   params={"selection": [seeded.projects[0].heads[0]]}, actor=ACTOR,
                   log=log, enqueue=sent.append)
    assert [tuple(r) for r in jobs()] == [(token, "queued")] and sent == [token]
    assert queued_events(token) == ["queued"] and outbox_rows() == 0


def test_broker_refusing_the_message_still_answers_the_token(seeded: SeedResult):
    """When only the broker fails, the job stands — queued and announced — and its token is
    answered, so the client does not queue it twice; the reaper sends it later."""
    def refuse(token: str) -> None:
        raise ConnectionError("broker down")

    log = get_synclog()
    before = log.cursor(keys.CC_SPACE)
    token = submit(project_gid=seeded.projects[0].gid, job="bulk_delete_records",
                   params={"selection": [seeded.projects[0].heads[0]]}, actor=ACTOR,
                   log=log, enqueue=refuse)
    assert [tuple(r) for r in jobs()] == [(token, "queued")]
    events = log.read(keys.CC_SPACE, before).events
    assert [(e.key, e.as_dict()["action"]) for e in events] == [(token, "INSERT")]
