"""Queueing a job from any dialect: the one call into :func:`worker.submit.submit`.

``enqueue`` is looked up when a job is queued (not bound at import), so tests can stand in
for the Celery worker.
"""

from __future__ import annotations

from typing import Any

from api.deps import Actor
from bulkjobs.connections import get_synclog
from worker import app as worker_app
from worker.submit import submit


def queue_job(actor: Actor, job: str, params: dict[str, Any]) -> str:
    """Queue ``job`` with ``params`` (selection included) for the acting member; the token."""
    return submit(project_gid=actor.project.gid, job=job, params=params,
                  actor=actor.as_editor(), log=get_synclog(),
                  enqueue=lambda token: worker_app.enqueue(token))
