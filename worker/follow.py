"""Following a finished run with the next jobs in line of its project.

A job's message is a ticket for the first job in line of its project
(:func:`worker.lease.first_in_line`), not for that job alone.  So when a run has finished its
job, the pool process need not go back to the broker and wait for another message to start
the next one: it runs the jobs that are first in line of the same project, one after the
other, each claimed under a lease of its own exactly as its message would claim it, for at
most ``cfg.follow_seconds`` (``FOLLOW_SECONDS``; 0 turns following off).  Then it returns to
the broker, so that other projects' messages and its worker's other queues are served.

Nothing is hoarded: a process follows only once it is free, and only with jobs nobody has
started; a worker that is idle meanwhile takes the same jobs through their messages, and the
claim decides which run gets each one.  A followed job's own message, when it comes, finds
its job started and starts the next one in line instead, or nothing.  A followed run that
fails is handed back as any run is, and its retry message is sent with its back-off
(``retry_later``); anything else stops following and leaves the job to its message and the
reaper, which a crash also does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from models.jobs import DONE, REJECTED
from worker import runner
from worker.deps import Deps, RunConfig
from worker.retry import RetryLater

logger = logging.getLogger("worker.runner")


def follow(token: str, *, deps: Deps, cfg: RunConfig, requeue: Callable[[str], None],
           retry_later: Callable[[str, int], None]) -> int:
    """After a run of ``token``'s project finished its job: run the next jobs in line of that
    project for at most ``cfg.follow_seconds``; how many ran to their end.

    Each is a run for ``token``, whose job is finished: its claim takes the job first in
    line that no run started (:func:`worker.lease.first_in_line`), in the claim's own
    transaction, so finding the next job costs nothing of its own."""
    if cfg.follow_seconds <= 0:
        return 0
    deadline = time.monotonic() + cfg.follow_seconds
    finished = 0
    while time.monotonic() < deadline:
        try:
            outcome = runner.run(token, deps=deps, cfg=cfg, requeue=requeue)
        except RetryLater as later:
            retry_later(later.token, later.countdown)
            break
        except Exception:  # its message, or the reaper, runs it again
            logger.warning("a run following job %s failed", token, exc_info=True,
                           extra={"job": token})
            break
        if outcome not in (DONE, REJECTED):  # nobody's to take, or sliced, paused, lost
            break
        finished += 1
    return finished
