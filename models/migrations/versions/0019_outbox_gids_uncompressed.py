"""the sync outbox's gids stored uncompressed on PostgreSQL

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 17:00:00

A batch of a big record job writes the gids of the records it changed into the outbox (3.7 MB
of text for 100,000 records); the row is read back only when its append failed, and deleted
soon after.  PostgreSQL compressed that text with pglz on the way in, which took about 0.8 s
of the batches per 1,000,000 record events (UUID text compresses little); stored
``EXTERNAL`` (out of line, not compressed) the same writes take about 0.06 s.  SQLite does
not compress: nothing changes there.
"""

from __future__ import annotations

from alembic import op

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE sync_outbox ALTER COLUMN gids SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE sync_outbox ALTER COLUMN gids SET STORAGE EXTENDED")
