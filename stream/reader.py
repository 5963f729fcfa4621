"""The one sync-log reader of a stream process.

One ``XREAD BLOCK`` loop over the ``cc`` stream plus the streams of the project spaces that
currently have subscribers hands events, in cursor order per space, to a :class:`Sink` (the
server, which fans them out through the hub).  Every connection shares this one reader, so the
cost of reading Redis does not grow with the number of subscribers.

Contract
--------
* **New spaces.**  A project space is read from the cursor its first subscriber asked for
  (:meth:`Reader.want`), never from "now": the subscriber fetched its cursor *after*
  registering with the hub, so starting at that cursor loses nothing.  A blocked ``XREAD`` is
  cut short with ``CLIENT UNBLOCK`` so a new space is read at once (at worst after one block,
  ``block_ms``, if the wake-up races the next ``XREAD``).  Spaces nobody subscribes to any
  more are dropped.
* **Redis restarts.**  Connection errors are survived: the reader reconnects with capped
  exponential back-off and resumes every space from its last cursor.  Other errors (a bug, a
  key of the wrong type) propagate: the task dies and the server makes the process exit
  non-zero — a relay that silently stops relaying is worse than one that crashes.
* **Packed entries.**  A packed entry of record events (:class:`~bulkjobs.synclog.Pack`) is
  handed to the sink as one item, never as an object per event; a read that starts inside
  one (a space read from a cursor a pack holds) gets only the events after that cursor.
* **Lost history.**  Cursors are dense within a space (the log's append scripts take one
  cursor per event), so a jump (next item's first cursor ``!= last + 1``), a counter that went
  backwards, or a floor above the last cursor read (checked on every reconnect) means events
  were lost (Redis lost its data or restarted and reseeded the counter, or the log was
  trimmed past the reader).  The reader then calls ``sink.gap(space)`` *before* delivering
  anything after the hole; the server closes the affected connections with 4008 and, when
  they resume from their last cursor (now below the floor), tells them ``recovered: false``.
* **Revocations.**  The same ``XREAD`` reads the stream of revocation notices
  (:mod:`bulkjobs.revocations`), from the newest notice at the first connect on.  The users
  a read's notices name are handed to ``sink.revoked`` (and awaited) *before* any event of
  that read: an event appended after a notice is never read before it, so the sink has
  re-judged those users' connections before it fans the event out.  A read that returns as
  many notices as ``COUNT`` allows may have left later ones unread; its events are read
  again with them.  Notices lost with Redis's data are not replayed: the sink's periodic
  re-judging covers them.
* **Replicas** (``SYNC_REPLICAS`` > 0, the default with Sentinel).  Events are handed to the
  sink only once that many replicas hold them (a fence write after each read, then ``WAIT``;
  :mod:`bulkjobs.synclog.replicas`), so an event a subscriber has seen survives a failover.
  After a failover to a replica that holds the whole history, the reader reconnects to the
  new primary and reads on from its positions: no gap, subscribers stay connected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bulkjobs import keys, revocations
from bulkjobs.connections import async_sentinel_pool
from bulkjobs.settings import Settings
from bulkjobs.synclog import (
    FENCE,
    AsyncSyncLog,
    Item,
    check_replicated,
    decode_after,
    fields_of,
    wait_command,
)

logger = logging.getLogger(__name__)

#: Errors that mean "Redis went away", as opposed to a bug.
TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


class Sink(Protocol):
    """What the reader feeds (the server; a list in tests)."""

    def spaces(self) -> set[str]:
        """Project spaces that currently have subscribers."""

    def deliver(self, events: list[Item]) -> None:
        """Events (single, or packed) of one space, consecutive, in cursor order."""

    def gap(self, space: str) -> None:
        """Events of ``space`` were lost before they could be read."""

    async def revoked(self, users: set[str]) -> None:
        """Revocation notices named ``users``; re-judge their connections now."""


class Reader:
    """Reads the sync log and hands events to ``sink``.  Run :meth:`run` in one task."""

    def __init__(
        self, sink: Sink, *, url: str, control: redis.asyncio.Redis | None = None,
        block_ms: int = 1000, count: int = 1000, max_backoff: float = 5.0,
        sentinel: Settings | None = None, replicas: int = 0, replica_timeout: float = 2.0,
    ) -> None:
        self.sink = sink
        self.url = url
        #: Replicas that must hold events before they are delivered (``SYNC_REPLICAS``).
        self.replicas = replicas
        self.replica_timeout = replica_timeout
        #: Settings naming the sentinels to ask for the primary (instead of ``url``'s host).
        self.sentinel = sentinel
        self.control = control  # a separate client, used only for CLIENT UNBLOCK
        self.block_ms = block_ms
        self.count = count
        self.max_backoff = max_backoff
        #: space -> last cursor handed to the sink
        self.positions: dict[str, int] = {}
        #: id of the last revocation notice read (None until the first connect)
        self.notices_after: str | None = None
        self.connected = False
        self.reconnects = 0
        self.lag = 0.0  # seconds between the append and the read of the newest event
        self.stopping = False
        self._starts: dict[str, int] = {}
        self._client_id: int | None = None
        self._waking = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def want(self, space: str, after: int) -> None:
        """Read ``space`` from cursor ``after`` on, unless it is read already."""
        if space == keys.CC_SPACE or space in self.positions:
            return
        current = self._starts.get(space)
        self._starts[space] = after if current is None else min(current, after)
        self._wake()

    def unread(self, spaces: Iterable[str]) -> list[str]:
        """Those of ``spaces`` that are neither read nor about to be (see :meth:`want`)."""
        return [s for s in spaces if s not in self.positions and s not in self._starts]

    def stop(self) -> None:
        """Ask :meth:`run` to return.  Cancelling the task is not enough on its own:
        redis-py can swallow a cancellation that lands while it connects, so the loop also
        checks this flag after every (bounded) ``XREAD``."""
        self.stopping = True

    async def run(self) -> None:
        """Read until stopped; survives Redis outages, dies on anything else."""
        delay = 0.1
        while not self.stopping:
            try:
                await self._session()
            except TRANSIENT as exc:
                if self.connected:
                    logger.warning("lost Redis (%s); reconnecting", exc)
                    delay = 0.1
                else:
                    logger.warning("Redis unavailable (%s); retrying in %.1f s", exc, delay)
                self.connected = False
                self.reconnects += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
        self.connected = False

    async def _session(self) -> None:
        options: dict[str, Any] = dict(
            socket_connect_timeout=5,
            # Longer than a block, so a dead connection is noticed instead of hanging.
            socket_timeout=self.block_ms / 1000 + 10,
            # We handle reconnects ourselves: a reconnect must be followed by a resync.
            retry=Retry(NoBackoff(), 0),
        )
        if self.sentinel is not None:  # each session asks the sentinels for the primary anew
            client = redis.asyncio.Redis(
                connection_pool=async_sentinel_pool(self.sentinel, **options),
                single_connection_client=True)
            client.auto_close_connection_pool = True
        else:
            client = redis.asyncio.Redis.from_url(self.url, single_connection_client=True,
                                                  **options)
        try:
            log = AsyncSyncLog(client, replicas=self.replicas,
                               replica_timeout=self.replica_timeout)
            self._client_id = int(await client.client_id())
            await self._resync(log)
            if not self.connected:
                logger.info("reading the sync log (spaces: %s)", ", ".join(sorted(self.positions)))
            self.connected = True
            # XREAD goes straight to the client's one connection: the client-level command
            # path (retries, locks, response callbacks) costs about as much CPU per read as
            # fanning an event out to dozens of connections, and one read is done per event
            # at a steady rate.  Errors surface the same way (connection errors are
            # TRANSIENT, anything else propagates).
            conn = client.connection
            assert conn is not None
            head = ("XREAD", "COUNT", self.count, "BLOCK", self.block_ms, "STREAMS")
            fence = ("HINCRBY", keys.sync_marks(keys.CC_SPACE), FENCE, 1)
            wait = wait_command(self.replicas, self.replica_timeout)
            notices = keys.revocations()
            while not self.stopping:
                self._sync_spaces()
                names = [keys.sync_stream(s) for s in self.positions]
                ids = [f"{c}-0" for c in self.positions.values()]
                await conn.send_command(*head, notices, *names, self.notices_after, *ids)
                response = await conn.read_response()
                if response and self.replicas:
                    # deliver only what the replicas hold: a write after the read, then WAIT
                    # (a shortfall is a ConnectionError: reconnect, resync, read again)
                    await conn.send_command(*fence)
                    await conn.send_command(*wait)
                    await conn.read_response()
                    check_replicated(await conn.read_response(), self.replicas)
                response, complete = await self._revocations(response, notices)
                if complete:
                    self._dispatch(response)
        finally:
            self._client_id = None
            await client.aclose()

    async def _resync(self, log: AsyncSyncLog) -> None:
        """After (re)connecting: find spaces whose history lost events we had not read, and
        where to read revocation notices from."""
        newest = await log.r.xrevrange(keys.revocations(), count=1)
        notice = _decoded(newest[0][0]) if newest else "0-0"
        if self.notices_after is None or _stream_id(notice) < _stream_id(self.notices_after):
            self.notices_after = notice  # first connect, or Redis lost the notices
        if keys.CC_SPACE not in self.positions:
            self.positions[keys.CC_SPACE] = (await log.cursors(keys.CC_SPACE))[0]
            return
        for space, pos in list(self.positions.items()):
            last, floor = await log.cursors(space)
            if last < pos or floor - 1 > pos:
                logger.warning(
                    "sync space %s lost events after cursor %s (floor now %s, last %s)",
                    space, pos, floor, last,
                )
                self.sink.gap(space)
                self.positions[space] = last

    def _sync_spaces(self) -> None:
        """Follow the hub: add spaces that were asked for, drop spaces nobody wants.
        Synchronous on purpose, so no subscription can slip in between the check and the
        change."""
        wanted = self.sink.spaces()
        for space in [s for s in self.positions if s != keys.CC_SPACE and s not in wanted]:
            del self.positions[space]
        for space in list(self._starts):
            after = self._starts.pop(space)
            if space in wanted and space not in self.positions:
                self.positions[space] = after

    async def _revocations(self, response: Any, notices: str) -> tuple[Any, bool]:
        """Hand the users of the notices in ``response`` to the sink; returns the rest of the
        response and whether it may be dispatched (False: more notices may be waiting, so its
        events are left to be read again after them)."""
        if not response:
            return response, True
        if isinstance(response, dict):
            rest: Any = dict(response)
            entries = rest.pop(notices, None) or rest.pop(notices.encode(), None)
        else:
            entries, rest = None, []
            for key, found in response:
                if _decoded(key) == notices:
                    entries = found
                else:
                    rest.append((key, found))
        if not entries:
            return rest, True
        self.notices_after = _decoded(entries[-1][0])
        await self.sink.revoked(revocations.users_of(entries))
        return rest, len(entries) < self.count

    def _dispatch(self, response: Any) -> None:
        if not response:
            return
        items = response.items() if isinstance(response, dict) else response
        for key, entries in items:
            space = keys.space_of(_decoded(key))
            pos = self.positions.get(space)
            if pos is None or not entries:
                continue
            # read from a cursor inside a packed entry: only the events after it
            events = decode_after(space, entries, pos)
            if not events:
                continue
            start = 0
            for i, ev in enumerate(events):
                if ev.first != pos + 1:
                    if i > start:
                        self.sink.deliver(events[start:i])
                    logger.warning(
                        "gap in sync space %s: expected cursor %s, read %s", space, pos + 1,
                        ev.first,
                    )
                    self.sink.gap(space)
                    start = i
                pos = ev.cursor
            self.positions[space] = pos
            self._measure_lag(entries[-1][1])
            self.sink.deliver(events[start:])

    def _measure_lag(self, fields: Any) -> None:
        fields = fields_of(fields)
        appended = fields.get(b"t", fields.get("t"))
        if appended is not None:
            self.lag = max(0.0, time.time() - int(appended) / 1_000_000)

    def _wake(self) -> None:
        """Cut a blocked XREAD short so a newly wanted space is read at once."""
        if self._client_id is None or self.control is None or self._waking:
            return
        self._waking = True
        task = asyncio.get_running_loop().create_task(self._unblock(self._client_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _unblock(self, client_id: int) -> None:
        assert self.control is not None
        try:
            await self.control.client_unblock(client_id)
        except RedisError as exc:  # the reader wakes up by itself within block_ms anyway
            logger.debug("CLIENT UNBLOCK failed: %s", exc)
        finally:
            self._waking = False


def _decoded(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stream_id(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``ms-seq``) as a pair that orders like the ids."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
