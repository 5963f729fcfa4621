"""A deployment of real worker processes for crash and lifecycle tests.

Its processes are ``celery -A worker.app worker`` subprocesses sharing the test session's
database, but talking to a Redis *database of their own* (the session's Redis URL with the
next database number): their broker queue, sync log and kombu bookkeeping are then separate
from those of the end-to-end ``system`` fixture, whose worker would otherwise take these
tests' jobs from the shared queue.  The test process reaches that Redis database through
:attr:`Deployment.log` and :meth:`Deployment.enqueue`, and plays the reaper itself
(:meth:`Deployment.reap`) instead of running ``celery beat``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from celery import Celery
from sqlalchemy import select

from bulkjobs import keys
from bulkjobs.settings import get_settings
from bulkjobs.synclog import SyncLog
from models import Job
from models.engine import get_engine
from worker.app import make_celery, sent_header
from worker.reaper import reap
from worker.submit import submit

BIN = Path(sys.executable).parent
LOGS = Path(os.environ.get("DATA_DIR", "/tmp")) / "logs"
jobs_t = Job.__table__

#: Worker settings for these tests: small batches, frequent progress and heartbeats, and a
#: short staleness period so that a SIGKILLed worker's job is re-queued within seconds.
WORKER_ENV = {
    "BATCH_SIZE": "10", "PROGRESS_INTERVAL": "0.05", "HEARTBEAT_INTERVAL": "0.5",
    "STALE_AFTER": "2", "REAPER_INTERVAL": "1", "SLICE_SECONDS": "5", "RECORD_EVENTS": "false",
}
STALE_AFTER = float(WORKER_ENV["STALE_AFTER"])


def own_redis_url(url: str) -> str:
    """The same Redis server, the next database number (0–15)."""
    parts = urlsplit(url)
    db = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(db + 1) % 16}"))


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60.0,
              every: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; its value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(every)


@dataclass
class Worker:
    """One ``celery worker`` process group (the parent and its pool children)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown, no acknowledgement, no hand-back."""
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(30)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (Celery's warm shutdown), then SIGKILL if it does not exit in time."""
        if not self.alive():
            return self.popen.returncode
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.popen.returncode


@dataclass
class Deployment:
    redis_url: str
    client: redis.Redis
    log: SyncLog
    app: Celery
    workers: list[Worker] = field(default_factory=list)

    def enqueue(self, token: str) -> None:
        self.app.send_task("bulkjobs.run_job", args=[token], queue=keys.jobs_queue(),
                           headers=sent_header())

    def worker(self, name: str = "worker", concurrency: int = 1, **env: str) -> Worker:
        """Start a worker process and wait until it consumes."""
        LOGS.mkdir(parents=True, exist_ok=True)
        log = LOGS / f"crash-{name}-{time.time_ns()}.log"
        environ = {**os.environ, **WORKER_ENV, "REDIS_URL": self.redis_url,
                   "BROKER_URL": self.redis_url, **env}
        with log.open("wb") as fh:
            popen = subprocess.Popen(
                [str(BIN / "celery"), "-A", "worker.app", "worker", "--loglevel", "INFO",
                 "--concurrency", str(concurrency), "--without-mingle", "--without-gossip",
                 "--without-heartbeat", "--hostname", f"{name}-{time.time_ns()}@%h"],
                env=environ, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        proc = Worker(name, popen, log)
        self.workers.append(proc)
        wait_for(lambda: "ready." in proc.output() or not proc.alive(), f"worker {name}")
        assert proc.alive(), proc.output()
        return proc

    def submit(self, project_gid: str, job: str, selection: list[Any], **params: Any) -> str:
        return submit(project_gid=project_gid, job=job,
                      params={"selection": selection, **params},
                      actor={"type": "user", "id": "crash-tester"}, log=self.log,
                      enqueue=self.enqueue)

    def reap(self, *, queued_stale_after: float = 120.0) -> list[str]:
        """One pass of the reaper, as ``celery beat`` would run it."""
        return reap(log=self.log, stale_after=STALE_AFTER,
                    queued_stale_after=queued_stale_after, requeue=self.enqueue)

    def row(self, token: str) -> Any:
        with get_engine().connect() as conn:
            return conn.execute(select(jobs_t).where(jobs_t.c.token == token)).one()

    def wait_finished(self, tokens: list[str], timeout: float = 240.0,
                      reap_every: float | None = 1.0) -> dict[str, Any]:
        """Wait until every job is terminal, reaping now and then; returns the rows."""
        last_reap = 0.0

        def finished() -> dict[str, Any] | None:
            nonlocal last_reap
            if reap_every is not None and time.monotonic() - last_reap >= reap_every:
                self.reap()
                last_reap = time.monotonic()
            rows = {t: self.row(t) for t in tokens}
            return rows if all(r.status in ("done", "rejected") for r in rows.values()) else None

        return wait_for(finished, f"jobs {tokens[:3]}… finished", timeout, every=0.1)

    def flush_broker(self) -> int:
        """Lose every message of this deployment's queue, delivered or not (a broker that
        lost its data): the queue list and kombu's unacked bookkeeping."""
        names = [keys.jobs_queue(), *keys.broker_transport_keys().values()]
        return int(self.client.delete(*names))

    def close(self) -> None:
        for w in self.workers:
            w.stop(timeout=10)
        self.workers.clear()


def make_deployment() -> Iterator[Deployment]:
    """A :class:`Deployment` whose Redis keys are deleted before and after use."""
    url = own_redis_url(get_settings().redis_url)
    client = redis.Redis.from_url(url)

    def clean() -> None:
        stale = list(client.scan_iter(match=f"{keys.prefix()}*", count=1000))
        for i in range(0, len(stale), 1000):
            client.delete(*stale[i: i + 1000])

    clean()
    settings = get_settings().model_copy(update={"redis_url": url, "broker_url": url})
    dep = Deployment(redis_url=url, client=client, log=SyncLog(client, dedupe_ttl=3600),
                     app=make_celery(settings))
    try:
        yield dep
    finally:
        dep.close()
        clean()
