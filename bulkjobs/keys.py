"""Every Redis key and stream name, built here and nowhere else.

All names start with ``REDIS_PREFIX`` (default ``bulkjobs``), so several deployments — or
several test sessions — can share one Redis server without touching each other's keys.
"""

from __future__ import annotations

import hashlib

from bulkjobs.settings import settings_or_exit

# Read when the first module of any process imports this one: a process whose settings do not
# validate stops here, with one line naming the setting (bulkjobs.settings.settings_or_exit).
PREFIX = settings_or_exit().redis_prefix

#: The global cursor space; job events live here.
CC_SPACE = "cc"

#: The Celery queue jobs are sent to.
JOBS_QUEUE = PREFIX

#: The Celery queue of the periodic tasks (reaper, sync-log trimming), which every worker
#: consumes beside :data:`JOBS_QUEUE`: a backlog of jobs neither delays nor multiplies them.
MAINTENANCE_QUEUE = f"{PREFIX}.maintenance"


def broker_transport_keys() -> dict[str, str]:
    """Kombu's Redis-transport bookkeeping of unacknowledged messages, under the prefix too
    (kombu's defaults, ``unacked`` and friends, would be shared by every deployment on the
    server).  Passed as Celery ``broker_transport_options``."""
    return {
        "unacked_key": f"{PREFIX}:unacked",
        "unacked_index_key": f"{PREFIX}:unacked_index",
        "unacked_mutex_key": f"{PREFIX}:unacked_mutex",
    }


def sync_stream(space: str) -> str:
    """The Redis stream holding one cursor space's events; entry ids are the cursors."""
    return f"{PREFIX}:sync:{space}"


def sync_counter(space: str) -> str:
    """The last cursor handed out in a space (only ever grows)."""
    return f"{PREFIX}:sync:{space}:counter"


def sync_floor(space: str) -> str:
    """The lowest cursor from which the space's history is complete."""
    return f"{PREFIX}:sync:{space}:floor"


def sync_marks(space: str) -> str:
    """Hash minute -> first cursor appended in that minute; drives time-based retention."""
    return f"{PREFIX}:sync:{space}:marks"


def sync_spaces() -> str:
    """Set of every space that has been written to (for trimming)."""
    return f"{PREFIX}:sync:spaces"


def job_terminal(token: str) -> str:
    """Set once when a job's terminal event is appended, so it is appended exactly once."""
    return f"{PREFIX}:job:{token}:terminal"


def outbox_appended(outbox_id: int, part: int) -> str:
    """Set once when part ``part`` of sync-outbox row ``outbox_id`` is appended to the log,
    so that a row appended again (its job's next run, the reaper) adds nothing twice.  Outbox
    ids are never reused."""
    return f"{PREFIX}:outbox:{int(outbox_id)}:{int(part)}"


def rate_limit(user_gid: str, window: int) -> str:
    """Request counter of one user in one rate-limit window."""
    return f"{PREFIX}:ratelimit:{user_gid}:{window}"


def login_failures(kind: str, value: str, window: int) -> str:
    """Failed-login counter of one user name (``kind`` ``name``) or client address
    (``address``) in one window; the value is hashed, so any text makes a short key."""
    digest = hashlib.sha256(value.encode(errors="surrogatepass")).hexdigest()[:32]
    return f"{PREFIX}:loginfail:{kind}:{digest}:{window}"


def space_of(stream_key: str) -> str:
    """Inverse of :func:`sync_stream`."""
    return stream_key.removeprefix(f"{PREFIX}:sync:")


def metrics() -> str:
    """Hash of cluster-wide counters (items processed, events appended, jobs finished, the
    job-duration histogram), incremented by every process and exported by the web's
    ``/metrics`` (see :mod:`bulkjobs.metrics`)."""
    return f"{PREFIX}:metrics"


def metrics_progress() -> str:
    """Hash job token -> items of that job already counted in ``items_processed`` (so that
    absolute progress events turn into exact increments; the field goes with the job's
    terminal event)."""
    return f"{PREFIX}:metrics:progress"


def workers() -> str:
    """Sorted set of Celery worker hostnames, scored by the time of their last heartbeat."""
    return f"{PREFIX}:workers"


def jobs_queue_lists() -> list[str]:
    """The Redis lists kombu keeps :data:`JOBS_QUEUE`'s waiting messages in: the queue's
    name, and the name plus kombu's separator and step for each non-zero priority step."""
    return [JOBS_QUEUE] + [f"{JOBS_QUEUE}\x06\x16{step}" for step in (3, 6, 9)]
