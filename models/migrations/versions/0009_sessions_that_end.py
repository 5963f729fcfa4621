"""users that can be disabled, sessions that can be ended, API keys with a public id

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 22:10:00

``user.disabled``: a disabled user can neither log in nor use a token issued before.
``user.token_version``: tokens carry the version current at their login; bumping it ends
every session of the user.  ``apikey.key_id``: a short public id naming a key in listings
and in the JWTs made from it (so that revoking the key ends those too); keys created before
this revision get a random one.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.add_column(sa.Column('disabled', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('token_version', sa.Integer(), nullable=False,
                                      server_default='0'))
    with op.batch_alter_table('apikey', schema=None) as batch_op:
        batch_op.add_column(sa.Column('key_id', sqlmodel.sql.sqltypes.AutoString(length=16),
                                      nullable=True))
    apikey = sa.table('apikey', sa.column('key_hash', sa.String),
                      sa.column('key_id', sa.String))
    conn = op.get_bind()
    for (key_hash,) in conn.execute(sa.select(apikey.c.key_hash)).all():
        conn.execute(apikey.update().where(apikey.c.key_hash == key_hash)
                     .values(key_id=secrets.token_hex(6)))
    with op.batch_alter_table('apikey', schema=None) as batch_op:
        batch_op.alter_column('key_id', existing_type=sqlmodel.sql.sqltypes.AutoString(length=16),
                              nullable=False)
        batch_op.create_index(batch_op.f('ix_apikey_key_id'), ['key_id'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('apikey', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_apikey_key_id'))
        batch_op.drop_column('key_id')
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.drop_column('token_version')
        batch_op.drop_column('disabled')
