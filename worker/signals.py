"""Celery signal handlers of the worker process (imported by :mod:`worker.app`).

* ``after_setup_logger`` / ``after_setup_task_logger``: ``LOG_FORMAT=json`` switches Celery's
  handlers to :class:`bulkjobs.logs.JsonFormatter`.
* ``worker_process_init`` opens a pool process's database connections (the job engines and
  the heartbeat's) and its Redis connection as it starts, in a thread, so that its first
  job does not wait for them; a database or Redis that is away then is only logged.
* ``worker_ready`` starts a daemon thread in the main worker process that renews the worker's
  hostname in the Redis set of live workers every ``WORKER_HEARTBEAT`` seconds
  (:func:`models.ops.beat_worker`); ``worker_shutdown`` stops it and removes the hostname,
  so a clean shutdown stops counting at once and a killed worker stops after three periods.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    worker_process_init,
    worker_ready,
    worker_shutdown,
)

from bulkjobs import keys, logs
from bulkjobs.connections import get_redis, get_synclog
from bulkjobs.settings import get_settings
from models import ops

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


@worker_process_init.connect
def _start_opening_connections(**_: Any) -> None:
    # In a thread: a database that is slow to answer must not hold up the pool's start.
    threading.Thread(target=_open_connections, name="open-connections", daemon=True).start()


def _open_connections() -> None:
    from sqlalchemy import text

    from models.engine import get_engine, get_write_engine
    from worker.deps import side_engine

    try:
        for engine in (get_engine(), get_write_engine(), side_engine()):
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        get_synclog().cursor(keys.CC_SPACE)
    except Exception as exc:
        logger.warning("pool process: connections not opened at start: %s", exc)
