"""sync outbox ids never reused

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 19:00:00

An outbox row's events are appended under once-keys named after the row's id, so an id must
never come back.  SQLite reuses the largest rowid once its row is deleted unless the table
is ``AUTOINCREMENT``: the table is rebuilt that way (its rows kept).  PostgreSQL's sequence
never goes back; nothing changes there.
"""

from __future__ import annotations

from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table('sync_outbox', recreate='always',
                              table_kwargs={'sqlite_autoincrement': True}) as batch_op:
        batch_op.alter_column('id', existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table('sync_outbox', recreate='always',
                              table_kwargs={'sqlite_autoincrement': False}) as batch_op:
        batch_op.alter_column('id', existing_nullable=False)
