"""The heartbeat of a running job: its lease kept fresh, and a progress event at least once a
second while a batch runs long (SPEC §6)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine, select, update

from models.jobs import PROCESSING, Job
from worker.deps import RunConfig
from worker.progress import Publisher
from worker.rows import load_state, state_of

# The job lifecycle logs under one name, whichever of its modules writes the line.
logger = logging.getLogger("worker.runner")

#: A running job's progress event goes out at least this often (SPEC §6: once a second).
PROGRESS_AT_LEAST = 1.0
#: How often the progress thread checks whether a job has been quiet too long.
PROGRESS_TICK = 0.2
#: How often the lease thread checks whether a job's heartbeat is due.
BEAT_TICK = 0.1
jobs = Job.__table__


class Heartbeat:
    """Keeps a running job's lease fresh and guarantees at least one progress event a second
    while a batch runs long, from the process's two heartbeat threads (:class:`Beats`), not
    from threads of its own: starting and joining two threads per job cost a small job
    about a tenth of its run on a busy machine.  They use ``engine``, a pool of their own
    (:func:`worker.deps.side_engine`).

    The lease thread writes only when no batch (nor resolution slice) has committed a fresher
    heartbeat.  On SQLite its write takes its turn like any other (:mod:`models.engine`):
    it waits for at most the batch in hand, never for SQLite's busy timeout, so it does not
    fail because batches keep the database busy.

    Two threads, because the lease is a write and progress is a read: on SQLite a write
    waits for the database's one write lock, which the batch in hand (or another process's)
    may hold for as long as the batch runs, and progress must not wait with it.  The
    progress thread only reads the job row (WAL readers never wait) and appends to Redis.

    Leaving the ``with`` block stops both for this job at once; a beat or progress read in
    flight may still finish: its write is conditioned on the lease (a finished job has
    none), and the publisher, closed before the terminal event, drops its event."""

    def __init__(self, token: str, owner: str, publisher: Publisher, cfg: RunConfig, *,
                 engine: Engine) -> None:
        self.token, self.owner, self.publisher, self.cfg = token, owner, publisher, cfg
        self.engine = engine
        self.next_beat = 0.0

    def __enter__(self) -> Heartbeat:
        self.next_beat = time.monotonic() + self.cfg.heartbeat_interval
        BEATS.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        BEATS.discard(self)

    def beat(self) -> None:
        """Refresh the lease if its heartbeat interval passed since the last check and no
        batch committed a fresher one."""
        now = time.monotonic()
        if now < self.next_beat:
            return
        self.next_beat = now + self.cfg.heartbeat_interval
        try:
            # Each batch commits the heartbeat too: while batches commit, this only reads
            # (WAL readers never wait) and does not queue for the write lock.
            with self.engine.connect() as conn:
                beat = conn.execute(select(jobs.c.heartbeat_on).where(
                    jobs.c.token == self.token, jobs.c.owner == self.owner)).scalar()
            if beat is None:  # not ours any more
                return
            if beat >= time.time() - self.cfg.heartbeat_interval:
                return
            with self.engine.execution_options(writer=True).begin() as conn:
                conn.execute(update(jobs).where(
                    jobs.c.token == self.token, jobs.c.owner == self.owner,
                ).values(heartbeat_on=time.time()))
        except Exception:  # a missed beat is not fatal; the next one tries again
            logger.warning("heartbeat of job %s failed", self.token, exc_info=True,
                           extra={"job": self.token})

    def progress(self) -> None:
        """Publish the job's state if it has been quiet too long: the next tick would be
        later than :data:`PROGRESS_AT_LEAST`."""
        try:
            if self.publisher.idle_for() >= PROGRESS_AT_LEAST - PROGRESS_TICK:
                with self.engine.connect() as conn:
                    row = load_state(conn, self.token)
                if row is not None and row.status == PROCESSING and row.owner == self.owner:
                    self.publisher.publish(state_of(row), force=True)
        except Exception:  # Redis or the database away a moment: the next tick tries
            logger.warning("progress event of job %s failed", self.token, exc_info=True,
                           extra={"job": self.token})


class Beats:
    """The process's running jobs and its two heartbeat threads (daemons, started with the
    first job, and again in a forked child: threads do not survive ``fork``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[int, Heartbeat] = {}
        self._pid: int | None = None

    def add(self, heartbeat: Heartbeat) -> None:
        with self._lock:
            if self._pid != os.getpid():  # the first job of this process
                self._pid = os.getpid()
                self._jobs.clear()  # a parent's, inherited through fork
                self._start(Heartbeat.beat, BEAT_TICK, "heartbeat")
                self._start(Heartbeat.progress, PROGRESS_TICK, "progress")
            self._jobs[id(heartbeat)] = heartbeat

    def discard(self, heartbeat: Heartbeat) -> None:
        with self._lock:
            self._jobs.pop(id(heartbeat), None)

    def running(self) -> list[Heartbeat]:
        with self._lock:
            return list(self._jobs.values())

    def _start(self, each: Callable[[Heartbeat], None], tick: float, name: str) -> None:
        def loop() -> None:
            while True:
                time.sleep(tick)
                for heartbeat in self.running():
                    each(heartbeat)

        threading.Thread(target=loop, name=name, daemon=True).start()


#: The heartbeats of this process.
BEATS = Beats()
