"""Paused jobs: a project's jobs (or every project's) held between batches until resumed.

One ``job_pause`` row per paused scope: a project's gid, or :data:`EVERY_PROJECT` for the
switch of the ops API.  A project's jobs are paused while a row names the project or every
project.  The rows are the truth (a Redis key could be lost with Redis's data): a run reads
them once per batch (:func:`is_paused`, one primary-key lookup of at most two rows), the
reaper once per pass (:func:`paused_scopes`).
"""

from __future__ import annotations

import time

from sqlalchemy import Connection, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, SQLModel

#: The scope of the switch that pauses every project at once.
EVERY_PROJECT = "*"


class JobPause(SQLModel, table=True):
    __tablename__ = "job_pause"

    #: A project's gid, or :data:`EVERY_PROJECT`.
    scope: str = Field(primary_key=True, max_length=36)
    paused_on: float = 0.0
    #: The user who paused it (gid).
    paused_by: str = Field(default="", max_length=36)


pauses = JobPause.__table__


def pause(conn: Connection, scope: str, *, by: str) -> bool:
    """Pause ``scope`` (a project's gid or :data:`EVERY_PROJECT`); ``False`` when it was
    paused already (the first pause is kept)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(pauses).values(scope=scope, paused_on=time.time(), paused_by=by)
    stmt = stmt.on_conflict_do_nothing(index_elements=["scope"]).returning(pauses.c.scope)
    return conn.execute(stmt).first() is not None


def unpause(conn: Connection, scope: str) -> bool:
    """Lift the pause of ``scope``; ``False`` when it was not paused."""
    return conn.execute(delete(pauses).where(pauses.c.scope == scope)).rowcount == 1


#: Read before every batch of every job: built once (its cache key costs more than the read).
_PAUSED = select(pauses.c.scope).where(
    pauses.c.scope.in_((bindparam("project_gid"), EVERY_PROJECT))).limit(1)


def is_paused(conn: Connection, project_gid: str) -> bool:
    """Whether the project's jobs are paused (by its own pause or the one of every project)."""
    return conn.execute(_PAUSED, {"project_gid": project_gid}).first() is not None


def paused_scopes(conn: Connection) -> set[str]:
    """Every paused scope: project gids, and :data:`EVERY_PROJECT` while it is paused."""
    return set(conn.execute(select(pauses.c.scope)).scalars())
