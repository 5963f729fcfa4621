"""The stream server's database reads: who may see which project, and job snapshots.

All functions are synchronous (SQLAlchemy sessions); the server calls them through
``asyncio.to_thread``.  A token is judged by the rule the HTTP API applies on every request
(:func:`models.accounts.backed`: the user row's ``ops``, disabled users, ended sessions,
revoked API keys; a token made from an API key sees that key's project only), plus the
session's age.  :func:`recheck` batches that judgement for every open connection into a few
queries instead of a few per connection (``models.accounts.visible_to`` does one token;
this is its bulk twin, kept here because only the stream needs it).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sqlmodel import Session, col, select

from bulkjobs.errors import Unauthorized
from bulkjobs.settings import get_settings
from bulkjobs.tokens import Claims
from models.accounts import Standing, authorize, backed, visible_to
from models.auth import ApiKey, Member, Project, User
from models.engine import get_engine
from models.jobs import PUBLIC_ONLY, UNFINISHED, Job

_CHUNK = 500

#: A connection's judgement: the claims as the database backs them and the projects they may
#: watch, or why the token is refused now.
Verdict = tuple[Claims, frozenset[str]] | Unauthorized


def admit(claims: Claims) -> tuple[Claims, frozenset[str]]:
    """A verified token's claims as the database backs them now, and the projects they may
    watch (active memberships, every active project for ops, the key's project for a token
    made from an API key); :class:`Unauthorized` if the token is refused."""
    with Session(get_engine()) as session:
        now = authorize(session, claims)
        return now, frozenset(visible_to(session, now))


def recheck(grants: Iterable[Claims]) -> dict[Claims, Verdict]:
    """:func:`admit` for the tokens of every open connection at once, plus their sessions'
    age (``SESSION_MAX_AGE``): a user disabled, an ``ops`` flag taken away, a session ended,
    a key revoked or a membership lost reach open connections at the next refresh."""
    grants = set(grants)
    users = sorted({c.user for c in grants})
    kids = sorted({c.kid for c in grants if c.kid is not None})
    session_end = time.time() - get_settings().session_max_age
    out: dict[Claims, Verdict] = {}
    backed_by: dict[Claims, Claims] = {}
    with Session(get_engine()) as session:
        rows: dict[str, tuple[bool, bool, int]] = {}
        for i in range(0, len(users), _CHUNK):
            for gid, ops, disabled, version in session.exec(
                select(col(User.gid), col(User.ops), col(User.disabled),
                       col(User.token_version)).where(col(User.gid).in_(users[i : i + _CHUNK]))
            ):
                rows[gid] = (ops, disabled, version)
        live: set[str] = set()
        for i in range(0, len(kids), _CHUNK):
            live.update(session.exec(
                select(col(ApiKey.key_id)).where(col(ApiKey.key_id).in_(kids[i : i + _CHUNK]))))
        for c in grants:
            row = rows.get(c.user)
            try:
                if c.auth_time <= session_end:
                    raise Unauthorized("Session expired; log in again")
                backed_by[c] = backed(c, None if row is None else Standing(
                    *row, key=c.kid if c.kid in live else None))
            except Unauthorized as exc:
                out[c] = exc
        everything: frozenset[str] = frozenset()
        if any(now.ops for now in backed_by.values()):
            active = select(col(Project.gid)).where(col(Project.status) == "active")
            everything = frozenset(session.exec(active))
        plain = sorted({now.user for now in backed_by.values() if not now.ops})
        found: dict[str, set[str]] = {u: set() for u in plain}
        for i in range(0, len(plain), _CHUNK):
            memberships = session.exec(
                select(col(Member.user_gid), col(Member.project_gid))
                .join(Project, col(Project.gid) == col(Member.project_gid))
                .where(
                    col(Member.user_gid).in_(plain[i : i + _CHUNK]),
                    col(Member.status) == "active", col(Project.status) == "active",
                )
            )
            for user, project in memberships:
                found[user].add(project)
    for c, now in backed_by.items():
        projects = everything if now.ops else frozenset(found.get(now.user, ()))
        out[c] = (now, projects if now.prj is None else projects & {now.prj})
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
