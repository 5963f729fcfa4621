"""The ``announced`` marks of a process's finished jobs, written together, off the run's path.

A run appends its job's terminal event under a once-key (:func:`worker.progress.append_state`),
so the log holds it exactly once whoever appends it and however often.  The job row's
``announced`` flag only tells the reaper that it need not append it (again): setting it is
worth no write transaction of its own per job — on SQLite a turn of the one writer, for every
small job.  So a run leaves its token here (:meth:`Announced.add`), and the marks are written
with the process's next claim (:meth:`Announced.write`, in the claim's transaction) or, when
no job follows within :data:`DUE_AFTER`, by a thread of their own, all of them in one
statement; that thread's transaction also deletes the outbox rows whose events the jobs' ends
appended (:data:`worker.outbox.LEFT`), which a next terminal transaction would have taken.

A process that dies first leaves its jobs unannounced for a moment: the reaper announces
finished jobs left unannounced for longer than its grace (:data:`worker.reaper.ANNOUNCE_GRACE`,
well above :data:`DUE_AFTER`), which appends nothing again (the once-key) and sets the flag.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

from sqlalchemy import Connection, Engine, bindparam, update

from models.jobs import Job
from worker.outbox import LEFT

logger = logging.getLogger(__name__)
jobs = Job.__table__

#: Seconds a mark may wait for the process's next claim before its thread writes it.
DUE_AFTER = 0.2


class Announced:
    """Tokens of jobs whose terminal event this process appended, their mark not yet written."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: list[str] = []
        self._since = 0.0  # when the oldest waiting mark came
        self._engine: Engine | None = None
        self._pid: int | None = None
        self._wake = threading.Event()

    def add(self, token: str, engine: Engine) -> None:
        """Mark ``token`` announced soon; ``engine`` writes it if no claim does first."""
        with self._lock:
            if self._pid != os.getpid():  # the first mark of this process (or forked child)
                self._pid, self._tokens = os.getpid(), []
                self._wake = threading.Event()
                threading.Thread(target=self._loop, name="announced", daemon=True).start()
            if not self._tokens:
                self._since = time.monotonic()
            self._tokens.append(token)
            self._engine = engine
        self._wake.set()

    def waiting(self, token: str) -> bool:
        """Whether ``token``'s terminal event was appended here, its mark not yet written."""
        with self._lock:
            return self._pid == os.getpid() and token in self._tokens

    def write(self, conn: Connection) -> None:
        """Write the waiting marks in the caller's write transaction (a claim's)."""
        with self.written() as marks:
            marks(conn)

    @contextlib.contextmanager
    def written(self) -> Iterator[Callable[[Connection], None]]:
        """``with ANNOUNCED.written() as marks, engine.begin() as conn: marks(conn)``:
        the waiting marks written in that transaction, and waiting again should it not
        commit (an error in it rolls them back with it)."""
        taken: list[str] = []

        def marks(conn: Connection) -> None:
            taken.extend(self._take())
            if taken:
                _mark(conn, taken)

        try:
            yield marks
        except BaseException:
            if taken:
                with self._lock:
                    if not self._tokens:
                        self._since = time.monotonic()
                    self._tokens.extend(taken)
                self._wake.set()
            raise

    def _take(self) -> list[str]:
        with self._lock:
            tokens, self._tokens = self._tokens, []
            return tokens

    def _loop(self) -> None:
        wait: float | None = None  # until the oldest mark is due; None: until one comes
        while True:
            self._wake.wait(wait)
            self._wake.clear()
            with self._lock:
                due = self._since + DUE_AFTER - time.monotonic() if self._tokens else None
                engine = self._engine
            if due is None or engine is None:
                wait = None
                continue
            if due > 0:
                wait = due
                continue
            wait = None
            tokens = self._take()
            if not tokens:
                continue  # a claim wrote them meanwhile
            try:
                with (LEFT.deleted() as delete_left,
                      engine.execution_options(writer=True).begin() as conn):
                    _mark(conn, tokens)
                    delete_left(conn)  # its jobs' outbox rows that their ends appended
            except Exception:  # the reaper marks them (appending nothing again)
                logger.warning("%d job(s) not marked announced; the reaper will", len(tokens),
                               exc_info=True)


_MARK = update(jobs).where(jobs.c.token.in_(bindparam("tokens", expanding=True))).values(
    announced=True)


def _mark(conn: Connection, tokens: list[str]) -> None:
    conn.execute(_MARK, {"tokens": tokens})


#: This process's waiting marks.
ANNOUNCED = Announced()
