"""read tokens name their project and user

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 22:00:00

``read_token``: the project and the user a ``records/bulk/get`` read token was made for.
A page cursor is honoured only when both match the route's project and the acting user, so
a cursor is no way into another project's records.  Read tokens made before this revision
have no row and answer as expired (they are at most 15 minutes old anyway).
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'read_token',
        sa.Column('token', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('project_gid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('user_gid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.PrimaryKeyConstraint('token'),
    )


def downgrade() -> None:
    op.drop_table('read_token')
