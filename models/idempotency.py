"""Idempotency keys: a job-queueing request sent again with the same ``Idempotency-Key``
answers the job the first one queued, and queues nothing.

Semantics of the IETF httpapi draft "The Idempotency-Key HTTP Header Field": a key is
the user's own within a project (``(user_gid, project_gid, key)`` is the primary key) and
lasts :data:`TTL` seconds.  A request's *fingerprint* is a hash of what it asks for — its
method, path and JSON body compared as parsed JSON (:func:`fingerprint`) — so the same
key

* with the same fingerprint answers the job the first request queued (a replay);
* with another fingerprint is refused with 422 (:class:`~bulkjobs.errors.Unprocessable`);
* while the first request is still being handled is refused with 409
  (:class:`~bulkjobs.errors.Conflict`).

How a request goes (:mod:`api.queueing`): :func:`reserve` inserts the key's row with no
``job_token`` in a transaction of its own.  The primary key decides between concurrent
requests, on SQLite (one writer at a time) and PostgreSQL (a second ``INSERT … ON CONFLICT
DO NOTHING`` waits for the first to commit) alike: one row is inserted, every other request
reads the row that won.  The job row is then written with :func:`attach` in the same
transaction, which sets ``job_token``; should queueing fail, :func:`release` deletes the
reservation so that the client may retry.  A reservation whose request died in between
(the process killed, or the database away for its release) is taken over by a retry after
:data:`ABANDONED_AFTER`; :func:`attach` guards the job row with the reservation's
``created_on``, so the request that lost its reservation writes no job (it answers 409) and
the key still names one job.

Every statement reaches its rows by primary key, except the expiry (:func:`expire`), which
takes old keys along ``ix_idempotency_key_created_on`` in short slices.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Index, and_, bindparam, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, SQLModel

from bulkjobs.errors import BadRequest, Conflict, Unprocessable
from models.engine import in_slices

#: Seconds a key lasts (the draft's suggested 24 hours).
TTL = 86_400.0
#: Seconds after which a reservation still without a job counts as abandoned (its request
#: died between the reservation and the job's commit) and a retry may take it over.
ABANDONED_AFTER = 60.0
#: The longest key taken (characters).
MAX_KEY_LENGTH = 255
#: The request header.
HEADER = "Idempotency-Key"


class IdempotencyKey(SQLModel, table=True):
    __tablename__ = "idempotency_key"
    __table_args__ = (Index("ix_idempotency_key_created_on", "created_on"),)

    user_gid: str = Field(primary_key=True, max_length=36)
    project_gid: str = Field(primary_key=True, max_length=36)
    key: str = Field(primary_key=True, max_length=MAX_KEY_LENGTH)
    fingerprint: str = Field(max_length=64)  # SHA-256 hex of the canonical request
    job_token: str | None = Field(default=None, max_length=36)  # None while in flight
    created_on: float


table = IdempotencyKey.__table__
c = table.c


def parse_key(value: str) -> str:
    """The key an ``Idempotency-Key`` header names: the draft's Structured Field string
    (``"…"``) or, as most clients send it, the bare text.  Refused with
    :class:`~bulkjobs.errors.BadRequest` when empty, longer than :data:`MAX_KEY_LENGTH` or
    not printable ASCII."""
    key = value.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not key:
        raise BadRequest(f"{HEADER} is empty", info={"header": HEADER})
    if len(key) > MAX_KEY_LENGTH:
        raise BadRequest(f"{HEADER} is longer than {MAX_KEY_LENGTH} characters",
                         info={"header": HEADER, "length": len(key),
                               "limit": MAX_KEY_LENGTH})
    if not all(" " <= ch <= "~" for ch in key):
        raise BadRequest(f"{HEADER} must be printable ASCII", info={"header": HEADER})
    return key


def fingerprint(method: str, path: str, body: Any) -> str:
    """The hash two requests under one key are compared by: the method, the path and the
    body as parsed JSON, in canonical form (keys sorted, no spaces), so that key order and
    white space do not matter."""
    canonical = json.dumps({"method": method.upper(), "path": path, "body": body},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class Key:
    """One request's key: whose, where, and the fingerprint of what it asks for."""

    user_gid: str
    project_gid: str
    key: str
    fingerprint: str

    def where(self) -> Any:
        return and_(c.user_gid == self.user_gid, c.project_gid == self.project_gid,
                    c.key == self.key)


@dataclass(frozen=True, slots=True)
class Reservation:
    """A key reserved for one request: the request queues its job with it
    (:func:`attach`) or gives it back (:func:`release`)."""

    key: Key
    created_on: float


@dataclass(frozen=True, slots=True)
class Replay:
    """The key's job: the request repeats one that queued it."""

    token: str


@dataclass(frozen=True, slots=True)
class Follow:
    """The request repeats one of the same call to :func:`reserve` (at index ``first``)
    that reserved the key: it gets what that one gets."""

    first: int


def reserve(engine: Engine, keys: Sequence[Key], *, now: float
            ) -> list[Reservation | Replay | Follow | Exception]:
    """Reserve ``keys`` (distinct or not) in one short write transaction: for each, a
    :class:`Reservation`, the :class:`Replay` of the job an earlier request queued under it
    with the same fingerprint, or the error the request gets (:class:`Conflict` while that
    request is being handled, :class:`Unprocessable` for another fingerprint).  An expired
    key, or an abandoned reservation, is replaced.  Within ``keys`` the first of a repeated
    key goes first: a repeat with its fingerprint gets a :class:`Follow`."""
    if not keys:
        return []
    first: dict[tuple[str, str, str], int] = {}
    for i, k in enumerate(keys):
        first.setdefault((k.user_gid, k.project_gid, k.key), i)
    # In primary-key order: concurrent calls (other processes) lock the keys they share in
    # one order, so that two batches never wait for each other (a deadlock on PostgreSQL).
    mine = [keys[i] for _, i in sorted(first.items())]
    with engine.execution_options(writer=True).begin() as conn:
        for k in mine:  # one primary-key lookup each
            conn.execute(delete(table).where(k.where(), or_(
                c.created_on < now - TTL,
                and_(c.job_token.is_(None), c.created_on < now - ABANDONED_AFTER))))
        won = {tuple(row) for row in conn.execute(
            _insert_new(conn).returning(c.user_gid, c.project_gid, c.key),
            [{"user_gid": k.user_gid, "project_gid": k.project_gid, "key": k.key,
              "fingerprint": k.fingerprint, "job_token": None, "created_on": now}
             for k in mine])}
        if len(won) < len(mine):
            found = {(k.user_gid, k.project_gid, k.key): conn.execute(
                select(c.fingerprint, c.job_token).where(k.where())).first()
                for k in mine if (k.user_gid, k.project_gid, k.key) not in won}
        else:
            found = {}
    answers: list[Reservation | Replay | Follow | Exception] = []
    for i, k in enumerate(keys):
        pk = (k.user_gid, k.project_gid, k.key)
        if pk in won and first[pk] == i:
            answers.append(Reservation(k, now))
            continue
        row = found.get(pk)
        if pk in won and keys[first[pk]].fingerprint == k.fingerprint:
            answers.append(Follow(first[pk]))
            continue
        if pk in won:  # a repeat within ``keys`` asking for something else
            fp, token = keys[first[pk]].fingerprint, None
        elif row is None:  # gone again in between (released): the client may retry
            fp, token = k.fingerprint, None
        else:
            fp, token = row
        if fp != k.fingerprint:
            answers.append(Unprocessable(
                f"{HEADER} was used for another request", info={"header": HEADER}))
        elif token is None:
            answers.append(Conflict(
                f"A request with this {HEADER} is still being handled; retry later",
                info={"header": HEADER}))
        else:
            answers.append(Replay(token))
    return answers


def job_of(conn: Connection, key: Key, *, now: float) -> str | None:
    """The job an earlier request under ``key`` (same fingerprint, within :data:`TTL`)
    queued, if any; nothing is reserved."""
    return conn.execute(select(c.job_token).where(
        key.where(), c.fingerprint == key.fingerprint, c.created_on >= now - TTL)).scalar()


def _insert_new(conn: Connection) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` for the connection's database."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(
        index_elements=[c.user_gid, c.project_gid, c.key])


def attach(conn: Connection, reservations: Sequence[Reservation], tokens: Sequence[str]
           ) -> list[bool]:
    """Name each reservation's job, in the transaction that writes the job rows; for each,
    whether it was still the request's (``False``: it was taken over as abandoned, and that
    job must not be written)."""
    held = []
    for r, token in zip(reservations, tokens, strict=True):
        result = conn.execute(update(table).where(
            r.key.where(), c.created_on == r.created_on, c.job_token.is_(None))
            .values(job_token=token))
        held.append(result.rowcount == 1)
    return held


def release(engine: Engine, reservations: Sequence[Reservation]) -> None:
    """Give back reservations whose job was not queued, so that their keys may be used
    again at once."""
    if not reservations:
        return
    with engine.execution_options(writer=True).begin() as conn:
        for r in reservations:
            conn.execute(delete(table).where(r.key.where(), c.created_on == r.created_on,
                                             c.job_token.is_(None)))


def expire(engine: Engine, *, before: float, limit: int = 1000) -> int:
    """Delete the keys created before ``before`` (epoch seconds) in short write
    transactions (:func:`models.engine.in_slices`); how many went."""

    by_key = delete(table).where(c.user_gid == bindparam("u"), c.project_gid == bindparam("p"),
                                 c.key == bindparam("k"))

    def step(conn: Connection, n: int) -> int:
        found = conn.execute(select(c.user_gid, c.project_gid, c.key)
                             .where(c.created_on < before).limit(n)).all()
        if found:  # one primary-key lookup each, in one round trip
            conn.execute(by_key, [{"u": u, "p": p, "k": k} for u, p, k in found])
        return len(found)

    return in_slices(engine, step, limit=limit)
