"""record deletion out of the record row

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 12:00:00

``record_deletion``: one narrow row per soft-deleted record, carrying its delete generation
(``deleted_root``).  The deleted rows of ``record`` move there, get back the status they had
before deletion (``prev_status``), and ``record`` loses ``prev_status`` and
``deleted_root``.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('record_deletion',
    sa.Column('record_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('deleted_root', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('record_id')
    )
    with op.batch_alter_table('record_deletion', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_record_deletion_deleted_root'), ['deleted_root'],
                              unique=False)
    op.execute("INSERT INTO record_deletion (record_id, deleted_root) "
               "SELECT id, COALESCE(deleted_root, id) FROM record WHERE status = 'deleted'")
    op.execute("UPDATE record SET status = COALESCE(prev_status, 'draft') "
               "WHERE status = 'deleted'")
    with op.batch_alter_table('record', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_record_deleted_root'))
        batch_op.drop_column('deleted_root')
        batch_op.drop_column('prev_status')


def downgrade() -> None:
    with op.batch_alter_table('record', schema=None) as batch_op:
        batch_op.add_column(sa.Column('prev_status', sqlmodel.sql.sqltypes.AutoString(),
                                      nullable=True))
        batch_op.add_column(sa.Column('deleted_root', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_record_deleted_root'), ['deleted_root'],
                              unique=False)
    op.execute("UPDATE record SET prev_status = status, status = 'deleted', deleted_root = "
               "(SELECT d.deleted_root FROM record_deletion d WHERE d.record_id = record.id) "
               "WHERE id IN (SELECT record_id FROM record_deletion)")
    with op.batch_alter_table('record_deletion', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_record_deletion_deleted_root'))
    op.drop_table('record_deletion')
