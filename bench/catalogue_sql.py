"""The catalogue bench's database side: the states its scenarios start from, how they are
put back by raw SQL, and the raw set-based baselines.

Every baseline makes the change its job makes — deletion rows, workflow entries,
tombstones, search-index rows, versions, schema rows — except the sync events, in one
transaction, committed, in the calling process.  Inputs a client would hold (the heads'
ids for a gid selection, the record ids of a version restore) are looked up before the
clock starts and passed as one parameter, as in :mod:`bench.bulk`.

States of the record tree (the bench's project, ids ``lo``–``hi``, root ``lo``):

* ``live`` — no deletion row;
* ``deleted`` — every record but the root deleted, each subtree one generation of its head,
  each link in its target's;
* ``gone`` — after a permanent delete: :meth:`Tree.restore` copies every row back from the
  backup tables written after seeding (records, versions), and reindexes.

Workflow entries and job items are cleared whenever a state is set up, so every timed run
starts with the same tables.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, text

from models.dialect import id_rows, is_pg, json_ids

ACTOR = json.dumps({"type": "user", "id": "bench-raw"})
SCHEMA_PREFIX = "cat_"
SEARCH_Q = "lighthouse"


def _upper(conn: Connection, mpath: str) -> str:
    """Exclusive upper bound of the subtree range starting at ``mpath`` (see
    :func:`models.records.subtree_upper`)."""
    return f"substr({mpath}, 1, length({mpath}) - 1) || '0'"


def _join(conn: Connection) -> str:
    # SQLite has no statistics here: CROSS JOIN keeps the given rows first (bench/selection.py)
    return "JOIN" if is_pg(conn) else "CROSS JOIN"


def timed(engine: Engine, work: Callable[[Connection], int]) -> tuple[float, int]:
    """Run ``work`` in one write transaction and commit; (seconds, rows it reports)."""
    start = time.perf_counter()
    with engine.begin() as conn:
        rows = work(conn)
    return time.perf_counter() - start, rows


@dataclass
class Tree:
    """The bench's record tree and what is known of it."""

    engine: Engine  # the write engine
    project: str
    root: int
    lo: int
    hi: int
    heads: list[int] = field(default_factory=list)
    head_gids: list[str] = field(default_factory=list)
    links: int = 0

    @property
    def nonroot(self) -> int:
        return self.hi - self.lo

    # -- facts -----------------------------------------------------------------------------

    @classmethod
    def load(cls, engine: Engine, project: str) -> Tree:
        with engine.connect() as conn:
            root = conn.execute(text("SELECT id FROM record WHERE project_gid = :p AND "
                                     "parent_id IS NULL"), {"p": project}).scalar_one()
            hi = conn.execute(text("SELECT MAX(id) FROM record WHERE project_gid = :p"),
                              {"p": project}).scalar_one()
            heads = conn.execute(text(
                "SELECT id, gid FROM record WHERE parent_id = :r AND is_link = false ORDER BY id"
            ), {"r": root}).all()
            links = conn.execute(text("SELECT COUNT(*) FROM record WHERE parent_id = :r AND "
                                      "is_link = true"), {"r": root}).scalar_one()
        return cls(engine, project, root, root, hi, [h.id for h in heads],
                   [h.gid for h in heads], links)

    def head_of(self, conn: Connection, alias: str = "r") -> str:
        """SQL: the id of the subtree head of record ``alias`` (second id of its mpath)."""
        if is_pg(conn):
            return f"CAST(split_part({alias}.mpath, '/', 3) AS INTEGER)"
        skip = len(f"/{self.root}/") + 1
        return (f"CAST(substr({alias}.mpath, {skip}, instr(substr({alias}.mpath, {skip}), '/')"
                " - 1) AS INTEGER)")

    def counts(self) -> dict[str, int]:
        """Records, deletion rows and generation roots in the tree."""
        with self.engine.connect() as conn:
            row = conn.execute(text(
                "SELECT (SELECT COUNT(*) FROM record WHERE id BETWEEN :lo AND :hi), "
                "(SELECT COUNT(*) FROM record_deletion WHERE record_id BETWEEN :lo AND :hi), "
                "(SELECT COUNT(*) FROM record_deletion WHERE record_id BETWEEN :lo AND :hi "
                "AND deleted_root = record_id)"), {"lo": self.lo, "hi": self.hi}).one()
        return {"records": row[0], "deleted": row[1], "generations": row[2]}

    # -- setting a state up ------------------------------------------------------------------

    def ensure(self, state: str) -> bool:
        """Put the tree in ``state`` (``live`` or ``deleted``) unless it is there; clear
        workflow entries and job items.  True when rows had to be changed."""
        c = self.counts()
        changed = False
        if c["records"] < self.nonroot + 1:
            self.restore()
            c, changed = self.counts(), True
        if state == "live" and c["deleted"]:
            self._set_deleted(False)
            changed = True
        if state == "deleted" and (c["deleted"] != self.nonroot
                                   or c["generations"] != len(self.heads)):
            self._set_deleted(True)
            changed = True
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM workflow_entry"))
            conn.execute(text("DELETE FROM job_item"))
            conn.execute(text("DELETE FROM record_tombstone WHERE project_gid = :p"),
                         {"p": self.project})
        return changed

    def _set_deleted(self, deleted: bool) -> None:
        with self.engine.begin() as conn:
            args = {"lo": self.lo, "hi": self.hi}
            conn.execute(text("DELETE FROM record_deletion WHERE record_id BETWEEN :lo AND :hi"),
                         args)
            if not deleted:
                return
            conn.execute(text(
                "INSERT INTO record_deletion (record_id, deleted_root) "
                f"SELECT r.id, {self.head_of(conn)} FROM record r "
                "WHERE r.id > :lo AND r.id <= :hi AND r.is_link = false"), args)
            conn.execute(text(
                "INSERT INTO record_deletion (record_id, deleted_root) "
                "SELECT l.id, d.deleted_root FROM record l "
                "JOIN record_deletion d ON d.record_id = l.canonical_id "
                "WHERE l.id > :lo AND l.id <= :hi AND l.is_link = true"), args)

    def backup(self) -> None:
        """Copy the tree's records and versions aside (after seeding, untimed)."""
        with self.engine.begin() as conn:
            args = {"lo": self.lo, "hi": self.hi}
            conn.execute(text("DROP TABLE IF EXISTS bench_bk_record"))
            conn.execute(text("DROP TABLE IF EXISTS bench_bk_version"))
            conn.execute(text("CREATE TABLE bench_bk_record AS SELECT * FROM record "
                              "WHERE id BETWEEN :lo AND :hi"), args)
            conn.execute(text("CREATE TABLE bench_bk_version AS SELECT * FROM record_version "
                              "WHERE record_id BETWEEN :lo AND :hi"), args)

    def restore(self) -> None:
        """Put every record and version back as seeded, live, and reindex them."""
        from models.search.index import reindex_range

        args = {"lo": self.lo, "hi": self.hi}
        with self.engine.begin() as conn:
            for table, col in (("record_tombstone", "record_id"), ("record_deletion", "record_id"),
                               ("workflow_entry", "record_id"), ("record_version", "record_id"),
                               ("record", "id")):
                conn.execute(text(f"DELETE FROM {table} WHERE {col} BETWEEN :lo AND :hi"), args)
            conn.execute(text("INSERT INTO record SELECT * FROM bench_bk_record"))
            conn.execute(text("INSERT INTO record_version SELECT * FROM bench_bk_version"))
        for start in range(self.lo, self.hi + 1, 50_000):
            with self.engine.begin() as conn:
                reindex_range(conn, start, min(start + 49_999, self.hi))

    # -- raw baselines: records ----------------------------------------------------------------

    def _heads_sql(self, conn: Connection, source: str, *, deleted: bool = False) -> str:
        """Rows ``h(id, mpath, status)`` of the selected heads."""
        if source == "children":
            return ("(SELECT id, mpath, status FROM record WHERE parent_id = :root "
                    "AND is_link = false)")
        return (f"(SELECT hr.id, hr.mpath, hr.status FROM {id_rows(conn, 'heads')} "
                f"{_join(conn)} record hr ON hr.id = j.value)")

    def raw_delete(self, conn: Connection, source: str) -> int:
        """Soft-delete the selected heads' subtrees (each its head's generation), the links
        into them, one workflow entry per head."""
        args = {"root": self.root, "heads": json_ids(self.heads), "now": time.time(),
                "actor": ACTOR, "lo": self.lo, "hi": self.hi}
        heads = self._heads_sql(conn, source)
        rows = conn.execute(text(
            "INSERT INTO record_deletion (record_id, deleted_root) "
            f"SELECT r.id, h.id FROM {heads} h {_join(conn)} record r "
            f"ON r.mpath >= h.mpath AND r.mpath < {_upper(conn, 'h.mpath')}"), args).rowcount
        rows += conn.execute(text(
            "INSERT INTO record_deletion (record_id, deleted_root) "
            "SELECT l.id, d.deleted_root FROM record l JOIN record_deletion d "
            "ON d.record_id = l.canonical_id WHERE l.id > :lo AND l.id <= :hi "
            "AND l.is_link = true ON CONFLICT (record_id) DO NOTHING"), args).rowcount
        conn.execute(text(
            "INSERT INTO workflow_entry (record_id, action, review_state, actor, time, comment) "
            f"SELECT h.id, 'delete', 'deleted', :actor, :now, 'raw' FROM {heads} h"), args)
        return int(rows)

    def raw_delete_search(self, conn: Connection) -> int:
        """Soft-delete every record the search finds, each in its head's generation, one
        workflow entry per record."""
        if is_pg(conn):
            found = ("SELECT s.record_id AS id FROM record_search s WHERE s.lang = 'en' AND "
                     f"(s.title @@ to_tsquery('simple', '{SEARCH_Q}:*') "
                     f"OR s.body @@ to_tsquery('simple', '{SEARCH_Q}:*'))")
        else:
            found = ("SELECT f.rowid >> 10 AS id FROM record_fts f "
                     f"WHERE record_fts MATCH '{SEARCH_Q}*' AND (f.rowid & 1023) = "
                     "(SELECT slot FROM search_language WHERE code = 'en')")
        args = {"p": self.project, "now": time.time(), "actor": ACTOR, "lo": self.lo,
                "hi": self.hi}
        rows = conn.execute(text(
            "INSERT INTO record_deletion (record_id, deleted_root) "
            f"SELECT r.id, {self.head_of(conn)} FROM ({found}) m {_join(conn)} record r "
            "ON r.id = m.id WHERE r.project_gid = :p"), args).rowcount
        conn.execute(text(
            "INSERT INTO workflow_entry (record_id, action, review_state, actor, time, comment) "
            "SELECT record_id, 'delete', 'deleted', :actor, :now, 'raw' FROM record_deletion "
            "WHERE record_id BETWEEN :lo AND :hi"), args)
        return int(rows)

    def raw_undelete(self, conn: Connection, source: str) -> int:
        """Remove the selected heads' generations; one workflow entry per head with the
        state it returns to."""
        args = {"root": self.root, "heads": json_ids(self.heads), "now": time.time(),
                "actor": ACTOR}
        heads = self._heads_sql(conn, source)
        rows = conn.execute(text(
            f"DELETE FROM record_deletion WHERE deleted_root IN (SELECT h.id FROM {heads} h)"
        ), args).rowcount
        conn.execute(text(
            "INSERT INTO workflow_entry (record_id, action, review_state, actor, time, comment) "
            f"SELECT h.id, 'undelete', h.status, :actor, :now, 'raw' FROM {heads} h"), args)
        return int(rows)

    def raw_permanent_delete(self, conn: Connection) -> int:
        """Remove the selected heads' subtrees and the links into them, with versions,
        workflow entries, deletion rows and search entries; tombstones; the root's
        childcount."""
        pg = is_pg(conn)
        args = {"heads": json_ids(self.heads), "now": time.time()}
        conn.execute(text("DROP TABLE IF EXISTS bench_gone"))
        conn.execute(text("CREATE TEMP TABLE bench_gone (id INTEGER PRIMARY KEY)"
                          + (" ON COMMIT DROP" if pg else "")))
        heads = self._heads_sql(conn, "gids")
        conn.execute(text(
            f"INSERT INTO bench_gone (id) SELECT r.id FROM {heads} h {_join(conn)} record r "
            f"ON r.mpath >= h.mpath AND r.mpath < {_upper(conn, 'h.mpath')}"), args)
        conn.execute(text(
            "INSERT INTO bench_gone (id) SELECT l.id FROM record l JOIN bench_gone g "
            "ON l.canonical_id = g.id WHERE l.is_link = true ON CONFLICT (id) DO NOTHING"))
        if pg:  # a temporary table has no statistics until it is analysed
            conn.execute(text("ANALYZE bench_gone"))
        gone = "(SELECT id FROM bench_gone)"
        conn.execute(text(
            "INSERT INTO record_tombstone (gid, record_id, project_gid, parent_gid, deleted_on) "
            "SELECT r.gid, r.id, r.project_gid, p.gid, :now FROM bench_gone g "
            "JOIN record r ON r.id = g.id LEFT JOIN record p ON p.id = r.parent_id"), args)
        # The parents that stay lose their removed children: one grouped anti-join (a NOT IN
        # over a million ids is not hashed in PostgreSQL's default work_mem).
        conn.execute(text(
            "UPDATE record SET childcount = record.childcount - x.n, updated_on = :now FROM ("
            "SELECT c.parent_id AS id, COUNT(*) AS n FROM bench_gone g JOIN record c "
            "ON c.id = g.id WHERE NOT EXISTS (SELECT 1 FROM bench_gone p "
            "WHERE p.id = c.parent_id) GROUP BY c.parent_id) AS x WHERE record.id = x.id"),
            args)
        for table in ("record_version", "workflow_entry", "record_deletion"):
            conn.execute(text(f"DELETE FROM {table} WHERE record_id IN {gone}"))
        if pg:
            conn.execute(text(f"DELETE FROM record_search WHERE record_id IN {gone}"))
        else:
            conn.execute(text("DELETE FROM record_fts WHERE rowid IN (SELECT (g.id << 10) | "
                              "s.slot FROM bench_gone g, search_language s)"))
        rows = conn.execute(text(f"DELETE FROM record WHERE id IN {gone}")).rowcount
        if not pg:
            conn.execute(text("DROP TABLE bench_gone"))
        return int(rows)

    # -- raw baselines: versions ---------------------------------------------------------------

    def version_targets(self, n: int) -> list[tuple[int, str, str]]:
        """``n`` records for version jobs, those with three versions first: (id, gid, the
        id of their version 0)."""
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(
                "SELECT r.id, r.gid, v.id FROM record r JOIN record_version v "
                "ON v.record_id = r.id AND v.number = 0 "
                "WHERE r.id > :lo AND r.id <= :hi AND r.is_link = false "
                "ORDER BY CASE WHEN r.id % 50 = 0 THEN 0 ELSE 1 END, r.id LIMIT :n"),
                {"lo": self.lo, "hi": self.hi, "n": n})]

    def raw_restore(self, conn: Connection, ids: list[int], comment: str) -> int:
        """Make version 0 of each record its content and a new current version; reindex."""
        from models.history import snapshot_sql
        from models.search.index import reindex

        pg = is_pg(conn)
        args = {"ids": json_ids(ids), "now": time.time(), "editor": ACTOR,
                "comment": comment}
        rows_ = id_rows(conn, "ids")
        if pg:
            content = ("title = v.snapshot -> 'title', fields = v.snapshot -> 'fields', "
                       "definition = v.snapshot ->> 'definition', "
                       "channels = v.snapshot -> 'channels'")
            new_id = "substr(md5(random()::text || r.id::text), 1, 22)"
        else:
            content = ("title = json_extract(v.snapshot, '$.title'), "
                       "fields = json_extract(v.snapshot, '$.fields'), "
                       "definition = json_extract(v.snapshot, '$.definition'), "
                       "channels = json_extract(v.snapshot, '$.channels')")
            new_id = "lower(hex(randomblob(11)))"
        rows = conn.execute(text(
            f"UPDATE record SET {content}, updated_on = :now FROM record_version v "
            f"WHERE v.record_id = record.id AND v.number = 0 "
            f"AND record.id IN (SELECT j.value FROM {rows_})"), args).rowcount
        conn.execute(text(
            "UPDATE record_version SET is_current = false WHERE is_current "
            f"AND record_id IN (SELECT j.value FROM {rows_})"), args)
        conn.execute(text(
            "INSERT INTO record_version (id, record_id, number, created_at, editor, comment, "
            f"snapshot, is_published, is_current) SELECT {new_id}, r.id, "
            "(SELECT MAX(x.number) FROM record_version x WHERE x.record_id = r.id) + 1, :now, "
            f":editor, :comment, {snapshot_sql(conn)}, false, true FROM {rows_} "
            f"{_join(conn)} record r ON r.id = j.value"), args)
        reindex(conn, ids)
        return int(rows)


# -- schema items --------------------------------------------------------------------------


def uuid_sql(conn: Connection) -> str:
    if is_pg(conn):
        return "CAST(gen_random_uuid() AS VARCHAR(36))"
    h = "lower(hex(randomblob({})))"
    return (f"{h.format(4)} || '-' || {h.format(2)} || '-4' || substr({h.format(2)}, 2) || "
            f"'-a' || substr({h.format(2)}, 2) || '-' || {h.format(6)}")


@dataclass
class Schema:
    """``n`` committed fields ``cat_00000…`` of the project, with or without a working copy
    each (what ``models.schema_editing.modify`` makes of a committed field: a copy with
    ``is_working_copy`` and ``original``), written with bulk inserts."""

    engine: Engine
    project: str
    n: int

    def reset(self, *, working_copies: bool) -> list[str]:
        """Replace the bench's schema items; returns the originals' gids, in name order."""
        from models.schema import SchemaItem

        now = time.time()
        originals = [str(uuid.uuid4()) for _ in range(self.n)]

        def row(gid: str, name: str, label: str, copy_of: str | None) -> dict[str, Any]:
            return {"gid": gid, "project_gid": self.project, "type": "field", "name": name,
                    "label": {"en": label}, "is_new": False,
                    "is_working_copy": copy_of is not None, "original": copy_of,
                    "is_base": False, "is_extended": False, "classes": [], "fields": [],
                    "layout": None, "body": {"type": "textline", "is_localized": False},
                    "created_on": now, "updated_on": now}

        rows = [row(g, f"{SCHEMA_PREFIX}{i:05d}", f"Field {i}", None)
                for i, g in enumerate(originals)]
        if working_copies:
            rows += [row(str(uuid.uuid4()), f"{SCHEMA_PREFIX}{i:05d}", f"Field {i} (edited)", g)
                     for i, g in enumerate(originals)]
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM schema_item WHERE project_gid = :p AND name LIKE :n"),
                         {"p": self.project, "n": SCHEMA_PREFIX + "%"})
            conn.execute(text("DELETE FROM job_item"))
            conn.execute(SchemaItem.__table__.insert(), rows)
        return originals

    def _ours(self, extra: str = "") -> str:
        return (f"project_gid = :p AND name LIKE '{SCHEMA_PREFIX}%'" + extra)

    def raw(self, conn: Connection, job: str) -> int:
        args = {"p": self.project, "now": time.time()}
        copies = self._ours(" AND is_working_copy = true")
        if job == "commit":
            rows = conn.execute(text(
                "UPDATE schema_item SET name = c.name, label = c.label, classes = c.classes, "
                "fields = c.fields, layout = c.layout, body = c.body, updated_on = :now "
                "FROM schema_item AS c WHERE c.project_gid = :p AND c.name LIKE "
                f"'{SCHEMA_PREFIX}%' AND c.is_working_copy = true "
                "AND schema_item.gid = c.original"), args).rowcount
            conn.execute(text(f"DELETE FROM schema_item WHERE {copies}"), args)
        elif job == "revert":
            rows = conn.execute(text(f"DELETE FROM schema_item WHERE {copies}"), args).rowcount
        elif job == "save_as_new":
            rows = conn.execute(text(
                "UPDATE schema_item SET is_new = true, is_working_copy = false, original = NULL, "
                f"updated_on = :now WHERE {copies}"), args).rowcount
        elif job == "copy":
            rows = conn.execute(text(
                "INSERT INTO schema_item (gid, project_gid, type, name, label, is_new, "
                "is_working_copy, original, is_base, is_extended, classes, fields, layout, "
                f"body, created_on, updated_on) SELECT {uuid_sql(conn)}, project_gid, type, "
                "name || '_copy', label, true, false, NULL, false, false, classes, fields, "
                "layout, body, :now, :now FROM schema_item "
                f"WHERE {self._ours(' AND is_new = false AND is_working_copy = false')}"),
                args).rowcount
        else:
            raise ValueError(job)
        return int(rows)


def settle(engine: Engine) -> None:
    """Start a timed run from a clean slate: checkpoint the WAL (SQLite), or vacuum,
    analyse and checkpoint (PostgreSQL), as bench/bulk.py does."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
            conn.execute(text("CHECKPOINT"))
    else:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.commit()
