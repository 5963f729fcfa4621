"""The relay's decisions about one subscribe, as plain values (no I/O).

:mod:`stream.server` reads the cursors and floors from Redis and the memberships from the
database, calls these functions, and does what they return; they are tested as tables
(``tests/stream/test_relay.py``), like :mod:`stream.fanout`.

What a subscribe gets (the choices SPEC §8 leaves open)
-------------------------------------------------------
* ``"*"`` is every project the connection may see; a single project it may not see is
  refused with 403 (:func:`forbidden`), the connection stays open.
* ``subscribed.cc.cursor`` / ``cursor`` are the spaces' current cursors when the subscription
  was registered; ``cursor`` is ``null`` for ``"*"``.  Without cursors, live events follow
  from there; with cursors and ``recovered: true`` the missed events come first; with
  ``recovered: false`` (a cursor below the floor, or beyond the current cursor) nothing is
  replayed and live events follow from the current cursors (:func:`plan`).
* A cursor more than ``STREAM_MAX_REPLAY`` events behind (:func:`stream.limits.replay_size`)
  is answered ``recovered: false`` too: nothing is replayed, the client reloads over HTTP.
* The ``cc`` space is replayed first, then the project's space (only for one project without
  a ``jobs`` filter: a ``jobs`` filter narrows a subscription to those jobs' ``cc`` events).
* A replay whose history turns out to have a hole (the log was trimmed or lost since
  ``recovered`` was decided; cursors are dense, see :func:`dense`) ends the connection with
  4008; resuming from its last cursor it gets ``recovered: false``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from bulkjobs.keys import CC_SPACE
from bulkjobs.synclog import Item, is_recovered
from stream.limits import replay_size
from stream.protocol import Subscribe


class Cursors(NamedTuple):
    """One space's cursors as the log reports them: the newest cursor and the floor (the
    lowest cursor from which its history is complete)."""

    last: int
    floor: int


class Replay(NamedTuple):
    """Events of ``space`` in ``(after, upto]`` to replay."""

    space: str
    after: int
    upto: int


@dataclass(frozen=True, slots=True)
class Plan:
    """What one subscribe does once registered.

    ``recovered`` is what ``subscribed`` says; ``cc_last``/``p_last`` are the cursors it
    reports (``p_last`` is ``None`` for ``"*"``).  The hub's dedupe starts from
    ``cc_from``/``p_from``; after ``replays`` (in order, possibly none) it moves on to
    ``cc_last``/``p_last``.
    """

    recovered: bool
    cc_last: int
    p_last: int | None
    cc_from: int
    p_from: int | None
    #: Cursors were given and ``recovered``: the dedupe starts from them (there may be
    #: nothing to replay, e.g. a cursor that is already the current one).
    replay: bool
    replays: tuple[Replay, ...]


def forbidden(project: str, allowed: frozenset[str]) -> bool:
    """Is subscribing to ``project`` refused (403) for a connection that may see ``allowed``?
    ``"*"`` never is: it covers whatever is allowed."""
    return project != "*" and project not in allowed


def recovered(req: Subscribe, cc: Cursors, space: Cursors | None, *, max_replay: int) -> bool:
    """Can ``req`` be caught up by replay?  Each given cursor must lie between its space's
    floor and current cursor, and all of them together at most ``max_replay`` events behind.
    (``space`` is ``None`` for ``"*"``, whose ``cursor`` is refused by the protocol.)"""
    if req.cc_cursor is not None and not is_recovered(req.cc_cursor, cc.floor, cc.last):
        return False
    if (req.cursor is not None and space is not None
            and not is_recovered(req.cursor, space.floor, space.last)):
        return False
    p_last = None if space is None else space.last
    return replay_size(req, cc.last, p_last) <= max_replay


def plan(req: Subscribe, cc: Cursors, space: Cursors | None, *, max_replay: int) -> Plan:
    """Decide a subscribe from the spaces' cursors taken once it was registered: whether it is
    ``recovered``, the cursors its dedupe starts from and what it replays.

    Without cursors, or not recovered, it starts from the current cursors and replays
    nothing; otherwise from the given cursors (a space without one from its current cursor),
    replaying up to the current cursors.
    """
    ok = recovered(req, cc, space, max_replay=max_replay)
    p_last = None if space is None else space.last
    if not (ok and req.replays):
        return Plan(recovered=ok, cc_last=cc.last, p_last=p_last, cc_from=cc.last,
                    p_from=p_last, replay=False, replays=())
    cc_from = req.cc_cursor if req.cc_cursor is not None else cc.last
    p_from = req.cursor if req.cursor is not None else p_last
    replays = []
    if cc_from < cc.last:
        replays.append(Replay(CC_SPACE, cc_from, cc.last))
    if p_last is not None and p_from is not None and req.jobs is None and p_from < p_last:
        replays.append(Replay(req.project, p_from, p_last))
    return Plan(recovered=True, cc_last=cc.last, p_last=p_last, cc_from=cc_from,
                p_from=p_from, replay=True, replays=tuple(replays))


def dense(items: Sequence[Item], expected: int) -> tuple[int, bool]:
    """Check one page of a replay read from cursor ``expected`` on: the cursor expected next,
    and whether the page continues the history without a hole.  Cursors are dense (one per
    event), so an item that does not start at the expected cursor means events were trimmed
    or lost; an empty page where events were expected is a hole too."""
    for item in items:
        if item.first != expected:
            return expected, False
        expected = item.cursor + 1
    return expected, bool(items)
