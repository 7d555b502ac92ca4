"""passkeys: WebAuthn credentials and their challenges; how a web session was signed in (amr)

account_passkey holds a citizen's passkeys (the web sign-in's second factor beside TOTP);
webauthn_challenge the single-use, session-bound challenges of the registration and sign-in
ceremonies. web_session.amr and oidc_code.amr carry the methods of a sign-in (RFC 8176) from the
session to the ID token; existing rows were signed in with a password only ('pwd').

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table('account_passkey',
    sa.Column('id', BigId, nullable=False),
    sa.Column('handle', sa.String(length=32), nullable=False),
    sa.Column('account_id', BigId, nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('credential_id', sa.LargeBinary(length=1023), nullable=False),
    sa.Column('public_key', sa.LargeBinary(length=2048), nullable=False),
    sa.Column('sign_count', sa.BigInteger(), nullable=False),
    sa.Column('transports', sa.String(length=200), nullable=False),
    sa.Column('synced', sa.Boolean(), nullable=False),
    sa.Column('created_at', When, nullable=False),
    sa.Column('last_used_at', When, nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_account_passkey_account_id_account'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_account_passkey')),
    sa.UniqueConstraint('credential_id', name=op.f('uq_account_passkey_credential_id')),
    sa.UniqueConstraint('handle', name=op.f('uq_account_passkey_handle'))
    )
    op.create_index(op.f('ix_account_passkey_account_id'), 'account_passkey', ['account_id'], unique=False)
    op.create_table('webauthn_challenge',
    sa.Column('id', BigId, nullable=False),
    sa.Column('challenge', sa.LargeBinary(length=64), nullable=False),
    sa.Column('binding', sa.LargeBinary(length=32), nullable=False),
    sa.Column('account_id', BigId, nullable=False),
    sa.Column('purpose', sa.String(length=16), nullable=False),
    sa.Column('expires_at', When, nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_webauthn_challenge_account_id_account'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webauthn_challenge')),
    sa.UniqueConstraint('challenge', name=op.f('uq_webauthn_challenge_challenge'))
    )
    op.create_index('ix_webauthn_challenge_binding', 'webauthn_challenge', ['binding', 'purpose'], unique=False)
    op.create_index(op.f('ix_webauthn_challenge_expires_at'), 'webauthn_challenge', ['expires_at'], unique=False)
    with op.batch_alter_table('web_session', schema=None) as batch_op:
        batch_op.add_column(sa.Column('amr', sa.String(length=64), server_default='pwd', nullable=False))
    with op.batch_alter_table('oidc_code', schema=None) as batch_op:
        batch_op.add_column(sa.Column('amr', sa.String(length=64), server_default='pwd', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('oidc_code', schema=None) as batch_op:
        batch_op.drop_column('amr')
    with op.batch_alter_table('web_session', schema=None) as batch_op:
        batch_op.drop_column('amr')
    op.drop_index(op.f('ix_webauthn_challenge_expires_at'), table_name='webauthn_challenge')
    op.drop_index('ix_webauthn_challenge_binding', table_name='webauthn_challenge')
    op.drop_table('webauthn_challenge')
    op.drop_index(op.f('ix_account_passkey_account_id'), table_name='account_passkey')
    op.drop_table('account_passkey')
