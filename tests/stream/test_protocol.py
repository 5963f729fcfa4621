"""Unit tests of the protocol parser and message builders (stream/protocol.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkjobs.errors import Unauthorized
from stream import protocol
from stream.protocol import Auth, ProtocolError, Subscribe, Unsubscribe

G = "4f9a2d7e-0000-4000-8000-000000000001"


@pytest.mark.parametrize(("message", "expected"), [
    ({"op": "auth", "jwt": "x.y.z"}, Auth(jwt="x.y.z")),
    ({"op": "auth", "jwt": "x.y.z", "id": 7}, Auth(jwt="x.y.z", id=7)),
    ({"op": "subscribe", "project": G}, Subscribe(project=G)),
    ({"op": "subscribe", "project": "*"}, Subscribe(project="*")),
    ({"op": "subscribe", "project": G, "cc_cursor": 5, "cursor": 0, "jobs": ["a", "b"],
      "id": "r1"},
     Subscribe(project=G, cc_cursor=5, cursor=0, jobs=frozenset({"a", "b"}), id="r1")),
    ({"op": "subscribe", "project": "*", "cc_cursor": 9}, Subscribe(project="*", cc_cursor=9)),
    ({"op": "subscribe", "project": G, "cc_cursor": None}, Subscribe(project=G)),
    ({"op": "unsubscribe", "project": G}, Unsubscribe(project=G)),
    ({"op": "subscribe", "project": G, "extra": {"ignored": True}}, Subscribe(project=G)),
])
def test_parse_accepts_valid_requests(message, expected):
    """Valid client messages parse into the typed request."""
    assert protocol.parse(json.dumps(message)) == expected


@pytest.mark.parametrize("raw", [
    "{not json",
    "",
    "[]",
    '"auth"',
    "null",
    json.dumps({"op": "dance"}),
    json.dumps({"jwt": "x"}),
    json.dumps({"op": "auth"}),
    json.dumps({"op": "auth", "jwt": 5}),
    json.dumps({"op": "subscribe"}),
    json.dumps({"op": "subscribe", "project": ""}),
    json.dumps({"op": "subscribe", "project": 12}),
    json.dumps({"op": "subscribe", "project": "x" * 65}),
    json.dumps({"op": "subscribe", "project": G, "cc_cursor": -1}),
    json.dumps({"op": "subscribe", "project": G, "cc_cursor": "5"}),
    json.dumps({"op": "subscribe", "project": G, "cc_cursor": 1.5}),
    json.dumps({"op": "subscribe", "project": G, "cc_cursor": True}),
    json.dumps({"op": "subscribe", "project": "*", "cursor": 3}),
    json.dumps({"op": "subscribe", "project": G, "jobs": []}),
    json.dumps({"op": "subscribe", "project": G, "jobs": "t1"}),
    json.dumps({"op": "subscribe", "project": G, "jobs": [1]}),
    json.dumps({"op": "subscribe", "project": G, "jobs": ["t"] * 1001}),
    json.dumps({"op": "subscribe", "project": G, "jobs": ["a\x00b"]}),
    json.dumps({"op": "subscribe", "project": G, "jobs": ["\ud800"]}),
    json.dumps({"op": "subscribe", "project": "a\x00b"}),
    json.dumps({"op": "unsubscribe", "project": "\udfff"}),
    json.dumps({"op": "subscribe", "project": G, "id": {"a": 1}}),
    json.dumps({"op": "unsubscribe", "project": None}),
    "[" * 50_000 + "]" * 50_000,
    '{"op": "subscribe", "project": "g", "cc_cursor": 1e400}',
])
def test_parse_rejects_bad_input_with_400(raw):
    """Malformed messages raise ProtocolError (code 400), never anything else."""
    with pytest.raises(ProtocolError) as info:
        protocol.parse(raw)
    assert info.value.code == 400


def test_parse_rejects_binary_frames():
    """Binary frames are a 400, not a crash."""
    with pytest.raises(ProtocolError):
        protocol.parse(b'{"op": "auth", "jwt": "x"}')


def test_error_of_a_request_keeps_its_id():
    """A rejected request's id is kept so that the error reply can echo it."""
    with pytest.raises(ProtocolError) as info:
        protocol.parse(json.dumps({"op": "subscribe", "project": G, "cc_cursor": -3, "id": 4}))
    assert info.value.request_id == 4


@given(st.text(max_size=200))
def test_parse_never_raises_anything_but_protocol_error(text):
    """Arbitrary text either parses or raises ProtocolError."""
    try:
        protocol.parse(text)
    except ProtocolError:
        pass


@given(st.dictionaries(st.sampled_from(["op", "project", "jwt", "cc_cursor", "cursor", "jobs",
                                        "id"]),
                       st.none() | st.booleans() | st.integers() | st.text(max_size=5)
                       | st.lists(st.text(max_size=3), max_size=3)))
def test_parse_of_arbitrary_objects_is_clean(data):
    """Arbitrary JSON objects either parse or raise ProtocolError."""
    try:
        protocol.parse(json.dumps(data))
    except ProtocolError:
        pass


def test_builders_produce_the_spec_shapes():
    """Server messages carry exactly the SPEC §8 keys (plus the echoed id)."""
    assert json.loads(protocol.auth_ok("u", 12)) == {
        "op": "auth", "ok": True, "user": "u", "cc.cursor": 12,
    }
    assert json.loads(protocol.subscribed(
        G, recovered=False, cc_cursor=3, cursor=None, jobs=[], request_id="a",
    )) == {
        "op": "subscribed", "project": G, "recovered": False, "cc.cursor": 3, "cursor": None,
        "jobs": [], "id": "a",
    }
    assert json.loads(protocol.error(403, "no", project=G)) == {
        "op": "error", "code": 403, "message": "no", "project": G,
    }


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer abc.def.ghi", "abc.def.ghi"),
    ("bearer abc", "abc"),
    ("Bearer  abc ", "abc"),
    ("Basic abc", None),
    ("Bearer", None),
    ("Bearer   ", None),
    ("", None),
])
def test_bearer_header(header, token):
    """The upgrade request's Authorization header carries 'Bearer <JWT>' or is a failed login."""
    if token is None:
        with pytest.raises(Unauthorized):
            protocol.bearer(header)
    else:
        assert protocol.bearer(header) == token
