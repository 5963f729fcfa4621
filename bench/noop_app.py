"""The raw Celery baseline of ``bench/small_jobs.py``: a Celery app of the bench's own with
one no-op task, run as ``celery -A bench.noop_app worker`` with the jobs' worker options.

Its configuration is the product's (``worker.app.make_celery``) where it bears on how a
message is taken and run: late acks, prefetch of one, no results, task events on, no
``task-sent`` event, the same visibility timeout, unacked bookkeeping under the run's
``REDIS_PREFIX``.  It reads ``BROKER_URL`` and ``REDIS_PREFIX`` from the environment (the
bench sets both through :func:`bench.common.isolate`) and imports nothing of the product.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

PREFIX = os.environ.get("REDIS_PREFIX", "bjbench")
QUEUE = f"{PREFIX}.noop"
TASK = "bench.noop"

app = Celery("bench-noop", broker=os.environ.get("BROKER_URL", "redis://127.0.0.1:6379/6"))
app.conf.update(
    task_queues=[Queue(QUEUE)],
    task_default_queue=QUEUE,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_send_sent_event=False,
    worker_send_task_events=True,
    broker_connection_retry_on_startup=True,
    broker_transport_options={"visibility_timeout": 3600,
                              "unacked_key": f"{PREFIX}.noop:unacked",
                              "unacked_index_key": f"{PREFIX}.noop:unacked_index",
                              "unacked_mutex_key": f"{PREFIX}.noop:unacked_mutex"},
)


@app.task(name=TASK)
def noop(token: str) -> None:
    """Nothing: the message carries one token, as a job's message does."""
    return None
