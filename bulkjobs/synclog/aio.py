"""The sync log over an asyncio Redis client (:class:`AsyncSyncLog`): the stream server and
async routes read and wait through it; nothing async appends."""

from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio

from bulkjobs import keys
from bulkjobs.synclog.append import cursor_call
from bulkjobs.synclog.packing import Item
from bulkjobs.synclog.read import PAGE, Page, Pager, PageRead
from bulkjobs.synclog.scripts import CURSORS_LUA
from bulkjobs.synclog.wait import TerminalWait


class AsyncSyncLog:
    """The same log over an asyncio Redis client (stream server, async routes)."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.r = client
        self._cursors = client.register_script(CURSORS_LUA)

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
        return read.page()

    async def read_items(
        self, space: str, after: int, *, count: int = PAGE, upto: int | None = None
    ) -> list[Item]:
        """Items holding the events after ``after`` (up to ``upto``): about ``count`` events,
        at most one pack more, the first cut to start after ``after`` (see :class:`Pager`)."""
        return await self._fill(Pager(space, after, count, upto=upto))

    async def _fill(self, pager: Pager) -> list[Item]:
        """Drive ``pager`` to its end, one pipelined round trip per step."""
        stream = keys.sync_stream(pager.space)
        while not pager.done:
            async with self.r.pipeline(transaction=False) as pipe:
                for start, end, n in pager.ranges():
                    pipe.xrange(stream, start, end, count=n)
                pager.take(await pipe.execute())
        return pager.items

    async def wait_terminal(self, token: str, *, after: int, timeout: float) -> bool:
        """:meth:`SyncLog.wait_terminal <bulkjobs.synclog.SyncLog.wait_terminal>` awaited:
        holds no thread while it waits."""
        wait = TerminalWait(token, after=after, timeout=timeout)
        while (block_ms := wait.block_ms()) is not None:
            if wait.seen(await self.r.xread(wait.streams(), count=PAGE, block=block_ms)):
                return True
        return False
