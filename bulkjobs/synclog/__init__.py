"""The sync log: one Redis stream per cursor space, entry ids are the (last) cursors.

Modules: :mod:`~bulkjobs.synclog.events` (what is appended and read back),
:mod:`~bulkjobs.synclog.packing` (packed entries), :mod:`~bulkjobs.synclog.scripts` (the Lua
scripts) and :mod:`~bulkjobs.synclog.append` (their arguments),
:mod:`~bulkjobs.synclog.read` (decoding entries and reading a range, without I/O),
:mod:`~bulkjobs.synclog.trim` (retention), :mod:`~bulkjobs.synclog.wait` (a wait for a job's
end) and :mod:`~bulkjobs.synclog.waiters` (an event loop's waits on one reader),
:mod:`~bulkjobs.synclog.replicas` (events that count once replicas hold them),
:mod:`~bulkjobs.synclog.log` (:class:`SyncLog`) and :mod:`~bulkjobs.synclog.aio`
(:class:`AsyncSyncLog`).  Import every name from here.

Contract
--------
* Two kinds of space: ``"cc"`` (job events) and one per project (``space == project gid``,
  record and schema changes).
* A cursor is an integer that only grows.  Appending increments the space's counter and adds
  the stream entry ``<cursor>-0`` in one Lua script, so cursors are dense within an epoch and
  never reused.  A counter that is missing (first use, or Redis lost its data) is seeded from
  the clock in microseconds, never below the last entry still in the stream, so cursors keep
  growing across a Redis restart that lost everything.  The clock is the Redis server's
  (``TIME``), not the appending client's: workers run on many machines, and the first one to
  append after a data loss must not reseed below earlier cursors because its clock lags.
* Redis may also come back with *some* of its data: an RDB snapshot, an AOF missing its last
  second, a failover to a replica that lagged.  Its counter then lies below cursors already
  handed out, and counting on from it would hand them out again, to other events.  Nothing in
  the data tells such a restart apart, so the first script to touch a space after *any*
  restart (the server's ``run_id`` differs from the one recorded in the space's marks hash,
  field ``run``) reseeds the counter from the clock as if it were missing, never below its
  old value: cursors keep growing, and history from before the restart is declared
  incomplete.  A clean restart costs subscribers one ``recovered: false``; a rollback never
  yields a partial replay.
* Failover.  With replicas (``SYNC_REPLICAS`` ≥ 1, the default with Sentinel) an event counts
  as written only once that many replicas acknowledged it (``WAIT`` after each append, in the
  same round trip), and readers (the relay, ``/sync/get``, replays) return events only once
  the replicas hold them (:mod:`~bulkjobs.synclog.replicas`): an event a client has seen, or
  one whose outbox row was deleted, is on a replica.  The marks hash records the replication
  id the history is written under (field ``repl``, the primary's ``master_replid``).  A
  replica promoted by Sentinel reports its old primary's id as ``master_replid2``; when that
  is the space's ``repl``, the new primary holds the history it replicated, and the first
  script to touch the space goes on with it: counter and floor unchanged, cursors counting on
  densely, a resuming subscriber answered ``recovered: true``, the relay reading on without a
  gap.  Anything else after a new ``run_id`` (a restart from disk, a replica of another
  history, a space untouched since an earlier failover) is a restart, as above.  Sentinel
  promotes the replica with the largest replication offset, so with ``WAIT 1`` the promoted
  one holds every acknowledged event unless every replica that held it is unreachable at
  the failover; if it was behind an event a reader has seen, the counter is below that
  cursor and the reader (and a subscriber resuming from it) is told ``recovered: false``.
* Each space keeps a *floor*: the lowest cursor from which its history is complete.  Seeding a
  counter sets the floor just above the seed; trimming raises it.  A reader whose cursor ``c``
  is below ``floor - 1`` missed events that are gone, and one above the counter holds a cursor
  of a history this log no longer has: either is told ``recovered = False``.
* Two kinds of entry:

  - a *single* event (job events, and project-space events appended one by one): the event
    body as JSON *without* ``type`` and ``cursor`` (``d``) plus a few routing fields (``p``
    project gid, ``k`` data key, ``s`` job status, ``t`` time), id ``<cursor>-0``;
  - a *packed* entry (:class:`Pack`): ``n`` consecutive record-level events of one project,
    action and data type, as a batch produces them (:meth:`SyncLog.append_records`): fields
    ``n`` (count), ``p`` project, ``a`` action, ``y`` data type, ``g`` the gids joined by
    single spaces, ``t`` time.  The script takes ``INCRBY counter n`` and adds one entry whose
    id is the *last* cursor; event *i* (from 0) has cursor ``last - n + 1 + i``.  A pack
    holds at most :data:`PACK` events and :data:`PACK_CHARS` characters of gids.

  Because an entry's id is its last cursor, every range read (``XRANGE (c-0 +``, ``XREAD``
  after ``c-0``) that starts at any cursor ``c``, including one inside a pack, returns every
  entry holding an event after ``c``; readers drop the events ``<= c`` of the first entry
  (:func:`after`, :meth:`Pack.since`).  On the wire each event keeps its own cursor: the text
  of a pack is composed from its gids once (:attr:`Pack.text`, the events' texts joined by
  commas) and shared by every subscriber, so fan-out never re-serialises and never builds an
  object per event.  A million record events take a thousand entries instead of a million.
* Reads count events, not entries: :meth:`SyncLog.read` returns at most ``count`` events,
  and a page may end inside a pack; the next read from that cursor returns the rest of it.
* Retention (:meth:`SyncLog.trim`): an entry is removed only when it is both beyond the last
  ``SYNC_RETENTION`` events and older than ``SYNC_RETENTION_SECONDS``.  Both bounds are
  cursors, so they count events.  Trimming by ``MINID`` removes whole entries whose (last)
  cursor is below the cutoff and keeps a pack that straddles it whole, so every event at or
  above the cutoff is still there and the cutoff is a correct floor.
* Hard bound (``SYNC_MAX_EVENTS``, :attr:`SyncLog.max_events`): every append script trims
  its space to the last ``max_events`` events as it appends (the same ``MINID`` cut at
  ``counter - max_events + 1``, raising the floor), so a burst between two trims cannot
  grow Redis without bound.  A space then holds at most ``max_events`` events plus the
  older part of one pack that straddles the cut (fewer than :data:`PACK` events); entries
  left from before a Redis restart (below the floor) go once ``max_events`` newer events
  are in.  A reader whose cursor the cut passed is told ``recovered = False``.
"""

from __future__ import annotations

from bulkjobs.synclog.aio import AsyncSyncLog
from bulkjobs.synclog.events import TERMINAL, Event, NewEvent, job_event, record_event
from bulkjobs.synclog.log import MAX_EVENTS, SyncLog
from bulkjobs.synclog.packing import PACK, PACK_CHARS, Item, Pack, first_cursor, pack, pack_text
from bulkjobs.synclog.read import (
    PAGE,
    Page,
    Pager,
    PageRead,
    after,
    count_events,
    decode,
    decode_after,
    decode_items,
    expand,
    fields_of,
    is_recovered,
)
from bulkjobs.synclog.replicas import FENCE, NotReplicated, check_replicated, wait_command
from bulkjobs.synclog.wait import WAIT_SLICE, TerminalWait
from bulkjobs.synclog.waiters import TerminalWaiters

__all__ = [
    "FENCE", "MAX_EVENTS", "PACK", "PACK_CHARS", "PAGE", "TERMINAL", "WAIT_SLICE",
    "AsyncSyncLog", "Event", "Item", "NewEvent", "NotReplicated", "Pack", "Page", "PageRead",
    "Pager", "SyncLog", "TerminalWait", "TerminalWaiters",
    "after", "check_replicated", "count_events", "decode", "decode_after", "decode_items", "expand",
    "fields_of", "first_cursor", "is_recovered", "job_event", "pack", "pack_text", "record_event",
    "wait_command",
]
