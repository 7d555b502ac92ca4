"""imap: \\Recent bookkeeping and the index behind cross-session updates

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('folder', schema=None) as batch_op:
        batch_op.add_column(sa.Column('recent_uid', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                                      server_default='0', nullable=False))
        batch_op.add_column(sa.Column('uidvalidity_mark', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                                      server_default='0', nullable=False))
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.create_index('ix_message_folder_modseq', ['folder_id', 'modseq'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.drop_index('ix_message_folder_modseq')
    with op.batch_alter_table('folder', schema=None) as batch_op:
        batch_op.drop_column('uidvalidity_mark')
        batch_op.drop_column('recent_uid')
