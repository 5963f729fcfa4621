"""The sync log: one Redis stream per cursor space, entry ids are the (last) cursors.

Contract
--------
* Two kinds of space: ``"cc"`` (job events) and one per project (``space == project gid``,
  record and schema changes).
* A cursor is an integer that only grows.  Appending increments the space's counter and adds
  the stream entry ``<cursor>-0`` in one Lua script, so cursors are dense within an epoch and
  never reused.  A counter that is missing (first use, or Redis lost its data) is seeded from
  the clock in microseconds, never below the last entry still in the stream, so cursors keep
  growing across a Redis restart that lost everything.  The clock is the Redis server's
  (``TIME``), not the appending client's: workers run on many machines, and the first one to
  append after a data loss must not reseed below earlier cursors because its clock lags.
* Redis may also come back with *some* of its data: an RDB snapshot, an AOF missing its last
  second, a failover to a replica that lagged.  Its counter then lies below cursors already
  handed out, and counting on from it would hand them out again, to other events.  Nothing in
  the data tells such a restart apart, so the first script to touch a space after *any*
  restart (the server's ``run_id`` differs from the one recorded in the space's marks hash,
  field ``run``) reseeds the counter from the clock as if it were missing, never below its
  old value: cursors keep growing, and history from before the restart is declared
  incomplete.  A clean restart costs subscribers one ``recovered: false``; a rollback never
  yields a partial replay.
* Each space keeps a *floor*: the lowest cursor from which its history is complete.  Seeding a
  counter sets the floor just above the seed; trimming raises it.  A reader whose cursor ``c``
  is below ``floor - 1`` missed events that are gone, and one above the counter holds a cursor
  of a history this log no longer has: either is told ``recovered = False``.
* Two kinds of entry:

  - a *single* event (job events, and project-space events appended one by one): the event
    body as JSON *without* ``type`` and ``cursor`` (``d``) plus a few routing fields (``p``
    project gid, ``k`` data key, ``s`` job status, ``t`` time), id ``<cursor>-0``;
  - a *packed* entry (:class:`Pack`): ``n`` consecutive record-level events of one project,
    action and data type, as a batch produces them (:meth:`SyncLog.append_records`): fields
    ``n`` (count), ``p`` project, ``a`` action, ``y`` data type, ``g`` the gids joined by
    single spaces, ``t`` time.  The script takes ``INCRBY counter n`` and adds one entry whose
    id is the *last* cursor; event *i* (from 0) has cursor ``last - n + 1 + i``.  A pack
    holds at most :data:`PACK` events and :data:`PACK_CHARS` characters of gids.

  Because an entry's id is its last cursor, every range read (``XRANGE (c-0 +``, ``XREAD``
  after ``c-0``) that starts at any cursor ``c``, including one inside a pack, returns every
  entry holding an event after ``c``; readers drop the events ``<= c`` of the first entry
  (:func:`after`, :meth:`Pack.since`).  On the wire each event keeps its own cursor: the text
  of a pack is composed from its gids once (:attr:`Pack.text`, the events' texts joined by
  commas) and shared by every subscriber, so fan-out never re-serialises and never builds an
  object per event.  A million record events take a thousand entries instead of a million.
* Reads count events, not entries: :meth:`SyncLog.read` returns at most ``count`` events,
  and a page may end inside a pack; the next read from that cursor returns the rest of it.
* Retention (:func:`trim`): an entry is removed only when it is both beyond the last
  ``SYNC_RETENTION`` events and older than ``SYNC_RETENTION_SECONDS``.  Both bounds are
  cursors, so they count events.  Trimming by ``MINID`` removes whole entries whose (last)
  cursor is below the cutoff and keeps a pack that straddles it whole, so every event at or
  above the cutoff is still there and the cutoff is a correct floor.
* Hard bound (``SYNC_MAX_EVENTS``, :attr:`SyncLog.max_events`): every append script trims
  its space to the last ``max_events`` events as it appends (the same ``MINID`` cut at
  ``counter - max_events + 1``, raising the floor), so a burst between two trims cannot
  grow Redis without bound.  A space then holds at most ``max_events`` events plus the
  older part of one pack that straddles the cut (fewer than :data:`PACK` events); entries
  left from before a Redis restart (below the floor) go once ``max_events`` newer events
  are in.  A reader whose cursor the cut passed is told ``recovered = False``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import redis
import redis.asyncio

from bulkjobs import keys

# The server's clock in microseconds: the one clock every client shares.
_SERVER_US_LUA = """
local function server_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"""

# KEYS[1] stream, KEYS[2] counter, KEYS[3] floor, KEYS[4] marks.  A counter that is missing
# (first use, or Redis lost its data) or that predates the running Redis server (it restarted,
# maybe from an older snapshot) is seeded from the server's clock, never below its old value
# or the last entry still in the stream; the floor goes just above the seed.
_ENSURE_COUNTER_LUA = _SERVER_US_LUA + """
local function ensure_counter()
  local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  local counter = redis.call('GET', KEYS[2])
  if counter and redis.call('HGET', KEYS[4], 'run') == run then return end
  local seed = server_us()
  if counter and tonumber(counter) > seed then seed = tonumber(counter) end
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #last > 0 then
    local lid = tonumber(string.match(last[1][1], '^(%d+)'))
    if lid > seed then seed = lid end
  end
  redis.call('SET', KEYS[2], string.format('%.0f', seed))
  redis.call('SET', KEYS[3], string.format('%.0f', seed + 1))
  redis.call('HSET', KEYS[4], 'run', run)
end
"""

# KEYS[1] stream, KEYS[2] counter, KEYS[3] floor.  The hard bound: after an append, the
# entries whose (last) cursor is below ``counter - max_events + 1`` go and the floor rises to
# it, as a trim by count does (``_TRIM_LUA``).  ``__MAX_EVENTS__`` is the log's bound
# (:func:`_bounded`).
_BOUND_LUA = """
local function bound()
  local cutoff = tonumber(redis.call('GET', KEYS[2])) - __MAX_EVENTS__ + 1
  local floor = tonumber(redis.call('GET', KEYS[3]) or '0')
  if cutoff > floor then
    redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f', cutoff) .. '-0')
    redis.call('SET', KEYS[3], string.format('%.0f', cutoff))
  end
end
"""

# KEYS: stream, counter, floor, marks, spaces, metrics [, dedupe]
# ARGV: space, now_us, minute, dedupe_ttl, n, then n * (p, k, s, d)
_APPEND_LUA = _ENSURE_COUNTER_LUA + _BOUND_LUA + """
ensure_counter()
if KEYS[7] then
  if not redis.call('SET', KEYS[7], '1', 'NX', 'EX', tonumber(ARGV[4])) then
    return {}
  end
end
local n = tonumber(ARGV[5])
local out = {}
local now = ARGV[2]
for i = 0, n - 1 do
  local base = 6 + i * 4
  local c = redis.call('INCR', KEYS[2])
  -- format explicitly: Lua would print a 16-digit number in exponent notation
  redis.call('XADD', KEYS[1], string.format('%.0f', c) .. '-0',
    'p', ARGV[base], 'k', ARGV[base + 1], 's', ARGV[base + 2], 'd', ARGV[base + 3], 't', now)
  out[#out + 1] = c
end
if n > 0 then
  redis.call('HSETNX', KEYS[4], ARGV[3], string.format('%.0f', out[1]))
  redis.call('SADD', KEYS[5], ARGV[1])
  -- the events-appended counter of bulkjobs.metrics, counted here to cost no round trip
  redis.call('HINCRBY', KEYS[6], ARGV[1] == 'cc' and 'events:cc' or 'events:project', n)
  bound()
end
return out
"""

# KEYS: stream, counter, floor, marks, spaces, metrics [, once]
# ARGV: space, now_us, minute, m, then m * (n, p, a, y, g), then once_ttl
# -> {first cursor, last cursor}, {0, 0} when the once key was set already.
# One entry per pack, its id the pack's last cursor (see the module docstring).
_APPEND_PACKED_LUA = _ENSURE_COUNTER_LUA + _BOUND_LUA + """
ensure_counter()
local m = tonumber(ARGV[4])
if KEYS[7] then
  if not redis.call('SET', KEYS[7], '1', 'NX', 'EX', tonumber(ARGV[5 + m * 5])) then
    return {0, 0}
  end
end
local now = ARGV[2]
local first, last, total = 0, 0, 0
for i = 0, m - 1 do
  local base = 5 + i * 5
  local n = tonumber(ARGV[base])
  local c = redis.call('INCRBY', KEYS[2], n)
  redis.call('XADD', KEYS[1], string.format('%.0f', c) .. '-0', 'n', ARGV[base],
    'p', ARGV[base + 1], 'a', ARGV[base + 2], 'y', ARGV[base + 3], 'g', ARGV[base + 4], 't', now)
  if i == 0 then first = c - n + 1 end
  last = c
  total = total + n
end
if total > 0 then
  redis.call('HSETNX', KEYS[4], ARGV[3], string.format('%.0f', first))
  redis.call('SADD', KEYS[5], ARGV[1])
  redis.call('HINCRBY', KEYS[6], ARGV[1] == 'cc' and 'events:cc' or 'events:project', total)
  bound()
end
return {first, last}
"""

# KEYS: stream, counter, floor, marks ; ARGV: now_us (unused: the seed is the server's clock)
# -> {counter, floor}
_CURSORS_LUA = _ENSURE_COUNTER_LUA + """
ensure_counter()
return {redis.call('GET', KEYS[2]), redis.call('GET', KEYS[3])}
"""

# KEYS: stream, floor, marks ; ARGV: cutoff -> new floor.  MINID removes the entries whose id
# (last cursor) is below the cutoff and keeps a pack straddling it whole: every event at or
# above the cutoff stays, so the cutoff is a correct floor.
_TRIM_LUA = """
local cutoff = tonumber(ARGV[1])
local floor = tonumber(redis.call('GET', KEYS[2]) or '0')
if cutoff <= floor then return string.format('%.0f', floor) end
redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f', cutoff) .. '-0')
redis.call('SET', KEYS[2], string.format('%.0f', cutoff))
return string.format('%.0f', cutoff)
"""

#: Events a single read returns at most (one ``/sync/get`` page).
PAGE = 1000
#: The most events a space holds by default (``SYNC_MAX_EVENTS``; see the hard bound in the
#: module docstring).
MAX_EVENTS = 1_000_000
#: Events one packed entry holds at most: the wire text of one pack (about 150 characters
#: an event) stays one websocket frame (``stream.fanout.FRAME_CHARS``).
PACK = 1000
#: Characters of gids (with their separators) one packed entry holds at most, whatever the
#: gids' length.
PACK_CHARS = 64 * 1024
#: Longest single XREAD BLOCK of a wait for a job's end (:class:`TerminalWait`): well below
#: the clients' socket timeout (``bulkjobs.connections.SOCKET_TIMEOUT``, 3 s), or the wait
#: would time out.
WAIT_SLICE = 1.0


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append.  ``body`` holds ``action``, ``data_type``, ``data_key`` and
    optionally ``data``; ``type`` and ``cursor`` are added by the log."""

    project: str
    key: str
    body: dict[str, Any]
    status: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    """An event read back from the log."""

    space: str
    cursor: int
    project: str
    key: str
    status: str
    body: str  # JSON object text without type/cursor

    @property
    def text(self) -> str:
        """The event's wire JSON, exactly as SPEC §7 shapes it (``type`` and ``cursor`` first)."""
        return f'{{"type":{json.dumps(self.space)},"cursor":{self.cursor},{self.body[1:]}'

    def as_dict(self) -> dict[str, Any]:
        return json.loads(self.text)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def first(self) -> int:
        """The lowest cursor this item holds (:class:`Pack` holds several)."""
        return self.cursor

    @property
    def n(self) -> int:
        """Events this item holds."""
        return 1


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


TERMINAL = frozenset({"done", "rejected"})


@dataclass(frozen=True, slots=True)
class Page:
    events: list[Event]
    floor: int
    last: int  # the space's current cursor
    recovered: bool  # False: events after the given cursor were lost to trimming or a reset
    more: bool  # True: more events follow the last one returned


def job_event(
    *, token: str, project: str, job: str, status: str, info: dict[str, Any],
    created_on: float, updated_on: float, insert: bool = False,
) -> NewEvent:
    """The ``cc`` event for one job state, shaped as SPEC §7 says."""
    body = {
        "action": "INSERT" if insert else "UPDATE",
        "data_type": "jobs",
        "data_key": token,
        "data": {
            "project_gid": project, "job": job, "status": status, "info": info,
            "created_on": created_on, "updated_on": updated_on,
        },
    }
    return NewEvent(project=project, key=token, body=body, status=status)


def record_event(*, project: str, data_type: str, gid: str, action: str) -> NewEvent:
    """A project-space notification (no ``data``): ``records`` UPDATE/DELETE and the like."""
    body = {"action": action, "data_type": data_type, "data_key": gid}
    return NewEvent(project=project, key=gid, body=body)


def _now_us() -> int:
    return int(time.time() * 1_000_000)


def _append_keys(space: str, once: str | None) -> list[str]:
    """The KEYS of both append scripts: stream, counter, floor, marks, spaces, metrics, and
    the once-key when there is one."""
    keylist = [
        keys.sync_stream(space), keys.sync_counter(space), keys.sync_floor(space),
        keys.sync_marks(space), keys.sync_spaces(), keys.metrics(),
    ]
    if once:
        keylist.append(once)
    return keylist


def _append_call(
    space: str, events: Sequence[NewEvent], dedupe: str | None, dedupe_ttl: int
) -> tuple[list[str], list[Any]]:
    now_us = _now_us()
    keylist = _append_keys(space, dedupe)
    args: list[Any] = [space, now_us, now_us // 60_000_000, dedupe_ttl, len(events)]
    for ev in events:
        args += [ev.project, ev.key, ev.status, json.dumps(ev.body, separators=(",", ":"))]
    return keylist, args


def _cursor_call(space: str) -> tuple[list[str], list[Any]]:
    return [
        keys.sync_stream(space), keys.sync_counter(space), keys.sync_floor(space),
        keys.sync_marks(space),
    ], [_now_us()]


def _packed_call(
    space: str, packs: Sequence[tuple[str, str, Sequence[str]]], once: str | None = None,
    once_ttl: int = 0,
) -> tuple[list[str], list[Any]]:
    now_us = _now_us()
    keylist = _append_keys(space, once)
    args: list[Any] = [space, now_us, now_us // 60_000_000, len(packs)]
    for data_type, action, gids in packs:
        joined = " ".join(gids)
        if joined.count(" ") != len(gids) - 1:
            raise ValueError("a gid of a packed entry holds a space")
        args += [len(gids), space, action, data_type, joined]
    args.append(once_ttl)
    return keylist, args


def _field(f: dict[Any, Any], name: bytes, default: str = "") -> str:
    v = f.get(name)
    if v is None:
        v = f.get(name.decode(), default)
    return v.decode() if isinstance(v, bytes) else str(v)


def decode_items(space: str, entries: Iterable[tuple[Any, dict[Any, Any]]]) -> list[Item]:
    """Turn raw XRANGE/XREAD entries into :class:`Event` and :class:`Pack` items."""
    out: list[Item] = []
    for entry_id, f in entries:
        eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        cursor = int(eid.split("-", 1)[0])
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


def decode(space: str, entries: Iterable[tuple[Any, dict[Any, Any]]]) -> list[Event]:
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


def count_events(items: Iterable[Item]) -> int:
    return sum(item.n for item in items)


class Pager:
    """One read of a space's events after a cursor, without I/O: which ``XRANGE`` calls to
    make next and what their replies hold.  :meth:`SyncLog.read`,
    :meth:`AsyncSyncLog.read_items` and the stream server's replay drive it.

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
            for item in decode_items(self.space, raw or ()):
                got = True
                if item.cursor <= self.pos:
                    continue
                if item.first <= self.pos:
                    assert isinstance(item, Pack)
                    item = item.since(self.pos)
                self.items.append(item)
                self.pos = item.cursor
                self.need -= item.n
        if not got or self.need <= 0 or (self.upto is not None and self.pos >= self.upto):
            self.done = True


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _bounded(script: str, max_events: int) -> str:
    """An append script with the log's hard bound written in (it is part of the script's
    text, so that every append through the log keeps it, whichever call builds the
    arguments)."""
    if max_events < 1:
        raise ValueError("max_events must be at least 1")
    return script.replace("__MAX_EVENTS__", str(int(max_events)))


def is_recovered(after: int, floor: int, last: int) -> bool:
    """Can a reader that has seen everything up to ``after`` be caught up by replay?  Not
    from below the floor (trimmed or lost), nor from above the counter (a cursor of a history
    this log no longer has)."""
    return floor - 1 <= after <= last


class SyncLog:
    """The sync log over a synchronous Redis client (worker, API, CLI)."""

    def __init__(self, client: redis.Redis, *, dedupe_ttl: int = 2 * 86_400,
                 max_events: int = MAX_EVENTS) -> None:
        self.r = client
        self.max_events = max_events
        self._append = client.register_script(_bounded(_APPEND_LUA, max_events))
        self._append_packed = client.register_script(_bounded(_APPEND_PACKED_LUA, max_events))
        self._cursors = client.register_script(_CURSORS_LUA)
        self._trim = client.register_script(_TRIM_LUA)
        self.dedupe_ttl = dedupe_ttl

    def append(
        self, space: str, events: Sequence[NewEvent], *, once_key: str | None = None
    ) -> list[int]:
        """Append events atomically; returns their cursors.  With ``once_key`` the append
        happens at most once for that key (an empty list means it had happened already)."""
        if not events:
            return []
        k, a = _append_call(space, events, once_key, self.dedupe_ttl)
        return [int(c) for c in self._append(keys=k, args=a)]

    def append_each(
        self, space: str, appends: Sequence[tuple[Sequence[NewEvent], str]]
    ) -> list[list[int]]:
        """Several :meth:`append` calls, each at most once for its once-key, sent in one
        round trip (a pipeline; each call atomic by itself); the cursors of each, an empty
        list for one that had happened already."""
        pipe = self.r.pipeline(transaction=False)
        for events, once_key in appends:
            k, a = _append_call(space, events, once_key, self.dedupe_ttl)
            self._append(keys=k, args=a, client=pipe)
        return [[int(c) for c in reply] for reply in pipe.execute()]

    def cursors(self, space: str) -> tuple[int, int]:
        """``(current cursor, floor)`` of a space, seeding them if missing."""
        k, a = _cursor_call(space)
        c, f = self._cursors(keys=k, args=a)
        return int(c), int(f)

    def cursor(self, space: str) -> int:
        return self.cursors(space)[0]

    def append_records(
        self, project: str, groups: Iterable[tuple[str, str, Sequence[str]]], *,
        once_key: str | None = None,
    ) -> range:
        """Append record-level events ``(data type, action, gids)`` of one project, packed
        (:func:`pack`, one entry per pack) in one atomic script call; returns their cursors,
        consecutive in the groups' order.  With ``once_key`` the append happens at most once
        for that key (an empty range means it had happened already)."""
        packs = pack(groups)
        if not packs:
            return range(0)
        k, a = _packed_call(project, packs, once_key, self.dedupe_ttl)
        first, last = (int(c) for c in self._append_packed(keys=k, args=a))
        return range(first, last + 1) if first else range(0)

    def read(self, space: str, after: int, *, count: int = PAGE) -> Page:
        """Events with cursor > ``after`` (at most ``count``; a page may end inside a packed
        entry).  When ``after`` is below the floor (or above the counter) the page starts at
        the floor and ``recovered`` is False."""
        last, floor = self.cursors(space)
        recovered = is_recovered(after, floor, last)
        # Not recovered: start at the floor (entries below it may be left over from before a
        # restart, and are not part of the complete history).
        pager = Pager(space, after if recovered else floor - 1, count + 1)
        stream = keys.sync_stream(space)
        while not pager.done:
            with self.r.pipeline(transaction=False) as pipe:
                for start, end, n in pager.ranges():
                    pipe.xrange(stream, start, end, count=n)
                pager.take(pipe.execute())
        events = expand(pager.items, count + 1)
        return Page(events[:count], floor, last, recovered, len(events) > count)

    def trim(self, space: str, *, keep: int, keep_seconds: float, now: float | None = None) -> int:
        """Drop entries beyond both retention bounds; returns the new floor."""
        now = time.time() if now is None else now
        last, floor = self.cursors(space)
        by_count = last - keep + 1
        by_time = _time_cutoff(self.r.hgetall(keys.sync_marks(space)), now - keep_seconds)
        cutoff = min(by_count, by_time)
        new_floor = int(self._trim(
            keys=[keys.sync_stream(space), keys.sync_floor(space), keys.sync_marks(space)],
            args=[cutoff],
        ))
        old_minutes = [m for m, c in _minute_marks(self.r.hgetall(keys.sync_marks(space)))
                       if c < new_floor]
        if old_minutes:
            self.r.hdel(keys.sync_marks(space), *old_minutes)
        return new_floor

    def spaces(self) -> list[str]:
        return sorted(_s(s) for s in self.r.smembers(keys.sync_spaces()))

    def wait_terminal(self, token: str, *, after: int, timeout: float) -> bool:
        """Block (``XREAD BLOCK`` on the ``cc`` stream, no polling) until the terminal event
        of job ``token`` is appended after cursor ``after``, or ``timeout`` seconds pass.
        True when it was seen.  Take ``after`` before queueing the job, so that its terminal
        event cannot slip in between.  Blocks in slices shorter than the client's socket
        timeout."""
        wait = TerminalWait(token, after=after, timeout=timeout)
        while (block_ms := wait.block_ms()) is not None:
            if wait.seen(self.r.xread(wait.streams(), count=PAGE, block=block_ms)):
                return True
        return False


class TerminalWait:
    """The state of one wait for a job's terminal event on the ``cc`` stream, without I/O:
    what to read next and whether a reply holds the event.  :meth:`SyncLog.wait_terminal`
    and :meth:`AsyncSyncLog.wait_terminal` drive it, each with its own client."""

    def __init__(self, token: str, *, after: int, timeout: float) -> None:
        self.token = token
        self.last = f"{after}-0"
        self.deadline = time.monotonic() + timeout

    def block_ms(self) -> int | None:
        """How long the next ``XREAD`` may block (one slice at most, see
        :data:`WAIT_SLICE`); ``None`` once the time is up."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return None
        return max(1, int(min(remaining, WAIT_SLICE) * 1000))

    def streams(self) -> dict[Any, Any]:
        """The ``XREAD`` argument: the ``cc`` stream, after the last entry seen."""
        return {keys.sync_stream(keys.CC_SPACE): self.last}

    def seen(self, reply: Any) -> bool:
        """Take in one ``XREAD`` reply: True when it holds the job's terminal event."""
        for _, entries in reply or []:
            for event in decode(keys.CC_SPACE, entries):
                self.last = f"{event.cursor}-0"
                if event.key == self.token and event.terminal:
                    return True
        return False


def _time_cutoff(marks: dict[Any, Any], older_than: float) -> int:
    """The first cursor appended at or after the newest minute mark that is fully older than
    ``older_than``: everything below it is older than the time bound."""
    limit_minute = int(older_than // 60)
    eligible = [c for m, c in _minute_marks(marks) if int(m) <= limit_minute]
    # The minute *after* the last eligible one starts at a cursor we do not know; the mark of
    # the newest eligible minute is a safe (conservative) cutoff.
    return max(eligible) if eligible else 0


def _minute_marks(marks: dict[Any, Any]) -> list[tuple[Any, int]]:
    """``(minute field, first cursor)`` pairs of a marks hash, without its ``run`` field."""
    return [(m, int(c)) for m, c in marks.items() if _s(m).isdigit()]


class AsyncSyncLog:
    """The same log over an asyncio Redis client (stream server, async routes)."""

    def __init__(self, client: redis.asyncio.Redis, *, max_events: int = MAX_EVENTS) -> None:
        self.r = client
        self.max_events = max_events
        self._append = client.register_script(_bounded(_APPEND_LUA, max_events))
        self._cursors = client.register_script(_CURSORS_LUA)

    async def append(self, space: str, events: Sequence[NewEvent]) -> list[int]:
        if not events:
            return []
        k, a = _append_call(space, events, None, 0)
        return [int(c) for c in await self._append(keys=k, args=a)]

    async def cursors(self, space: str) -> tuple[int, int]:
        k, a = _cursor_call(space)
        c, f = await self._cursors(keys=k, args=a)
        return int(c), int(f)

    async def cursors_many(self, spaces: Iterable[str]) -> dict[str, tuple[int, int]]:
        """:meth:`cursors` of many spaces in one round trip."""
        spaces = list(spaces)
        async with self.r.pipeline(transaction=False) as pipe:
            for space in spaces:
                k, a = _cursor_call(space)
                await self._cursors(keys=k, args=a, client=pipe)
            replies = await pipe.execute()
        return {s: (int(c), int(f)) for s, (c, f) in zip(spaces, replies, strict=True)}

    async def read(self, space: str, after: int, *, count: int = PAGE) -> Page:
        """:meth:`SyncLog.read` awaited."""
        last, floor = await self.cursors(space)
        recovered = is_recovered(after, floor, last)
        items = await self.read_items(space, after if recovered else floor - 1, count=count + 1)
        events = expand(items, count + 1)
        return Page(events[:count], floor, last, recovered, len(events) > count)

    async def read_items(
        self, space: str, after: int, *, count: int = PAGE, upto: int | None = None
    ) -> list[Item]:
        """Items holding the events after ``after`` (up to ``upto``): about ``count`` events,
        at most one pack more, the first cut to start after ``after`` (see :class:`Pager`)."""
        pager = Pager(space, after, count, upto=upto)
        stream = keys.sync_stream(space)
        while not pager.done:
            async with self.r.pipeline(transaction=False) as pipe:
                for start, end, n in pager.ranges():
                    pipe.xrange(stream, start, end, count=n)
                pager.take(await pipe.execute())
        return pager.items

    async def wait_terminal(self, token: str, *, after: int, timeout: float) -> bool:
        """:meth:`SyncLog.wait_terminal` awaited: holds no thread while it waits."""
        wait = TerminalWait(token, after=after, timeout=timeout)
        while (block_ms := wait.block_ms()) is not None:
            if wait.seen(await self.r.xread(wait.streams(), count=PAGE, block=block_ms)):
                return True
        return False
