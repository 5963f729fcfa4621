"""Unit tests of the fan-out core (stream/fanout.py): no sockets, no services."""

from __future__ import annotations

import json

import pytest

from bulkjobs.synclog import Event, Item, Pack, expand
from stream.fanout import Hub, Subscriber, framed, frames

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


def pk(first: int, n: int, project: str = A) -> Pack:
    """A packed entry of ``n`` record events of ``project``, cursors ``first`` on."""
    return Pack(space=project, project=project, first=first, cursor=first + n - 1,
                action="UPDATE", data_type="records",
                gids=" ".join(f"r{c}" for c in range(first, first + n)))


def spans(items: list[Item]) -> list[tuple[int, int]]:
    return [(i.first, i.cursor) for i in items]


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


# -- direct delivery (Hub.route) -------------------------------------------------------------


def test_route_gives_a_plain_subscriber_the_batch_directly_and_queues_nothing():
    """One project's batch reaches an unfiltered, idle connection as ``direct``: its dedupe
    cursor moves past the batch, its outbox stays empty; a filtered one is queued as usual."""
    hub, plain = subscriber((A, None))
    _, filtered = subscriber((A, ["t2"]), hub=hub)
    batch = [job(1), job(2, "t2"), job(3)]
    routed = hub.route(batch)
    assert routed.direct == [plain] and routed.events == batch
    assert routed.woken == [filtered] and routed.slow == []
    assert plain.outbox == {} and plain.sent_cc == {A: 3}
    assert cursors(filtered) == [2]
    assert hub.route([job(3)]).direct == []  # already sent: dedupe still applies


@pytest.mark.parametrize("state", ["held", "congested", "queued", "behind"])
def test_route_takes_the_queued_path_for_a_connection_that_is_not_idle(state):
    """Held, congested, non-empty outboxes, and batches partly at or below the dedupe cursor
    go through the per-event path, so hold, coalescing and dedupe work as before."""
    hub, sub = subscriber((A, None), start=0)
    if state == "held":
        sub.hold()
    elif state == "congested":
        sub.congested = True
    elif state == "queued":
        sub.outbox[object()] = job(1)
    else:
        hub.start(sub, A, cc=2)
    routed = hub.route([job(2), job(3)])
    assert routed.direct == []
    expected = {"held": [], "congested": [3], "queued": [1, 2, 3], "behind": [3]}[state]
    assert cursors(sub) == expected


def _reference_publish(hub: Hub, events: list[Event]) -> tuple[set[int], set[int]]:
    """The per-event, per-connection routing that Hub.route must agree with."""
    woken: set[int] = set()
    slow: set[int] = set()
    for ev in events:
        index = hub.cc_index if ev.space == "cc" else hub.space_index
        for sub in list(index.get(ev.project if ev.space == "cc" else ev.space, ())):
            result = sub.offer(ev)
            if result == 2:  # WOKE
                woken.add(id(sub))
            if sub.slow and result != 0:
                slow.add(id(sub))
    for sub in [s for s in hub.subscribers if id(s) in slow]:
        hub.remove(sub)
    return woken, slow


@pytest.mark.parametrize("seed", range(40))
def test_route_agrees_with_per_event_routing(seed):
    """Random subscriptions (filters, "*", visibility, held, congested, start cursors), random
    batches (one project, several, out of order) and changes in between: publishing through
    Hub.route queues exactly what offering every event to every indexed connection would."""
    import random

    rnd = random.Random(seed)

    def build() -> tuple[Hub, list[Subscriber]]:
        r = random.Random(seed)
        hub = Hub()
        subs = []
        for _ in range(r.randint(1, 8)):
            sub = Subscriber(user="u", allowed=r.sample([A, B, C], r.randint(1, 3)),
                             limit=r.choice([2, 5, 1000]))
            hub.add(sub)
            for project in r.sample([A, B, "*"], r.randint(1, 2)):
                jobs = r.choice([None, None, ["t1"], ["t2", "t3"]])
                hub.subscribe(sub, project, jobs=jobs)
                hub.start(sub, project, cc=r.randint(0, 3),
                          space=None if project == "*" else r.randint(0, 3))
            sub.congested = r.random() < 0.2
            if r.random() < 0.2:
                sub.hold()
            subs.append(sub)
        return hub, subs

    hub, subs = build()
    ref_hub, ref_subs = build()
    cursor = {"cc": 0, A: 0, B: 0}
    for _ in range(12):
        space = rnd.choice(["cc", "cc", A, B])
        batch = []
        for _ in range(rnd.randint(1, 5)):
            cursor[space] += 1
            c = cursor[space] - rnd.choice([0, 0, 0, 2])  # sometimes a replayed cursor
            if space == "cc":
                ev = job(c, token=rnd.choice(["t1", "t2", "t3"]),
                         status=rnd.choice([P, P, Q, D]),
                         project=rnd.choice([A, A, B]) if rnd.random() < 0.3 else A)
            else:
                ev = rec(c, space)
            batch.append(ev)
        woken, slow = hub.publish(batch)
        ref_woken, ref_slow = _reference_publish(ref_hub, batch)
        index = {id(s): i for i, s in enumerate(subs)}
        ref_index = {id(s): i for i, s in enumerate(ref_subs)}
        assert {index[id(s)] for s in woken} == {ref_index[i] for i in ref_woken}
        assert {index[id(s)] for s in slow} == {ref_index[i] for i in ref_slow}
        for sub, ref in zip(subs, ref_subs, strict=True):
            assert [e.cursor for e in sub.outbox.values()] == [
                e.cursor for e in ref.outbox.values()]
            assert sub.sent_cc == ref.sent_cc and sub.sent_space == ref.sent_space
            assert sub.slow == ref.slow
            assert [e.cursor for e in sub.held or ()] == [e.cursor for e in ref.held or ()]
        if rnd.random() < 0.3:  # subscriptions and memberships change between batches
            i = rnd.randrange(len(subs))
            change = rnd.choice(["allowed", "filter", "unsubscribe"])
            project = rnd.choice([A, B, "*"])
            allowed = rnd.sample([A, B, C], rnd.randint(0, 3))
            jobs = rnd.choice([None, ["t1"]])
            for h, sub in ((hub, subs[i]), (ref_hub, ref_subs[i])):
                if change == "allowed":
                    h.set_allowed(sub, allowed)
                elif change == "filter":
                    h.subscribe(sub, project, jobs=jobs)
                else:
                    h.unsubscribe(sub, project)
        if rnd.random() < 0.4:  # the server flushes what it can
            for sub, ref in zip(subs, ref_subs, strict=True):
                if not sub.congested:
                    sub.take()
                    ref.take()


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


# -- packed entries -------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "offered", "expected"), [
    (0, [(1, 5), (6, 10)], [(1, 5), (6, 10)]),
    (3, [(1, 5), (6, 10)], [(4, 5), (6, 10)]),
    (5, [(1, 5), (6, 10)], [(6, 10)]),
    (7, [(1, 5), (6, 10)], [(8, 10)]),
    (10, [(1, 5), (6, 10)], []),
    (3, [(1, 5), (1, 5), (4, 8)], [(4, 5), (6, 8)]),  # out of order: the per-item path
])
def test_a_pack_partly_sent_is_cut_and_never_repeated(start, offered, expected):
    """Dedupe on packs: one wholly sent is dropped, one partly sent is cut to the events
    after the connection's cursor, so each event goes out once."""
    hub, sub = subscriber((A, None), start=start)
    hub.publish([pk(first, last - first + 1) for first, last in offered])
    got = sub.take()
    assert spans(got) == expected
    assert [e.key for e in expand(got)] == [
        f"r{c}" for first, last in expected for c in range(first, last + 1)]


def test_route_gives_packs_directly_to_an_idle_subscriber_and_cuts_for_one_behind():
    """A batch of packs goes ``direct`` to an idle connection whose cursor is below it;
    a connection that has seen part of it gets the rest queued."""
    hub, plain = subscriber((A, None), start=0)
    _, behind = subscriber((A, None), hub=hub, start=1500)
    batch: list[Item] = [pk(1, 1000), pk(1001, 1000)]
    routed = hub.route(batch)
    assert routed.direct == [plain] and routed.events == batch
    assert plain.outbox == {} and plain.sent_space == {A: 2000}
    assert routed.woken == [behind]
    assert spans(behind.take()) == [(1501, 2000)]


def test_resume_inside_a_pack_through_hold_replay_release_gives_the_rest_once():
    """Subscribing with a cursor inside a pack: live packs are held while the replay (cut by
    the log after the cursor) is queued; releasing drops what the replay sent, so every
    event after the cursor is queued once, in order."""
    hub, sub = subscriber(start=0)
    sub.hold()
    hub.subscribe(sub, A)
    hub.publish([pk(11, 5)])  # live while the subscription is set up
    hub.start(sub, A, cc=0, space=2)
    hub.replay(sub, [pk(1, 5).since(2), pk(6, 5), pk(11, 5)])
    hub.publish([pk(16, 5)])
    assert hub.release(sub)
    got = sub.take()
    assert [e.cursor for e in expand(got)] == list(range(3, 21))


def test_a_pack_is_one_outbox_entry_towards_the_bound():
    """A congested connection counts a pack as one queued entry (one frame), never
    coalesced; past the bound it is slow."""
    hub, sub = subscriber((A, None), limit=2)
    sub.congested = True
    _, slow = hub.publish([pk(1, 1000), pk(1001, 1000)])
    assert slow == [] and sub.pending == 2 and hub.coalesced == 0
    _, slow = hub.publish([pk(2001, 1000)])
    assert slow == [sub]


def test_a_pack_is_framed_as_its_events_and_never_cut():
    """A pack's frame carries exactly its events' texts; ``framed`` says where each frame
    ends, and a pack is never split across frames."""
    p = pk(3, 4)
    assert list(frames([p])) == list(frames(p.events()))
    mixed: list[Item] = [rec(1), rec(2), p, rec(7)]
    out = list(framed(mixed, max_chars=len(p.text) + 10))
    assert [end for _, end in out] == [2, 3, 4]
    got = [e for f, _ in out for e in json.loads(f)["sync"]]
    assert got == [e.as_dict() for e in expand(mixed)]
