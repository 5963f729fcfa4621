"""The heartbeat of a running job: its lease kept fresh, and a progress event at least once a
second while a batch runs long (SPEC §6)."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import Engine, select, update

from models.jobs import PROCESSING, Job
from worker.deps import RunConfig
from worker.progress import Publisher
from worker.rows import load_state, state_of

# The job lifecycle logs under one name, whichever of its modules writes the line.
logger = logging.getLogger("worker.runner")

#: A running job's progress event goes out at least this often (SPEC §6: once a second).
PROGRESS_AT_LEAST = 1.0
#: How often the progress thread checks whether the job has been quiet too long.
PROGRESS_TICK = 0.2
jobs = Job.__table__


class Heartbeat:
    """Background threads that keep the lease fresh and guarantee at least one progress
    event a second while a batch runs long.  They use ``engine``, a pool of their own
    (:func:`worker.deps.side_engine`).

    The lease thread writes only when no batch (nor resolution slice) has committed a fresher
    heartbeat.  On SQLite its write takes its turn like any other (:mod:`models.engine`):
    it waits for at most the batch in hand, never for SQLite's busy timeout, so it does not
    fail because batches keep the database busy.

    Two threads, because the lease is a write and progress is a read: on SQLite a write
    waits for the database's one write lock, which the batch in hand (or another process's)
    may hold for as long as the batch runs, and progress must not wait with it.  The
    progress thread only reads the job row (WAL readers never wait) and appends to Redis."""

    def __init__(self, token: str, owner: str, publisher: Publisher, cfg: RunConfig, *,
                 engine: Engine) -> None:
        self.token, self.owner, self.publisher, self.cfg = token, owner, publisher, cfg
        self.engine = engine
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._beat, name=f"heartbeat-{token}", daemon=True),
            threading.Thread(target=self._progress, name=f"progress-{token}", daemon=True),
        ]

    def __enter__(self) -> Heartbeat:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)

    def _beat(self) -> None:
        while not self.stop.wait(self.cfg.heartbeat_interval):
            try:
                # Each batch commits the heartbeat too: while batches commit, this thread
                # only reads (WAL readers never wait) and does not queue for the write lock.
                with self.engine.connect() as conn:
                    beat = conn.execute(select(jobs.c.heartbeat_on).where(
                        jobs.c.token == self.token, jobs.c.owner == self.owner)).scalar()
                if beat is None:  # not ours any more
                    continue
                if beat >= time.time() - self.cfg.heartbeat_interval:
                    continue
                with self.engine.execution_options(writer=True).begin() as conn:
                    conn.execute(update(jobs).where(
                        jobs.c.token == self.token, jobs.c.owner == self.owner,
                    ).values(heartbeat_on=time.time()))
            except Exception:  # a missed beat is not fatal; the next one tries again
                logger.warning("heartbeat of job %s failed", self.token, exc_info=True,
                               extra={"job": self.token})

    def _progress(self) -> None:
        # Quiet for PROGRESS_AT_LEAST - PROGRESS_TICK: the next tick would be too late.
        quiet = PROGRESS_AT_LEAST - PROGRESS_TICK
        while not self.stop.wait(PROGRESS_TICK):
            try:
                if self.publisher.idle_for() >= quiet:
                    with self.engine.connect() as conn:
                        row = load_state(conn, self.token)
                    if row is not None and row.status == PROCESSING and row.owner == self.owner:
                        self.publisher.publish(state_of(row), force=True)
            except Exception:  # Redis or the database away a moment: the next tick tries
                logger.warning("progress event of job %s failed", self.token, exc_info=True,
                               extra={"job": self.token})
