"""search index

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 09:00:00

SQLite: an FTS5 table ``record_fts`` (rowid = record id << 10 | language slot) and the slot
table ``search_language``.  PostgreSQL: ``record_search`` with a ``tsvector`` per text and a
GIN index on each.  Existing records are indexed at once.  See ``models/search/index.py``.
"""

from __future__ import annotations

from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(
            "CREATE TABLE record_search ("
            " record_id integer NOT NULL,"
            " lang text NOT NULL,"
            " title tsvector NOT NULL,"
            " body tsvector NOT NULL,"
            " PRIMARY KEY (record_id, lang))"
        )
        op.execute("CREATE INDEX ix_record_search_title ON record_search USING gin (title)")
        op.execute("CREATE INDEX ix_record_search_body ON record_search USING gin (body)")
    else:
        op.execute(
            "CREATE TABLE search_language ("
            " slot INTEGER PRIMARY KEY CHECK (slot BETWEEN 1 AND 1023),"
            " code TEXT NOT NULL UNIQUE)"
        )
        op.execute(
            "CREATE VIRTUAL TABLE record_fts USING fts5("
            "title, body, tokenize = 'unicode61 remove_diacritics 0', columnsize = 0)"
        )
    # Index what is already there, through the same code that keeps the index in step.
    from models.search.index import rebuild

    rebuild(bind)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP TABLE IF EXISTS record_search")
    else:
        op.execute("DROP TABLE IF EXISTS record_fts")
        op.execute("DROP TABLE IF EXISTS search_language")
