"""What the ops views show: queue depth, live workers, jobs by status, recent throughput.

One core for ``GET /ops/api/stats``, ``bulkjobs stats`` and the web's ``/metrics``.

* **Queue depth**: messages waiting in the Celery queue (:func:`bulkjobs.keys.jobs_queue`),
  the lengths of kombu's Redis lists for it; ``None`` when the broker is not Redis.  A job
  being worked on is not in the queue (its message is unacknowledged, not waiting).
* **Workers alive**: every Celery worker renews its hostname in a Redis sorted set every
  ``WORKER_HEARTBEAT`` seconds (:mod:`worker.signals`); a worker is alive while its last beat
  is younger than three periods.  Cheaper and steadier than ``inspect().ping()``, which waits
  for replies, and it counts idle workers too.  ``busy`` adds what the job table knows: the
  distinct owners of processing jobs whose lease is live (job runs in progress).
* **Throughput** over the last ``window`` seconds, from the job table: jobs/s is the jobs
  finished in the window; items/s spreads each job's processed items evenly over its run
  (``started_on`` to its last commit) and counts the share inside the window — an estimate,
  since the table keeps a job's progress, not its history.  The rows are found through the
  ``(status, heartbeat_on)`` index: processing jobs, and finished jobs whose last heartbeat
  (taken at every committed batch) falls within the window plus ``STALE_AFTER``.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
from sqlalchemy import Connection, func, select
from sqlmodel import col

from bulkjobs import keys
from models.auth import Project
from models.jobs import DONE, PROCESSING, QUEUED, REJECTED, Job

#: Seconds of history the throughput figures cover.
WINDOW = 60.0
#: A worker is alive while its last heartbeat is younger than this many periods.
ALIVE_PERIODS = 3
#: Worker entries older than this are dropped from the set when a worker beats.
FORGET_AFTER = 3600.0

jobs_t = Job.__table__  # type: ignore[attr-defined]


# -- workers --------------------------------------------------------------------------------


def beat_worker(client: redis.Redis, hostname: str, *, now: float | None = None) -> None:
    """Record that ``hostname`` is alive now (and forget workers silent for an hour)."""
    now = time.time() if now is None else now
    pipe = client.pipeline(transaction=False)
    pipe.zadd(keys.workers(), {hostname: now})
    pipe.zremrangebyscore(keys.workers(), "-inf", now - FORGET_AFTER)
    pipe.execute()


def forget_worker(client: redis.Redis, hostname: str) -> None:
    """Remove a worker that shuts down cleanly, so it stops counting at once."""
    client.zrem(keys.workers(), hostname)


def alive_workers(client: redis.Redis, *, period: float, now: float | None = None) -> list[str]:
    """Hostnames whose last heartbeat is younger than :data:`ALIVE_PERIODS` periods."""
    now = time.time() if now is None else now
    names = client.zrangebyscore(keys.workers(), now - ALIVE_PERIODS * period, "+inf")
    return sorted(n.decode() if isinstance(n, bytes) else str(n) for n in names)


# -- queue ----------------------------------------------------------------------------------


def queue_depth(broker: redis.Redis | None) -> int | None:
    """Messages waiting in the jobs queue; ``None`` when the broker is not Redis."""
    if broker is None:
        return None
    pipe = broker.pipeline(transaction=False)
    for name in keys.jobs_queue_lists():
        pipe.llen(name)
    return int(sum(pipe.execute()))


# -- the job table --------------------------------------------------------------------------


def jobs_by_status(conn: Connection, projects: Collection[str] | None = None) -> dict[str, int]:
    """Jobs per status (every status present, zeros included), over ``projects`` or all."""
    query = select(jobs_t.c.status, func.count()).group_by(jobs_t.c.status)
    if projects is not None:
        if not projects:
            return dict.fromkeys((QUEUED, PROCESSING, DONE, REJECTED), 0)
        query = query.where(jobs_t.c.project_gid.in_(sorted(projects)))
    counts = dict.fromkeys((QUEUED, PROCESSING, DONE, REJECTED), 0)
    counts.update({status: int(n) for status, n in conn.execute(query)})
    return counts


@dataclass
class Throughput:
    window: float
    items_per_s: float
    jobs_per_s: float
    busy: int  # distinct owners of processing jobs with a live lease


def throughput(
    conn: Connection, projects: Collection[str] | None = None, *, now: float | None = None,
    window: float = WINDOW, stale_after: float = 30.0,
) -> Throughput:
    """Items/s and jobs/s over the last ``window`` seconds (see the module docstring)."""
    now = time.time() if now is None else now
    since = now - window
    if projects is not None and not projects:
        return Throughput(window, 0.0, 0.0, 0)
    cols = (jobs_t.c.status, jobs_t.c.info, jobs_t.c.owner, jobs_t.c.heartbeat_on,
            jobs_t.c.created_on, jobs_t.c.started_on, jobs_t.c.updated_on, jobs_t.c.finished_on)
    running = select(*cols).where(jobs_t.c.status == PROCESSING)
    finished = select(*cols).where(jobs_t.c.status.in_((DONE, REJECTED)),
                                   jobs_t.c.heartbeat_on >= since - stale_after)
    if projects is not None:
        running = running.where(jobs_t.c.project_gid.in_(sorted(projects)))
        finished = finished.where(jobs_t.c.project_gid.in_(sorted(projects)))
    items = 0.0
    jobs_done = 0
    owners: set[str] = set()
    for query in (running, finished):
        for row in conn.execute(query):
            if row.status == PROCESSING and row.owner and row.heartbeat_on >= now - stale_after:
                owners.add(row.owner)
            end = row.finished_on if row.finished_on is not None else row.updated_on
            if row.finished_on is not None and row.finished_on >= since:
                jobs_done += 1
            items += _items_in_window(row.info or {}, row.started_on or row.created_on, end,
                                      since, now)
    return Throughput(window, items / window, jobs_done / window, len(owners))


def _items_in_window(info: dict[str, Any], start: float, end: float, since: float,
                     now: float) -> float:
    """The share of a job's processed items that falls in ``[since, now]``, assuming it
    processed them at an even rate between ``start`` and ``end``."""
    total, remaining = info.get("total"), info.get("remaining")
    if not isinstance(total, int) or not isinstance(remaining, int):
        return 0.0
    done = max(0, total - remaining)
    if done == 0 or end < since:
        return 0.0
    if end <= start:
        return float(done) if since <= end <= now else 0.0
    overlap = max(0.0, min(end, now) - max(start, since))
    return done * overlap / (end - start)


def project_names(conn: Connection, projects: Collection[str] | None = None) -> dict[str, str]:
    """Active projects ``{gid: name}``, over ``projects`` or all."""
    query = select(col(Project.gid), col(Project.name)).where(col(Project.status) == "active")
    if projects is not None:
        if not projects:
            return {}
        query = query.where(col(Project.gid).in_(sorted(projects)))
    return {gid: name for gid, name in conn.execute(query)}


# -- all together ---------------------------------------------------------------------------


@dataclass
class Stats:
    now: float
    queue_depth: int | None
    workers: list[str]
    busy: int
    jobs: dict[str, int]
    throughput: Throughput
    projects: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The ``/ops/api/stats`` result."""
        return {
            "now": self.now,
            "queue_depth": self.queue_depth,
            "workers": {"alive": len(self.workers), "hostnames": self.workers,
                        "busy": self.busy},
            "jobs": self.jobs,
            "throughput": {k: v for k, v in asdict(self.throughput).items() if k != "busy"},
            "projects": self.projects,
        }


def collect(
    conn: Connection, *, client: redis.Redis, broker: redis.Redis | None,
    projects: Collection[str] | None = None, heartbeat: float = 5.0, stale_after: float = 30.0,
    window: float = WINDOW, now: float | None = None,
) -> Stats:
    """Everything at once.  ``projects=None`` means every project (ops users); queue depth and
    workers are shared by all projects and shown to everyone who may see any."""
    now = time.time() if now is None else now
    rate = throughput(conn, projects, now=now, window=window, stale_after=stale_after)
    return Stats(
        now=now, queue_depth=queue_depth(broker),
        workers=alive_workers(client, period=heartbeat, now=now), busy=rate.busy,
        jobs=jobs_by_status(conn, projects), throughput=rate,
        projects=project_names(conn, projects),
    )
