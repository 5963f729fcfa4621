"""every failed item of a job, kept

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 02:00:00

``job_failure``: each item a job could not process, with its reason, written by the batch
that failed it (``info.errors`` keeps the first 20 only, and a job's ``job_item`` rows are
deleted when it finishes).  ``(job_token, gid)`` is unique, so a batch committed twice over
the same items adds nothing; ``ix_job_failure_job_token_id`` (``job_token``, ``id``) pages
through a job's failures (``jobs/failures``) and resolves a retry of them along one index
range.  The rows go with their job (retention).
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'job_failure',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('job_token', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('gid', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('job_token', 'gid'),
    )
    op.create_index('ix_job_failure_job_token_id', 'job_failure', ['job_token', 'id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_job_failure_job_token_id', table_name='job_failure')
    op.drop_table('job_failure')
