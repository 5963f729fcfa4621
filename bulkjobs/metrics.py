"""Cluster-wide job metrics, counted in Redis and exported by the web process's ``/metrics``.

Why Redis and not prometheus_client's multiprocess mode: workers run on many machines (see
the README's scale-out story) and as Celery prefork children that come and go.  A directory
of per-process files covers one machine only and must be cleaned when children die.  Instead
every process that does the work increments one Redis hash (:func:`~bulkjobs.keys.metrics`),
and any web process exports the totals at scrape time (:func:`read`).  Every web process
therefore reports the same cluster-wide numbers: scrape one of them, or take ``max`` over
them.  The counters survive process restarts; they reset only when Redis loses its data,
which Prometheus' ``rate()`` treats as any counter reset.

Fields of the hash:

* ``items:<job name>`` — items processed (done or failed).  Job events carry absolute state
  (``total``, ``remaining``), so :func:`job_state` keeps, per unfinished job, how many of its
  items were already counted (:func:`~bulkjobs.keys.metrics_progress`) and adds the
  difference: exact across slices, retries and workers, never counted twice.
* ``finished:<job name>:<status>`` — jobs that reached ``done`` / ``rejected``.
* ``duration:<job name>:<bucket index>`` and ``duration_sum:<job name>`` — a histogram of the
  seconds from queueing to the terminal state (:data:`DURATION_BUCKETS`).
* ``events:cc`` / ``events:project`` — sync-log events appended, counted inside the sync log's
  own append script (:mod:`bulkjobs.synclog`), so they cost no extra round trip.

Recording never fails a job: a Redis error here is logged and swallowed.
"""

from __future__ import annotations

import bisect
import hmac
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import redis

from bulkjobs import keys
from bulkjobs.settings import get_settings

logger = logging.getLogger(__name__)

#: Upper bounds (seconds) of the job-duration histogram; a last ``+Inf`` bucket follows.
DURATION_BUCKETS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)

# KEYS: metrics, progress
# ARGV: token, job, processed, terminal (0|1), status, bucket index, duration
_JOB_STATE_LUA = """
local prev = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local now = tonumber(ARGV[3])
if now > prev then
  redis.call('HINCRBY', KEYS[1], 'items:' .. ARGV[2], now - prev)
end
if ARGV[4] == '1' then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'finished:' .. ARGV[2] .. ':' .. ARGV[5], 1)
  redis.call('HINCRBY', KEYS[1], 'duration:' .. ARGV[2] .. ':' .. ARGV[6], 1)
  redis.call('HINCRBYFLOAT', KEYS[1], 'duration_sum:' .. ARGV[2], ARGV[7])
elseif now > prev then
  redis.call('HSET', KEYS[2], ARGV[1], now)
end
return now - prev
"""


@lru_cache(maxsize=8)
def _script(client: redis.Redis) -> Any:
    return client.register_script(_JOB_STATE_LUA)


def processed(info: dict[str, Any]) -> int:
    """Items of a job processed so far, from its absolute ``total`` and ``remaining``."""
    total, remaining = info.get("total"), info.get("remaining")
    if not isinstance(total, int) or not isinstance(remaining, int):
        return 0
    return max(0, total - remaining)


def bucket_index(seconds: float) -> int:
    """Index of the histogram bucket ``seconds`` falls in (``len(DURATION_BUCKETS)``: +Inf)."""
    return bisect.bisect_left(DURATION_BUCKETS, seconds)


def job_state(
    client: redis.Redis, *, token: str, job: str, status: str, info: dict[str, Any],
    duration: float, terminal: bool,
) -> None:
    """Count one appended job state: the items processed since the last counted state and,
    for the (once-only) terminal state, the finished job and its duration.  A state that
    moves nothing (``queued``, or no new item) costs no round trip."""
    done = processed(info)
    if not terminal and done == 0:
        return
    duration = max(0.0, duration)
    try:
        _script(client)(
            keys=[keys.metrics(), keys.metrics_progress()],
            args=[token, job, done, 1 if terminal else 0, status, bucket_index(duration),
                  repr(duration)],
        )
    except redis.RedisError as exc:
        logger.warning("job %s: metrics not recorded: %s", token, exc,
                       extra={"job": token})


@dataclass
class Totals:
    """The hash, parsed: counters keyed by their labels."""

    items: dict[str, int] = field(default_factory=dict)  # job name -> items
    finished: dict[tuple[str, str], int] = field(default_factory=dict)  # (job, status) -> jobs
    events: dict[str, int] = field(default_factory=dict)  # "cc" | "project" -> events
    duration_buckets: dict[str, list[int]] = field(default_factory=dict)  # job -> per bucket
    duration_sum: dict[str, float] = field(default_factory=dict)  # job -> seconds


def read(client: redis.Redis) -> Totals:
    """Every counter of the cluster, from one HGETALL."""
    out = Totals()
    width = len(DURATION_BUCKETS) + 1
    for raw_key, raw_value in client.hgetall(keys.metrics()).items():
        name = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
        value = raw_value.decode() if isinstance(raw_value, bytes) else str(raw_value)
        kind, _, rest = name.partition(":")
        try:
            if kind == "items":
                out.items[rest] = int(value)
            elif kind == "finished":
                job, _, status = rest.rpartition(":")
                out.finished[(job, status)] = int(value)
            elif kind == "events":
                out.events[rest] = int(value)
            elif kind == "duration":
                job, _, index = rest.rpartition(":")
                buckets = out.duration_buckets.setdefault(job, [0] * width)
                buckets[min(int(index), width - 1)] += int(value)
            elif kind == "duration_sum":
                out.duration_sum[rest] = float(value)
        except ValueError:  # a foreign or damaged field is skipped, never a failed scrape
            logger.warning("ignoring metrics field %r = %r", name, value)
    return out


def metrics_allowed(authorization: str) -> bool:
    """Whether a request with this ``Authorization`` header may read ``/metrics`` (web and
    stream alike): anyone, unless ``METRICS_TOKEN`` is set; then only its bearer."""
    token = get_settings().metrics_token
    if not token:
        return True
    scheme, _, value = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(),
                                                               token.encode())
