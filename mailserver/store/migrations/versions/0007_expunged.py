"""expunged: tombstones of messages that left a folder, for QRESYNC (RFC 7162 3.2)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('expunged',
    sa.Column('folder_id', BigId, autoincrement=False, nullable=False),
    sa.Column('modseq', BigId, autoincrement=False, nullable=False),
    sa.Column('uid', BigId, autoincrement=False, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['folder_id'], ['folder.id'], name=op.f('fk_expunged_folder_id_folder'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('folder_id', 'modseq', 'uid', name=op.f('pk_expunged'))
    )
    op.create_index('ix_expunged_at', 'expunged', ['at'], unique=False)
    with op.batch_alter_table('folder', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tombstone_floor', BigId, server_default='0', nullable=False))
    # Earlier expunges left no tombstone: a client resynchronising from before now gets every
    # UID that is not present (RFC 7162 3.2.5.2), which is always correct.
    op.execute("UPDATE folder SET tombstone_floor = highestmodseq")


def downgrade() -> None:
    with op.batch_alter_table('folder', schema=None) as batch_op:
        batch_op.drop_column('tombstone_floor')
    op.drop_index('ix_expunged_at', table_name='expunged')
    op.drop_table('expunged')
