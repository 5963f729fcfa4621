"""Waits for jobs' ends on the ``cc`` stream, served by one reader per event loop
(:class:`TerminalWaiters`).

A request that answers once its job has ended (Plone's revert) waits for the job's terminal
event.  With a reader of its own per wait, ``n`` waiting requests would each read every
``cc`` event: ``n`` connections and ``n`` times the reads.  Here the waits of one event loop
share one connection and one ``XREAD BLOCK`` loop, which reads each event once and wakes the
waits of the jobs whose terminal event it holds:

* the reader starts with the first wait and stops when none is left;
* a wait that begins behind the reader (its ``after`` is older than the last event the
  reader has seen) first reads back over the gap itself, so that a job that ended before
  the wait began is seen at once;
* Redis failing ends every wait in progress with the error (the next wait starts a new
  reader).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio

from bulkjobs import keys
from bulkjobs.synclog.read import PAGE, decode
from bulkjobs.synclog.wait import WAIT_SLICE, TerminalWait


class TerminalWaiters:
    """The waits for jobs' terminal events of one event loop, and their shared reader.
    ``make_client`` makes the reader's connection (one per reader run)."""

    def __init__(self, make_client: Callable[[], redis.asyncio.Redis]) -> None:
        self._make_client = make_client
        self._waits: dict[str, set[asyncio.Future[None]]] = {}
        self._reader: asyncio.Task[None] | None = None
        #: The running reader's client: its blocked ``XREAD`` holds one connection of the
        #: client's pool, and read-backs take others.
        self._client: redis.asyncio.Redis | None = None
        #: The cursor of the last ``cc`` event the reader has seen (while it runs).
        self._last = 0
        #: Reader runs so far (each makes one connection).
        self.readers = 0

    async def wait(self, token: str, *, after: int, timeout: float) -> bool:
        """True once job ``token``'s terminal event after cursor ``after`` is in the log;
        False when ``timeout`` seconds pass without it."""
        seen: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waits.setdefault(token, set()).add(seen)
        try:
            if self._reader is None or self._reader.done():  # done: cancelled with its loop
                self._last = after
                self._client = self._make_client()
                self._reader = asyncio.create_task(self._read(self._client))
                self.readers += 1
            elif after < self._last and await self._read_back(token, after, self._last):
                return True
            try:
                await asyncio.wait_for(asyncio.shield(seen), timeout)
            except TimeoutError:
                return False
            return True
        finally:
            waits = self._waits.get(token)
            if waits is not None:
                waits.discard(seen)
                if not waits:
                    del self._waits[token]

    async def _read_back(self, token: str, after: int, upto: int) -> bool:
        """Whether the job's terminal event is among the events after ``after`` up to
        ``upto`` (on the running reader's client; the reader runs while this wait is
        registered)."""
        assert self._client is not None
        wait = TerminalWait(token, after=after, timeout=0)
        while int(wait.last.split("-", 1)[0]) < upto:
            reply = await self._client.xread(wait.streams(), count=PAGE)
            if not reply:
                return False
            if wait.seen(reply):
                return True
        return False

    async def _read(self, client: redis.asyncio.Redis) -> None:
        """The reader: ``XREAD BLOCK`` from the last event seen while any wait is left;
        ``client`` is closed when it ends."""
        stream = keys.sync_stream(keys.CC_SPACE)
        block_ms = int(WAIT_SLICE * 1000)
        try:
            while self._waits:
                reply: Any = await client.xread({stream: f"{self._last}-0"}, count=PAGE,
                                                block=block_ms)
                for _, entries in reply or []:
                    for event in decode(keys.CC_SPACE, entries):
                        self._last = event.cursor
                        if event.terminal:
                            for seen in self._waits.get(event.key, ()):
                                if not seen.done():
                                    seen.set_result(None)
            self._reader = None  # before any await: a wait that begins now starts another
        except Exception as exc:
            self._reader = None
            for waits in self._waits.values():
                for seen in waits:
                    if not seen.done():
                        seen.set_exception(exc)
        finally:
            await client.aclose()
