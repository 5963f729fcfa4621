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
* ``finished:<job name>:<status>`` — jobs that reached ``done`` / ``rejected``, counted by
  the sync log's script that appends the job's terminal event
  (:meth:`~bulkjobs.synclog.SyncLog.append_end`), in the same call: exactly once however
  often the job is announced, with no round trip of its own.
* ``duration:<job name>:<bucket index>`` and ``duration_sum:<job name>`` — a histogram of the
  seconds from queueing to the terminal state (:data:`DURATION_BUCKETS`).
* ``events:cc`` / ``events:project`` — sync-log events appended, counted inside the sync log's
  own append script (:mod:`bulkjobs.synclog`), so they cost no extra round trip.

Recording a progress state never fails a job: a Redis error here is logged and swallowed.
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

# One counted job state as a Lua function, so that the sync log's script that appends a job's
# terminal event counts it in the same call (bulkjobs.synclog.scripts.APPEND_END_LUA): the
# terminal state is counted exactly when its event is appended, once.
# metrics, progress: the keys; A[i] ...: token, job, processed, terminal (0|1), status,
# bucket index, duration (:func:`job_state_args`).
COUNT_STATE_LUA = """
local function count_state(metrics, progress, A, i)
  local token, job = A[i], A[i + 1]
  local prev = tonumber(redis.call('HGET', progress, token) or '0')
  local now = tonumber(A[i + 2])
  if now > prev then
    redis.call('HINCRBY', metrics, 'items:' .. job, now - prev)
  end
  if A[i + 3] == '1' then
    redis.call('HDEL', progress, token)
    redis.call('HINCRBY', metrics, 'finished:' .. job .. ':' .. A[i + 4], 1)
    redis.call('HINCRBY', metrics, 'duration:' .. job .. ':' .. A[i + 5], 1)
    redis.call('HINCRBYFLOAT', metrics, 'duration_sum:' .. job, A[i + 6])
  elseif now > prev then
    redis.call('HSET', progress, token, now)
  end
  return now - prev
end
"""

# KEYS: metrics, progress; ARGV: :func:`job_state_args`
_JOB_STATE_LUA = COUNT_STATE_LUA + """
return count_state(KEYS[1], KEYS[2], ARGV, 1)
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
    if not terminal and processed(info) == 0:
        return
    try:
        _script(client)(
            keys=[keys.metrics(), keys.metrics_progress()],
            args=job_state_args(token=token, job=job, status=status, info=info,
                                duration=duration, terminal=terminal),
        )
    except redis.RedisError as exc:
        logger.warning("job %s: metrics not recorded: %s", token, exc,
                       extra={"job": token})


def job_state_args(*, token: str, job: str, status: str, info: dict[str, Any],
                   duration: float, terminal: bool) -> list[Any]:
    """The arguments of one counted job state (:data:`COUNT_STATE_LUA`)."""
    duration = max(0.0, duration)
    return [token, job, processed(info), 1 if terminal else 0, status, bucket_index(duration),
            repr(duration)]


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
