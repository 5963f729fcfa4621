"""models/idempotency.py: the key as a header names it, the request's fingerprint, and the
plans of every statement of a reservation, a replay, a release and the expiry on a big,
analysed key table."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import Engine, insert, text

from bulkjobs.errors import BadRequest
from models.engine import get_engine, get_write_engine
from models.idempotency import (
    MAX_KEY_LENGTH,
    TTL,
    IdempotencyKey,
    Key,
    Reservation,
    attach,
    expire,
    fingerprint,
    job_of,
    parse_key,
    release,
    reserve,
)
from tests.plans import captured, explained, violations

keys = IdempotencyKey.__table__


@pytest.mark.parametrize(("header", "key"), [
    ("abc", "abc"), ('"abc"', "abc"), ("  abc  ", "abc"), ('"a b"', "a b"),
    ("k" * MAX_KEY_LENGTH, "k" * MAX_KEY_LENGTH), ('"', '"'),
])
def test_parse_key_takes_bare_and_quoted_keys(header: str, key: str) -> None:
    """A bare key, or one quoted as a Structured Field string, is its text."""
    assert parse_key(header) == key


@pytest.mark.parametrize("header", ["", "  ", '""', "k" * (MAX_KEY_LENGTH + 1), "é", "a\x00"])
def test_parse_key_refuses_empty_long_and_unprintable_keys(header: str) -> None:
    """Empty, over-long and non-printable-ASCII keys are a 400 naming the header."""
    with pytest.raises(BadRequest) as caught:
        parse_key(header)
    assert caught.value.info["header"] == "Idempotency-Key"


def test_fingerprint_compares_parsed_json_and_the_route() -> None:
    """Key order and spacing do not change the fingerprint; the body, the path and the
    method do."""
    body = {"selection": [{"children": "r", "exclude": ["a"]}], "n": 1}
    same = {"n": 1, "selection": [{"exclude": ["a"], "children": "r"}]}
    base = fingerprint("POST", "/api/p/x/records/bulk/delete", body)
    assert fingerprint("post", "/api/p/x/records/bulk/delete", same) == base
    assert fingerprint("POST", "/api/p/x/records/bulk/delete", {**body, "n": 2}) != base
    assert fingerprint("POST", "/api/p/x/records/bulk/undelete", body) != base
    assert fingerprint("PATCH", "/api/p/x/records/bulk/delete", body) != base


@pytest.mark.services
def test_every_statement_reaches_keys_by_index(services: Engine) -> None:
    """With 20,000 keys (analysed), a reservation (expired and abandoned keys replaced), a
    clash, a job named on a key, a replay look-up, a release and the expiry each reach
    their rows by primary key or, for the expiry, along ix_idempotency_key_created_on: no
    scan of the key table.  The statistics go with the rows afterwards."""
    now = time.time()
    with get_write_engine().begin() as conn:
        conn.execute(insert(keys), [
            {"user_gid": f"user-{i % 50}", "project_gid": f"project-{i % 7}", "key": f"k-{i}",
             "fingerprint": "f" * 64, "job_token": f"job-{i}",
             "created_on": now - TTL - 10 if i < 100 else now - i}
            for i in range(20_000)])
    try:
        with get_write_engine().connect() as conn:
            conn.execute(text("ANALYZE idempotency_key"))
            conn.commit()
        _check_plans(get_engine(), now)
    finally:
        with get_write_engine().begin() as conn:
            conn.execute(text("DELETE FROM idempotency_key"))
            if conn.dialect.name == "sqlite":
                conn.execute(text("DELETE FROM sqlite_stat1 WHERE tbl = 'idempotency_key'"))
            else:
                conn.execute(text("ANALYZE idempotency_key"))


def _check_plans(engine: Engine, now: float) -> None:
    fresh = Key("user-1", "project-1", "new", "f" * 64)
    clash = Key("user-0", "project-0", "k-350", "e" * 64)
    with captured(engine) as cap:
        [reserved, refused] = reserve(engine, [fresh, clash], now=now)
        assert isinstance(reserved, Reservation) and not isinstance(refused, Reservation)
        with get_write_engine().begin() as conn:
            assert attach(conn, [reserved], ["job-new"]) == [True]
        with engine.connect() as conn:
            assert job_of(conn, fresh, now=now) == "job-new"
        release(engine, [Reservation(fresh, now)])
        assert expire(engine, before=now - TTL, limit=1000) == 100
    with engine.connect() as conn:
        found: list[Any] = violations(conn, cap, big=frozenset({"idempotency_key"}))
        assert found == [], found
    assert explained(cap) >= 8
