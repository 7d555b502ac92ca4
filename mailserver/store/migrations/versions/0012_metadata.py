"""annotation: RFC 5464 METADATA entries of an account, on the server (folder_id NULL) or on
one of its folders

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-14
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('annotation',
    sa.Column('id', BigId, nullable=False),
    sa.Column('account_id', BigId, nullable=False),
    sa.Column('folder_id', BigId, nullable=True),
    sa.Column('name', sa.String(length=1024), nullable=False),
    sa.Column('value', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_annotation_account_id_account'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['folder_id'], ['folder.id'], name=op.f('fk_annotation_folder_id_folder'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_annotation'))
    )
    op.create_index('ix_annotation_account_folder_name', 'annotation', ['account_id', 'folder_id', 'name'],
                    unique=False)
    op.create_index('ix_annotation_folder', 'annotation', ['folder_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_annotation_folder', table_name='annotation')
    op.drop_index('ix_annotation_account_folder_name', table_name='annotation')
    op.drop_table('annotation')
