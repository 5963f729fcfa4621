"""Unit tests of the fan-out core (stream/fanout.py): no sockets, no services."""

from __future__ import annotations

import json

import pytest

from bulkjobs.synclog import Event
from stream.fanout import Hub, Subscriber, frames

A, B, C = "project-a", "project-b", "project-c"


def job(cursor: int, token: str = "t1", status: str = "processing", project: str = A) -> Event:
    """A cc job event as the log decodes it."""
    body = json.dumps({
        "action": "UPDATE", "data_type": "jobs", "data_key": token,
        "data": {"project_gid": project, "status": status, "info": {"remaining": cursor}},
    }, separators=(",", ":"))
    return Event(space="cc", cursor=cursor, project=project, key=token, status=status, body=body)


def rec(cursor: int, project: str = A, gid: str = "r1") -> Event:
    """A project-space record event."""
    body = json.dumps({"action": "UPDATE", "data_type": "records", "data_key": gid})
    return Event(space=project, cursor=cursor, project=project, key=gid, status="", body=body)


def subscriber(*subs: tuple[str, list[str] | None], allowed: tuple[str, ...] = (A, B),
               limit: int = 1000, hub: Hub | None = None, start: int = 0) -> tuple[Hub, Subscriber]:
    hub = hub or Hub()
    sub = Subscriber(user="u", allowed=allowed, limit=limit)
    hub.add(sub)
    for project, jobs in subs:
        hub.subscribe(sub, project, jobs=jobs)
        hub.start(sub, project, cc=start, space=None if project == "*" else start)
    return hub, sub


def cursors(sub: Subscriber) -> list[int]:
    return [e.cursor for e in sub.take()]


# -- coalescing ---------------------------------------------------------------------------

P, Q, D, R = "processing", "queued", "done", "rejected"


@pytest.mark.parametrize(("offers", "expected", "coalesced"), [
    ([(1, "a", P), (2, "a", P), (3, "a", P)], [3], 2),
    ([(1, "a", P), (2, "b", P), (3, "a", P)], [2, 3], 1),
    ([(1, "a", Q), (2, "a", P)], [2], 1),
    ([(1, "a", P), (2, "a", D)], [2], 1),
    ([(1, "a", P), (2, "a", R), (3, "b", P), (4, "b", P)], [2, 4], 2),
    ([(1, "a", D), (2, "b", D), (3, "c", R)], [1, 2, 3], 0),
    ([(1, "a", P), (2, "b", D), (3, "a", P), (4, "a", D)], [2, 4], 2),
])
def test_congested_outbox_coalesces_progress_and_keeps_terminals(offers, expected, coalesced):
    """While congested, progress of one job collapses to its latest; terminals always stay."""
    hub, sub = subscriber((A, None))
    sub.congested = True
    hub.publish([job(c, t, s) for c, t, s in offers])
    assert hub.coalesced == coalesced
    assert cursors(sub) == expected


def test_uncongested_connection_gets_every_progress_event():
    """A connection that keeps up is sent every event, none coalesced."""
    hub, sub = subscriber((A, None))
    hub.publish([job(c) for c in range(1, 6)])
    assert cursors(sub) == [1, 2, 3, 4, 5]
    assert hub.coalesced == 0


# -- dedupe -------------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "offered", "expected"), [
    (4, [5, 3, 5, 6], [5, 6]),
    (0, [1, 2, 2, 1, 3], [1, 2, 3]),
    (10, [8, 9, 10], []),
])
def test_event_is_never_queued_twice(start, offered, expected):
    """An event at or below the last cursor queued for its space is dropped."""
    hub, sub = subscriber((A, None), start=start)
    for c in offered:
        hub.publish([job(c, token=f"t{c}")])
    assert cursors(sub) == expected


def test_cc_dedupe_is_per_project():
    """A replay of project B's older cc events is not blocked by newer events of project A."""
    hub, sub = subscriber((A, None), start=0)
    hub.publish([job(10, project=A)])
    hub.subscribe(sub, B)
    hub.start(sub, B, cc=5)
    hub.replay(sub, [job(6, project=B, token="b"), job(7, project=A), job(8, project=B)])
    assert cursors(sub) == [10, 6, 8]


def test_hold_then_replay_then_release_is_gap_free_and_duplicate_free():
    """Live events held during a replay are released after it, minus what it already sent."""
    hub, sub = subscriber((A, None), start=2)
    sub.hold()
    hub.publish([job(5, "x"), job(6, "y"), job(7, "z")])
    assert sub.take() == []
    hub.replay(sub, [job(3, "u"), job(4, "v"), job(5, "x"), job(6, "y")])
    assert hub.release(sub) is True
    assert cursors(sub) == [3, 4, 5, 6, 7]


def test_unsubscribe_forgets_dedupe_cursors():
    """After unsubscribing, a new subscription may replay older events again."""
    hub, sub = subscriber((A, None), start=0)
    hub.publish([job(1), job(2, "t2")])
    assert cursors(sub) == [1, 2]
    hub.unsubscribe(sub, A)
    hub.subscribe(sub, A)
    hub.start(sub, A, cc=0)
    hub.replay(sub, [job(1), job(2, "t2")])
    assert cursors(sub) == [1, 2]


# -- filtering ----------------------------------------------------------------------------

STAR = "*"


@pytest.mark.parametrize(("subs", "event", "wanted"), [
    ([(A, None)], job(1, project=A), True),
    ([(A, None)], job(1, project=B), False),
    ([(A, None)], rec(1, A), True),
    ([(A, None)], rec(1, B), False),
    ([(A, ["t1"])], job(1, "t1", project=A), True),
    ([(A, ["t1"])], job(1, "t2", project=A), False),
    ([(A, ["t1"])], rec(1, A), False),
    ([(STAR, None)], job(1, project=A), True),
    ([(STAR, None)], job(1, project=B), True),
    ([(STAR, None)], job(1, project=C), False),  # C is not allowed
    ([(STAR, None)], rec(1, A), True),
    ([(STAR, None)], rec(1, C), False),  # C is not allowed
    ([(STAR, ["t1"])], rec(1, A), False),
    ([(STAR, ["t1"]), (A, None)], rec(1, A), True),
    ([(STAR, ["t1"])], job(1, "t1", project=B), True),
    ([(STAR, ["t1"])], job(1, "t2", project=B), False),
    ([(STAR, None), (A, ["t1"])], job(1, "t2", project=A), True),
    ([(C, None)], job(1, project=C), False),  # subscribed, but not allowed
    ([(C, None)], rec(1, C), False),
])
def test_routing_respects_subscriptions_filters_and_visibility(subs, event, wanted):
    """Only covered, visible events are queued; jobs filters narrow to those jobs' cc events."""
    hub, sub = subscriber(*subs)
    hub.publish([event])
    assert (cursors(sub) == [1]) is wanted


def test_no_cross_project_leakage_between_connections():
    """Each connection gets only the events of its own projects."""
    hub, sub_a = subscriber((A, None))
    _, sub_b = subscriber((B, None), hub=hub)
    hub.publish([job(1, project=A), job(2, project=B), rec(3, A), rec(4, B)])
    assert [(e.space, e.project) for e in sub_a.take()] == [("cc", A), (A, A)]
    assert [(e.space, e.project) for e in sub_b.take()] == [("cc", B), (B, B)]


def test_spaces_lists_unfiltered_project_subscriptions_only():
    """The reader is asked for project spaces that some connection receives."""
    hub, _ = subscriber((A, None), (B, ["t1"]))
    subscriber((STAR, ["t1"]), hub=hub, allowed=(A, B, C))
    assert hub.spaces() == {A}


def test_star_receives_the_spaces_of_every_visible_project():
    """An unfiltered "*" covers the project spaces of the projects its user may see, and
    follows membership changes; unsubscribing it drops them."""
    hub, sub = subscriber((STAR, None), allowed=(A, B))
    assert hub.spaces() == {A, B}
    hub.publish([rec(1, A), rec(2, B), rec(3, C)])
    assert [(e.space, e.cursor) for e in sub.take()] == [(A, 1), (B, 2)]
    assert hub.set_allowed(sub, {B, C}) == [A]
    assert hub.spaces() == {B, C}
    hub.publish([rec(4, A), rec(5, C)])
    assert cursors(sub) == [5]
    hub.unsubscribe(sub, STAR)
    assert hub.spaces() == set()


def test_revoked_membership_unsubscribes_and_purges():
    """A project dropped from ``allowed`` is unsubscribed and its queued events discarded."""
    hub, sub = subscriber((A, None), (B, None))
    hub.publish([job(1, project=B)])
    assert hub.set_allowed(sub, {A}) == [B]
    assert sub.take() == []
    hub.publish([job(2, project=B), job(3, project=A)])
    assert cursors(sub) == [3]
    assert B not in sub.projects


def test_star_follows_membership_changes():
    """A "*" subscription covers projects that become visible later, and drops revoked ones."""
    hub, sub = subscriber((STAR, None), allowed=(A,))
    assert hub.set_allowed(sub, {A, C}) == []
    hub.publish([job(1, project=C)])
    assert cursors(sub) == [1]
    assert hub.set_allowed(sub, {C}) == [A]


# -- overflow -----------------------------------------------------------------------------


def test_congested_overflow_of_record_events_marks_slow():
    """Record events, which cannot be coalesced, count towards the bound of a congested
    outbox too: past it the connection is reported slow."""
    hub, sub = subscriber((A, None), limit=3)
    sub.congested = True
    woken, slow = hub.publish([rec(c, A) for c in range(1, 4)])
    assert woken == [sub] and slow == []
    woken, slow = hub.publish([rec(4, A)])
    assert slow == [sub] and sub.slow
    assert sub not in hub


def test_congested_overflow_marks_slow_and_stops_routing():
    """Past the bound even after coalescing, the connection is reported slow and dropped."""
    hub, sub = subscriber((A, None), limit=3)
    sub.congested = True
    woken, slow = hub.publish([job(c, token=f"t{c}") for c in range(1, 4)])
    assert woken == [sub] and slow == []
    woken, slow = hub.publish([job(4, token="t4")])
    assert slow == [sub] and sub.slow
    assert sub not in hub and hub.cc_index == {}
    assert hub.publish([job(5, token="t5")]) == ([], [])


def test_coalescing_progress_never_overflows():
    """Any number of progress events of one job fit in a bound of one."""
    hub, sub = subscriber((A, None), limit=1)
    sub.congested = True
    hub.publish([job(c) for c in range(1, 500)])
    assert not sub.slow
    assert cursors(sub) == [499]


def test_held_events_beyond_bound_mark_slow():
    """A subscription set-up that lets too many live events pile up is treated as slow."""
    hub, sub = subscriber((A, None), limit=2)
    sub.hold()
    _, slow = hub.publish([job(c, token=f"t{c}") for c in range(1, 5)])
    assert slow == [sub]


def test_gap_in_cc_removes_every_subscribed_connection():
    """Lost cc history closes all subscribed connections; a project gap only its own."""
    hub, sub_a = subscriber((A, None))
    _, sub_b = subscriber((B, ["t1"]), hub=hub)
    idle = Subscriber(user="idle", allowed=(A,))
    hub.add(idle)
    assert set(hub.gap(A)) == {sub_a}
    _, sub_c = subscriber((A, None), hub=hub)
    assert set(hub.gap("cc")) == {sub_b, sub_c}
    assert idle in hub


# -- frames -------------------------------------------------------------------------------


def test_frames_join_event_texts_in_order_and_cut_large_batches():
    """Frames are valid JSON carrying the exact event texts, in order, split by size."""
    events = [job(c, token=f"t{c}") for c in range(1, 50)]
    out = list(frames(events, max_chars=1000))
    assert len(out) > 1
    got = [e for f in out for e in json.loads(f)["sync"]]
    assert got == [e.as_dict() for e in events]
    assert all(json.loads(f)["op"] == "sync" for f in out)
    assert list(frames(events))[0] == '{"op":"sync","sync":[' + ",".join(
        e.text for e in events) + "]}"
