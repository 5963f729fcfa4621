"""Every Redis key and stream name, built here and nowhere else.

All names start with ``REDIS_PREFIX`` (default ``bulkjobs``), so several deployments — or
several test sessions — can share one Redis server without touching each other's keys.
"""

from __future__ import annotations

import hashlib

from bulkjobs.settings import get_settings


def prefix() -> str:
    """``REDIS_PREFIX``, read from the settings when a name is built (not at import: every
    entry point validates the settings first, :func:`bulkjobs.settings.settings_or_exit`)."""
    return get_settings().redis_prefix


#: The global cursor space; job events live here.
CC_SPACE = "cc"

def jobs_queue() -> str:
    """The Celery queue jobs are sent to."""
    return prefix()


def maintenance_queue() -> str:
    """The Celery queue of the periodic tasks (reaper, sync-log trimming), which every worker
    consumes beside :func:`jobs_queue`: a backlog of jobs neither delays nor multiplies them."""
    return f"{prefix()}.maintenance"


def webhooks_queue() -> str:
    """The Celery queue of webhook deliveries, consumed apart from the jobs (a receiver that
    is down must not hold up a job)."""
    return f"{prefix()}.webhooks"


def beat_lease() -> str:
    """The lease of the one ``beat`` process that sends the periodic tasks: its owner's name,
    expiring unless renewed (:mod:`worker.beat`)."""
    return f"{prefix()}:beat:lease"


def broker_transport_keys() -> dict[str, str]:
    """Kombu's Redis-transport bookkeeping of unacknowledged messages, under the prefix too
    (kombu's defaults, ``unacked`` and friends, would be shared by every deployment on the
    server).  Passed as Celery ``broker_transport_options``."""
    return {
        "unacked_key": f"{prefix()}:unacked",
        "unacked_index_key": f"{prefix()}:unacked_index",
        "unacked_mutex_key": f"{prefix()}:unacked_mutex",
    }


def sync_stream(space: str) -> str:
    """The Redis stream holding one cursor space's events; entry ids are the cursors."""
    return f"{prefix()}:sync:{space}"


def sync_counter(space: str) -> str:
    """The last cursor handed out in a space (only ever grows)."""
    return f"{prefix()}:sync:{space}:counter"


def sync_floor(space: str) -> str:
    """The lowest cursor from which the space's history is complete."""
    return f"{prefix()}:sync:{space}:floor"


def sync_marks(space: str) -> str:
    """Hash minute -> first cursor appended in that minute; drives time-based retention."""
    return f"{prefix()}:sync:{space}:marks"


def sync_spaces() -> str:
    """Set of every space that has been written to (for trimming)."""
    return f"{prefix()}:sync:spaces"


def revocations() -> str:
    """The stream of revocation notices (a user's access was cut: disabled, ``ops`` taken
    away, an API key revoked), which the stream relay reads with the sync streams
    (:mod:`bulkjobs.revocations`)."""
    return f"{prefix()}:revocations"


def job_terminal(token: str) -> str:
    """Set once when a job's terminal event is appended, so it is appended exactly once."""
    return f"{prefix()}:job:{token}:terminal"


def outbox_appended(outbox_id: int, part: int) -> str:
    """Set once when part ``part`` of sync-outbox row ``outbox_id`` is appended to the log,
    so that a row appended again (its job's next run, the reaper) adds nothing twice.  Outbox
    ids are never reused."""
    return f"{prefix()}:outbox:{int(outbox_id)}:{int(part)}"


def rate_limit(user_gid: str, window: int) -> str:
    """Request counter of one user in one rate-limit window."""
    return f"{prefix()}:ratelimit:{user_gid}:{window}"


def login_failures(kind: str, value: str, window: int) -> str:
    """Failed-login counter of one user name (``kind`` ``name``) or client address
    (``address``) in one window; the value is hashed, so any text makes a short key."""
    digest = hashlib.sha256(value.encode(errors="surrogatepass")).hexdigest()[:32]
    return f"{prefix()}:loginfail:{kind}:{digest}:{window}"


def space_of(stream_key: str) -> str:
    """Inverse of :func:`sync_stream`."""
    return stream_key.removeprefix(f"{prefix()}:sync:")


def metrics() -> str:
    """Hash of cluster-wide counters (items processed, events appended, jobs finished, the
    job-duration histogram), incremented by every process and exported by the web's
    ``/metrics`` (see :mod:`bulkjobs.metrics`)."""
    return f"{prefix()}:metrics"


def metrics_progress() -> str:
    """Hash job token -> items of that job already counted in ``items_processed`` (so that
    absolute progress events turn into exact increments; the field goes with the job's
    terminal event)."""
    return f"{prefix()}:metrics:progress"


def workers() -> str:
    """Sorted set of Celery worker hostnames, scored by the time of their last heartbeat."""
    return f"{prefix()}:workers"


def jobs_queue_lists() -> list[str]:
    """The Redis lists kombu keeps :func:`jobs_queue`'s waiting messages in: the queue's
    name, and the name plus kombu's separator and step for each non-zero priority step."""
    queue = jobs_queue()
    return [queue] + [f"{queue}\x06\x16{step}" for step in (3, 6, 9)]
