"""issued_certificate: the certificates the city CA issued to agencies and citizens

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('issued_certificate',
    sa.Column('id', BigId, nullable=False),
    sa.Column('serial', sa.String(length=42), nullable=False),
    sa.Column('fingerprint', sa.LargeBinary(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('subject', sa.String(length=254), nullable=False),
    sa.Column('address', sa.String(length=254), nullable=False),
    sa.Column('key_type', sa.String(length=16), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=False),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=False),
    sa.Column('der', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revocation_reason', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_issued_certificate')),
    sa.UniqueConstraint('fingerprint', name=op.f('uq_issued_certificate_fingerprint')),
    sa.UniqueConstraint('serial', name=op.f('uq_issued_certificate_serial'))
    )
    op.create_index(op.f('ix_issued_certificate_subject'), 'issued_certificate', ['subject'], unique=False)
    op.create_index(op.f('ix_issued_certificate_revoked_at'), 'issued_certificate', ['revoked_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_issued_certificate_revoked_at'), table_name='issued_certificate')
    op.drop_index(op.f('ix_issued_certificate_subject'), table_name='issued_certificate')
    op.drop_table('issued_certificate')
