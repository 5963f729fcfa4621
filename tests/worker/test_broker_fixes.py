"""worker.broker_fixes: closing a lost broker connection whose transport client is gone does
not raise out of kombu's restore of unacknowledged messages (which would end the worker)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from kombu import Connection
from kombu.transport import redis as kombu_redis

from bulkjobs.settings import get_settings
from worker import broker_fixes

pytestmark = pytest.mark.services


def gone_channel(closed: bool = False) -> Any:
    """A real channel on the test Redis with one delivered, unacknowledged message, whose
    transport client has been dropped (as kombu leaves it after a lost connection), or which
    has lost its transport altogether (``closed``: the consumer closed it on reconnecting)."""
    conn = Connection(get_settings().redis_url)
    channel = conn.channel()
    channel.qos._delivered["tag-1"] = object()
    channel._pool = None
    channel.connection.client = None
    if closed:
        channel.connection = None
    return channel


def test_without_the_guard_the_restore_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """The failure it guards against: kombu's own restore raises AttributeError."""
    unguarded(monkeypatch)
    with pytest.raises(AttributeError):
        gone_channel().qos.restore_unacked()


def unguarded(monkeypatch: pytest.MonkeyPatch) -> None:
    """kombu's own methods, put back after the test (install() patches the class)."""
    for name, original in (("restore_unacked", broker_fixes._restore_unacked),
                           ("ack", broker_fixes._ack), ("reject", broker_fixes._reject)):
        monkeypatch.setattr(kombu_redis.QoS, name, original)


def test_with_the_guard_the_restore_gives_up_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Installed (as worker.app does), the restore returns and says what stays unacked."""
    unguarded(monkeypatch)
    broker_fixes.install()
    with caplog.at_level(logging.WARNING, logger="worker.broker_fixes"):
        assert gone_channel().qos.restore_unacked() is None
    assert "1 unacknowledged message(s)" in caplog.text


@pytest.mark.parametrize("closed", [False, True], ids=["client dropped", "channel closed"])
@pytest.mark.parametrize("settle", ["ack", "reject"])
def test_settling_a_message_of_a_gone_channel_gives_up_with_a_warning(
        settle: str, closed: bool, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A task that ran through the outage ends after the consumer reconnected: acknowledging
    (or rejecting) its message on the old channel raised AttributeError without the guard,
    which ended the worker; with it, a warning, and the worker goes on."""
    unguarded(monkeypatch)
    with pytest.raises(AttributeError):
        getattr(gone_channel(closed).qos, settle)("tag-1")
    broker_fixes.install()
    qos = gone_channel(closed).qos
    with caplog.at_level(logging.WARNING, logger="worker.broker_fixes"):
        assert getattr(qos, settle)("tag-1") is None
    assert "tag-1" in caplog.text and "unacked index" in caplog.text
    qos._flush()
    assert "tag-1" not in qos._delivered
