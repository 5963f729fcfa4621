"""The sync log over a synchronous Redis client (:class:`SyncLog`): the worker, the HTTP API
and the CLI append, read and trim through it."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import redis

from bulkjobs import keys
from bulkjobs.synclog import trim as retention
from bulkjobs.synclog.append import append_call, cursor_call, end_call, packed_call
from bulkjobs.synclog.events import NewEvent
from bulkjobs.synclog.packing import Item, pack
from bulkjobs.synclog.read import PAGE, Page, Pager, PageRead, text_of
from bulkjobs.synclog.replicas import FENCE, check_replicated, wait_command
from bulkjobs.synclog.scripts import (
    APPEND_END_LUA,
    APPEND_LUA,
    APPEND_PACKED_LUA,
    CURSORS_LUA,
    TRIM_LUA,
    bounded,
)
from bulkjobs.synclog.wait import TerminalWait

#: The most events a space holds by default (``SYNC_MAX_EVENTS``; see the hard bound in the
#: contract of :mod:`bulkjobs.synclog`).
MAX_EVENTS = 1_000_000


class SyncLog:
    """The sync log over a synchronous Redis client (worker, API, CLI)."""

    def __init__(self, client: redis.Redis, *, dedupe_ttl: int = 2 * 86_400,
                 max_events: int = MAX_EVENTS, replicas: int = 0,
                 replica_timeout: float = 2.0) -> None:
        self.r = client
        self.max_events = max_events
        #: Replicas that must hold an event before it counts as written or is read
        #: (:mod:`bulkjobs.synclog.replicas`); 0: the primary alone.
        self.replicas = replicas
        self.replica_timeout = replica_timeout
        self._append = client.register_script(bounded(APPEND_LUA, max_events))
        self._append_packed = client.register_script(bounded(APPEND_PACKED_LUA, max_events))
        self._append_end = client.register_script(bounded(APPEND_END_LUA, max_events))
        self._cursors = client.register_script(CURSORS_LUA)
        self._trim = client.register_script(TRIM_LUA)
        self.dedupe_ttl = dedupe_ttl

    def append(
        self, space: str, events: Sequence[NewEvent], *, once_key: str | None = None
    ) -> list[int]:
        """Append events atomically; returns their cursors.  With ``once_key`` the append
        happens at most once for that key (an empty list means it had happened already)."""
        if not events:
            return []
        k, a = append_call(space, events, once_key, self.dedupe_ttl)
        return [int(c) for c in self._written(self._append, k, a)]

    def append_each(
        self, space: str, appends: Sequence[tuple[Sequence[NewEvent], str]]
    ) -> list[list[int]]:
        """Several :meth:`append` calls, each at most once for its once-key, sent in one
        round trip (a pipeline; each call atomic by itself); the cursors of each, an empty
        list for one that had happened already."""
        pipe = self.r.pipeline(transaction=False)
        for events, once_key in appends:
            k, a = append_call(space, events, once_key, self.dedupe_ttl)
            self._append(keys=k, args=a, client=pipe)
        replies = self._replicated(pipe) if self.replicas else pipe.execute()
        return [[int(c) for c in reply] for reply in replies]

    def cursors(self, space: str) -> tuple[int, int]:
        """``(current cursor, floor)`` of a space, seeding them if missing."""
        k, a = cursor_call(space)
        c, f = self._cursors(keys=k, args=a)
        return int(c), int(f)

    def cursor(self, space: str) -> int:
        return self.cursors(space)[0]

    def append_records(
        self, project: str, groups: Iterable[tuple[str, str, Sequence[str]]], *,
        once_key: str | None = None,
    ) -> range:
        """Append record-level events ``(data type, action, gids)`` of one project, packed
        (:func:`pack`, one entry per pack) in one atomic script call; returns their cursors,
        consecutive in the groups' order.  With ``once_key`` the append happens at most once
        for that key (an empty range means it had happened already)."""
        packs = pack(groups)
        if not packs:
            return range(0)
        k, a = packed_call(project, packs, once_key, self.dedupe_ttl)
        first, last = (int(c) for c in self._written(self._append_packed, k, a))
        return range(first, last + 1) if first else range(0)

    def append_end(
        self, space: str, terminal: NewEvent, *, once_key: str, counted: Sequence[Any],
        held: Sequence[NewEvent] = (), project: str = "",
        records: Sequence[tuple[str, Iterable[tuple[str, str, Sequence[str]]]]] = (),
    ) -> list[int]:
        """A job's end in one atomic script call (one round trip): the events ``held`` back
        for it, then the record events of ``project`` it owes — each part ``(once-key,
        groups)`` packed as by :meth:`append_records`, at most once for its key — then its
        ``terminal`` event, at most once for ``once_key`` and counted in the metrics
        (``counted``: :func:`bulkjobs.metrics.job_state_args`) only when appended now.
        Returns the terminal event's cursor (an empty list: it had been appended already)."""
        parts = [(once, pack(groups)) for once, groups in records]
        k, a = end_call(space, held, terminal, once_key, counted, project,
                        [(once, packs) for once, packs in parts if packs], self.dedupe_ttl)
        return [int(c) for c in self._written(self._append_end, k, a)]

    def read(self, space: str, after: int, *, count: int = PAGE) -> Page:
        """Events with cursor > ``after`` (at most ``count``; a page may end inside a packed
        entry).  When ``after`` is below the floor (or above the counter) the page starts at
        the floor and ``recovered`` is False (see :class:`PageRead`)."""
        last, floor = self.cursors(space)
        read = PageRead(space, after, count=count, last=last, floor=floor)
        self._fill(read)
        self.fence(space)
        return read.page()

    def _written(self, script: Any, k: list[str], a: list[Any]) -> Any:
        """The reply of one append ``script``, once the replicas hold what it wrote (in
        the same round trip, see :meth:`_replicated`)."""
        if not self.replicas:
            return script(keys=k, args=a)
        pipe = self.r.pipeline(transaction=False)
        script(keys=k, args=a, client=pipe)
        return self._replicated(pipe)[0]

    def _replicated(self, pipe: redis.client.Pipeline) -> list[Any]:
        """Execute ``pipe`` (appends) with a ``WAIT`` for the replicas after it; the
        appends' replies.  Raises :class:`~bulkjobs.synclog.replicas.NotReplicated` when too
        few replicas acknowledged in time."""
        pipe.execute_command(*wait_command(self.replicas, self.replica_timeout))
        *replies, acknowledged = pipe.execute()
        check_replicated(acknowledged, self.replicas)
        return replies

    def fence(self, space: str) -> None:
        """Return once the replicas hold every event read from ``space`` so far (a write
        after the reads, then ``WAIT`` for it); raises ``NotReplicated`` otherwise."""
        if not self.replicas:
            return
        pipe = self.r.pipeline(transaction=False)
        pipe.hincrby(keys.sync_marks(space), FENCE, 1)
        self._replicated(pipe)

    def pages(self, space: str, after: int, *, count: int = PAGE) -> Iterator[Page]:
        """:meth:`read` on and on, each page from the last cursor of the one before, until a
        page has no more after it."""
        while True:
            page = self.read(space, after, count=count)
            yield page
            if not page.more:
                return
            after = page.events[-1].cursor

    def _fill(self, pager: Pager) -> list[Item]:
        """Drive ``pager`` to its end, one pipelined round trip per step."""
        stream = keys.sync_stream(pager.space)
        while not pager.done:
            with self.r.pipeline(transaction=False) as pipe:
                for start, end, n in pager.ranges():
                    pipe.xrange(stream, start, end, count=n)
                pager.take(pipe.execute())
        return pager.items

    def trim(self, space: str, *, keep: int, keep_seconds: float, now: float | None = None) -> int:
        """Drop entries beyond both retention bounds; returns the new floor."""
        now = time.time() if now is None else now
        last, _ = self.cursors(space)
        marks = keys.sync_marks(space)
        cutoff = retention.cutoff(last=last, keep=keep, marks=self.r.hgetall(marks),
                                  older_than=now - keep_seconds)
        new_floor = int(self._trim(
            keys=[keys.sync_stream(space), keys.sync_floor(space), marks], args=[cutoff],
        ))
        old_minutes = retention.stale_minutes(self.r.hgetall(marks), new_floor)
        if old_minutes:
            self.r.hdel(marks, *old_minutes)
        return new_floor

    def spaces(self) -> list[str]:
        return sorted(text_of(s) for s in self.r.smembers(keys.sync_spaces()))

    def wait_terminal(self, token: str, *, after: int, timeout: float) -> bool:
        """Block (``XREAD BLOCK`` on the ``cc`` stream, no polling) until the terminal event
        of job ``token`` is appended after cursor ``after``, or ``timeout`` seconds pass.
        True when it was seen.  Take ``after`` before queueing the job, so that its terminal
        event cannot slip in between.  Blocks in slices shorter than the client's socket
        timeout."""
        wait = TerminalWait(token, after=after, timeout=timeout)
        while (block_ms := wait.block_ms()) is not None:
            if wait.seen(self.r.xread(wait.streams(), count=PAGE, block=block_ms)):
                return True
        return False
