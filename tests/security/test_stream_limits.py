"""Limits of the websocket, over a real stream server: a flood of requests on one connection
is refused with ``{"op": "error", "code": 429}`` and then closed with 4029
(``STREAM_OPS_PER_SECOND``); failed authentications from one address are limited like failed
HTTP logins (4029 before any token is looked at, even a valid one); a subscribe whose cursor
is more than ``STREAM_MAX_REPLAY`` events behind is answered ``recovered: false`` and
replays nothing."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from bulkjobs.settings import get_settings
from models.seed import SeedResult
from tests.security.conftest import jwt_of
from tests.stream.conftest import WAIT, append_job
from tests.stream.threaded import ThreadedServer, open_client, reply_or_close


def _set(monkeypatch: pytest.MonkeyPatch, **values: int) -> None:
    for name, value in values.items():
        monkeypatch.setattr(get_settings(), name, value, raising=False)


def _replies(ws: Any, most: int) -> tuple[list[dict[str, Any]], int | None]:
    """Up to ``most`` replies, and the close code if the server closed first."""
    out: list[dict[str, Any]] = []
    try:
        while len(out) < most:
            out.append(json.loads(ws.recv(timeout=WAIT)))
    except ConnectionClosed:
        return out, ws.close_code
    return out, None


@pytest.mark.parametrize(("op", "answer"), [("unsubscribe", "unsubscribed"),
                                             ("subscribe", "subscribed")])
def test_a_flood_of_requests_is_refused_then_closed(seeded: SeedResult,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    op: str, answer: str):
    """Far more requests in a burst than a connection may send per second: each beyond the
    limit gets an error 429 instead of an answer, and the connection is closed with 4029 —
    subscribes (each a database read) as much as unsubscribes."""
    _set(monkeypatch, stream_ops_per_second=5)
    project = seeded.projects[0].gid
    flood = 300
    with ThreadedServer() as stream:
        ws = open_client(stream.url, jwt_of(seeded))
        try:
            for i in range(flood):
                ws.send(json.dumps({"op": op, "project": project, "id": i}))
        except ConnectionClosed:
            pass  # closed before the flood was all sent: the replies are still read
        replies, closed = _replies(ws, flood)
        replies = [r for r in replies if r["op"] != "sync"]
        served = [r for r in replies if r["op"] == answer]
        refused = [r for r in replies if r["op"] == "error"]
        assert served and refused, replies[:20]
        assert all(r["code"] == 429 and r["retry_after"] == 1 for r in refused), refused[:3]
        assert closed == 4029, (closed, len(replies))


def test_failed_websocket_logins_from_one_address_are_limited(
        seeded: SeedResult, monkeypatch: pytest.MonkeyPatch):
    """Bad tokens by auth message and by header count against the address; once the limit
    is reached a connection with a valid token gets a 429 error and close code 4029."""
    _set(monkeypatch, login_failures_per_address=3)
    with ThreadedServer() as stream:
        for how in ("message", "header", "message"):
            headers = {"Authorization": "Bearer not-a-jwt"} if how == "header" else None
            ws = open_client(stream.url, None, headers=headers)
            if how == "message":
                ws.send(json.dumps({"op": "auth", "jwt": "not-a-jwt"}))
            assert reply_or_close(ws) == 4001
        ws = open_client(stream.url, None)
        try:
            ws.send(json.dumps({"op": "auth", "jwt": jwt_of(seeded)}))
        except ConnectionClosed:
            pass  # refused before any message was read
        refused = reply_or_close(ws)
        assert isinstance(refused, dict) and refused["code"] == 429, refused
        assert 1 <= refused["retry_after"] <= get_settings().login_failure_window
        assert reply_or_close(ws) == 4029


def test_a_replay_longer_than_the_bound_is_not_recovered(seeded: SeedResult,
                                                          monkeypatch: pytest.MonkeyPatch):
    """A cursor more events behind than the bound: ``recovered: false`` and the next frame is
    the next live event; a cursor within it is replayed."""
    _set(monkeypatch, stream_max_replay=5)
    project = seeded.projects[0].gid
    appended = [append_job(project, str(uuid.uuid4())) for _ in range(8)]
    with ThreadedServer() as stream:
        ws = connect(stream.url, proxy=None, open_timeout=WAIT)
        ws.send(json.dumps({"op": "auth", "jwt": jwt_of(seeded)}))
        assert json.loads(ws.recv(timeout=WAIT))["ok"] is True
        ws.send(json.dumps({"op": "subscribe", "project": project,
                            "cc_cursor": appended[0] - 1}))
        reply = json.loads(ws.recv(timeout=WAIT))
        assert reply["op"] == "subscribed" and reply["recovered"] is False, reply
        live = append_job(project, str(uuid.uuid4()))
        frame = json.loads(ws.recv(timeout=WAIT))
        assert [e["cursor"] for e in frame["sync"]] == [live], frame
        ws.close()

        ws = open_client(stream.url, jwt_of(seeded))
        ws.send(json.dumps({"op": "subscribe", "project": project, "cc_cursor": appended[-4]}))
        reply = json.loads(ws.recv(timeout=WAIT))
        assert reply["recovered"] is True, reply
        got: list[int] = []
        while len(got) < 4:
            got += [e["cursor"] for e in json.loads(ws.recv(timeout=WAIT))["sync"]]
        assert got == appended[-3:] + [live]
        ws.close()
