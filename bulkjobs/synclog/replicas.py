"""Events that count as written only once replicas hold them (``SYNC_REPLICAS``, see
"Failover" in the contract of :mod:`bulkjobs.synclog`).

Redis replicates asynchronously: an event the primary took may die with it.  ``WAIT n
timeout`` blocks until ``n`` replicas acknowledged every write the calling connection made so
far, so:

* an append is followed, in the same pipeline (no extra round trip), by ``WAIT``: once it
  answers, the event is on a replica; when fewer replicas answer in time the append raises
  :class:`NotReplicated` (a ``ConnectionError``: Redis counts as away, a job hands itself
  back and retries; the append is deduplicated by its once-key);
* a reader has written nothing, so it first writes a *fence* (``HINCRBY`` of a marks field,
  after its reads) and waits for that: the replicas then hold everything the primary had when
  the fence was written, so every event just read.  Only then are the events delivered.
"""

from __future__ import annotations

from typing import Any

import redis

#: The marks-hash field a reader's fence increments.
FENCE = "fence"


class NotReplicated(redis.exceptions.ConnectionError):
    """Fewer replicas than required acknowledged the sync log's writes in time."""


def wait_command(replicas: int, timeout: float) -> tuple[Any, ...]:
    """The ``WAIT`` command for ``replicas`` replicas and ``timeout`` seconds."""
    return ("WAIT", replicas, max(1, int(timeout * 1000)))


def check_replicated(acknowledged: Any, replicas: int) -> None:
    """Raise :class:`NotReplicated` when ``WAIT`` answered fewer than ``replicas``."""
    if int(acknowledged) < replicas:
        raise NotReplicated(f"{int(acknowledged)} of {replicas} Redis replica(s) acknowledged "
                            "the sync log in time; try again shortly")
