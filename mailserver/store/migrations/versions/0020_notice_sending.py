"""notice.state: a notice being handed to the external mail store (store.mode = "external")

Revision ID: 0020
Revises: 0018
Create Date: 2026-12-07

In external mode the pipeline records a notice's idempotency key as 'sending' before it speaks
LMTP, and clears the state after the server's 250 (delivery/external.py): a run that stopped in
between finds the key and sends that notice again (same Message-ID) instead of skipping it or
sending every row again. NULL is delivered: every existing row, and every row of a local store.
"""
from alembic import op
import sqlalchemy as sa


revision = '0020'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('notice', schema=None) as batch_op:
        batch_op.add_column(sa.Column('state', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('notice', schema=None) as batch_op:
        batch_op.drop_column('state')
