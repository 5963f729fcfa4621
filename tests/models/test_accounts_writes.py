"""The CLI's account writes (:mod:`models.accounts`) take a write transaction before they read:
a session that has read already, while another writer (a job's batch, a request) commits,
still creates, changes and revokes (on SQLite a transaction begun as a reader cannot take
the write lock once another writer committed after its first read: "database is locked" at
once, whatever the busy timeout)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlmodel import Session

from models.accounts import (
    add_member,
    create_api_key,
    create_user,
    disable_user,
    revoke_api_key,
)
from models.auth import ApiKey, Project, User
from models.engine import get_engine, get_write_engine
from models.seed import SeedResult

pytestmark = pytest.mark.services


def _another_writer_commits(project_gid: str) -> None:
    with get_write_engine().begin() as conn:
        conn.execute(update(Project.__table__).where(Project.__table__.c.gid == project_gid)
                     .values(name=f"renamed {time.time()}"))


def _after_a_read_and_another_write(seeded: SeedResult,
                                    write: Callable[[Session], Any]) -> Any:
    """``write(session)`` on a session that read before another writer committed (as the
    CLI's: its objects stay loaded after a commit)."""
    with Session(get_engine(), expire_on_commit=False) as session:
        session.execute(select(func.count()).select_from(User)).scalar_one()  # it has read
        _another_writer_commits(seeded.projects[0].gid)
        return write(session)


def test_a_user_and_a_key_are_created_after_another_writer_committed(
        seeded: SeedResult) -> None:
    project = seeded.projects[0].gid
    user = _after_a_read_and_another_write(
        seeded, lambda s: create_user(s, username="late-writer", password="pw-late-writer-1"))
    with Session(get_engine(), expire_on_commit=False) as session:
        user = session.get(User, user.gid)
        assert user is not None
        _another_writer_commits(project)
        session.execute(select(func.count()).select_from(User)).scalar_one()
        _another_writer_commits(project)
        add_member(session, user=user, project_gid=project)
        _another_writer_commits(project)
        key = create_api_key(session, user=user, project_gid=project)
    assert key
    with Session(get_engine()) as session:
        stored = session.execute(select(ApiKey).where(ApiKey.user_gid == user.gid)).scalar_one()
        key_id = stored.key_id
    revoked = _after_a_read_and_another_write(seeded, lambda s: revoke_api_key(s, key_id=key_id))
    assert revoked.user_gid == user.gid
    disabled = _after_a_read_and_another_write(
        seeded, lambda s: disable_user(s, username="late-writer"))
    assert disabled.disabled
