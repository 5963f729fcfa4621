"""indexes for the schema jobs' lookups of layout users and definition users

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 12:30:00

``ix_schema_item_layout_project`` (``layout``, ``project_gid``): the items pointing at a
layout that a schema job commits, reverts or saves as new (repointed to its original, or
counted before it goes); ``ix_record_definition_project`` (``definition``, ``project_gid``):
the records using a definition working copy that a schema job removes (moved to the
original), and the records using a new definition being reverted.  Without them each batch
scans every schema item, or every record, of the project.  The looked-up column comes first:
statements that only have the project to go on keep the indexes they had (SQLite, without
statistics, could take a new index led by ``project_gid`` for theirs).
"""

from __future__ import annotations

from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_schema_item_layout_project', 'schema_item', ['layout', 'project_gid'])
    op.create_index('ix_record_definition_project', 'record', ['definition', 'project_gid'])


def downgrade() -> None:
    op.drop_index('ix_record_definition_project', table_name='record')
    op.drop_index('ix_schema_item_layout_project', table_name='schema_item')
