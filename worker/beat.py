"""The beat scheduler of ``celery -A worker.app beat``: any number of beat processes may run,
on any number of hosts; one of them, the holder of a lease in Redis
(:func:`~bulkjobs.keys.beat_lease`), sends the periodic tasks.

* **The lease.** ``SET key owner NX PX ttl`` takes it when nobody holds it; the holder renews
  it every third of ``BEAT_LEASE_TTL`` (a compare-and-renew script: only while the value is
  still its own name) and deletes it when it shuts down cleanly.  A holder that dies (SIGKILL,
  lost host) stops renewing: its lease expires after at most ``BEAT_LEASE_TTL`` seconds, and
  the next process to try takes it over, within a third of the TTL after that.
* **Sending only while held.** Every tick first makes sure of the lease (taken or renewed
  less than a third of the TTL ago); a process without it sends nothing and tries again a
  third of the TTL later.  A Redis that does not answer counts as not held: no process sends
  until one holds the lease again.
* **The schedule in memory.** The schedule is kept in the process (``celery.beat.Scheduler``),
  not in a ``celerybeat-schedule`` file: several beats on one host share no file, and a beat
  that takes over sends at once every task whose interval passed while it waited (the tasks
  are idempotent and expire after one interval, ``worker.app``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from typing import Any

import redis
from celery.beat import Scheduler

from bulkjobs.connections import get_redis
from bulkjobs.keys import beat_lease
from bulkjobs.settings import get_settings

logger = logging.getLogger("worker.beat")

#: Renew the lease when its value is still ours; 1 if renewed, 0 if somebody else holds it.
RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
#: Delete the lease when its value is still ours.
RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class Lease:
    """A Redis lease named ``key``, held under the name ``owner`` for ``ttl`` seconds."""

    def __init__(self, client: redis.Redis, key: str, owner: str, ttl: float) -> None:
        self.client, self.key, self.owner, self.ttl = client, key, owner, ttl
        self.held = False
        self.checked = 0.0  # monotonic time of the last successful take or renewal

    @property
    def every(self) -> float:
        """Seconds between two renewals (and between two attempts of a follower)."""
        return self.ttl / 3

    def hold(self) -> bool:
        """Take or renew the lease when due; whether this process holds it now."""
        now = time.monotonic()
        if self.held and now - self.checked < self.every:
            return True
        was = self.held
        try:
            ms = int(self.ttl * 1000)
            if was:
                self.held = bool(self.client.eval(RENEW, 1, self.key, self.owner, ms))
            else:
                self.held = bool(self.client.set(self.key, self.owner, nx=True, px=ms))
        except redis.RedisError as exc:
            if was:
                logger.warning("beat: Redis did not answer, not sending until it does: %s", exc)
            self.held = False
        if self.held:
            self.checked = now
            if not was:
                logger.info("beat: %s holds the lease %s; sending the periodic tasks",
                            self.owner, self.key)
        elif was:
            logger.warning("beat: %s lost the lease %s; another beat sends", self.owner, self.key)
        return self.held

    def release(self) -> None:
        """Give the lease up (when still ours), so that another beat takes over at once."""
        if not self.held:
            return
        self.held = False
        try:
            self.client.eval(RELEASE, 1, self.key, self.owner)
            logger.info("beat: %s released the lease %s", self.owner, self.key)
        except redis.RedisError as exc:  # it expires by itself
            logger.warning("beat: could not release the lease %s: %s", self.key, exc)


def owner_name() -> str:
    """This process's name in the lease: host, pid and a random part (a pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaderScheduler(Scheduler):
    """Celery's in-memory scheduler, sending only while this process holds the beat lease."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.lease = Lease(get_redis(), beat_lease(), owner_name(),
                           get_settings().beat_lease_ttl)
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self.lease.hold():
            return self.lease.every
        return float(min(super().tick(*args, **kwargs), self.lease.every))

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.lease.release()

    @property
    def info(self) -> str:
        return f"    . lease -> {self.lease.key} ({self.lease.ttl:g} s)\n"
