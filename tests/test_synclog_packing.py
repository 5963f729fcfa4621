"""Packed entries of the sync log (``bulkjobs/synclog/packing.py`` and ``read.py``) as pure
functions: packing, unpacking, cursor arithmetic and the event-counting pager.  No services."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bulkjobs.synclog import (
    Event,
    Pack,
    Pager,
    PageRead,
    after,
    count_events,
    decode,
    decode_after,
    decode_items,
    expand,
    first_cursor,
    pack,
    record_event,
)

P = "0b6f1f63-2c55-4c8e-9d57-3a3c5d1b9e11"


def single(cursor: int, gid: str, action: str = "UPDATE", data_type: str = "records") -> Event:
    """A record event as a single entry holds it (the body as ``record_event`` dumps it)."""
    ev = record_event(project=P, data_type=data_type, gid=gid, action=action)
    return Event(space=P, cursor=cursor, project=P, key=gid, status="",
                 body=json.dumps(ev.body, separators=(",", ":")))


def packed(first: int, gids: list[str], action: str = "UPDATE",
           data_type: str = "records") -> Pack:
    return Pack(space=P, project=P, first=first, cursor=first + len(gids) - 1, action=action,
                data_type=data_type, gids=" ".join(gids))


def entry(pk: Pack, *, raw_bytes: bool = True) -> tuple[Any, dict[Any, Any]]:
    """The raw XRANGE entry of a pack, as redis-py returns it."""
    fields = {"n": str(pk.n), "p": pk.project, "a": pk.action, "y": pk.data_type,
              "g": pk.gids, "t": "1"}
    if raw_bytes:
        return f"{pk.cursor}-0".encode(), {k.encode(): v.encode() for k, v in fields.items()}
    return f"{pk.cursor}-0", fields


GIDS = [f"g{i}" for i in range(10)]


# -- packing ------------------------------------------------------------------------------


@pytest.mark.parametrize(("groups", "size", "chars", "expected"), [
    ([], 3, 100, []),
    ([("records", "UPDATE", [])], 3, 100, []),
    ([("records", "UPDATE", GIDS[:3])], 3, 100, [("records", "UPDATE", GIDS[:3])]),
    ([("records", "UPDATE", GIDS[:7])], 3, 100,
     [("records", "UPDATE", GIDS[:3]), ("records", "UPDATE", GIDS[3:6]),
      ("records", "UPDATE", GIDS[6:7])]),
    ([("records", "DELETE", GIDS[:2]), ("records", "UPDATE", GIDS[2:4])], 3, 100,
     [("records", "DELETE", GIDS[:2]), ("records", "UPDATE", GIDS[2:4])]),
    # 4 gids of 2 characters and 3 separators are 11 characters: more than 10
    ([("records", "UPDATE", GIDS[:4])], 10, 10,
     [("records", "UPDATE", GIDS[:2]), ("records", "UPDATE", GIDS[2:4])]),
    # a gid longer than the bound makes a pack of its own
    ([("records", "UPDATE", ["x" * 50, "a", "b"])], 10, 10,
     [("records", "UPDATE", ["x" * 50]), ("records", "UPDATE", ["a", "b"])]),
])
def test_pack_cuts_groups_by_events_and_characters_in_order(groups, size, chars, expected):
    """Packs keep the groups' order, at most ``size`` events and ``chars`` characters each."""
    got = [(y, a, list(g)) for y, a, g in pack(groups, size=size, chars=chars)]
    assert got == expected
    assert [g for _, _, gs in got for g in gs] == [g for _, _, gs in groups for g in gs]


@pytest.mark.parametrize(("last", "n", "first"), [
    (100, 1, 100), (100, 10, 91), (1_796_581_439_948_495, 1000, 1_796_581_439_947_496),
])
def test_first_cursor_of_an_entry_whose_id_is_its_last(last, n, first):
    """Event *i* of an entry ``<last>-0`` holding ``n`` events has cursor last - n + 1 + i."""
    assert first_cursor(last, n) == first
    assert packed(first, GIDS[:n] if n <= 10 else [str(i) for i in range(n)]).cursor == last


# -- unpacking ----------------------------------------------------------------------------


@pytest.mark.parametrize("gids", [
    ["a", "b", "c"],
    ["0b6f1f63-2c55-4c8e-9d57-3a3c5d1b9e11"],
    ['quo"te', "back\\slash", "tab\tcontrol", "caf\u00e9", "emoji\U0001f600", "del\x7f"],
])
def test_pack_text_is_its_events_texts_exactly(gids):
    """A pack's wire text is its events' :attr:`Event.text` joined by commas, byte for byte,
    including gids JSON must escape."""
    pk = packed(5000, gids, action="DELETE")
    expected = [single(5000 + i, g, action="DELETE").text for i, g in enumerate(gids)]
    assert pk.text == ",".join(expected)
    assert [e.text for e in pk.events()] == expected
    assert json.loads(f"[{pk.text}]") == [
        {"type": P, "cursor": 5000 + i, "action": "DELETE", "data_type": "records",
         "data_key": g} for i, g in enumerate(gids)]


@pytest.mark.parametrize(("cursor", "first", "keys"), [
    (99, 100, GIDS[:5]),  # just below: the whole pack
    (100, 101, GIDS[1:5]),
    (102, 103, GIDS[3:5]),
    (103, 104, GIDS[4:5]),
])
def test_since_cuts_a_pack_after_a_cursor(cursor, first, keys):
    """``since(c)`` keeps the events after ``c``, with their own cursors."""
    cut = packed(100, GIDS[:5]).since(cursor)
    assert (cut.first, cut.cursor, cut.keys()) == (first, 104, keys)
    assert [e.cursor for e in cut.events()] == list(range(first, 105))


def test_since_refuses_a_cursor_at_or_past_the_end():
    """Nothing would be left: the caller drops such a pack instead."""
    with pytest.raises(ValueError):
        packed(100, GIDS[:5]).since(104)


@pytest.mark.parametrize(("cursor", "expected"), [
    (0, list(range(10, 18))),
    (9, list(range(10, 18))),
    (10, list(range(11, 18))),
    (12, list(range(13, 18))),
    (13, list(range(14, 18))),
    (14, list(range(15, 18))),
    (16, [17]),
    (17, []),
    (99, []),
])
def test_after_drops_the_events_at_or_below_a_cursor(cursor, expected):
    """Items 10 (single), 11..13 (pack), 14 (single), 15..17 (pack): reading on from any
    cursor, inside a pack or not, leaves exactly the later events, in order."""
    items = [single(10, "s1"), packed(11, ["a", "b", "c"]), single(14, "s2"),
             packed(15, ["d", "e", "f"])]
    rest = after(items, cursor)
    assert [e.cursor for e in expand(rest)] == expected
    assert count_events(rest) == len(expected)


@pytest.mark.parametrize("raw_bytes", [True, False])
def test_decode_reads_single_and_packed_entries(raw_bytes):
    """Raw entries (bytes, or text with decode_responses) become events and packs; ``decode``
    gives one event per event either way."""
    pk = packed(21, ["x", "y"], action="DELETE")
    one = single(20, "s")
    raw_single: tuple[Any, dict[Any, Any]]
    fields = {"p": P, "k": "s", "s": "", "d": one.body, "t": "1"}
    if raw_bytes:
        raw_single = (b"20-0", {k.encode(): v.encode() for k, v in fields.items()})
    else:
        raw_single = ("20-0", fields)
    raw = [raw_single, entry(pk, raw_bytes=raw_bytes)]
    items = decode_items(P, raw)
    assert isinstance(items[0], Event) and isinstance(items[1], Pack)
    assert (items[1].first, items[1].cursor, items[1].keys()) == (21, 22, ["x", "y"])
    assert [e.text for e in decode(P, raw)] == [one.text] + [e.text for e in pk.events()]


# -- the pager ----------------------------------------------------------------------------


@pytest.mark.parametrize(("after_", "count", "upto", "ranges"), [
    (100, 10, None, [("(100-0", "110-0", 10), ("(110-0", "+", 1)]),
    (100, 10, 200, [("(100-0", "110-0", 10), ("(110-0", "200-0", 1)]),
    (100, 10, 105, [("(100-0", "105-0", 10)]),
    (100, 10, 110, [("(100-0", "110-0", 10)]),
])
def test_pager_asks_for_the_id_range_of_the_wanted_events_and_one_entry_more(
    after_, count, upto, ranges
):
    """Ids are last cursors: the wanted events sit in the entries with ids in
    ``(after, after + count]`` plus at most the next one (a pack straddling the end)."""
    assert Pager(P, after_, count, upto=upto).ranges() == ranges


def test_pager_cuts_the_first_pack_and_stops_once_it_has_enough():
    """Reading 4 events after 101: the pack 100..104 is cut to 102..104, the straddling pack
    105..109 comes whole, and the page is complete."""
    pager = Pager(P, 101, 4)
    pager.take([[entry(packed(100, GIDS[:5]))], [entry(packed(105, GIDS[5:10]))]])
    assert pager.done
    assert [(i.first, i.cursor) for i in pager.items] == [(102, 104), (105, 109)]
    assert pager.pos == 109


def test_pager_goes_on_after_a_jump_and_stops_at_the_end():
    """Cursors jump (a reseed): the first step finds only the entry after the jump, so the
    pager reads on from there; an empty reply ends it."""
    pager = Pager(P, 10, 5)
    pager.take([[], [entry(packed(1000, ["a", "b"]))]])
    assert not pager.done and pager.pos == 1001 and pager.need == 3
    assert pager.ranges()[0] == ("(1001-0", "1004-0", 3)
    pager.take([[], []])
    assert pager.done
    assert count_events(pager.items) == 2


def test_pager_stops_at_upto():
    """A replay up to a cursor stops there."""
    pager = Pager(P, 10, 100, upto=13)
    pager.take([[entry(packed(11, ["a", "b", "c"]))]])
    assert pager.done and pager.pos == 13
    assert Pager(P, 13, 100, upto=13).done


@pytest.mark.parametrize(("after_", "start", "recovered"), [
    (99, 99, True),     # at floor - 1: caught up by replay
    (150, 150, True),   # inside the history
    (200, 200, True),   # at the current cursor
    (98, 99, False),    # below the floor: the page starts at the floor
    (201, 99, False),   # above the counter: a history this log no longer has
])
def test_page_read_starts_at_the_floor_when_not_recovered(after_, start, recovered):
    """A page read from below the floor or above the counter starts at the floor and says
    ``recovered`` False; from anywhere else it starts at the cursor."""
    read = PageRead(P, after_, count=10, last=200, floor=100)
    assert read.recovered is recovered and read.pos == start and read.need == 11


def test_page_read_reads_one_event_more_to_tell_whether_more_follow():
    """A page holds ``count`` events, cut inside a pack, and ``more`` when one follows; a page
    that reaches the end has no ``more``."""
    read = PageRead(P, 101, count=3, last=109, floor=100)
    read.take([[entry(packed(100, GIDS[:5]))], [entry(packed(105, GIDS[5:10]))]])
    page = read.page()
    assert [e.cursor for e in page.events] == [102, 103, 104]
    assert page.more and page.recovered and (page.floor, page.last) == (100, 109)
    read = PageRead(P, 106, count=5, last=109, floor=100)
    read.take([[entry(packed(105, GIDS[5:10]))], []])
    read.take([[], []])
    page = read.page()
    assert [e.cursor for e in page.events] == [107, 108, 109] and not page.more


def test_decode_after_cuts_the_entry_holding_the_cursor():
    """Raw entries read from a cursor inside a pack give only the events after it; entries
    at or below the cursor give none; flat field lists (a raw XREAD reply) decode alike."""
    pk, later = packed(100, GIDS[:5]), packed(105, GIDS[5:7])
    flat = [(eid, [x for kv in f.items() for x in kv]) for eid, f in (entry(pk), entry(later))]
    for raw in ([entry(pk), entry(later)], flat):
        got = decode_after(P, raw, 102)
        assert [(i.first, i.cursor) for i in got] == [(103, 104), (105, 106)]
        assert decode_after(P, raw, 106) == []
