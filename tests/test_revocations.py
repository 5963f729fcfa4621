"""Revocation notices (bulkjobs/revocations.py): what a revocation appends for the stream
relays, and that a revocation made while Redis is away still stands (the notice is dropped
with a warning; the relays' periodic refresh applies it)."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
import redis
from sqlmodel import Session
from typer.testing import CliRunner

from bulkjobs import connections, keys
from bulkjobs.revocations import announce, users_of
from cli.main import app
from models.auth import User
from models.engine import get_engine

pytestmark = pytest.mark.services


def test_a_notice_names_the_user_whose_access_was_cut(redis_client: redis.Redis):
    """Each announcement appends one notice, and the notices read back name their users."""
    assert announce("user-1") and announce("user-2")
    entries = redis_client.xrange(keys.revocations())
    assert len(entries) == 2
    assert users_of(entries) == {"user-1", "user-2"}
    assert users_of(entries[1:]) == {"user-2"}


@pytest.mark.parametrize("command", ["disable", "remove-ops"])
def test_a_revocation_while_redis_is_away_stands_and_warns(
        services: object, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, command: str):
    """With every Redis command failing at once, `users disable` and `users remove-ops`
    still succeed and change the user row; no notice is written and a warning says that
    open websockets learn of it within MEMBERSHIP_REFRESH."""
    name = f"revoked-{uuid.uuid4().hex[:8]}"
    added = CliRunner().invoke(app, ["users", "add", name, "--ops", "--password", "pw"])
    assert added.exit_code == 0, added.output
    gid = added.stdout.strip()
    monkeypatch.setattr(connections.OUTAGE, "until", time.monotonic() + 3600)
    with caplog.at_level(logging.WARNING, logger="bulkjobs.revocations"):
        result = CliRunner().invoke(app, ["users", command, name])
    assert result.exit_code == 0, result.output
    with Session(get_engine()) as session:
        row = session.get(User, gid)
        assert row is not None and (row.disabled if command == "disable" else not row.ops)
    assert any("MEMBERSHIP_REFRESH" in r.getMessage() for r in caplog.records), caplog.text
    monkeypatch.undo()
    assert redis_client.xlen(keys.revocations()) == 0
