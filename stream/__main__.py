"""``python -m stream``: serve ``ws://0.0.0.0:$STREAM_PORT/sync`` until SIGTERM/SIGINT.

Exit status: 0 after a signal (websockets closed with 1001); 1 when the sync-log reader (or the
membership refresher) died, so a supervisor restarts the process instead of it hanging.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from stream.server import StreamServer

logger = logging.getLogger("stream")

T = TypeVar("T")


async def serve() -> int:
    server = StreamServer()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stopping, stop, sig)
    await server.start()
    # Start-up objects (modules, settings, the ORM's tables: ~100,000) live as long as the
    # process: moved out of the collector's reach, they are not rescanned by every full
    # collection, which with thousands of connections already has plenty to scan.
    gc.freeze()
    return await server.run_until(stop)


def _stopping(stop: asyncio.Event, sig: signal.Signals) -> None:
    logger.info("received %s; shutting down", sig.name)
    stop.set()


def main() -> int:
    from bulkjobs.logs import setup
    from bulkjobs.settings import settings_or_exit

    settings_or_exit()  # a bad setting stops the process here, in one line
    setup()  # LOG_FORMAT / LOG_LEVEL, as every process
    return run(serve())


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (it comes with ``uvicorn[standard]``): its
    transports write and its selector wakes for less CPU than asyncio's own, and a relay does
    little else than that."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


if __name__ == "__main__":
    sys.exit(main())
