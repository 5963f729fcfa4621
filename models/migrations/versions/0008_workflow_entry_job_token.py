"""workflow entries name the job that wrote them

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 21:50:00

``workflow_entry.job_token``: the token of the bulk job that wrote the entry, ``NULL`` for
a single-record edit.  A job recognises its own deletions by it (a re-run batch, a record
deleted with an ancestor the job selected); the comment text is only for display and is
the same for every single-record edit, so it cannot tell them apart.  The lookup goes by
``record_id`` (indexed) and filters on the token, so the column needs no index of its own.
Entries written before this revision keep ``NULL``.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('workflow_entry', schema=None) as batch_op:
        batch_op.add_column(sa.Column('job_token', sqlmodel.sql.sqltypes.AutoString(length=36),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('workflow_entry', schema=None) as batch_op:
        batch_op.drop_column('job_token')
