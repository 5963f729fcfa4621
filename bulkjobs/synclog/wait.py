"""Waiting for a job's end on the ``cc`` stream, without I/O (:class:`TerminalWait`)."""

from __future__ import annotations

import time
from typing import Any

from bulkjobs import keys
from bulkjobs.synclog.read import decode

#: Longest single XREAD BLOCK of a wait for a job's end (:class:`TerminalWait`): well below
#: the clients' socket timeout (``bulkjobs.connections.SOCKET_TIMEOUT``, 3 s), or the wait
#: would time out.
WAIT_SLICE = 1.0


class TerminalWait:
    """The state of one wait for a job's terminal event on the ``cc`` stream, without I/O:
    what to read next and whether a reply holds the event.  :meth:`SyncLog.wait_terminal
    <bulkjobs.synclog.SyncLog.wait_terminal>` drives it; :class:`TerminalWaiters
    <bulkjobs.synclog.waiters.TerminalWaiters>` uses it to read back over a gap."""

    def __init__(self, token: str, *, after: int, timeout: float) -> None:
        self.token = token
        self.last = f"{after}-0"
        self.deadline = time.monotonic() + timeout

    def block_ms(self) -> int | None:
        """How long the next ``XREAD`` may block (one slice at most, see
        :data:`WAIT_SLICE`); ``None`` once the time is up."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return None
        return max(1, int(min(remaining, WAIT_SLICE) * 1000))

    def streams(self) -> dict[Any, Any]:
        """The ``XREAD`` argument: the ``cc`` stream, after the last entry seen."""
        return {keys.sync_stream(keys.CC_SPACE): self.last}

    def seen(self, reply: Any) -> bool:
        """Take in one ``XREAD`` reply: True when it holds the job's terminal event."""
        for _, entries in reply or []:
            for event in decode(keys.CC_SPACE, entries):
                self.last = f"{event.cursor}-0"
                if event.key == self.token and event.terminal:
                    return True
        return False
