"""login days: the days each account logged in over IMAP (active users for any period)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('login_day',
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_login_day_account_id_account')),
    sa.PrimaryKeyConstraint('account_id', 'day', name=op.f('pk_login_day'))
    )
    op.create_index('ix_login_day_day', 'login_day', ['day', 'account_id'], unique=False)
    # What is known of earlier logins: the day of each account's last one.
    op.execute("INSERT INTO login_day (account_id, day) "
               "SELECT id, CAST(last_login_at AS DATE) FROM account WHERE last_login_at IS NOT NULL"
               if op.get_bind().dialect.name == "postgresql" else
               "INSERT INTO login_day (account_id, day) "
               "SELECT id, date(last_login_at) FROM account WHERE last_login_at IS NOT NULL")


def downgrade() -> None:
    op.drop_index('ix_login_day_day', table_name='login_day')
    op.drop_table('login_day')
