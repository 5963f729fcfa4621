"""Webhook deliveries: signed ``POST``s of job states, on a Celery queue of their own.

The deliveries are written by the job's own transactions (:func:`models.webhook_deliveries.
outbox`); :func:`kick` sends a task for each after that commit, and the periodic
:func:`sweep_webhooks` sends one for every delivery that is due (a retry after its back-off,
or one whose kick was lost with a crashed process).  :func:`deliver_webhook` leases the
delivery for longer than an attempt may take, sends it once (:func:`worker.webhook_http.post`:
the URL checked again, as a name may resolve elsewhere now, the checked address connected
to, a deadline for the whole attempt, no redirects), and records the attempt.

The tasks run on :func:`bulkjobs.keys.webhooks_queue`, which the Procfile's ``worker``
process consumes with a Celery worker of its own (threads, see :mod:`worker.__main__`), not
with the pool that runs jobs: a receiver that is slow or down ties up only delivery threads.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Sequence

from bulkjobs.keys import webhooks_queue
from bulkjobs.settings import get_settings
from models import webhook_deliveries
from models.engine import get_engine, get_write_engine
from worker.app import app
from worker.webhook_http import post

logger = logging.getLogger(__name__)

#: Headers of every delivery (besides ``Content-Type``).
EVENT_HEADER, DELIVERY_HEADER, SIGNATURE_HEADER = (
    "X-Bulkjobs-Event", "X-Bulkjobs-Delivery", "X-Bulkjobs-Signature")


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of the body with the secret>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


#: Seconds a delivery's lease outlasts its attempt's deadline (``WEBHOOK_TIMEOUT``): time to
#: record the attempt, so that the sweeper does not send it again while it is running.
LEASE_MARGIN = 30.0


@app.task(name="bulkjobs.deliver_webhook", ignore_result=True)
def deliver_webhook(delivery_id: int) -> str | None:
    """One attempt of one delivery (a no-op when it is not due or already finished); the
    delivery's status after it."""
    s = get_settings()
    taken = webhook_deliveries.lease(get_write_engine(), delivery_id,
                                     hold=s.webhook_timeout + LEASE_MARGIN)
    if taken is None:
        return None
    body = taken["body"].encode()
    started = time.time()
    answer = post(taken["url"], body, {
        EVENT_HEADER: taken["event"], DELIVERY_HEADER: taken["delivery"],
        SIGNATURE_HEADER: signature(taken["secret"], body)},
        timeout=s.webhook_timeout, allow_private=s.webhooks_allow_private)
    code, error = answer.status_code, answer.error
    status = webhook_deliveries.record(
        get_write_engine(), delivery_id, started_on=started,
        duration_ms=round((time.time() - started) * 1000, 1), status_code=code, error=error,
        delays=webhook_deliveries.backoff(s.webhook_backoff_base))
    logger.info("webhook delivery %s (%s of job %s): %s%s", taken["delivery"], taken["event"],
                taken["job_token"], status, f" ({error})" if error else "")
    return status


def kick(ids: Sequence[int]) -> None:
    """Send the tasks of deliveries just committed; a failure is logged, not raised: the
    sweeper sends them when they are due."""
    if not ids:
        return
    try:
        with app.producer_or_acquire() as producer, producer.batch():
            for delivery_id in ids:
                app.send_task("bulkjobs.deliver_webhook", args=[delivery_id],
                              queue=webhooks_queue(), producer=producer)
    except Exception:  # the broker away: the deliveries wait in the database
        logger.warning("could not send %d webhook deliveries; the sweeper will", len(ids),
                       exc_info=True)


@app.task(name="bulkjobs.sweep_webhooks", ignore_result=True)
def sweep_webhooks() -> int:
    """Send the task of every delivery that is due (by beat); how many."""
    with get_engine().connect() as conn:
        ids = webhook_deliveries.due(conn, now=time.time())
    kick(ids)
    return len(ids)
