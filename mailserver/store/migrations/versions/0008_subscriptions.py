"""mailbox_subscription: IMAP subscriptions as a list of their own (RFC 3501 6.3.6), not a column
of the folder, so that a name stays subscribed after DELETE and can be subscribed before CREATE

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('mailbox_subscription',
    sa.Column('account_id', BigId, autoincrement=False, nullable=False),
    sa.Column('name', sa.String(length=512), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_mailbox_subscription_account_id_account'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id', 'name', name=op.f('pk_mailbox_subscription'))
    )
    op.execute("INSERT INTO mailbox_subscription (account_id, name) SELECT account_id, name FROM folder "
               "WHERE subscribed")
    with op.batch_alter_table('folder', schema=None) as batch_op:
        batch_op.drop_column('subscribed')


def downgrade() -> None:
    # Back to a mark on the folder: subscriptions of names without a folder cannot be kept.
    with op.batch_alter_table('folder', schema=None) as batch_op:
        batch_op.add_column(sa.Column('subscribed', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.execute("UPDATE folder SET subscribed = EXISTS (SELECT 1 FROM mailbox_subscription s "
               "WHERE s.account_id = folder.account_id AND s.name = folder.name)")
    op.drop_table('mailbox_subscription')
