"""paused jobs: a project's, or every project's

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 02:00:00

``job_pause``: one row per paused scope, a project's gid or ``*`` for every project (the
switch of the ops API).  While a row names a job's project, or every project, its run stops
after its current batch, a queued job is not started and the reaper leaves it alone;
deleting the row resumes them.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'job_pause',
        sa.Column('scope', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('paused_on', sa.Float(), nullable=False),
        sa.Column('paused_by', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.PrimaryKeyConstraint('scope'),
    )


def downgrade() -> None:
    op.drop_table('job_pause')
