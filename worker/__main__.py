"""``python -m worker [celery worker options]``: the Procfile's ``worker`` process.

It runs two Celery workers: the jobs' worker in this process (``celery -A worker.app worker``
with the options given: the jobs' and the maintenance queues, prefork pool), and, as its
child, the webhook deliveries' worker (:func:`bulkjobs.keys.webhooks_queue`, a pool of
``WEBHOOK_CONCURRENCY`` threads: a delivery mostly waits for its receiver), named after the
jobs' worker (:func:`deliveries_hostname`).  Apart, a receiver that is slow or down ties up
delivery threads only, never a job's process.

The child is stopped when the jobs' worker stops (SIGTERM: both shut down warmly), and dies
with this process if it is killed (``PR_SET_PDEATHSIG``).  ``WEBHOOK_CONCURRENCY=0`` runs
the jobs' worker alone (deliveries then need a worker of their own elsewhere:
``celery -A worker.app worker -Q <REDIS_PREFIX>.webhooks -P threads``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from bulkjobs.keys import webhooks_queue
from bulkjobs.settings import settings_or_exit


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def deliveries_hostname(argv: list[str]) -> str:
    """The deliveries' worker's Celery node name: the jobs' worker's (``--hostname``/``-n``
    in ``argv``, e.g. the Procfile's ``worker-${PORT}@%h``) with ``webhooks-`` before it,
    else one with this process's id, so that two worker processes on one host never share
    a name."""
    for i, arg in enumerate(argv):
        if arg in ("--hostname", "-n") and i + 1 < len(argv):
            return f"webhooks-{argv[i + 1]}"
        if arg.startswith("--hostname="):
            return f"webhooks-{arg.partition('=')[2]}"
        if arg.startswith("-n") and len(arg) > 2:
            return f"webhooks-{arg[2:]}"
    return f"webhooks-{os.getpid()}@%h"


def deliveries_worker(concurrency: int, hostname: str) -> subprocess.Popen[bytes]:
    """Start the webhook deliveries' worker."""
    celery = str(Path(sys.executable).with_name("celery"))
    return subprocess.Popen(
        [celery, "-A", "worker.app", "worker", "-Q", webhooks_queue(), "-P", "threads",
         "--concurrency", str(concurrency), "--hostname", hostname, "--loglevel", "INFO",
         "--without-gossip", "--without-mingle"],
        preexec_fn=_die_with_parent)


def main(argv: list[str]) -> int:
    settings = settings_or_exit()
    child = (deliveries_worker(settings.webhook_concurrency, deliveries_hostname(argv))
             if settings.webhook_concurrency > 0 else None)
    try:
        from worker.app import app
        app.worker_main(["worker", *argv])
        return 0
    finally:
        if child is not None:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
