"""A job's project-space events, from the sync outbox into the sync log.

* **Record events.**  Each batch writes the project-space events it owes (``records``
  UPDATE/DELETE, unless ``record_events`` is off, and schema events, SPEC §7) into the sync
  outbox (:mod:`models.outbox`) in the same transaction as the batch (:func:`write_outbox`).
  After the commit a thread of their own appends them (:class:`RecordEvents`, one append per
  :data:`EVENT_CHUNK` events) while the next batch runs, and a later transaction of the run
  deletes the appended rows (:func:`clear_outbox`).  They are appended after the commit, so a
  subscriber that reloads on an event sees the change, and all are in the log before the
  job's terminal event.
* **Rows left behind** — the append failed (Redis away) or the worker died between the
  commit and the append — are appended by the job's next run before it does anything else
  (:func:`drain_outbox`), by :func:`worker.terminal.announce` before a terminal event, and by
  the reaper: no event of a committed batch is lost, and none is appended twice: each part of
  an outbox row is appended under a once-key named after the row (outbox ids are never
  reused).
* **A job done in its first batch** appends that batch's events with its terminal event, in
  one round trip after its terminal transaction (:meth:`RecordEvents.hold`,
  :func:`worker.terminal.announce`): their rows outlive that transaction, in case the
  append fails, and go with the process's next terminal transaction (:data:`LEFT`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Row, delete, insert, select

from bulkjobs import keys
from bulkjobs.synclog import SyncLog
from models.jobs import Job
from models.outbox import JOB_EVENT, SyncOutbox
from worker.deps import Deps
from worker.jobs.base import Effects
from worker.progress import JobState, append_states_once

# The job lifecycle logs under one name, whichever of its modules writes the line.
logger = logging.getLogger("worker.runner")

#: Record events appended per call (a batch of 1,000 subtree heads may change 100,000 rows);
#: they go into the log packed, :data:`bulkjobs.synclog.PACK` events per stream entry.
EVENT_CHUNK = 100_000
jobs = Job.__table__
outbox = SyncOutbox.__table__


@dataclass(frozen=True, slots=True)
class Held:
    """A batch's record events held back for its job's terminal event: the project, the
    appends ``(once-key, groups)`` (:meth:`SyncLog.append_end`) and the outbox rows they
    are written in."""

    project_gid: str
    parts: list[tuple[str, list[tuple[str, str, Sequence[str]]]]]
    ids: Sequence[int]


class RecordEvents:
    """Appends each committed batch's project-space events from a thread of its own, so that
    the Redis work for batch *n* overlaps the SQL of batch *n + 1* (the last batch's are
    appended by the run itself: nothing is left to overlap).

    Batches are appended in commit order.  At most one batch waits while another is being
    appended (:meth:`submit` blocks meanwhile), so memory stays bounded.  :meth:`flush` waits
    until everything submitted is appended and re-raises an append's error (so does the next
    :meth:`submit`), which then counts as the job's failure, as a failed append in the batch
    loop would.  The events are in the outbox all the while: :meth:`appended` tells the run
    which of its outbox rows it may delete; whatever was not appended stays there for the
    next run (or the reaper) to append.
    """

    def __init__(self, log: SyncLog) -> None:
        self.log = log
        self.queue: queue.Queue[tuple[str, Effects, Sequence[int] | None] | None] = (
            queue.Queue(maxsize=1))
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self._appended: int | None = None  # the last outbox row appended
        self._held: Held | None = None

    def __enter__(self) -> RecordEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.thread is not None:  # drain what was submitted, then stop
            self.queue.put(None)
            self.thread.join()

    def submit(self, project_gid: str, effects: Effects,
               outbox_id: Sequence[int] | None = None, *, last: bool = False) -> None:
        """Queue a committed batch's events; ``outbox_id`` holds the ids of the outbox rows
        they were written to (one per group of ``effects.events`` that has gids).  ``last``:
        no batch follows that the append could overlap, so it is done here and now, after
        what was queued (a small job's one batch starts no thread)."""
        self._raise()
        if not effects.events:
            return
        if last:
            self.flush()
            self._append((project_gid, effects, outbox_id))
            return
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="record-events", daemon=True)
            self.thread.start()
        self.queue.put((project_gid, effects, outbox_id))

    def hold(self, project_gid: str, effects: Effects,
             outbox_id: Sequence[int] | None = None) -> bool:
        """Hold a committed batch's events back for the job's terminal event (the batch
        was the job's last, and its first: nothing was queued); ``False`` when they are
        too many to go in its round trip, and were not held."""
        self._raise()
        if outbox_id is None or not effects.events:
            return True
        if not holdable(effects):
            return False
        self._held = Held(project_gid, list(_parts(_rows(effects, outbox_id))), outbox_id)
        return True

    def held(self) -> Held | None:
        """The events held back for the terminal event (:meth:`hold`)."""
        return self._held

    def flush(self) -> None:
        if self.thread is not None:
            self.queue.join()
        self._raise()

    def appended(self) -> int | None:
        """The last outbox row whose events are in the log (rows are appended in order)."""
        return self._appended

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is None:
                    return
                if self.error is None:
                    self._append(item)
            except Exception as exc:
                self.error = exc
            finally:
                self.queue.task_done()

    def _append(self, item: tuple[str, Effects, Sequence[int] | None]) -> None:
        project_gid, effects, outbox_id = item
        if outbox_id is not None:
            _append_events(self.log, project_gid, _rows(effects, outbox_id))
            self._appended = max(outbox_id)


def holdable(effects: Effects) -> bool:
    """Whether a batch's events are few enough to be held back for its job's terminal event
    and go in its round trip (:meth:`RecordEvents.hold`)."""
    return sum(len(gids) for gids in effects.events.values()) <= EVENT_CHUNK


def _rows(effects: Effects, outbox_id: Sequence[int]) -> list[tuple[int, str, str, Sequence[str]]]:
    """A batch's events as its outbox rows ``(row id, data type, action, gids)`` hold them
    (:func:`write_outbox`)."""
    groups = [(data_type, action, gids)
              for (data_type, action), gids in effects.events.items() if gids]
    return [(row_id, *group) for row_id, group in zip(outbox_id, groups, strict=True)]


def _append_events(log: SyncLog, project_gid: str,
                   rows: Iterable[tuple[int, str, str, Sequence[str]]]) -> int:
    """Append outbox rows' events ``(row id, data type, action, gids)`` to the project's
    space, packed (:meth:`SyncLog.append_records`): one append (one Lua call, one round trip)
    per :data:`EVENT_CHUNK` events of a row.  Each part carries a once-key named after its
    row and its place in the row (:func:`keys.outbox_appended`), so a row appended again —
    its job's next run after a crash between the append and the row's deletion, or the
    reaper — adds nothing twice: every event is in the log exactly once.  Returns the
    number of events appended now."""
    appended = 0
    for once, groups in _parts(rows):
        appended += len(log.append_records(project_gid, groups, once_key=once))
    return appended


def _parts(rows: Iterable[tuple[int, str, str, Sequence[str]]]
           ) -> Iterator[tuple[str, list[tuple[str, str, Sequence[str]]]]]:
    """The appends of outbox rows ``(row id, data type, action, gids)``: ``(once-key,
    groups)``, one per :data:`EVENT_CHUNK` events of a row."""
    for row_id, data_type, action, gids in rows:
        for part, start in enumerate(range(0, len(gids), EVENT_CHUNK)):
            yield (keys.outbox_appended(row_id, part),
                   [(data_type, action, gids[start:start + EVENT_CHUNK])])


def write_outbox(conn: Connection, token: str, project_gid: str, effects: Effects, *,
                 now: float) -> Sequence[int] | None:
    """Write a batch's events into the outbox (one row per data type and action that has
    gids, in the order of ``effects.events``); returns the rows' ids in that order, or
    ``None`` when the batch owes no events."""
    rows = [dict(job_token=token, project_gid=project_gid, data_type=data_type,
                 action=action, gids=" ".join(gids), created_on=now)
            for (data_type, action), gids in effects.events.items() if gids]
    if not rows:
        return None
    return conn.execute(insert(outbox).returning(outbox.c.id, sort_by_parameter_order=True),
                        rows).scalars().all()


def clear_outbox(conn: Connection, token: str, *, up_to: int | None = None,
                 keep: Sequence[int] = ()) -> None:
    """Delete the job's outbox rows (up to id ``up_to``; but those in ``keep``, whose
    events are held back for its terminal event): their events are in the log."""
    cond = [outbox.c.job_token == token]
    if up_to is not None:
        cond.append(outbox.c.id <= up_to)
    if keep:
        cond.append(outbox.c.id.not_in(keep))
    conn.execute(delete(outbox).where(*cond))


class Left:
    """Outbox rows whose events a job's end appended after its terminal transaction
    (:class:`Held`), to be deleted with the process's next terminal transaction
    (:meth:`deleted`).  A row left behind — no job follows, the process dies — costs the
    reaper, which drains a finished job's rows, an append that adds nothing (the rows'
    once-keys) and their deletion."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: list[int] = []
        self._pid: int | None = None

    def add(self, ids: Sequence[int]) -> None:
        with self._lock:
            if self._pid != os.getpid():  # a parent's, inherited through fork
                self._pid, self._ids = os.getpid(), []
            self._ids.extend(ids)

    @contextlib.contextmanager
    def deleted(self) -> Iterator[Callable[[Connection], None]]:
        """``with LEFT.deleted() as delete_left, engine.begin() as conn:
        delete_left(conn)``: the rows deleted in that transaction, and left again should it
        not commit."""
        taken: list[int] = []

        def delete_left(conn: Connection) -> None:
            with self._lock:
                if self._pid == os.getpid():
                    taken.extend(self._ids)
                    self._ids = []
            if taken:
                conn.execute(delete(outbox).where(outbox.c.id.in_(taken)))

        try:
            yield delete_left
        except BaseException:
            if taken:
                self.add(taken)
            raise


#: This process's outbox rows appended and not yet deleted.
LEFT = Left()


def outbox_ids(conn: Connection, token: str, *, job_events_only: bool = False) -> list[int]:
    """The ids of the outbox rows a job left, oldest first (see :func:`drain_outbox`)."""
    cond = [outbox.c.job_token == token]
    if job_events_only:
        cond.append(outbox.c.data_type == JOB_EVENT)
    return list(conn.execute(select(outbox.c.id).where(*cond).order_by(outbox.c.id)).scalars())


def drain_outbox(deps: Deps, token: str, *, job_events_only: bool = False,
                 ids: list[int] | None = None) -> int:
    """Append the events a job left in the outbox — its ``queued`` event, its committed
    batches' events — oldest first, and delete those rows; returns the number of events
    appended now (none for rows that had been appended already).  A failure leaves the
    rows (and raises): the next drain appends them again, and the once-keys of
    :func:`_append_events` and :func:`_append_job_event` keep what had been appended from
    being appended twice.  ``job_events_only``: leave the batches' rows to the job's run
    (the reaper drains a waiting job's ``queued`` event).  ``ids``: the rows' ids
    (:func:`outbox_ids`), when the caller read them in a transaction of its own."""
    if ids is None:
        with deps.engine.connect() as conn:
            ids = outbox_ids(conn, token, job_events_only=job_events_only)
    if not ids:
        return 0
    appended = 0
    for outbox_id in ids:  # one row at a time: a row may hold 100,000 gids
        with deps.engine.connect() as conn:
            row = conn.execute(select(outbox).where(outbox.c.id == outbox_id)).first()
        if row is None:  # drained meanwhile by another run
            continue
        if row.data_type == JOB_EVENT:
            appended += _append_job_event(deps, row)
            continue
        appended += _append_events(deps.log, row.project_gid,
                                   [(row.id, row.data_type, row.action, row.gids.split())])
    with deps.write_engine.begin() as conn:
        conn.execute(delete(outbox).where(outbox.c.id.in_(ids)))
    # Rows whose events were in the log already (:data:`LEFT`) append nothing: no news.
    logger.log(logging.INFO if appended else logging.DEBUG,
               "job %s: appended %s events left in the outbox", token, appended,
               extra={"job": token})
    return appended


def _append_job_event(deps: Deps, row: Row) -> int:
    """Append the job event of an outbox row (its ``queued`` event, rebuilt from the job
    row's fields that never change), at most once (the row's once-key); 1 when appended
    now."""
    with deps.engine.connect() as conn:
        job = conn.execute(select(jobs.c.token, jobs.c.project_gid, jobs.c.job,
                                  jobs.c.created_on).where(jobs.c.token == row.job_token)).first()
    if job is None:
        return 0
    state = JobState(job.token, job.project_gid, job.job, row.action, {}, job.created_on,
                     job.created_on)
    return sum(append_states_once(deps.log, [(state, keys.outbox_appended(row.id, 0))],
                                  insert=True))
