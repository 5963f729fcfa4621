"""models.accounts.require_owner: who may change how a project's jobs run."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import update
from sqlmodel import Session, col

from bulkjobs.errors import Forbidden
from bulkjobs.tokens import Claims
from models.accounts import require_owner
from models.auth import Member
from models.engine import get_engine, get_write_engine
from models.seed import SeedResult


def claims(user: str, *, ops: bool = False) -> Claims:
    return Claims(user=user, ops=ops, exp=time.time() + 60)


def by_name(seeded: SeedResult, base: str) -> str:
    return next(u.gid for u in seeded.users if u.username.startswith(base))


def test_an_owner_passes(seeded: SeedResult) -> None:
    """A member with the owner role passes."""
    with Session(get_engine()) as session:
        require_owner(session, claims(by_name(seeded, "owner")), seeded.projects[0].gid)


def test_a_plain_member_is_forbidden(seeded: SeedResult) -> None:
    """A member without the owner role gets 403."""
    with Session(get_engine()) as session, pytest.raises(Forbidden, match="owner"):
        require_owner(session, claims(by_name(seeded, "member")), seeded.projects[0].gid)


def test_ops_passes_without_a_membership(seeded: SeedResult) -> None:
    """An ops user (as the database backs the claims) passes on any project."""
    with Session(get_engine()) as session:
        require_owner(session, claims(by_name(seeded, "ops"), ops=True), seeded.projects[1].gid)


def test_an_invited_owner_is_forbidden(seeded: SeedResult) -> None:
    """The owner role counts only on an active membership."""
    owner, project = by_name(seeded, "owner"), seeded.projects[0].gid
    with get_write_engine().begin() as conn:
        conn.execute(update(Member).where(col(Member.user_gid) == owner,
                                          col(Member.project_gid) == project)
                     .values(status="invited"))
    with Session(get_engine()) as session, pytest.raises(Forbidden):
        require_owner(session, claims(owner), project)
