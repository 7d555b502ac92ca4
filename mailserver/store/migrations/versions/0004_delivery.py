"""delivery: drop provenance and columns, sealed row data for reports and retry, opt-outs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('drop', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('columns', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('error', sa.Text(), nullable=True))
    with op.batch_alter_table('drop_row', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stage', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('data', sa.LargeBinary(), nullable=True))
    op.create_table('notice_opt_out',
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('notice_type_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_notice_opt_out_account_id_account'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['notice_type_id'], ['notice_type.id'],
                            name=op.f('fk_notice_opt_out_notice_type_id_notice_type')),
    sa.PrimaryKeyConstraint('account_id', 'notice_type_id', name=op.f('pk_notice_opt_out'))
    )


def downgrade() -> None:
    op.drop_table('notice_opt_out')
    with op.batch_alter_table('drop_row', schema=None) as batch_op:
        batch_op.drop_column('data')
        batch_op.drop_column('stage')
    with op.batch_alter_table('drop', schema=None) as batch_op:
        batch_op.drop_column('error')
        batch_op.drop_column('columns')
        batch_op.drop_column('source')
