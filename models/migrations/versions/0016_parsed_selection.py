"""the parsed selection stored with its job

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 02:20:00

``job.selection``: the job's selection as parsed when it was submitted
(:mod:`models.selection_store`), so that its runs read it instead of parsing the request's
JSON again.  Null on rows written before; their runs parse ``params`` as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('selection', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('selection')
