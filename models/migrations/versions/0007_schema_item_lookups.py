"""schema items found by name and by original

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 19:10:00

``ix_schema_item_project_name`` (``project_gid``, ``name``): a schema job finds the committed
items that hold its items' names with one lookup per name; ``ix_schema_item_original``:
a selected item's working copy is found by its original's gid.  Without them both scan
every schema item of every project.
"""

from __future__ import annotations

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('schema_item', schema=None) as batch_op:
        batch_op.create_index('ix_schema_item_project_name', ['project_gid', 'name'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_schema_item_original'), ['original'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('schema_item', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_schema_item_original'))
        batch_op.drop_index('ix_schema_item_project_name')
