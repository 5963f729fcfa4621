"""Resolution in slices (``models.resolve.resolve_in_slices``) and the sliced deletion of a
job's items, against the real database: the same ``job_item`` rows as one transaction, and
a crash between slices is repaired by resolving again."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection, bindparam, text

from models.engine import get_engine, get_write_engine
from models.resolve import Mode, delete_items, resolve_in_slices, resolve_into
from models.seed import SeedResult
from models.selection import Selection, parse_selection
from worker.jobs.records import delete_prepare, permanent_delete_prepare, undelete_prepare

pytestmark = pytest.mark.services


def _items(token: str) -> list[int]:
    with get_engine().connect() as conn:
        return list(conn.execute(text("SELECT item_id FROM job_item WHERE job_token = :t "
                                      "ORDER BY id"), {"t": token}).scalars())


def _reference(project: str, selection: list[Any], mode: Mode,
               prepare: Callable[[Connection, str, str, Selection], None] | None = None
               ) -> list[int]:
    """The items one transaction resolves (rolled back)."""
    token = str(uuid.uuid4())
    with get_write_engine().connect() as conn, conn.begin() as tx:
        parsed = parse_selection(selection)
        resolve_into(conn, token=token, project_gid=project, mode=mode, selection=parsed)
        if prepare is not None:
            prepare(conn, token, project, parsed)
        ids = list(conn.execute(text("SELECT item_id FROM job_item WHERE job_token = :t "
                                     "ORDER BY id"), {"t": token}).scalars())
        tx.rollback()
    return ids


def _selections(seeded: SeedResult) -> list[tuple[str, list[Any], Mode]]:
    p, q = seeded.projects
    heads = p.heads
    return [
        ("children of the root", [{"children": p.root}], "live"),
        ("children of every head", [{"children": h} for h in heads], "live"),
        ("gids, an unknown and a foreign one", [*heads[::-1], str(uuid.uuid4()), q.heads[0]],
         "live"),
        ("children with an exclude, then gids",
         [{"children": heads[0], "exclude": heads[1:3]}, *heads[:4]], "live"),
        ("a search", [{"search": {"language": "en", "q": "a"}}], "live"),
        ("deleted children", [{"children": p.root}], "deleted"),
    ]


def test_slices_leave_the_rows_of_one_transaction(seeded: SeedResult) -> None:
    """Whatever the selection, slices of 7 rows leave the same items in the same order."""
    project = seeded.projects[0].gid
    for name, selection, mode in _selections(seeded):
        token = str(uuid.uuid4())
        totals: list[int] = []

        def last(conn: Connection, n: int, seen: list[int] = totals) -> None:
            seen.append(n)

        total = resolve_in_slices(get_engine(), token=token, project_gid=project, mode=mode,
                                  selection=parse_selection(selection), limit=7, last=last)
        expected = _reference(project, selection, mode)
        assert _items(token) == expected, name
        assert total == len(expected) and totals == [total], name
        assert delete_items(get_engine(), token, limit=7) == total
        assert _items(token) == []


@pytest.mark.parametrize("prepare, mode", [(undelete_prepare, "deleted"),
                                           (permanent_delete_prepare, "deleted"),
                                           (delete_prepare, "live")])
def test_a_prepare_step_runs_on_the_resolved_items(
    seeded: SeedResult, prepare: Callable[[Connection, str, str, Selection], None], mode: Mode,
) -> None:
    """A job's prepare step (which renumbers ``job_item``) sees the resolved items and its
    order is the one copied."""
    p = seeded.projects[0]
    with get_engine().connect() as conn:  # children first, then their parents: reordered
        kids = list(conn.execute(text(
            "SELECT r.gid FROM record r JOIN record h ON r.parent_id = h.id "
            "WHERE h.gid IN :heads ORDER BY r.id DESC").bindparams(
                bindparam("heads", expanding=True)), {"heads": p.heads[:3]}).scalars())
    # A few gids (resolved in one transaction), and entries that are resolved on the
    # stand-in table in a read transaction first (children of heads, then their heads).
    few: list[Any] = [*kids[:10], *p.heads[:3]]
    entries: list[Any] = [*({"children": h} for h in p.heads[:3]), {"children": p.root}]
    for selection in (few, entries):
        token = str(uuid.uuid4())
        resolve_in_slices(get_engine(), token=token, project_gid=p.gid, mode=mode,
                          selection=parse_selection(selection), prepare=prepare, limit=3)
        expected = _reference(p.gid, selection, mode, prepare)
        assert expected and _items(token) == expected
        down = -1 if prepare is permanent_delete_prepare else 1  # deepest first
        levels = [down * level for level, _ in _levels(expected)]
        assert levels == sorted(levels)
        if selection is entries and down == 1:  # renumbered: within a level by id
            assert _levels(expected) == sorted(_levels(expected))


def _levels(ids: list[int]) -> list[tuple[int, int]]:
    """Tree level and id of each record: the order a prepare step renumbers to (within a
    level, by id)."""
    with get_engine().connect() as conn:
        level = dict(conn.execute(text("SELECT id, treelevel FROM record WHERE id IN :ids")
                                  .bindparams(bindparam("ids", expanding=True)),
                                  {"ids": ids}).all())
    return [(level[i], i) for i in ids]


class Crash(Exception):
    pass


def test_a_crash_between_slices_is_repaired_by_resolving_again(seeded: SeedResult) -> None:
    """Killed after a few slices, a resolution leaves part of the rows and no ``last`` step;
    the next one deletes them and leaves exactly the rows of one transaction."""
    project = seeded.projects[0].gid
    selection = [{"children": h} for h in seeded.projects[0].heads]
    expected = _reference(project, selection, "live")
    token = str(uuid.uuid4())
    calls = {"each": 0, "last": 0}
    sqlite = get_engine().dialect.name == "sqlite"

    def crash_after_three(conn: Connection) -> None:
        calls["each"] += 1
        if calls["each"] == (3 if sqlite else 1):  # PostgreSQL: one transaction, one call
            raise Crash

    def last(conn: Connection, total: int) -> None:
        calls["last"] += 1

    with pytest.raises(Crash):
        resolve_in_slices(get_engine(), token=token, project_gid=project, mode="live",
                          selection=parse_selection(selection), limit=5,
                          each=crash_after_three, last=last)
    left = _items(token)
    assert calls["last"] == 0
    if sqlite:  # slices committed before the crash
        assert 0 < len(left) < len(expected) and left == expected[:len(left)]
    else:  # one transaction: nothing
        assert left == []
    total = resolve_in_slices(get_engine(), token=token, project_gid=project, mode="live",
                              selection=parse_selection(selection), limit=5, last=last)
    assert _items(token) == expected and total == len(expected)
    assert calls["last"] == 1


def test_the_stand_in_table_does_not_outlive_the_resolution(seeded: SeedResult) -> None:
    """After a resolution in slices, every pooled connection sees the real ``job_item``."""
    p = seeded.projects[0]
    token = str(uuid.uuid4())
    total = resolve_in_slices(get_engine(), token=token, project_gid=p.gid, mode="live",
                              selection=parse_selection([{"children": p.root}]), limit=4)
    conns = [get_engine().connect() for _ in range(3)]
    try:
        for conn in conns:
            assert conn.execute(text("SELECT COUNT(*) FROM job_item WHERE job_token = :t"),
                                {"t": token}).scalar_one() == total
            if conn.dialect.name == "sqlite":
                assert conn.execute(text("SELECT COUNT(*) FROM sqlite_temp_master")
                                    ).scalar_one() == 0
    finally:
        for conn in conns:
            conn.close()


def test_items_are_deleted_in_slices_of_their_own_job_only(seeded: SeedResult) -> None:
    """Deleting a job's items in slices leaves every other job's items."""
    p = seeded.projects[0]
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    for token in (mine, other):
        resolve_in_slices(get_engine(), token=token, project_gid=p.gid, mode="live",
                          selection=parse_selection([{"children": p.root}]))
    kept = _items(other)
    seen: list[int] = []
    assert delete_items(get_engine(), mine, limit=3,
                        each=lambda conn: seen.append(1)) == len(kept)
    assert _items(mine) == [] and _items(other) == kept
    if get_engine().dialect.name == "sqlite":
        assert len(seen) >= len(kept) // 3  # one transaction per slice
