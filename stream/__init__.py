"""The stream relay: the sync log (SPEC §7) over websockets (SPEC §8), and its client.

Modules, from the core outwards:

* :mod:`stream.protocol` — client requests parsed into typed values, server messages built.
* :mod:`stream.fanout` — per-connection state and the routing hub; no I/O.
* :mod:`stream.relay` — what a subscribe replays, whether it is ``recovered``; no I/O.
* :mod:`stream.limits` — requests per second and replay size of a connection; no I/O.
* :mod:`stream.reader` — the one Redis reader of a process.
* :mod:`stream.access` — membership and job-snapshot queries.
* :mod:`stream.writer` — writing events to sockets without a task per connection.
* :mod:`stream.metrics` — the process's Prometheus collector.
* :mod:`stream.server` — the asyncio websockets server (``python -m stream``).
* :mod:`stream.client` — :class:`~stream.client.StreamClient`, an auto-resuming client.
"""

from __future__ import annotations

from stream.client import AuthFailed, StreamClient, StreamError

__all__ = ["AuthFailed", "StreamClient", "StreamError"]
