"""Packed entries: ``n`` consecutive record-level events of one project, action and data
type in one stream entry (:class:`Pack`), how a batch's events are cut into them
(:func:`pack`) and their wire text (:func:`pack_text`).  See the contract in
:mod:`bulkjobs.synclog`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import ClassVar

from bulkjobs.synclog.events import Event

#: Events one packed entry holds at most: the wire text of one pack (about 150 characters
#: an event) stays one websocket frame (``stream.fanout.FRAME_CHARS``).
PACK = 1000
#: Characters of gids (with their separators) one packed entry holds at most, whatever the
#: gids' length.
PACK_CHARS = 64 * 1024

# Characters a gid may not hold for its JSON string to be the gid itself between quotes
# (``json.dumps`` escapes them, and everything beyond ASCII).
_ESCAPED = re.compile(r'[\x00-\x1f"\\\x7f-\U0010ffff]')


class Pack:
    """A packed entry: ``n`` consecutive record-level events (cursors ``first`` …
    ``cursor``) of one project, action and data type.

    It stands in for its events wherever an :class:`Event` goes (``space``, ``project``,
    ``cursor`` — the last one — ``key`` and ``status`` empty, so it never coalesces), and
    carries its wire text composed once (:attr:`text`): the events' JSON texts, exactly as
    :attr:`Event.text` would give them, joined by commas.
    """

    __slots__ = ("space", "project", "first", "cursor", "action", "data_type", "gids", "_text")

    key: ClassVar[str] = ""
    status: ClassVar[str] = ""
    terminal: ClassVar[bool] = False

    def __init__(self, *, space: str, project: str, first: int, cursor: int, action: str,
                 data_type: str, gids: str) -> None:
        self.space = space
        self.project = project
        self.first = first
        self.cursor = cursor
        self.action = action
        self.data_type = data_type
        self.gids = gids  # joined by single spaces, as stored
        self._text: str | None = None

    def __repr__(self) -> str:
        return f"Pack({self.space!r}, {self.first}..{self.cursor}, {self.action} {self.data_type})"

    @property
    def n(self) -> int:
        return self.cursor - self.first + 1

    def keys(self) -> list[str]:
        """The events' data keys (gids), in cursor order."""
        return self.gids.split(" ")

    def since(self, cursor: int) -> Pack:
        """The events after ``cursor`` (which lies in ``first - 1`` … ``self.cursor - 1``)."""
        skip = cursor - self.first + 1
        if skip <= 0:
            return self
        if skip >= self.n:
            raise ValueError(f"cursor {cursor} is not inside {self!r}")
        return Pack(space=self.space, project=self.project, first=cursor + 1, cursor=self.cursor,
                    action=self.action, data_type=self.data_type,
                    gids=" ".join(self.keys()[skip:]))

    @property
    def text(self) -> str:
        """The events' wire texts joined by commas (one JSON array's contents), composed on
        first use from the gids, without an object per event."""
        if self._text is None:
            self._text = pack_text(self.space, self.first, self.action, self.data_type,
                                   self.keys(), plain=_ESCAPED.search(self.gids) is None)
        return self._text

    def events(self, limit: int | None = None) -> list[Event]:
        """The pack as single events (the first ``limit`` of them), for the paths that hand
        out event objects (``/sync/get``, tests)."""
        gids = self.keys() if limit is None else self.keys()[:limit]
        head = f'{{"action":{json.dumps(self.action)},"data_type":{json.dumps(self.data_type)},'
        if _ESCAPED.search(self.gids) is None:
            bodies = [f'{head}"data_key":"{g}"}}' for g in gids]
        else:
            bodies = [f'{head}"data_key":{json.dumps(g)}}}' for g in gids]
        space, project = self.space, self.project
        return [Event(space=space, cursor=c, project=project, key=g, status="", body=b)
                for c, g, b in zip(range(self.first, self.first + len(gids)), gids, bodies,
                                   strict=True)]


#: What a read of the log yields: single events and packs, in cursor order.
Item = Event | Pack


def pack_text(space: str, first: int, action: str, data_type: str, gids: Sequence[str], *,
              plain: bool) -> str:
    """The wire texts of the events ``(first + i, action, data_type, gids[i])`` joined by
    commas.  ``plain``: no gid needs escaping in JSON, so each is written as it is."""
    head = f'{{"type":{json.dumps(space)},"cursor":'
    mid = f',"action":{json.dumps(action)},"data_type":{json.dumps(data_type)},"data_key":'
    cursors = range(first, first + len(gids))
    if plain:
        mid += '"'
        return ",".join([f'{head}{c}{mid}{g}"}}' for c, g in zip(cursors, gids, strict=True)])
    return ",".join([f"{head}{c}{mid}{json.dumps(g)}}}" for c, g in zip(cursors, gids,
                                                                            strict=True)])


def pack(groups: Iterable[tuple[str, str, Sequence[str]]], *, size: int = PACK,
         chars: int = PACK_CHARS) -> list[tuple[str, str, Sequence[str]]]:
    """Cut ``(data type, action, gids)`` groups into packs of at most ``size`` events and
    ``chars`` characters of gids joined by spaces (a single longer gid makes a pack of its
    own), in order.  Empty groups make no pack."""
    out: list[tuple[str, str, Sequence[str]]] = []
    for data_type, action, gids in groups:
        i, total = 0, len(gids)
        while i < total:
            j = min(total, i + size)
            while j - i > 1 and sum(map(len, gids[i:j])) + (j - i - 1) > chars:
                j = i + (j - i) // 2
            out.append((data_type, action, gids[i:j]))
            i = j
    return out


def first_cursor(last: int, n: int) -> int:
    """The cursor of the first of the ``n`` events of an entry whose id is ``last``."""
    return last - n + 1
