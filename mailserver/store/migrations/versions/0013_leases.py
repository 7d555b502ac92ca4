"""leases: shared work claimed in the database by one node at a time, with a heartbeat: a drop's
owner and lease, the outbound entry's claimer, and the lease table (the drop mailbox watcher and
its position, a spooled file being run)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

Drops already running have no owner: the first node to run their file again takes them over, as
before. The drop mailbox's position was in each node's maildrop-state.json; the first watcher to
run after the upgrade takes it from its own file once (delivery/maildrop.py).
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('drop', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('outbound_message', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=120), nullable=True))
    op.create_table('lease',
    sa.Column('name', sa.String(length=400), nullable=False),
    sa.Column('owner', sa.String(length=120), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('position', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_lease'))
    )


def downgrade() -> None:
    op.drop_table('lease')
    with op.batch_alter_table('outbound_message', schema=None) as batch_op:
        batch_op.drop_column('claimed_by')
    with op.batch_alter_table('drop', schema=None) as batch_op:
        batch_op.drop_column('lease_until')
        batch_op.drop_column('owner')
