"""Celery signal handlers of the worker process (imported by :mod:`worker.app`).

* ``after_setup_logger`` / ``after_setup_task_logger``: ``LOG_FORMAT=json`` switches Celery's
  handlers to :class:`bulkjobs.logs.JsonFormatter`.
* ``worker_ready`` starts a daemon thread in the main worker process that renews the worker's
  hostname in the Redis set of live workers every ``WORKER_HEARTBEAT`` seconds
  (:func:`bulkjobs.ops.beat_worker`); ``worker_shutdown`` stops it and removes the hostname,
  so a clean shutdown stops counting at once and a killed worker stops after three periods.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    worker_ready,
    worker_shutdown,
)

from bulkjobs import logs, ops
from bulkjobs.connections import get_redis
from bulkjobs.settings import get_settings

logger = logging.getLogger(__name__)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(logger: logging.Logger, **_: Any) -> None:
    logs.apply_to(logger)


class WorkerBeacon:
    """The heartbeat thread of one worker process."""

    def __init__(self, hostname: str, period: float) -> None:
        self.hostname, self.period = hostname, period
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="worker-beacon", daemon=True)

    def start(self) -> None:
        self._beat()
        self.thread.start()
        logger.info("worker %s: heartbeat every %s s for the ops view", self.hostname,
                    self.period)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        try:
            ops.forget_worker(get_redis(), self.hostname)
        except Exception as exc:  # Redis may be gone at shutdown; the entry then ages out
            logger.warning("worker %s: could not deregister: %s", self.hostname, exc)

    def _run(self) -> None:
        while not self.stop.wait(self.period):
            self._beat()

    def _beat(self) -> None:
        try:
            ops.beat_worker(get_redis(), self.hostname)
        except Exception as exc:  # a missed beat is not fatal; the next one tries again
            logger.warning("worker %s: heartbeat failed: %s", self.hostname, exc)


_beacon: WorkerBeacon | None = None


@worker_ready.connect
def _start_beacon(sender: Any = None, **_: Any) -> None:
    global _beacon
    hostname = str(getattr(sender, "hostname", None) or "worker")
    _beacon = WorkerBeacon(hostname, get_settings().worker_heartbeat)
    _beacon.start()


@worker_shutdown.connect
def _stop_beacon(**_: Any) -> None:
    global _beacon
    if _beacon is not None:
        _beacon.close()
        _beacon = None
