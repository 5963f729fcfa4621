"""The sync log over an asyncio Redis client (:class:`AsyncSyncLog`): the stream server and
async routes read through it; nothing async appends (waits for jobs' ends:
:mod:`bulkjobs.synclog.waiters`)."""

from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio

from bulkjobs import keys
from bulkjobs.synclog.append import cursor_call
from bulkjobs.synclog.packing import Item
from bulkjobs.synclog.read import PAGE, Page, Pager, PageRead
from bulkjobs.synclog.replicas import FENCE, check_replicated, wait_command
from bulkjobs.synclog.scripts import CURSORS_LUA


class AsyncSyncLog:
    """The same log over an asyncio Redis client (stream server, async routes)."""

    def __init__(self, client: redis.asyncio.Redis, *, replicas: int = 0,
                 replica_timeout: float = 2.0) -> None:
        self.r = client
        self._cursors = client.register_script(CURSORS_LUA)
        #: Replicas that must hold the events read before they are returned
        #: (:mod:`bulkjobs.synclog.replicas`); 0: the primary alone.
        self.replicas = replicas
        self.replica_timeout = replica_timeout

    async def fence(self, space: str) -> None:
        """Return once the replicas hold every event read from ``space`` so far (a write
        after the reads, then ``WAIT`` for it); raises ``NotReplicated`` otherwise."""
        if not self.replicas:
            return
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.hincrby(keys.sync_marks(space), FENCE, 1)
            pipe.execute_command(*wait_command(self.replicas, self.replica_timeout))
            _, acknowledged = await pipe.execute()
        check_replicated(acknowledged, self.replicas)

    async def cursors(self, space: str) -> tuple[int, int]:
        k, a = cursor_call(space)
        c, f = await self._cursors(keys=k, args=a)
        return int(c), int(f)

    async def cursors_many(self, spaces: Iterable[str]) -> dict[str, tuple[int, int]]:
        """:meth:`cursors` of many spaces in one round trip."""
        spaces = list(spaces)
        async with self.r.pipeline(transaction=False) as pipe:
            for space in spaces:
                k, a = cursor_call(space)
                await self._cursors(keys=k, args=a, client=pipe)
            replies = await pipe.execute()
        return {s: (int(c), int(f)) for s, (c, f) in zip(spaces, replies, strict=True)}

    async def read(self, space: str, after: int, *, count: int = PAGE) -> Page:
        """:meth:`SyncLog.read <bulkjobs.synclog.SyncLog.read>` awaited."""
        last, floor = await self.cursors(space)
        read = PageRead(space, after, count=count, last=last, floor=floor)
        await self._fill(read)
        await self.fence(space)
        return read.page()

    async def read_items(
        self, space: str, after: int, *, count: int = PAGE, upto: int | None = None
    ) -> list[Item]:
        """Items holding the events after ``after`` (up to ``upto``): about ``count`` events,
        at most one pack more, the first cut to start after ``after`` (see :class:`Pager`)."""
        items = await self._fill(Pager(space, after, count, upto=upto))
        await self.fence(space)
        return items

    async def _fill(self, pager: Pager) -> list[Item]:
        """Drive ``pager`` to its end, one pipelined round trip per step."""
        stream = keys.sync_stream(pager.space)
        while not pager.done:
            async with self.r.pipeline(transaction=False) as pipe:
                for start, end, n in pager.ranges():
                    pipe.xrange(stream, start, end, count=n)
                pager.take(await pipe.execute())
        return pager.items
