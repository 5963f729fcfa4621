"""Reading the sync log, without I/O: raw stream entries to items (:func:`decode_items`,
the one decoder every reader uses), and a range of a space's events after a cursor
(:class:`Pager`, and :class:`PageRead` for a page with the floor rule).

Every read of a range goes through :class:`Pager`: :meth:`SyncLog.read
<bulkjobs.synclog.SyncLog.read>` and :meth:`~bulkjobs.synclog.SyncLog.pages` (``/sync/get``,
tests, benchmarks), :meth:`AsyncSyncLog.read_items <bulkjobs.synclog.AsyncSyncLog.read_items>`
(the stream server's replay) and :meth:`AsyncSyncLog.read
<bulkjobs.synclog.AsyncSyncLog.read>` drive it, each with its own client.  The stream's
reader follows the live log with ``XREAD BLOCK``, a different operation, and decodes what it
reads with :func:`decode_after`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bulkjobs.synclog.events import Event
from bulkjobs.synclog.packing import Item, Pack, first_cursor

#: Events a single read returns at most (one ``/sync/get`` page).
PAGE = 1000


def text_of(v: Any) -> str:
    """A Redis reply value as text."""
    return v.decode() if isinstance(v, bytes) else str(v)


def fields_of(raw: Any) -> dict[Any, Any]:
    """An entry's fields as a dict: a raw ``XREAD`` reply has them as a flat list."""
    if isinstance(raw, dict):
        return raw
    it = iter(raw)
    return dict(zip(it, it, strict=False))


def _field(f: dict[Any, Any], name: bytes, default: str = "") -> str:
    v = f.get(name)
    if v is None:
        v = f.get(name.decode(), default)
    return v.decode() if isinstance(v, bytes) else str(v)


def decode_items(space: str, entries: Iterable[tuple[Any, Any]]) -> list[Item]:
    """Turn raw XRANGE/XREAD entries (fields as a dict or a flat list) into :class:`Event`
    and :class:`Pack` items."""
    out: list[Item] = []
    for entry_id, raw in entries:
        f = fields_of(raw)
        cursor = int(text_of(entry_id).split("-", 1)[0])
        n = f.get(b"n", f.get("n"))
        if n is not None:
            out.append(Pack(
                space=space, project=_field(f, b"p"), first=first_cursor(cursor, int(n)),
                cursor=cursor, action=_field(f, b"a"), data_type=_field(f, b"y"),
                gids=_field(f, b"g"),
            ))
        else:
            out.append(Event(
                space=space, cursor=cursor, project=_field(f, b"p"), key=_field(f, b"k"),
                status=_field(f, b"s"), body=_field(f, b"d", "{}"),
            ))
    return out


def expand(items: Iterable[Item], limit: int | None = None) -> list[Event]:
    """Items as single events, in order (the first ``limit`` of them)."""
    out: list[Event] = []
    for item in items:
        if limit is not None and len(out) >= limit:
            break
        if isinstance(item, Pack):
            out += item.events(None if limit is None else limit - len(out))
        else:
            out.append(item)
    return out


def decode(space: str, entries: Iterable[tuple[Any, Any]]) -> list[Event]:
    """Turn raw XRANGE/XREAD entries into :class:`Event` objects, one per event (a packed
    entry gives all of its events)."""
    return expand(decode_items(space, entries))


def after(items: Iterable[Item], cursor: int) -> list[Item]:
    """``items`` without the events at or below ``cursor`` (a pack holding ``cursor`` is cut
    to the events after it)."""
    out: list[Item] = []
    for item in items:
        if item.cursor <= cursor:
            continue
        if item.first <= cursor:
            assert isinstance(item, Pack)  # a single event has first == cursor
            item = item.since(cursor)
        out.append(item)
    return out


def decode_after(space: str, entries: Iterable[tuple[Any, Any]], cursor: int) -> list[Item]:
    """The items of raw entries (in id order) that hold events after ``cursor``: a range or
    ``XREAD`` that starts at ``cursor`` also returns the entry whose pack holds it (its id
    is the pack's last cursor), cut here to the events after ``cursor``."""
    return after(decode_items(space, entries), cursor)


def count_events(items: Iterable[Item]) -> int:
    return sum(item.n for item in items)


def is_recovered(after: int, floor: int, last: int) -> bool:
    """Can a reader that has seen everything up to ``after`` be caught up by replay?  Not
    from below the floor (trimmed or lost), nor from above the counter (a cursor of a history
    this log no longer has)."""
    return floor - 1 <= after <= last


@dataclass(frozen=True, slots=True)
class Page:
    events: list[Event]
    floor: int
    last: int  # the space's current cursor
    recovered: bool  # False: events after the given cursor were lost to trimming or a reset
    more: bool  # True: more events follow the last one returned


class Pager:
    """One read of a space's events after a cursor, without I/O: which ``XRANGE`` calls to
    make next and what their replies hold.

    Reads are bounded by events, not entries: entry ids are last cursors, and cursors are
    dense within an epoch, so the events in ``(pos, pos + need]`` are in the entries with ids
    in that range plus, at most, the next entry (a pack straddling ``pos + need``, or the
    first entry after a jump of the counter).  Each step asks for both in one round trip:
    ``XRANGE (pos pos+need COUNT need`` and ``XRANGE (pos+need upto COUNT 1``.  A step
    returns at most ``need`` events plus one pack; reading stops once ``count`` events are
    taken, at ``upto``, or at the end of the stream.
    """

    def __init__(self, space: str, after: int, count: int, *, upto: int | None = None) -> None:
        self.space = space
        self.pos = after
        self.need = count
        self.upto = upto
        self.items: list[Item] = []
        self.done = count <= 0 or (upto is not None and after >= upto)

    def ranges(self) -> list[tuple[str, str, int]]:
        """The next ``XRANGE`` calls as ``(start, end, count)``."""
        hi = self.pos + self.need
        start = f"({self.pos}-0"
        if self.upto is not None and hi >= self.upto:
            return [(start, f"{self.upto}-0", self.need)]
        end = "+" if self.upto is None else f"{self.upto}-0"
        return [(start, f"{hi}-0", self.need), (f"({hi}-0", end, 1)]

    def take(self, replies: Iterable[Any]) -> None:
        """Take in the replies to :meth:`ranges`, in order."""
        got = False
        for raw in replies:
            entries = list(raw or ())
            got = got or bool(entries)
            for item in decode_after(self.space, entries, self.pos):
                self.items.append(item)
                self.pos = item.cursor
                self.need -= item.n
        if not got or self.need <= 0 or (self.upto is not None and self.pos >= self.upto):
            self.done = True


class PageRead(Pager):
    """A page of a space's events after ``after`` (at most ``count``; it may end inside a
    packed entry), given the space's current cursor ``last`` and ``floor``: a reader below
    the floor, or above the counter, gets the page from the floor on and ``recovered`` is
    False.  One event more than ``count`` is read, to tell whether more follow."""

    def __init__(self, space: str, after: int, *, count: int, last: int, floor: int) -> None:
        self.recovered = is_recovered(after, floor, last)
        # Not recovered: start at the floor (entries below it may be left over from before a
        # restart, and are not part of the complete history).
        super().__init__(space, after if self.recovered else floor - 1, count + 1)
        self.count = count
        self.last = last
        self.floor = floor

    def page(self) -> Page:
        """The page, once the read is :attr:`done`."""
        events = expand(self.items, self.count + 1)
        return Page(events[:self.count], self.floor, self.last, self.recovered,
                    len(events) > self.count)
