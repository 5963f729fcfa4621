"""Waiting for a job's end from an async route, holding neither a thread nor a database
connection: the asyncio counterpart of :meth:`bulkjobs.synclog.SyncLog.wait_terminal`.

Each wait uses a Redis connection of its own, closed when it ends: an asyncio client belongs
to the event loop it was made on, and a wait is long next to making a connection.
"""

from __future__ import annotations

import time
from typing import Any

from bulkjobs import keys
from bulkjobs.connections import make_async_redis
from bulkjobs.synclog import PAGE, WAIT_SLICE, decode


async def wait_terminal(token: str, *, after: int, timeout: float) -> bool:
    """Await (``XREAD BLOCK`` on the ``cc`` stream, no polling) the terminal event of job
    ``token`` appended after cursor ``after``, for at most ``timeout`` seconds; True when it
    came.  Take ``after`` before queueing the job, so that its terminal event cannot slip in
    between."""
    stream = keys.sync_stream(keys.CC_SPACE)
    last = f"{after}-0"
    deadline = time.monotonic() + timeout
    client = make_async_redis()
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            block_ms = max(1, int(min(remaining, WAIT_SLICE) * 1000))
            reply: Any = await client.xread({stream: last}, count=PAGE, block=block_ms)
            for _, entries in reply or []:
                for event in decode(keys.CC_SPACE, entries):
                    last = f"{event.cursor}-0"
                    if event.key == token and event.terminal:
                        return True
        return False
    finally:
        await client.aclose()
