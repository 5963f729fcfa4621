"""The fan-out core: per-connection state and the hub that routes events to it.  No I/O.

The asyncio layer (:mod:`stream.server`) owns sockets; this module only decides *which*
events a connection gets, in *which order*, and *when* a connection is too slow.  Everything
here is synchronous and deterministic, so it is tested with plain tables
(``tests/stream/test_fanout.py``).

Contract
--------
* **Routing.**  A ``cc`` job event goes to connections covering ``event.project``: an explicit
  subscription to that project, or a ``"*"`` subscription, and only while the project is in the
  connection's ``allowed`` set (what its user may see).  A project-space event (records,
  schema) goes to subscriptions covering that project *without* a ``jobs`` filter: an
  explicit one, or ``"*"``; a ``jobs`` filter narrows a subscription to those jobs' ``cc``
  events.
* **No duplicates.**  Each connection keeps the last cursor it queued per *(space, project)*:
  per project space, and per project inside the ``cc`` space (``cc`` is shared by every
  project, and a second subscription may legitimately replay older ``cc`` events of *another*
  project).  An event at or below that cursor is never queued again.  The cursors live as long
  as some subscription covers the project; unsubscribing forgets them.
* **Order.**  Events are queued in the order they are offered, which the reader and the replay
  keep in cursor order per space; coalescing removes the older entry and appends the newer one,
  so cursors on the wire still only grow.
* **Bounded outbox.**  A connection that keeps up gets every event.  Once its socket stops
  keeping up (the I/O layer sets ``congested``), a queued non-terminal job event
  (``queued``/``processing``) of a token is replaced by a newer event of the same token (the
  newer one carries absolute state, so nothing is lost).  Terminal events are never dropped.
  If a congested outbox still holds more than ``limit`` entries the connection is marked
  ``slow``; the hub stops routing to it and the server closes it with 4008 (the client
  resumes from its last cursor).
* **Hold.**  While a subscription is being set up (snapshot, replay), live events are *held*
  instead of queued, then released through the same dedupe: register first, replay, then drop
  live events at or below what the replay sent.  This makes the replay/live handoff gap-free
  and duplicate-free.
* **Packed entries.**  A :class:`~bulkjobs.synclog.Pack` (a batch's record events of one
  project, action and data type, with consecutive cursors) travels as one item: every
  connection that wants one of its events wants all of them (project-space routing looks at
  the project only), so it is routed, queued and deduplicated as a whole.  Dedupe compares
  its first and last cursors with the connection's: a pack wholly seen is dropped, one
  partly seen (a resume from a cursor inside it, the replay/live handoff) is cut to the
  events after that cursor.  A pack is never coalesced, and counts as one outbox entry (it
  is one frame on the wire, at most :data:`~bulkjobs.synclog.PACK` events): a congested
  connection is closed after ``limit`` entries, single events and packs alike.
* **Direct delivery.**  :meth:`Hub.route` is :meth:`Hub.publish` with a fast path for the
  common case, a read batch of one project's (or one space's) events: a connection that wants
  every event of the batch and has nothing queued, held or congested is not given an outbox
  entry per event; it is *direct*: its dedupe cursor moves past the batch and the caller
  writes the batch to it as it stands.  Which connections want every event of a project is
  kept per project (:meth:`Hub.group`), so routing costs one check per connection per
  batch, not one per event.  :meth:`Hub.publish` is :meth:`Hub.route` with the direct
  connections' batches put in their outboxes, so both make the same decisions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import NamedTuple

from bulkjobs.keys import CC_SPACE
from bulkjobs.statuses import UNFINISHED
from bulkjobs.synclog import Event, Item, Pack

#: Job statuses whose events may be replaced by a newer event of the same job while queued.
COALESCABLE = UNFINISHED

#: Default bound of one connection's outbox (entries left after coalescing).
DEFAULT_LIMIT = 1000

#: A frame is cut after this many characters of events, so that clients with a message size
#: limit (websockets' default is 1 MiB) are never sent a frame they refuse.
FRAME_CHARS = 256 * 1024

# Results of Subscriber.offer.
DROPPED = 0  # not wanted, duplicate, or the connection is slow
QUEUED = 1  # appended to a non-empty outbox
WOKE = 2  # appended to an empty outbox: the connection needs a flush
COALESCED = 3  # replaced an older queued event of the same job
HELD = 4  # kept back while a subscription is being set up

_NOT_SUBSCRIBED = object()


class Subscriber:
    """The state of one connection: who it is, what it subscribed to, what it has been sent
    and what is waiting to be written.

    Mutate subscriptions through :class:`Hub` (it keeps its indexes in step); the outbox is
    read by the server with :meth:`take`.  ``__slots__`` keep an idle connection to a few
    hundred bytes here.
    """

    __slots__ = (
        "user", "ops", "allowed", "projects", "star", "star_jobs", "star_base",
        "sent_cc", "sent_space", "outbox", "held", "limit", "slow", "congested",
    )

    def __init__(
        self, *, user: str, ops: bool = False, allowed: Iterable[str] = (),
        limit: int = DEFAULT_LIMIT,
    ) -> None:
        self.user = user
        self.ops = ops
        self.allowed: frozenset[str] = frozenset(allowed)
        #: Explicit subscriptions: project gid -> jobs filter (None: every job).
        self.projects: dict[str, frozenset[str] | None] = {}
        self.star = False
        self.star_jobs: frozenset[str] | None = None
        #: Dedupe cursor of cc events of projects covered only by "*" and not yet sent.
        self.star_base = -1
        self.sent_cc: dict[str, int] = {}
        self.sent_space: dict[str, int] = {}
        # Insertion-ordered: non-terminal job events are keyed by token (so a newer one can
        # replace them), everything else by id(event) (unique while the event is queued).
        self.outbox: dict[object, Item] = {}
        self.held: list[Item] | None = None
        self.limit = limit
        self.slow = False
        #: Set by the I/O layer while the socket is not keeping up: coalesce and bound.
        self.congested = False

    # -- what this connection wants -------------------------------------------------------

    def wants(self, ev: Item) -> bool:
        """Is ``ev`` covered by a subscription of this connection that its user may see?"""
        if ev.space == CC_SPACE:
            project = ev.project
            if project not in self.allowed:
                return False
            if project in self.projects:
                jobs = self.projects[project]
                if jobs is None or ev.key in jobs:
                    return True
            return self.star and (self.star_jobs is None or ev.key in self.star_jobs)
        project = ev.space
        if project not in self.allowed:
            return False
        return self.projects.get(project, _NOT_SUBSCRIBED) is None or (
            self.star and self.star_jobs is None
        )

    def wants_all_cc(self, project: str) -> bool:
        """Does this connection want every ``cc`` event of ``project`` (no ``jobs`` filter
        narrows the subscription that covers it)?"""
        if project not in self.allowed:
            return False
        return (project in self.projects and self.projects[project] is None) or (
            self.star and self.star_jobs is None
        )

    def covered_cc(self) -> set[str]:
        """Projects whose cc events this connection receives."""
        covered = set(self.projects)
        if self.star:
            covered |= self.allowed
        return covered & self.allowed

    def covered_spaces(self) -> set[str]:
        """Project spaces this connection receives."""
        if self.star and self.star_jobs is None:
            return set(self.allowed)
        return {p for p, jobs in self.projects.items() if jobs is None and p in self.allowed}

    # -- queueing -------------------------------------------------------------------------

    def offer(self, ev: Item) -> int:
        """Route one live event to this connection; returns one of the result constants."""
        if self.slow or not self.wants(ev):
            return DROPPED
        if self.held is not None:
            self.held.append(ev)
            # A subscription set-up that takes so long that this many live events arrive
            # meanwhile is treated like a slow consumer.
            if len(self.held) > self.limit:
                self.slow = True
            return HELD
        return self._enqueue(ev, bounded=True)

    def _enqueue(self, ev: Item, *, bounded: bool) -> int:
        item = self._advance(ev)
        if item is None:
            return DROPPED
        ev = item
        box = self.outbox
        was_empty = not box
        result = QUEUED
        if ev.status and self.congested:
            # A job event: may replace, or later be replaced by, one of the same token.
            if box.pop(ev.key, None) is not None:
                result = COALESCED
            box[ev.key if ev.status in COALESCABLE else id(ev)] = ev
        else:
            box[id(ev)] = ev
            if not self.congested:
                # The outbox is flushed right after the current batch, so it holds at most
                # one reader batch and every event goes out.
                return WOKE if was_empty else result
            # Congested: record events cannot be coalesced, but they count towards the bound
            # (a "*" subscription receives every visible project's record events).
        if bounded and len(box) > self.limit:
            self.slow = True
        return WOKE if was_empty else result

    def _advance(self, ev: Item) -> Item | None:
        """Record ``ev`` as sent unless an event at or above its cursor already was; returns
        what is left to send (a packed entry partly sent already is cut), or None."""
        if ev.space == CC_SPACE:
            sent, key = self.sent_cc, ev.project
            last = sent.get(key, self.star_base)
        else:
            sent, key = self.sent_space, ev.space
            last = sent.get(key, -1)
        if ev.cursor <= last:
            return None
        if ev.first <= last:
            assert isinstance(ev, Pack)  # a single event has first == cursor
            ev = ev.since(last)
        sent[key] = ev.cursor
        return ev

    def requeue(self, events: list[Item]) -> None:
        """Queue a batch that was routed to this connection directly (already past its
        dedupe) but could not be written at once; the outbox was empty."""
        box = self.outbox
        for ev in events:
            box[id(ev)] = ev

    def take(self) -> list[Item]:
        """Everything queued, in order; the outbox is left empty."""
        if not self.outbox:
            return []
        events = list(self.outbox.values())
        self.outbox.clear()
        return events

    @property
    def pending(self) -> int:
        return len(self.outbox)

    def hold(self) -> None:
        """Keep live events back (in arrival order) until :meth:`Hub.release`."""
        if self.held is None:
            self.held = []

    def _purge(self) -> None:
        """Drop queued and held events that no subscription covers any more."""
        if self.outbox:
            self.outbox = {k: e for k, e in self.outbox.items() if self.wants(e)}
        if self.held:
            self.held = [e for e in self.held if self.wants(e)]


class Routed(NamedTuple):
    """What :meth:`Hub.route` decided for one read batch."""

    #: The batch, in order: what every ``direct`` connection is to be sent now.
    events: list[Item]
    #: Connections that get exactly ``events``; their dedupe cursors are already past them,
    #: and nothing is queued for them.
    direct: list[Subscriber]
    #: Connections whose outbox just became non-empty (flush them).
    woken: list[Subscriber]
    #: Connections that just became too slow (close them; they are out of the hub).
    slow: list[Subscriber]


class Hub:
    """Routes events to subscribers through two indexes (project -> subscribers of its cc
    events, project -> subscribers of its own space), so an event costs only its matches.

    Counters (``coalesced``) are plain integers; the server exposes them as metrics.
    """

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self.cc_index: dict[str, set[Subscriber]] = {}
        self.space_index: dict[str, set[Subscriber]] = {}
        self.coalesced = 0
        #: project -> (connections wanting every cc event of it, the others of cc_index),
        #: built on demand and dropped whenever a subscription covering the project changes.
        self._groups: dict[str, tuple[list[Subscriber], list[Subscriber]]] = {}

    def group(self, project: str) -> tuple[list[Subscriber], list[Subscriber]]:
        """The connections receiving ``cc`` events of ``project``, split into those that
        want all of them and those whose ``jobs`` filter narrows them."""
        group = self._groups.get(project)
        if group is None:
            every: list[Subscriber] = []
            some: list[Subscriber] = []
            for sub in self.cc_index.get(project, ()):
                (every if sub.wants_all_cc(project) else some).append(sub)
            group = self._groups[project] = (every, some)
        return group

    # -- membership of the hub ------------------------------------------------------------

    def add(self, sub: Subscriber) -> None:
        self.subscribers.add(sub)

    def remove(self, sub: Subscriber) -> None:
        """Forget a connection entirely (closed, or being closed)."""
        self.subscribers.discard(sub)
        covered = sub.covered_cc()
        self._unindex(sub, covered, sub.covered_spaces())
        self._regroup(covered)

    def __contains__(self, sub: Subscriber) -> bool:
        return sub in self.subscribers

    @property
    def subscriptions(self) -> int:
        return sum(len(s.projects) + s.star for s in self.subscribers)

    def spaces(self) -> set[str]:
        """Project spaces that currently have at least one subscriber (the reader's list)."""
        return set(self.space_index)

    # -- subscriptions --------------------------------------------------------------------

    def subscribe(
        self, sub: Subscriber, project: str, *, jobs: Iterable[str] | None = None
    ) -> None:
        """Add (or replace) a subscription; ``project`` is a gid or ``"*"``.  Events start to
        flow (or to be held) at once; call :meth:`start` to set where they start."""
        before = sub.covered_cc(), sub.covered_spaces()
        filt = None if jobs is None else frozenset(jobs)
        if project == "*":
            sub.star, sub.star_jobs = True, filt
        else:
            sub.projects[project] = filt
        sub._purge()  # a narrower jobs filter may have replaced a wider one
        self._reindex(sub, *before)

    def start(self, sub: Subscriber, project: str, *, cc: int, space: int | None = None) -> None:
        """Declare that the subscription to ``project`` has seen everything up to ``cc`` (and
        ``space`` in the project's own space).  Dedupe cursors only move forward."""
        if project == "*":
            sub.star_base = max(sub.star_base, cc)
            for p, last in sub.sent_cc.items():
                if p not in sub.projects and last < cc:
                    sub.sent_cc[p] = cc
            return
        if sub.sent_cc.get(project, -1) < cc:
            sub.sent_cc[project] = cc
        if space is not None and sub.sent_space.get(project, -1) < space:
            sub.sent_space[project] = space

    def unsubscribe(self, sub: Subscriber, project: str) -> bool:
        """Remove a subscription; False when there was none."""
        before = sub.covered_cc(), sub.covered_spaces()
        if project == "*":
            if not sub.star:
                return False
            sub.star, sub.star_jobs, sub.star_base = False, None, -1
        elif sub.projects.pop(project, _NOT_SUBSCRIBED) is _NOT_SUBSCRIBED:
            return False
        self._forget(sub)
        sub._purge()
        self._reindex(sub, *before)
        return True

    def set_allowed(self, sub: Subscriber, allowed: Iterable[str]) -> list[str]:
        """Apply a membership refresh.  Explicit subscriptions to projects no longer allowed
        are removed; returns every project whose events the connection stops receiving."""
        allowed = frozenset(allowed)
        if allowed == sub.allowed:
            return []
        before_cc, before_space = sub.covered_cc(), sub.covered_spaces()
        sub.allowed = allowed
        for project in [p for p in sub.projects if p not in allowed]:
            del sub.projects[project]
        self._forget(sub)
        sub._purge()
        self._reindex(sub, before_cc, before_space)
        return sorted((before_cc | before_space) - sub.covered_cc() - sub.covered_spaces())

    # -- delivery -------------------------------------------------------------------------

    def publish(self, events: Iterable[Item]) -> tuple[list[Subscriber], list[Subscriber]]:
        """Route live events (in cursor order per space) into outboxes.  Returns ``(woken,
        slow)``: connections whose outbox just became non-empty (flush them), and connections
        that just became too slow (close them with 4008; they are already out of the hub)."""
        routed = self.route(list(events))
        for sub in routed.direct:
            sub.requeue(routed.events)
        return routed.direct + routed.woken, routed.slow

    def route(self, events: list[Item]) -> Routed:
        """Route one read batch of live events (one space, in cursor order).  Same decisions
        as :meth:`publish`, but connections that get the whole batch as it stands are
        returned as ``direct`` instead of having it queued (see the module docstring)."""
        direct: list[Subscriber] = []
        woken: list[Subscriber] = []
        slow: list[Subscriber] = []
        if not events:
            return Routed(events, direct, woken, slow)
        first = events[0]
        cc = first.space == CC_SPACE
        key = first.project if cc else first.space
        if not _uniform(events, cc):
            # Several projects' events in one batch: the general path, event by event.
            for ev in events:
                if ev.space == CC_SPACE:
                    subs = self.cc_index.get(ev.project)
                else:
                    subs = self.space_index.get(ev.space)
                if subs:
                    self._offer([ev], subs, woken, slow)
            every: list[Subscriber] = []
            some: list[Subscriber] = []
        elif cc:
            every, some = self.group(key)
        else:
            every, some = list(self.space_index.get(key, ())), []
        if every:
            low, high = first.first, events[-1].cursor
            rest: list[Subscriber] = []
            for sub in every:
                # Nothing queued, held or congested, and the whole batch is new to it: its
                # dedupe cursor jumps to the batch's last (the batch is in cursor order).
                if sub.held is None and not sub.congested and not sub.slow and not sub.outbox:
                    if cc:
                        sent = sub.sent_cc
                        if sent.get(key, sub.star_base) < low:
                            sent[key] = high
                            direct.append(sub)
                            continue
                    else:
                        sent = sub.sent_space
                        if sent.get(key, -1) < low:
                            sent[key] = high
                            direct.append(sub)
                            continue
                rest.append(sub)
            some = rest + some if some else rest
        if some:
            self._offer(events, some, woken, slow)
        for sub in slow:
            self.remove(sub)
        return Routed(events, direct, woken, slow)

    def _offer(
        self, events: list[Item], subs: Iterable[Subscriber],
        woken: list[Subscriber], slow: list[Subscriber],
    ) -> None:
        for sub in subs:
            for ev in events:
                result = sub.offer(ev)
                if result == WOKE:
                    woken.append(sub)
                elif result == COALESCED:
                    self.coalesced += 1
                if sub.slow and result != DROPPED:
                    slow.append(sub)
                    break

    def replay(self, sub: Subscriber, events: Iterable[Item]) -> int:
        """Queue replayed events (read from the log, in cursor order) for one connection.
        The outbox bound does not apply: the caller drains between pages."""
        queued = 0
        for ev in events:
            if sub.wants(ev):
                result = sub._enqueue(ev, bounded=False)
                if result != DROPPED:
                    queued += 1
                if result == COALESCED:
                    self.coalesced += 1
        return queued

    def release(self, sub: Subscriber) -> bool:
        """End a hold: held events go through dedupe into the outbox.  Returns True when the
        outbox has something to flush.  A connection that became slow is removed."""
        held, sub.held = sub.held, None
        for ev in held or ():
            if sub._enqueue(ev, bounded=True) == COALESCED:
                self.coalesced += 1
        if sub.slow:
            self.remove(sub)
            return False
        return bool(sub.outbox)

    def gap(self, space: str) -> list[Subscriber]:
        """Events of ``space`` were lost before the reader saw them (Redis lost data, or the
        log was trimmed past the reader).  Every connection covering the space is removed
        and returned: the server closes them with 4008, and on resume their cursor is below
        the new floor, so they are told ``recovered: false``."""
        if space == CC_SPACE:
            hit = {s for subs in self.cc_index.values() for s in subs}
        else:
            hit = set(self.space_index.get(space, ()))
        for sub in hit:
            sub.slow = True
            self.remove(sub)
        return list(hit)

    # -- indexes --------------------------------------------------------------------------

    def _forget(self, sub: Subscriber) -> None:
        """Drop dedupe cursors of projects no subscription covers any more."""
        covered = sub.covered_cc()
        for p in [p for p in sub.sent_cc if p not in covered]:
            del sub.sent_cc[p]
        spaces = sub.covered_spaces()
        for p in [p for p in sub.sent_space if p not in spaces]:
            del sub.sent_space[p]

    def _reindex(self, sub: Subscriber, before_cc: set[str], before_space: set[str]) -> None:
        if sub not in self.subscribers:
            return
        after_cc, after_space = sub.covered_cc(), sub.covered_spaces()
        _move(self.cc_index, sub, before_cc - after_cc, after_cc - before_cc)
        _move(self.space_index, sub, before_space - after_space, after_space - before_space)
        # A jobs filter may have changed without the covered projects changing.
        self._regroup(before_cc | after_cc)

    def _regroup(self, projects: Iterable[str]) -> None:
        groups = self._groups
        if groups:
            for p in projects:
                groups.pop(p, None)

    def _unindex(self, sub: Subscriber, cc: set[str], spaces: set[str]) -> None:
        _move(self.cc_index, sub, cc, ())
        _move(self.space_index, sub, spaces, ())


def _uniform(events: list[Item], cc: bool) -> bool:
    """Are ``events`` all of one space (and, in ``cc``, one project), in cursor order?"""
    first = events[0]
    space, project, last = first.space, first.project, first.first - 1
    for ev in events:
        if ev.space != space or (cc and ev.project != project) or ev.first <= last:
            return False
        last = ev.cursor
    return True


def _move(
    index: dict[str, set[Subscriber]], sub: Subscriber,
    removed: Iterable[str], added: Iterable[str],
) -> None:
    for p in removed:
        subs = index.get(p)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del index[p]
    for p in added:
        index.setdefault(p, set()).add(sub)


@lru_cache(maxsize=16384)
def render(ev: Event) -> str:
    """``ev.text``, built once per event however many connections it goes to.  (A
    :class:`~bulkjobs.synclog.Pack` keeps its own text: it is not cached here, where it
    would stay alive.)"""
    return ev.text


def frames(events: list[Item], *, max_chars: int = FRAME_CHARS) -> Iterator[str]:
    """``{"op":"sync","sync":[…]}`` frames carrying ``events`` in order, joined from the
    pre-rendered event texts (never re-serialised), cut at about ``max_chars``."""
    for frame, _ in framed(events, max_chars=max_chars):
        yield frame


def framed(events: list[Item], *, max_chars: int = FRAME_CHARS) -> Iterator[tuple[str, int]]:
    """:func:`frames`, each with the index in ``events`` where the next frame starts (so a
    writer that stops after a frame knows what is left).  A pack is never cut: its text is
    one frame's contents at most (see :data:`~bulkjobs.synclog.PACK`)."""
    chunk: list[str] = []
    size = 0
    for i, ev in enumerate(events):
        text = ev.text if type(ev) is Pack else render(ev)  # type: ignore[arg-type]
        if chunk and size + len(text) > max_chars:
            yield _frame(chunk), i
            chunk, size = [], 0
        chunk.append(text)
        size += len(text) + 1
    if chunk:
        yield _frame(chunk), len(events)


def _frame(texts: list[str]) -> str:
    return '{"op":"sync","sync":[' + ",".join(texts) + "]}"
