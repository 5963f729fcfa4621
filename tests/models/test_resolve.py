"""Selection resolution (``models/resolve.py``) against the real database.

Each resolution runs in a transaction that is rolled back, so one seeded database serves a
whole test (and every example of the property test).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select, text, update

from models import Project, Record, RecordDeletion
from models.engine import get_engine, get_write_engine
from models.resolve import Mode, resolve_into
from models.seed import SeedResult
from models.selection import Children, Gids, Search, parse_selection
from tests.worker.helpers import PUBLIC_STATUS

records_t = Record.__table__
deletions_t = RecordDeletion.__table__
LIVE = ("draft", "published")

pytestmark = pytest.mark.services


@dataclass
class Rec:
    id: int
    gid: str
    parent: str | None
    status: str
    channels: list[str]
    orderings: dict[str, int]


@dataclass
class Tree:
    """One seeded project as plain data: enough to predict what a selection resolves to."""

    gid: str
    root: str
    heads: list[str]
    channels: list[str]  # channel keys, "__all__" first
    orderings: list[str]  # ordering keys
    by_gid: dict[str, Rec]

    def children(self, parent: str) -> list[Rec]:
        return sorted((r for r in self.by_gid.values() if r.parent == parent), key=lambda r: r.id)

    @property
    def deleted_head(self) -> str:
        return next(h for h in self.heads if self.by_gid[h].status == "deleted")

    @property
    def live_heads(self) -> list[str]:
        return [h for h in self.heads if self.by_gid[h].status != "deleted"]


def load_tree(project_gid: str, heads: list[str], root: str) -> Tree:
    with get_engine().connect() as conn:
        project = conn.execute(select(Project.__table__).where(Project.gid == project_gid)).one()
        # the public status: ``deleted`` while the record has a deletion row
        rows = conn.execute(
            select(records_t.c.id, records_t.c.gid, records_t.c.parent_id,
                   records_t.c.channels, records_t.c.orderings,
                   PUBLIC_STATUS.label("status"))
            .outerjoin(deletions_t, deletions_t.c.record_id == records_t.c.id)
            .where(records_t.c.project_gid == project_gid)).all()
    gid_of = {r.id: r.gid for r in rows}
    by_gid = {
        r.gid: Rec(r.id, r.gid, gid_of.get(r.parent_id), r.status, list(r.channels),
                   dict(r.orderings or {}))
        for r in rows
    }
    return Tree(project_gid, root, list(heads), list(project.channels), list(project.orderings),
                by_gid)


@pytest.fixture
def trees(seeded: SeedResult) -> tuple[Tree, Tree]:
    """Both seeded projects, loaded as plain data (the first is the one selections run in)."""
    a, b = (load_tree(p.gid, p.heads, p.root) for p in seeded.projects)
    return a, b


def resolve(project_gid: str, value: list[Any], mode: Mode = "live") -> list[str]:
    """Resolve ``value`` and return the resolved gids in ``job_item`` order (rolled back)."""
    token = str(uuid.uuid4())
    with get_write_engine().connect() as conn:
        with conn.begin() as tx:
            count = resolve_into(conn, token=token, project_gid=project_gid,
                                 selection=parse_selection(value), mode=mode)
            gids = list(conn.execute(text(
                "SELECT r.gid FROM job_item j JOIN record r ON r.id = j.item_id "
                "WHERE j.job_token = :t ORDER BY j.id"
            ), {"t": token}).scalars())
            tx.rollback()
    assert count == len(gids)
    return gids


def set_orderings(changes: dict[str, dict[str, int]]) -> None:
    with get_write_engine().begin() as conn:
        for gid, orderings in changes.items():
            conn.execute(update(records_t).where(records_t.c.gid == gid)
                         .values(orderings=orderings))


def test_plain_gids_keep_list_order(trees: tuple[Tree, Tree]) -> None:
    """Plain gids resolve in list order, in any state (live and deleted alike)."""
    a, _ = trees
    picked = [a.children(a.heads[3])[4].gid, a.heads[0], a.deleted_head, a.root,
              a.children(a.deleted_head)[0].gid, a.heads[1]]
    assert resolve(a.gid, picked) == picked
    assert resolve(a.gid, picked[::-1]) == picked[::-1]
    assert resolve(a.gid, picked, mode="deleted") == picked


def test_duplicates_dropped_as_ordered_union(trees: tuple[Tree, Tree]) -> None:
    """A gid seen before is dropped, within a run and across entries; first occurrence wins."""
    a, _ = trees
    head = a.heads[2]
    kids = [r.gid for r in a.children(head)]
    value = [kids[5], head, kids[5], {"children": head}, kids[1], head, {"children": head}]
    assert resolve(a.gid, value) == [kids[5], head] + [k for k in kids if k != kids[5]]


def test_unknown_and_foreign_gids_skipped(trees: tuple[Tree, Tree]) -> None:
    """Unknown gids and another project's gids (plain or as a parent) match nothing."""
    a, b = trees
    value = [str(uuid.uuid4()), b.heads[0], a.heads[0], b.root, "not-a-gid", a.heads[1],
             {"children": b.heads[0]}, {"children": str(uuid.uuid4())},
             b.children(b.heads[1])[0].gid]
    assert resolve(a.gid, value) == [a.heads[0], a.heads[1]]
    assert resolve(b.gid, value) == [b.heads[0], b.root] + [
        r.gid for r in b.children(b.heads[0])] + [b.children(b.heads[1])[0].gid]


def test_children_default_is_live_creation_order(trees: tuple[Tree, Tree]) -> None:
    """A bare children entry yields the direct live children in creation order."""
    a, _ = trees
    head = a.heads[4]
    assert resolve(a.gid, [{"children": head}]) == [r.gid for r in a.children(head)]
    # the root's children: the live heads only (the deleted subtree's head is not live)
    assert resolve(a.gid, [{"children": a.root}]) == a.live_heads


def test_children_exclude_applies_to_its_own_entry_only(trees: tuple[Tree, Tree]) -> None:
    """``exclude`` drops gids from its own entry's results, not from other entries'."""
    a, _ = trees
    kids = [r.gid for r in a.children(a.heads[0])]
    entry = {"children": a.heads[0], "exclude": [kids[0], kids[4], a.heads[1]]}
    rest = [k for k in kids if k not in (kids[0], kids[4])]
    assert resolve(a.gid, [entry]) == rest
    assert resolve(a.gid, [entry, kids[4]]) == rest + [kids[4]]
    assert resolve(a.gid, [kids[4], entry]) == [kids[4]] + rest
    assert resolve(a.gid, [entry, {"children": a.heads[0]}]) == rest + [kids[0], kids[4]]


@pytest.mark.parametrize(
    ("channel_index", "expected"),
    [
        pytest.param(0, "all", id="__all__"),
        pytest.param(1, "web", id="web"),
        pytest.param(2, "print", id="print"),
    ],
)
def test_children_channel(trees: tuple[Tree, Tree], channel_index: int, expected: str) -> None:
    """A ``channel`` keeps only the children enabled in that channel, in creation order."""
    a, _ = trees
    channel = a.channels[channel_index]
    parent = a.children(a.heads[5])[2].gid  # ten grandchildren with mixed channels
    kids = a.children(parent)
    want = [r.gid for r in kids if channel in r.channels]
    assert 0 < len(want) <= len(kids)
    if expected != "all":
        assert len(want) < len(kids)  # the channel really filters
    else:
        assert len(want) == len(kids)
    assert resolve(a.gid, [{"children": parent, "channel": channel}]) == want


def test_children_unknown_channel_matches_nothing(trees: tuple[Tree, Tree]) -> None:
    """A channel no child is in (or another project's channel) selects no children."""
    a, b = trees
    assert resolve(a.gid, [{"children": a.heads[0], "channel": "no-such-channel"}]) == []
    assert resolve(a.gid, [{"children": a.heads[0], "channel": b.channels[1]}]) == []


def test_children_ordering_positions_then_missing_last(trees: tuple[Tree, Tree]) -> None:
    """``ordering`` orders by position; children without a position come last, by creation."""
    a, _ = trees
    alpha, newest = a.orderings
    kids = a.children(a.heads[6])
    # seeded positions: ``alpha`` runs against creation order, ``newest`` with it
    assert resolve(a.gid, [{"children": a.heads[6], "ordering": alpha}]) == [
        r.gid for r in reversed(kids)]
    assert resolve(a.gid, [{"children": a.heads[6], "ordering": newest}]) == [
        r.gid for r in kids]
    # drop the ``alpha`` position of two children, and give two others a tie
    set_orderings({
        kids[1].gid: {newest: 0}, kids[7].gid: {},
        kids[2].gid: {alpha: 1, newest: 0}, kids[5].gid: {alpha: 1, newest: 0},
    })
    got = resolve(a.gid, [{"children": a.heads[6], "ordering": alpha}])
    positioned = [k for k in kids if k.gid not in (kids[1].gid, kids[7].gid)]
    pos = {k.gid: k.orderings[alpha] for k in positioned} | {kids[2].gid: 1, kids[5].gid: 1}
    expected = sorted(positioned, key=lambda k: (pos[k.gid], k.id))
    assert got == [k.gid for k in expected] + [kids[1].gid, kids[7].gid]


def test_children_unknown_ordering_is_creation_order(trees: tuple[Tree, Tree]) -> None:
    """An ordering the project does not have orders nothing: creation order."""
    a, b = trees
    want = [r.gid for r in a.children(a.heads[6])]
    assert resolve(a.gid, [{"children": a.heads[6], "ordering": "nope"}]) == want
    assert resolve(a.gid, [{"children": a.heads[6], "ordering": b.orderings[0]}]) == want


def test_children_channel_ordering_exclude_together(trees: tuple[Tree, Tree]) -> None:
    """Channel, ordering and exclude combine: filter, drop excluded, then order."""
    a, _ = trees
    alpha = a.orderings[0]
    parent = a.children(a.heads[7])[3].gid
    web = a.channels[1]
    kids = [r for r in a.children(parent) if web in r.channels]
    excluded = kids[0].gid
    got = resolve(a.gid, [{"children": parent, "channel": web, "ordering": alpha,
                           "exclude": [excluded]}])
    want = sorted((r for r in kids if r.gid != excluded), key=lambda r: (r.orderings[alpha], r.id))
    assert got == [r.gid for r in want]


@pytest.mark.parametrize(
    ("mode", "parent", "expected"),
    [
        pytest.param("live", "deleted_head", "nothing", id="live-under-deleted-head"),
        pytest.param("deleted", "deleted_head", "children", id="deleted-under-deleted-head"),
        pytest.param("deleted", "live_head", "nothing", id="deleted-under-live-head"),
        pytest.param("live", "root", "live_heads", id="live-heads"),
        pytest.param("deleted", "root", "deleted_heads", id="deleted-heads"),
    ],
)
def test_children_mode(trees: tuple[Tree, Tree], mode: Mode, parent: str, expected: str) -> None:
    """Children entries match live children in live mode and deleted ones in deleted mode."""
    a, _ = trees
    gid = {"deleted_head": a.deleted_head, "live_head": a.heads[0], "root": a.root}[parent]
    want = {
        "children": [r.gid for r in a.children(a.deleted_head)],
        "live_heads": a.live_heads,
        "deleted_heads": [a.deleted_head],
        "nothing": [],
    }[expected]
    assert resolve(a.gid, [{"children": gid}], mode=mode) == want


def test_children_mode_sees_separately_deleted_child(trees: tuple[Tree, Tree]) -> None:
    """A child deleted on its own is a deleted child of its live parent, and not a live one."""
    a, _ = trees
    kids = a.children(a.heads[8])
    with get_write_engine().begin() as conn:
        conn.execute(insert(deletions_t).values(record_id=kids[3].id, deleted_root=kids[3].id))
    assert resolve(a.gid, [{"children": a.heads[8]}], mode="deleted") == [kids[3].gid]
    assert resolve(a.gid, [{"children": a.heads[8]}]) == [
        r.gid for r in kids if r.gid != kids[3].gid]


# --- property: resolution equals a plain-Python model of SPEC §4 ------------------------------


def model(tree: Tree, value: list[Any], mode: Mode) -> tuple[list[str], list[set[str]]]:
    """What SPEC §4 says ``value`` resolves to in ``tree``; also each entry's own results."""
    per_entry: list[set[str]] = []
    out: list[str] = []
    seen: set[str] = set()
    statuses = LIVE if mode == "live" else ("deleted",)
    for entry in parse_selection(value).entries:
        if isinstance(entry, Gids):
            found = [g for g in entry.gids if g in tree.by_gid]
        elif isinstance(entry, Search):
            found = model_search(tree, value[entry.index]["search"]["filter"], statuses,
                                 entry.exclude)
        else:
            assert isinstance(entry, Children)
            kids = [r for r in tree.children(entry.parent) if entry.parent in tree.by_gid
                    and r.status in statuses and r.gid not in entry.exclude
                    and (not entry.channel or entry.channel in r.channels)]
            if entry.ordering in tree.orderings:
                key: Callable[[Rec], Any] = lambda r, o=entry.ordering: (  # noqa: E731
                    r.orderings.get(o) is None, r.orderings.get(o, 0), r.id)
                kids.sort(key=key)
            found = [r.gid for r in kids]
        per_entry.append(set(found))
        for g in found:
            if g not in seen:
                seen.add(g)
                out.append(g)
    return out, per_entry


def model_search(tree: Tree, filt: list[Any], statuses: tuple[str, ...],
                 exclude: frozenset[str]) -> list[str]:
    """A search entry of the form the strategy draws: ``parent is P``, optionally and-ed with
    ``status is S`` (which replaces the job's statuses) and ``channel has C``; no ``q``, so
    in gid order."""
    parts = filt[2] if filt[0] == "and" else [filt]
    conds = {prop: operand for prop, _, operand in parts}
    wanted = (conds["status"],) if "status" in conds else statuses
    hits = [r for r in tree.by_gid.values() if r.parent == conds["parent"]
            and r.status in wanted and r.gid not in exclude
            and ("channel" not in conds or conds["channel"] in r.channels)]
    return sorted(r.gid for r in hits)


def selections(a: Tree, b: Tree) -> st.SearchStrategy[list[Any]]:
    own = sorted(a.by_gid)
    foreign = sorted(b.by_gid)
    parents = [a.root, *a.heads, *(r.gid for h in a.heads[:3] + [a.deleted_head]
                                   for r in a.children(h))]
    any_gid = st.sampled_from(own) | st.sampled_from(foreign) | st.uuids().map(str)

    @st.composite
    def children(draw: st.DrawFn) -> dict[str, Any]:
        parent = draw(st.sampled_from(parents) | st.sampled_from(b.heads + [b.root]))
        entry: dict[str, Any] = {"children": parent}
        kids = [r.gid for r in a.children(parent)] or [a.root]
        if draw(st.booleans()):
            entry["exclude"] = draw(st.lists(st.sampled_from(kids) | any_gid, max_size=5))
        if draw(st.booleans()):
            entry["channel"] = draw(st.sampled_from(a.channels + b.channels[1:2] + ["none"]))
        if draw(st.booleans()):
            entry["ordering"] = draw(st.sampled_from(a.orderings + ["none"]))
        return entry

    @st.composite
    def search(draw: st.DrawFn) -> dict[str, Any]:
        parent = draw(st.sampled_from(parents) | st.sampled_from(b.heads))
        parts: list[Any] = [["parent", "is", parent]]
        if draw(st.booleans()):
            parts.append(["status", "is", draw(st.sampled_from(["draft", "published",
                                                               "deleted"]))])
        if draw(st.booleans()):
            parts.append(["channel", "has", draw(st.sampled_from(a.channels))])
        filt = parts[0] if len(parts) == 1 else ["and", "", parts]
        entry: dict[str, Any] = {"search": {"language": "en", "filter": filt}}
        if draw(st.booleans()):
            kids = [r.gid for r in a.children(parent)] or [a.root]
            entry["exclude"] = draw(st.lists(st.sampled_from(kids) | any_gid, max_size=5))
        return entry

    return st.lists(any_gid | children() | search(), max_size=12)


@pytest.fixture
def shuffled_positions(trees: tuple[Tree, Tree]) -> Iterator[tuple[Tree, Tree]]:
    """The trees with some ordering positions removed or tied, so ordering has edge cases."""
    a, b = trees
    alpha = a.orderings[0]
    changes = {}
    for i, rec in enumerate(sorted(a.by_gid.values(), key=lambda r: r.id)):
        if i % 7 == 3:
            rec.orderings = {}
            changes[rec.gid] = rec.orderings
        elif i % 11 == 5:
            rec.orderings = {**rec.orderings, alpha: 2}
            changes[rec.gid] = rec.orderings
    set_orderings(changes)
    yield a, b


@pytest.mark.parametrize("mode", ["live", "deleted"])
def test_property_resolution_matches_model(
    shuffled_positions: tuple[Tree, Tree], mode: Mode
) -> None:
    """Random mixes of own, foreign and unknown gids, children entries and search entries
    resolve as SPEC §4 says: no duplicates, never another project's record, never an entry's
    excluded gid."""
    a, b = shuffled_positions

    @settings(max_examples=40, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(value=selections(a, b))
    def check(value: list[Any]) -> None:
        got = resolve(a.gid, value, mode=mode)
        want, per_entry = model(a, value, mode)
        assert len(got) == len(set(got)), "duplicates"
        assert all(g in a.by_gid for g in got), "a record of another project"
        assert not set(got) & set(b.by_gid)
        for entry, own in zip(parse_selection(value).entries, per_entry, strict=True):
            if isinstance(entry, Children | Search):
                others = set().union(*(s for s in per_entry if s is not own))
                assert not (entry.exclude & set(got)) - others, "an excluded gid"
        assert got == want

    check()
