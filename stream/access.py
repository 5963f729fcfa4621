"""The stream server's database reads: who may see which project, and job snapshots.

All functions are synchronous (SQLAlchemy sessions); the server calls them through
``asyncio.to_thread``.  :func:`visible_by_user` batches the membership refresh of every open
connection into a few queries instead of one per user (``models.queries.visible_projects``
does one user; this is its bulk twin, kept here because only the stream needs it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlmodel import Session, col, select

from models.auth import Member, Project, User
from models.engine import get_engine
from models.jobs import PUBLIC_ONLY, UNFINISHED, Job
from models.queries import visible_projects

_CHUNK = 500


def visible(user: str, ops: bool) -> frozenset[str]:
    """Projects one user may watch (active memberships, or every active project for ops).
    ``ops`` is the token's claim; it counts only while the user row still says ops."""
    with Session(get_engine()) as session:
        if ops:
            row = session.get(User, user)
            ops = row is not None and row.ops
        return frozenset(visible_projects(session, user_gid=user, ops=ops))


def visible_by_user(users: Iterable[tuple[str, bool]]) -> dict[tuple[str, bool], frozenset[str]]:
    """:func:`visible` for many ``(user, ops)`` pairs at once.  The ops flag is re-read from
    the user rows, so that taking it away reaches open connections at the next refresh (a
    token keeps its ``ops`` claim until it expires)."""
    users = set(users)
    out: dict[tuple[str, bool], frozenset[str]] = {}
    with Session(get_engine()) as session:
        claimed = sorted(u for u, ops in users if ops)
        still_ops: set[str] = set()
        for i in range(0, len(claimed), _CHUNK):
            still_ops.update(session.exec(
                select(col(User.gid)).where(
                    col(User.gid).in_(claimed[i : i + _CHUNK]), col(User.ops).is_(True))
            ))
        if still_ops:
            active = select(col(Project.gid)).where(col(Project.status) == "active")
            everything = frozenset(session.exec(active))
            out.update({(u, True): everything for u in still_ops})
        # Users without ops (claimed or not) see their memberships.
        plain = sorted({u for u, ops in users if not ops} | (set(claimed) - still_ops))
        found: dict[str, set[str]] = {u: set() for u in plain}
        for i in range(0, len(plain), _CHUNK):
            rows = session.exec(
                select(col(Member.user_gid), col(Member.project_gid))
                .join(Project, col(Project.gid) == col(Member.project_gid))
                .where(
                    col(Member.user_gid).in_(plain[i : i + _CHUNK]),
                    col(Member.status) == "active", col(Project.status) == "active",
                )
            )
            for user, project in rows:
                found[user].add(project)
    for user, ops in users:
        if (user, ops) not in out:  # an ops claim the user row no longer backs
            out[(user, ops)] = frozenset(found.get(user, ()))
    return out


def job_snapshot(
    projects: Iterable[str], jobs: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """Current state of jobs, each ``{"token", **Job.public()}``, oldest first.

    Without ``jobs``: the unfinished (queued/processing) jobs of ``projects``.  With ``jobs``:
    exactly those jobs of ``projects``, finished or not — a watcher of one job must learn that
    it already ended.
    """
    projects = sorted(set(projects))
    if not projects:
        return []
    out: list[dict[str, Any]] = []
    with Session(get_engine()) as session:
        for i in range(0, len(projects), _CHUNK):
            query = select(Job).options(*PUBLIC_ONLY).where(
                col(Job.project_gid).in_(projects[i : i + _CHUNK]))
            if jobs is None:
                query = query.where(col(Job.status).in_(UNFINISHED))
            else:
                query = query.where(col(Job.token).in_(sorted(set(jobs))))
            out.extend({"token": job.token, **job.public()} for job in session.exec(query))
    out.sort(key=lambda j: (j["created_on"], j["token"]))
    return out
