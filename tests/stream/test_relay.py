"""Unit tests of the relay's subscribe decisions (stream/relay.py): no sockets, no services."""

from __future__ import annotations

import pytest

from bulkjobs.synclog import Event, Item, Pack
from stream.protocol import Subscribe
from stream.relay import Cursors, Plan, Replay, dense, forbidden, plan, recovered

P = "project-p"
JOBS = frozenset({"t1"})

#: The cc space at cursor 100 with history from 51; the project's at 50 with history from 21.
CC = Cursors(last=100, floor=51)
SPACE = Cursors(last=50, floor=21)


def sub(project: str = P, **kw: object) -> Subscribe:
    return Subscribe(project, **kw)  # type: ignore[arg-type]


def live(recovered: bool, p_last: int | None = 50) -> Plan:
    """A subscribe that replays nothing: it starts from the current cursors."""
    return Plan(recovered=recovered, cc_last=100, p_last=p_last, cc_from=100, p_from=p_last,
                replay=False, replays=())


@pytest.mark.parametrize(("req", "space", "expected"), [
    # Without cursors: recovered, nothing replayed, live from the current cursors.
    (sub(), SPACE, live(True)),
    (sub("*"), None, live(True, None)),
    (sub(jobs=JOBS), SPACE, live(True)),
    # A cc cursor within the history: the cc events after it, then live.
    (sub(cc_cursor=90), SPACE,
     Plan(True, 100, 50, 90, 50, True, (Replay("cc", 90, 100),))),
    (sub("*", cc_cursor=90), None,
     Plan(True, 100, None, 90, None, True, (Replay("cc", 90, 100),))),
    # The floor itself minus one (everything after it is kept) is still recoverable.
    (sub(cc_cursor=50), SPACE,
     Plan(True, 100, 50, 50, 50, True, (Replay("cc", 50, 100),))),
    # Both cursors: cc first, then the project's space.
    (sub(cc_cursor=90, cursor=45), SPACE,
     Plan(True, 100, 50, 90, 45, True, (Replay("cc", 90, 100), Replay(P, 45, 50)))),
    # A project cursor alone: the cc dedupe starts from the current cc cursor.
    (sub(cursor=45), SPACE, Plan(True, 100, 50, 100, 45, True, (Replay(P, 45, 50),))),
    # A jobs filter gets no project-space events, so none are replayed; its space dedupe
    # still starts from the given cursor.
    (sub(cc_cursor=90, cursor=45, jobs=JOBS), SPACE,
     Plan(True, 100, 50, 90, 45, True, (Replay("cc", 90, 100),))),
    # Cursors already current: recovered, a replay with nothing to read.
    (sub(cc_cursor=100, cursor=50), SPACE, Plan(True, 100, 50, 100, 50, True, ())),
    # Below a floor, or beyond the current cursor: not recovered, nothing replayed.
    (sub(cc_cursor=49), SPACE, live(False)),
    (sub(cc_cursor=101), SPACE, live(False)),
    (sub(cc_cursor=90, cursor=19), SPACE, live(False)),
    (sub(cc_cursor=90, cursor=51), SPACE, live(False)),
    (sub("*", cc_cursor=30), None, live(False, None)),
])
def test_plan(req: Subscribe, space: Cursors | None, expected: Plan) -> None:
    """What a subscribe reports, the cursors its dedupe starts from and what it replays."""
    assert plan(req, CC, space, max_replay=1000) == expected


@pytest.mark.parametrize(("req", "max_replay", "ok"), [
    (sub(cc_cursor=90, cursor=45), 15, True),
    (sub(cc_cursor=90, cursor=45), 14, False),
    (sub(cc_cursor=90), 10, True),
    (sub(cc_cursor=90), 9, False),
    # A jobs filter replays no project-space events: they do not count.
    (sub(cc_cursor=90, cursor=45, jobs=JOBS), 10, True),
    # Nothing to replay is never too much.
    (sub(), 0, True),
    (sub(cc_cursor=100, cursor=50), 0, True),
])
def test_replay_bound(req: Subscribe, max_replay: int, ok: bool) -> None:
    """More than STREAM_MAX_REPLAY events behind is not recovered (the client reloads)."""
    assert recovered(req, CC, SPACE, max_replay=max_replay) is ok
    assert plan(req, CC, SPACE, max_replay=max_replay) == (
        plan(req, CC, SPACE, max_replay=10**9) if ok else live(False)
    )


@pytest.mark.parametrize(("project", "allowed", "refused"), [
    (P, frozenset({P}), False),
    (P, frozenset({"other"}), True),
    (P, frozenset(), True),
    ("*", frozenset(), False),
    ("*", frozenset({P}), False),
])
def test_forbidden(project: str, allowed: frozenset[str], refused: bool) -> None:
    """A single project must be visible to the connection; "*" covers whatever is."""
    assert forbidden(project, allowed) is refused


def ev(cursor: int) -> Event:
    return Event(space=P, cursor=cursor, project=P, key="r", status="", body="{}")


def pk(first: int, last: int) -> Pack:
    return Pack(space=P, project=P, first=first, cursor=last, action="UPDATE",
                data_type="records", gids=" ".join(f"r{c}" for c in range(first, last + 1)))


@pytest.mark.parametrize(("items", "expected", "result"), [
    ([ev(5), ev(6), ev(7)], 5, (8, True)),
    ([pk(5, 9), ev(10)], 5, (11, True)),
    ([ev(5), pk(6, 8)], 5, (9, True)),
    # A hole: the cursor where it starts, and the page is not whole.
    ([ev(5), ev(7)], 5, (6, False)),
    ([ev(6)], 5, (5, False)),
    ([pk(6, 9)], 5, (5, False)),
    # Nothing where events were expected is a hole too.
    ([], 5, (5, False)),
])
def test_dense(items: list[Item], expected: int, result: tuple[int, bool]) -> None:
    """A replay page must continue the history cursor by cursor."""
    assert dense(items, expected) == result
