"""The Celery application, built from the settings by :func:`make_celery`.

``celery -A worker.app worker -E`` runs jobs; ``celery -A worker.app beat`` runs the reaper
and the sync-log trimming on a schedule.  Late acknowledgement and a prefetch of one mean a
message is only acknowledged once its job slice has returned, and a worker holds at most one
job it has not started.  Crash safety does not rest on this alone (see ``worker.runner``).
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery
from celery.signals import worker_init

from bulkjobs.keys import JOBS_QUEUE, broker_transport_keys
from bulkjobs.settings import Settings, settings_or_exit
from models.engine import use_file_temp_store
from worker import signals  # noqa: F401  (log format and worker heartbeat handlers)


def make_celery(settings: Settings) -> Celery:
    app = Celery("bulkjobs", broker=settings.effective_broker_url, include=["worker.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=JOBS_QUEUE,
        task_ignore_result=True,
        task_send_sent_event=False,  # one more broker round trip per job; Flower needs only -E
        worker_send_task_events=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600, **broker_transport_keys()},
        beat_schedule={
            "reap-stalled-jobs": {"task": "bulkjobs.reap", "schedule": settings.reaper_interval},
            "trim-sync-log": {"task": "bulkjobs.trim", "schedule": 300.0},
        },
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
    )
    return app


app = make_celery(settings_or_exit())  # worker and beat: a bad setting stops them here


@worker_init.connect
def _worker_connections(**_: object) -> None:
    # Before any connection is opened, and inherited by the pool's forked children: a
    # worker's big batch statements keep their temporary data on disk, not in its RSS (P9).
    use_file_temp_store()


def enqueue(token: str) -> None:
    """Send the job's task; the message carries only the token."""
    app.send_task("bulkjobs.run_job", args=[token], queue=JOBS_QUEUE, **_reprs(token))


def enqueue_many(tokens: Sequence[str]) -> None:
    """Send several jobs' tasks at once: in a kombu publish batch, which the Redis broker
    sends as one pipeline (one round trip, one client, instead of one of each per message);
    other brokers publish them one by one.  Either all of them are sent or the error is
    raised."""
    with app.producer_or_acquire() as producer, producer.batch():
        for token in tokens:
            app.send_task("bulkjobs.run_job", args=[token], queue=JOBS_QUEUE,
                          producer=producer, **_reprs(token))


def _reprs(token: str) -> dict[str, str]:
    # What Celery would compute with saferepr for monitoring (Flower shows it), given whole.
    return {"argsrepr": repr([token]), "kwargsrepr": "{}"}
