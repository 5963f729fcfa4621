"""sync outbox

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 12:00:00

``sync_outbox``: project-space events of committed batches not yet appended to the sync log
(see ``models/outbox.py``); written with the batch, deleted once appended.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sync_outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_token', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('project_gid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('data_type', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('gids', sa.Text(), nullable=False),
    sa.Column('created_on', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('sync_outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sync_outbox_job_token'), ['job_token'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('sync_outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sync_outbox_job_token'))
    op.drop_table('sync_outbox')
