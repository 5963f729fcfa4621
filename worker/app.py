"""The Celery application, built from the settings by :func:`make_celery`.

``celery -A worker.app worker -E`` runs jobs; ``celery -A worker.app beat`` runs the reaper
and the sync-log trimming on a schedule (any number of beats: one sends, :mod:`worker.beat`).
Late acknowledgement and a prefetch of one mean a message is only acknowledged once its job
slice has returned, and a worker holds at most one job it has not started.  Crash safety
does not rest on this alone (see ``worker.runner``).

The periodic tasks go to a queue of their own (:func:`~bulkjobs.keys.maintenance_queue`),
which every worker consumes beside the jobs' queue (both are ``task_queues``, so a worker
started without ``-Q`` takes both): a backlog of jobs does not hold them up.  Each copy
expires after its interval, so copies sent while every worker was busy are dropped instead
of running one after another.

Webhook deliveries go to a third queue (:func:`~bulkjobs.keys.webhooks_queue`), not among
``task_queues``: the jobs' worker does not take them; a worker of their own does
(:mod:`worker.__main__`), so a receiver that is down holds up no job.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from celery import Celery
from celery.signals import worker_init
from kombu import Queue

from bulkjobs.keys import (
    broker_transport_keys,
    jobs_queue,
    jobs_queue_lists,
    maintenance_queue,
    webhooks_queue,
)
from bulkjobs.settings import Settings, settings_or_exit
from models.engine import use_file_temp_store
from worker import (
    broker_fixes,
    signals,  # noqa: F401  (log format and worker heartbeat handlers)
)

#: Seconds between two sync-log trimmings.
TRIM_INTERVAL = 300.0
#: Seconds between two removals of expired jobs (JOB_RETENTION_DAYS).
EXPIRE_INTERVAL = 3600.0
#: Seconds between two sends of the webhook deliveries that are due (worker.webhooks).
SWEEP_INTERVAL = 5.0


def _periodic(interval: float) -> dict[str, Any]:
    """Send options of a periodic task: the maintenance queue, and an expiry of one interval
    (a copy not started by then is dropped; the next one is on its way)."""
    return {"queue": maintenance_queue(), "expires": interval}


def _sentinel_options(settings: Settings) -> dict[str, Any]:
    """Kombu's ``sentinel://`` transport options: the master's name (and the sentinels'
    password), when the broker is Redis through Sentinel (``BROKER_URL`` unset)."""
    if settings.broker_url or not settings.sentinels:
        return {}
    options: dict[str, Any] = {"master_name": settings.redis_sentinel_master}
    if settings.redis_sentinel_password:
        options["sentinel_kwargs"] = {"password": settings.redis_sentinel_password}
    return options


def make_celery(settings: Settings) -> Celery:
    app = Celery("bulkjobs", broker=settings.effective_broker_url,
                 include=["worker.tasks", "worker.webhooks"])
    app.conf.update(
        task_queues=[Queue(jobs_queue()), Queue(maintenance_queue())],
        task_routes={"bulkjobs.reap": {"queue": maintenance_queue()},
                     "bulkjobs.trim": {"queue": maintenance_queue()},
                     "bulkjobs.expire_jobs": {"queue": maintenance_queue()},
                     "bulkjobs.sweep_webhooks": {"queue": maintenance_queue()},
                     "bulkjobs.deliver_webhook": {"queue": webhooks_queue()}},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=jobs_queue(),
        task_ignore_result=True,
        task_send_sent_event=False,  # one more broker round trip per job; Flower needs only -E
        worker_send_task_events=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600, **broker_transport_keys(),
                                  **_sentinel_options(settings)},
        beat_schedule={
            "reap-stalled-jobs": {"task": "bulkjobs.reap", "schedule": settings.reaper_interval,
                                  "options": _periodic(settings.reaper_interval)},
            "trim-sync-log": {"task": "bulkjobs.trim", "schedule": TRIM_INTERVAL,
                              "options": _periodic(TRIM_INTERVAL)},
            "expire-finished-jobs": {"task": "bulkjobs.expire_jobs", "schedule": EXPIRE_INTERVAL,
                                     "options": _periodic(EXPIRE_INTERVAL)},
            "sweep-webhooks": {"task": "bulkjobs.sweep_webhooks", "schedule": SWEEP_INTERVAL,
                               "options": _periodic(SWEEP_INTERVAL)},
        },
        # Several beats may run; the holder of a Redis lease sends (worker.beat).
        beat_scheduler="worker.beat:LeaderScheduler",
    )
    return app


broker_fixes.install()  # a lost broker connection must not end the worker
app = make_celery(settings_or_exit())  # worker and beat: a bad setting stops them here


@worker_init.connect
def _worker_connections(**_: object) -> None:
    # Before any connection is opened, and inherited by the pool's forked children: a
    # worker's big batch statements keep their temporary data on disk, not in its RSS (P9).
    use_file_temp_store()


def enqueue(token: str, *, countdown: int | None = None) -> None:
    """Send the job's task (due in ``countdown`` seconds, or now); the message carries only
    the token (and when it was sent)."""
    app.send_task("bulkjobs.run_job", args=[token], queue=jobs_queue(), **_reprs(token),
                  headers=sent_header(), countdown=countdown)


def enqueue_many(tokens: Sequence[str]) -> None:
    """Send several jobs' tasks at once: in a kombu publish batch, which the Redis broker
    sends as one pipeline (one round trip, one client, instead of one of each per message);
    other brokers publish them one by one.  Either all of them are sent or the error is
    raised."""
    with app.producer_or_acquire() as producer, producer.batch():
        for token in tokens:
            app.send_task("bulkjobs.run_job", args=[token], queue=jobs_queue(),
                          producer=producer, **_reprs(token), headers=sent_header())


#: The message header holding the time a job's message was sent.
SENT_HEADER = "bulkjobs_sent"


def sent_header() -> dict[str, float]:
    """The headers of a job's message: when it was sent, for :func:`oldest_waiting`."""
    return {SENT_HEADER: time.time()}


def oldest_waiting(celery: Celery | None = None) -> float | None:
    """When the oldest message still waiting in the jobs' queue was sent; ``None`` when none
    waits (or the broker is not Redis, whose lists this reads).

    Kombu's Redis transport keeps a queue as lists (one per priority step) that take new
    messages on the left and give them out from the right, first in, first out: every
    message sent after the oldest one still waiting is waiting too.  A message without the
    header (sent by an older version) counts as sent at time 0: everything waits behind
    it."""
    with (celery or app).connection_for_read() as conn:
        if conn.transport.driver_type != "redis":
            return None
        client = conn.default_channel.client
        heads = [client.lindex(name, -1) for name in jobs_queue_lists()]
    sent = []
    for raw in heads:
        if raw is None:
            continue
        try:
            sent.append(float(json.loads(raw).get("headers", {}).get(SENT_HEADER, 0.0)))
        except (ValueError, TypeError, AttributeError):
            sent.append(0.0)
    return min(sent) if sent else None


def _reprs(token: str) -> dict[str, str]:
    # What Celery would compute with saferepr for monitoring (Flower shows it), given whole.
    return {"argsrepr": repr([token]), "kwargsrepr": "{}"}
