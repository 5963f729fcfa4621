"""Property-based fuzzing of the stream server's client input (SPEC §8.6): whatever a client
sends — arbitrary text, binary frames, hostile JSON requests, invalid UTF-8, oversized or
absurdly nested frames — it gets a clean ``{"op": "error", "code": 400}`` (or the answer a
valid request deserves) and its connection stays usable, or the connection is closed with a
proper code; the server never answers 500, never closes with 1011, and stays healthy.

The server runs on an event loop of its own in a background thread
(:mod:`tests.stream.threaded`), so that hypothesis can drive plain synchronous websocket
clients, one example after another, against one server.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection

from bulkjobs import tokens
from bulkjobs.settings import get_settings
from models.seed import SeedResult
from stream import protocol
from stream.protocol import MAX_CLOSE_REASON, close_reason
from tests.models.adversarial import nasty_json, nasty_numbers, nasty_scalars, nasty_text
from tests.stream.conftest import WAIT, append_job, jwt_for
from tests.stream.threaded import ThreadedServer, open_client, reply_or_close

#: Close codes that are a proper answer to hostile input: bad auth, invalid UTF-8 in a text
#: frame, a frame over the size limit, a protocol violation.
PROPER_CLOSES = {4001, 1007, 1009, 1002}

#: Placeholders the strategies use for values only known at run time.
PROJECT, JWT = "@project", "@jwt"


@pytest.fixture
def threaded(seeded: SeedResult, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A stream server in a background thread, over the seeded database.  Without the limits
    of failed logins and of requests per second: hypothesis sends hundreds of bad tokens and
    requests from one address in a few seconds, and the limits have tests of their own
    (``tests/security/test_stream_limits.py``)."""
    monkeypatch.setattr(get_settings(), "login_failures_per_address", 0)
    monkeypatch.setattr(get_settings(), "stream_ops_per_second", 1_000_000)
    with ThreadedServer() as srv:
        yield srv


class Reusable:
    """One authenticated connection kept across hypothesis examples, reopened only after
    the server closed it (with a proper code)."""

    def __init__(self, url: str, jwt: str) -> None:
        self.url, self.jwt = url, jwt
        self.ws: ClientConnection | None = None

    def get(self) -> ClientConnection:
        if self.ws is None or self.ws.close_code is not None:
            self.ws = open_client(self.url, self.jwt)
        return self.ws

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()


@pytest.fixture
def conn(threaded: ThreadedServer, seeded: SeedResult):  # type: ignore[no-untyped-def]
    """The owner's connection to the threaded server, reused by every example of a test."""
    holder = Reusable(threaded.url, jwt_for(seeded, 0))
    yield holder
    holder.close()


# -- what clients send --------------------------------------------------------------------

request_fields = st.fixed_dictionaries({}, optional={
    "op": st.sampled_from(["auth", "subscribe", "unsubscribe", "sync", "", "SUBSCRIBE"])
    | nasty_json,
    "project": st.sampled_from([PROJECT, "*", str(uuid.uuid4())]) | nasty_json,
    "cc_cursor": nasty_numbers | nasty_json,
    "cursor": nasty_numbers | nasty_json,
    "jobs": st.lists(nasty_text, max_size=3) | nasty_json,
    "jwt": st.sampled_from([JWT]) | nasty_text,
    "id": nasty_scalars,
})


def _fill(value: dict[str, Any], project: str, jwt: str) -> dict[str, Any]:
    return {k: project if v == PROJECT else jwt if v == JWT else v for k, v in value.items()}


Frame = tuple[str, Any]  # (kind, payload)

frames: st.SearchStrategy[Frame] = st.one_of(
    st.tuples(st.just("request"), request_fields),
    st.tuples(st.just("json"), nasty_json),
    st.tuples(st.just("text"), st.text(max_size=200) | nasty_text),
    st.tuples(st.just("binary"), st.binary(max_size=200)),
    st.tuples(st.just("invalid-utf8"), st.binary(min_size=1, max_size=50).map(
        lambda b: b + b"\xff\xfe")),
    st.tuples(st.just("deep"), st.integers(min_value=1000, max_value=60_000).map(
        lambda n: "[" * n)),
    st.tuples(st.just("huge"), st.integers(min_value=64 * 1024 + 1, max_value=200_000)),
)


def send(ws: ClientConnection, frame: Frame, project: str, jwt: str) -> tuple[str, str | bytes]:
    """Send one fuzzed frame; returns its kind (``invalid-utf8`` for text that cannot be
    UTF-8, such as lone surrogates) and what the server will parse."""
    kind, payload = frame
    if kind == "request":
        data: str | bytes = json.dumps(_fill(payload, project, jwt))
    elif kind == "json":
        data = json.dumps(payload)
    elif kind == "huge":
        data = json.dumps({"op": "subscribe", "project": "x" * payload})
    else:
        data = payload
    if kind == "invalid-utf8":
        ws.send(data, text=True)  # a text frame whose bytes are not UTF-8
        return kind, data
    if isinstance(data, str):
        try:
            data.encode()
        except UnicodeEncodeError:  # lone surrogates: the frame cannot be valid UTF-8
            ws.send(data.encode("utf-8", "surrogatepass"), text=True)
            return "invalid-utf8", data
    ws.send(data)
    return kind, data


def expected(data: str | bytes, kind: str) -> set[Any]:
    """What the server may answer: error 400 for anything the protocol parser refuses,
    otherwise the reply (or close) that request deserves.  The parser is the oracle."""
    if kind == "invalid-utf8":
        return {1007}
    if kind == "huge":
        return {1009}
    try:
        request = protocol.parse(data)
    except protocol.ProtocolError:
        return {400}
    if isinstance(request, protocol.Auth):
        return {"auth", 4001}
    if isinstance(request, protocol.Subscribe):
        return {"subscribed", 403}
    return {"unsubscribed"}


def outcome(answer: dict[str, Any] | int) -> Any:
    if isinstance(answer, int):
        return answer
    return answer["code"] if answer.get("op") == "error" else answer.get("op")


# -- tests --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(frame=frames)
@example(frame=("request", {"op": "subscribe", "project": PROJECT, "jobs": ["a\x00b", "\ud800"]}))
@example(frame=("request", {"op": "subscribe", "project": "a\x00b"}))
@example(frame=("request", {"op": "subscribe", "project": PROJECT, "cc_cursor": 10**400}))
@example(frame=("request", {"op": "日本語" * 50}))
def test_authenticated_client_input_only_gets_clean_answers(conn, seeded, frame):
    """Any frame from an authenticated client gets its due answer or a 400 (or a proper close);
    after an error the same connection still serves requests."""
    ws = conn.get()
    kind, data = send(ws, frame, seeded.projects[0].gid, conn.jwt)
    answer = reply_or_close(ws)
    assert outcome(answer) in expected(data, kind), (frame, answer)
    if isinstance(answer, int):
        assert answer in PROPER_CLOSES
        return
    if answer.get("op") == "error":
        assert isinstance(answer.get("message"), str) and answer["message"]
    # The connection is still usable: a well-formed request gets its normal answer.
    ws.send(json.dumps({"op": "unsubscribe", "project": "*", "id": "probe"}))
    probe = reply_or_close(ws)
    assert probe == {"op": "unsubscribed", "project": "*", "id": "probe"}, probe


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(frame=frames)
def test_unauthenticated_first_frame_closes_4001_or_properly(threaded, seeded, frame):
    """Before authentication, any frame that is not a valid auth closes with 4001 (or with the
    close code its framing deserves); nothing else is ever sent."""
    ws = open_client(threaded.url, None)
    try:
        kind, data = send(ws, frame, seeded.projects[0].gid, jwt_for(seeded, 0))
        answer = reply_or_close(ws)
        try:
            valid_auth = (kind not in ("invalid-utf8", "huge")
                          and isinstance(request := protocol.parse(data), protocol.Auth)
                          and _verifies(request.jwt))
        except protocol.ProtocolError:
            valid_auth = False
        if valid_auth:
            assert isinstance(answer, dict) and answer["op"] == "auth", answer
        else:
            assert answer in PROPER_CLOSES, (frame, answer)
    finally:
        ws.close()


def _verifies(jwt: str) -> bool:
    try:
        tokens.verify(jwt)
    except Exception:
        return False
    return True


def test_server_stays_healthy_and_serves_after_fuzzing(threaded, seeded):
    """After a burst of hostile frames on many connections the server is healthy and a new
    subscriber gets live events."""
    project, jwt = seeded.projects[0].gid, jwt_for(seeded, 0)
    junk: list[str | bytes] = [b"\x00\xff", "{", "[" * 50_000, json.dumps({"op": None}),
                               json.dumps({"op": "subscribe", "project": "*", "cc_cursor": -1}),
                               json.dumps({"op": "subscribe", "project": "*",
                                           "cc_cursor": 10**400})]
    for _ in range(20):
        ws = open_client(threaded.url, jwt)
        for frame in junk:
            ws.send(frame)
        ws.close()
    assert threaded.healthz() == 200
    assert threaded.server is not None and not threaded.server.failed
    ws = open_client(threaded.url, jwt)
    ws.send(json.dumps({"op": "subscribe", "project": project}))
    assert reply_or_close(ws)["op"] == "subscribed"  # type: ignore[index]
    cursor = append_job(project, str(uuid.uuid4()))
    msg = json.loads(ws.recv(timeout=WAIT))
    assert msg["op"] == "sync" and [e["cursor"] for e in msg["sync"]] == [cursor]
    ws.close()


@pytest.mark.parametrize("text", ["ok", "x" * 500, "日本語" * 100, "é" * 100, "\ud800" * 10])
def test_close_reason_fits_a_control_frame(text):
    """A close reason is cut to 123 bytes of UTF-8, never mid-character."""
    reason = close_reason(text)
    assert len(reason.encode()) <= MAX_CLOSE_REASON
    assert text.startswith(reason) or "\ud800" in text
