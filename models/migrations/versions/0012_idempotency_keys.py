"""idempotency keys of job-queueing requests

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 02:00:00

``idempotency_key``: one row per ``Idempotency-Key`` a user sent to a project's
job-queueing routes (:mod:`models.idempotency`), keyed ``(user_gid, project_gid, key)`` so
that concurrent requests under one key insert one row.  ``fingerprint`` is the hash of the
request, ``job_token`` the job it queued (null while it is being handled).
``ix_idempotency_key_created_on`` lets the hourly expiry find keys older than 24 hours
without reading the others.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'idempotency_key',
        sa.Column('user_gid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('project_gid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column('fingerprint', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('job_token', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
        sa.Column('created_on', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('user_gid', 'project_gid', 'key'),
    )
    op.create_index('ix_idempotency_key_created_on', 'idempotency_key', ['created_on'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_idempotency_key_created_on', table_name='idempotency_key')
    op.drop_table('idempotency_key')
