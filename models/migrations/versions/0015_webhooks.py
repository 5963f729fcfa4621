"""webhooks of a project's job states

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 02:50:00

``webhook``: where a project's job states are sent (:mod:`models.webhooks`): the URL, the
events it wants, and the secret that signs each delivery (kept so it can sign; never listed).
``ix_webhook_project_gid`` finds a project's webhooks.

``webhook_delivery``: the outbox of job states to send (:mod:`models.webhook_deliveries`),
written in the job's transaction; ``ix_webhook_delivery_due`` (status, next attempt) lets the
sweeper find what is due, ``ix_webhook_delivery_webhook`` pages a webhook's deliveries,
``ix_webhook_delivery_created`` finds those past the retention.  ``webhook_attempt``: one row
per attempt (status code, duration, error), by delivery.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'webhook',
        sa.Column('gid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('project_gid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('url', sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=False),
        sa.Column('events', sa.JSON(), nullable=False),
        sa.Column('secret', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('created_on', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['project_gid'], ['project.gid']),
        sa.PrimaryKeyConstraint('gid'),
    )
    op.create_index('ix_webhook_project_gid', 'webhook', ['project_gid'], unique=False)
    op.create_table(
        'webhook_delivery',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('delivery', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('webhook_gid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('project_gid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('job_token', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('event', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('body', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_on', sa.Float(), nullable=False),
        sa.Column('created_on', sa.Float(), nullable=False),
        sa.Column('finished_on', sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('delivery'),
    )
    op.create_index('ix_webhook_delivery_due', 'webhook_delivery',
                    ['status', 'next_attempt_on'], unique=False)
    op.create_index('ix_webhook_delivery_webhook', 'webhook_delivery', ['webhook_gid', 'id'],
                    unique=False)
    op.create_index('ix_webhook_delivery_created', 'webhook_delivery', ['created_on'],
                    unique=False)
    op.create_table(
        'webhook_attempt',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('delivery_id', sa.Integer(), nullable=False),
        sa.Column('started_on', sa.Float(), nullable=False),
        sa.Column('duration_ms', sa.Float(), nullable=False),
        sa.Column('status_code', sa.Integer(), nullable=True),
        sa.Column('error', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_webhook_attempt_delivery', 'webhook_attempt', ['delivery_id', 'id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_webhook_attempt_delivery', table_name='webhook_attempt')
    op.drop_table('webhook_attempt')
    for index in ('ix_webhook_delivery_created', 'ix_webhook_delivery_webhook',
                  'ix_webhook_delivery_due'):
        op.drop_index(index, table_name='webhook_delivery')
    op.drop_table('webhook_delivery')
    op.drop_index('ix_webhook_project_gid', table_name='webhook')
    op.drop_table('webhook')
