"""notice: an index on (account_id, delivered_at) for the portal's "my notices", newest first

A page of a citizen's notices is then read from the index in order and cut after its rows,
instead of every notice of the account fetched and sorted (bench web, docs/benchmarks.md).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""
from alembic import op


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_notice_account_delivered', 'notice', ['account_id', 'delivered_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_notice_account_delivered', table_name='notice')
