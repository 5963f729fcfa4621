"""A job in full for its detail view (``jobs/detail``): its public state, the selection it
was given, its other parameters and when it started and finished.

The selection is cut to its first :data:`SELECTION_SHOWN` entries (a selection of plain gids
may hold a million); ``selection.size`` says how many it has."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from models.jobs import Job

SELECTION_SHOWN = 100


def detail(session: Session, project_gid: str, token: str) -> dict[str, Any] | None:
    """The job ``token`` of ``project_gid`` in full; None when there is no such job there."""
    job = session.execute(select(Job).where(col(Job.token) == token,
                                            col(Job.project_gid) == project_gid)
                          ).scalars().first()
    if job is None:
        return None
    params = dict(job.params or {})
    selection = params.pop("selection", None)
    entries = selection if isinstance(selection, list) else []
    return {
        "token": job.token, **job.public(),
        "started_on": job.started_on, "finished_on": job.finished_on,
        "selection": entries[:SELECTION_SHOWN], "selection.size": len(entries),
        "params": params,
    }
