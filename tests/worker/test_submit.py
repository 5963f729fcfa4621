"""Queueing (``worker/submit.py``) when a service fails half-way: an error answered to the
client means nothing was queued, and a job that was queued and announced is never lost."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from sqlalchemy import select

from bulkjobs import keys
from bulkjobs.connections import get_synclog
from bulkjobs.synclog import SyncLog
from models import Job
from models.engine import get_engine
from models.seed import SeedResult
from worker.submit import submit

ACTOR = {"type": "user", "id": "tester"}


def jobs() -> list[Any]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(Job.token, Job.status)))


class DeadLog(SyncLog):
    """A sync log whose Redis is down."""

    def append(self, *args: Any, **kwargs: Any) -> list[int]:
        raise redis.ConnectionError("Redis is down")


def test_sync_log_down_queues_nothing(seeded: SeedResult):
    """When the queued event cannot be appended, the error reaches the caller (a 503) and no
    job row is left behind for the reaper to run later."""
    sent: list[str] = []
    with pytest.raises(redis.ConnectionError):
        submit(project_gid=seeded.projects[0].gid, job="bulk_delete_records",
               params={"selection": [seeded.projects[0].heads[0]]}, actor=ACTOR,
               log=DeadLog(get_synclog().r), enqueue=sent.append)
    assert jobs() == [] and sent == []


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
