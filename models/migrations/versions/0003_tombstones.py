"""record tombstones and job failure counts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 12:00:00

* ``record_tombstone``: one row per permanently deleted record (its gid, former internal id,
  project, parent gid and when), so that an undelete or a second permanent delete of that
  gid fails per item with "permanently deleted" instead of skipping it as unknown.
* ``job.failures``: runs of the job that raised unexpectedly; the retry limit (SPEC §6)
  counts them on the job row, where they survive lost broker messages and dead workers.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('record_tombstone',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('gid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('record_id', sa.Integer(), nullable=False),
    sa.Column('project_gid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('parent_gid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('deleted_on', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('record_tombstone', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_record_tombstone_gid'), ['gid'], unique=True)
        batch_op.create_index(batch_op.f('ix_record_tombstone_record_id'), ['record_id'], unique=False)
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('failures', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('failures')
    with op.batch_alter_table('record_tombstone', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_record_tombstone_record_id'))
        batch_op.drop_index(batch_op.f('ix_record_tombstone_gid'))
    op.drop_table('record_tombstone')
