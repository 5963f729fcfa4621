"""Retrying a finished job's failed items: a new job of the same kind and parameters over
exactly the items the job kept as failed (:mod:`models.failures`).

The new job's selection is one internal entry, ``{"failures_of": <token>}``
(:class:`models.selection.Failed`), which its run resolves from the failure rows as plain
gids: so any number of failed items is retried without copying them into the parameters.
Should the finished job be removed (retention) before the retry resolves, the retry finds
nothing to do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection

from bulkjobs.errors import NotFound, Unprocessable
from bulkjobs.synclog import SyncLog
from models.engine import get_engine
from models.failures import any_kept
from models.jobs import TERMINAL
from models.selection import FAILED_KEY
from worker.rows import load
from worker.submit import Submission, submit_many


def retry_failed(*, project_gid: str, token: str, actor: dict[str, Any], log: SyncLog,
                 enqueue: Callable[[Sequence[str]], None], clear_outbox: bool = True) -> str:
    """Queue the retry of job ``token``'s failed items (:func:`retry_submission`, whose
    errors it raises) as :func:`worker.submit.submit_many` queues a job; its token.  (The
    web queues it with the requests of the moment instead, :mod:`api.queueing`.)"""
    with get_engine().connect() as conn:
        submission = retry_submission(conn, project_gid=project_gid, token=token, actor=actor)
    return submit_many([submission], log=log, enqueue=enqueue, clear_outbox=clear_outbox)[0]


def retry_submission(conn: Connection, *, project_gid: str, token: str,
                     actor: dict[str, Any]) -> Submission:
    """The job that retries the failed items of job ``token`` of project ``project_gid``,
    for ``actor``, to queue (an ``internal`` submission: its selection is the product's).
    Raises :class:`NotFound` for a job that does not exist or belongs to another project,
    :class:`Unprocessable` for one that has not finished or has no failed item."""
    row = load(conn, token)
    if row is None or row.project_gid != project_gid:
        raise NotFound("no such job", info={"job": token})
    if row.status not in TERMINAL:
        raise Unprocessable("the job has not finished: retry its failed items once it has",
                            info={"job": token, "status": row.status})
    if not any_kept(conn, token):
        raise Unprocessable("the job has no failed item to retry", info={"job": token})
    params = {**(row.params or {}), "selection": [{FAILED_KEY: token}]}
    return Submission(project_gid, row.job, params, actor, internal=True)
