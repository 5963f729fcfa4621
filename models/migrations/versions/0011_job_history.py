"""jobs found by project and time, finished jobs by age

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 22:40:00

``ix_job_project_created`` (``project_gid``, ``created_on``, ``token``): ``jobs/list`` pages
a project's jobs newest first (with any of its filters) along one index range instead of
sorting every job of the project for every page.  ``ix_job_status_finished`` (``status``,
``finished_on``): the retention task finds finished jobs older than ``JOB_RETENTION_DAYS``
without reading the others.  ``ix_job_token_prefix`` (``token``, with
``varchar_pattern_ops`` on PostgreSQL) lets PostgreSQL find the jobs whose token starts with
a prefix (``jobs/list``'s ``token.prefix``) with one range, whatever the database's
collation; SQLite's plan reads the project's range of ``ix_job_project_created`` instead.
"""

from __future__ import annotations

from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.create_index('ix_job_project_created', ['project_gid', 'created_on', 'token'],
                              unique=False)
        batch_op.create_index('ix_job_status_finished', ['status', 'finished_on'], unique=False)
    op.create_index('ix_job_token_prefix', 'job', ['token'], unique=False,
                    postgresql_ops={'token': 'varchar_pattern_ops'})


def downgrade() -> None:
    op.drop_index('ix_job_token_prefix', table_name='job')
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_index('ix_job_status_finished')
        batch_op.drop_index('ix_job_project_created')
