"""an index for the first job in line of a project

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 10:45:00

``ix_job_project_status_created`` (project, status, created_on, token): the first queued
job of a project (:func:`worker.lease.first_in_line`, once per job message) is one index
lookup, instead of a walk through the project's jobs in the order they were queued, finished
ones included (``ix_job_project_created``), which grew with the project's job history.
"""

from __future__ import annotations

from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_job_project_status_created', 'job',
                    ['project_gid', 'status', 'created_on', 'token'])


def downgrade() -> None:
    op.drop_index('ix_job_project_status_created', table_name='job')
