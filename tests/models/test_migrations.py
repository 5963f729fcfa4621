"""Migrations on a database of their own: the newest schema matches the tables, and moving
deletion out of the record row (0005) keeps every record's state, both ways."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, text
from sqlmodel import SQLModel

from bulkjobs.settings import get_settings
from models.engine import MIGRATIONS, make_engine, normalise_url


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """An empty database: a SQLite file, or a PostgreSQL schema of its own."""
    url = get_settings().effective_database_url
    if not url.startswith("postgres"):
        yield make_engine(f"sqlite:///{tmp_path}/migrations.db")
        return
    schema = f"migrations_{uuid.uuid4().hex[:8]}"
    admin = create_engine(normalise_url(url))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    engine = create_engine(normalise_url(url), connect_args={"options": f"-csearch_path={schema}"})
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _to(engine: Engine, revision: str, *, down: bool = False) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)
        conn.commit()


def test_newest_schema_matches_the_tables(engine: Engine) -> None:
    """Every table, column and index of the models is what the migrations create."""
    _to(engine, "head")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    # The search index's tables (FTS5 and its shadow tables, or tsvector tables) are the
    # migrations' own, not models.
    search = ("record_fts", "record_search", "search_language")
    diff = [d for d in diff if not (
        (d[0] == "remove_table" and d[1].name.startswith(search))
        or (d[0] == "remove_index" and d[1].table.name.startswith(search)))]
    assert diff == []


OLD_RECORDS = [
    # gid, id, parent, mpath, status, prev_status, deleted_root
    ("root", 1, None, "/1/", "draft", None, None),
    ("head", 2, 1, "/1/2/", "deleted", "published", 2),
    ("kid", 3, 2, "/1/2/3/", "deleted", "draft", 2),
    ("own", 4, 2, "/1/2/4/", "deleted", "published", 4),
    ("live", 5, 1, "/1/5/", "published", None, None),
]


def test_0005_moves_deletions_out_of_the_record_row_and_back(engine: Engine) -> None:
    _to(engine, "0004")
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO project (gid, name, status, languages, channels, orderings, created_on)"
            " VALUES ('p', 'P', 'active', '[\"en\"]', '{}', '{}', 0)"))
        for gid, rid, parent, mpath, status, prev, root in OLD_RECORDS:
            conn.execute(text(
                "INSERT INTO record (id, gid, project_gid, parent_id, is_link, treelevel, mpath, "
                "childcount, title, fields, status, prev_status, deleted_root, channels, "
                "orderings, created_on, updated_on) VALUES (:id, :gid, 'p', :parent, false, 0, "
                ":mpath, 0, '{}', '{}', :status, :prev, :root, '[]', '{}', 0, 0)"
            ), {"id": rid, "gid": gid, "parent": parent, "mpath": mpath, "status": status,
                "prev": prev, "root": root})
    _to(engine, "0005")
    with engine.connect() as conn:
        statuses = dict(conn.execute(text("SELECT gid, status FROM record")).all())
        deletions = dict(conn.execute(text(
            "SELECT r.gid, d.deleted_root FROM record_deletion d "
            "JOIN record r ON r.id = d.record_id")).all())
    assert statuses == {"root": "draft", "head": "published", "kid": "draft",
                        "own": "published", "live": "published"}
    assert deletions == {"head": 2, "kid": 2, "own": 4}

    _to(engine, "0004", down=True)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT gid, id, parent_id, mpath, status, prev_status, deleted_root FROM record"
        )).all()
    assert sorted(tuple(r) for r in rows) == sorted(OLD_RECORDS)


def test_0009_gives_existing_api_keys_an_id_and_users_a_clean_standing(engine: Engine) -> None:
    """Keys created before 0009 get distinct public ids; users are neither disabled nor
    past token version 0; and 0009 goes back down."""
    _to(engine, "0008")
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO project (gid, name, status, languages, channels, orderings, created_on)"
            " VALUES ('p', 'P', 'active', '[\"en\"]', '{}', '{}', 0)"))
        conn.execute(text('INSERT INTO "user" (gid, username, name, password_hash, ops) '
                          "VALUES ('u', 'u', '', '', false)"))
        for name in ("one", "two"):
            conn.execute(text(
                "INSERT INTO apikey (key_hash, user_gid, project_gid, name, created_on) "
                "VALUES (:hash, 'u', 'p', :name, 0)"), {"hash": name * 8, "name": name})
    _to(engine, "0009")
    with engine.connect() as conn:
        ids = conn.execute(text("SELECT key_id FROM apikey")).scalars().all()
        user = conn.execute(text('SELECT disabled, token_version FROM "user"')).one()
    assert len(set(ids)) == 2 and all(ids)
    assert tuple(user) == (False, 0)
    _to(engine, "0008", down=True)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM apikey")).scalar_one() == 2


def test_0019_stores_the_outbox_gids_uncompressed_on_postgresql(engine: Engine) -> None:
    """The outbox's gids text is not compressed on the way in (pglz cost a big job's batches
    about 0.8 s per million record events), and 0019 goes back down."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite does not compress; 0019 changes nothing there")

    def storage() -> str:
        with engine.connect() as conn:
            return str(conn.execute(text(
                "SELECT a.attstorage FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "WHERE c.oid = 'sync_outbox'::regclass AND a.attname = 'gids'")).scalar_one())

    _to(engine, "0018")
    assert storage() == "x"  # EXTENDED: compressed, then out of line
    _to(engine, "0019")
    assert storage() == "e"  # EXTERNAL: out of line, not compressed
    _to(engine, "0018", down=True)
    assert storage() == "x"
