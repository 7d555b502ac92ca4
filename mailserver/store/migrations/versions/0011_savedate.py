"""savedate and preview: when a message was saved into its folder (RFC 8514 SAVEDATE), and the
preview of its content (RFC 8970 PREVIEW), computed at delivery like the rest of the structure

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-12

Messages already stored get their INTERNALDATE as their save date (the best the store knows;
RFC 8514 would allow NIL). Content already stored has no preview: FETCH PREVIEW makes one from
the raw bytes (on the heavy lane), and PREVIEW (LAZY) answers NIL for it.
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.add_column(sa.Column('savedate', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE message SET savedate = internaldate")
    with op.batch_alter_table('content', schema=None) as batch_op:
        batch_op.add_column(sa.Column('preview', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('content', schema=None) as batch_op:
        batch_op.drop_column('preview')
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.drop_column('savedate')
