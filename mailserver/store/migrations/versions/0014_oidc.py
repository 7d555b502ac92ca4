"""oidc: web sessions, TOTP second factors, and the OpenID Connect provider's clients,
consents, codes and tokens

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07

The portal's client row is not made here (its redirect URI comes from the configuration):
`civicmail init` and `civicmail db upgrade` register it after migrating (registry/oidc.py).
"""
from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table('web_session',
    sa.Column('id', BigId, nullable=False),
    sa.Column('secret_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('handle', sa.String(length=32), nullable=False),
    sa.Column('account_id', BigId, nullable=False),
    sa.Column('created_at', When, nullable=False),
    sa.Column('auth_time', When, nullable=False),
    sa.Column('last_seen_at', When, nullable=False),
    sa.Column('ip', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_web_session_account_id_account'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_web_session')),
    sa.UniqueConstraint('secret_hash', name=op.f('uq_web_session_secret_hash')),
    sa.UniqueConstraint('handle', name=op.f('uq_web_session_handle'))
    )
    op.create_index('ix_web_session_account', 'web_session', ['account_id', 'created_at'], unique=False)
    op.create_table('account_totp',
    sa.Column('account_id', BigId, nullable=False),
    sa.Column('secret_cipher', sa.LargeBinary(length=128), nullable=False),
    sa.Column('last_step', sa.BigInteger(), nullable=False),
    sa.Column('created_at', When, nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_account_totp_account_id_account'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id', name=op.f('pk_account_totp'))
    )
    op.create_table('oidc_client',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('secret_hash', sa.LargeBinary(length=32), nullable=True),
    sa.Column('redirect_uris', sa.Text(), nullable=False),
    sa.Column('scopes', sa.Text(), nullable=False),
    sa.Column('claims', sa.Text(), nullable=False),
    sa.Column('builtin', sa.Boolean(), nullable=False),
    sa.Column('created_at', When, nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oidc_client'))
    )
    op.create_table('oidc_consent',
    sa.Column('account_id', BigId, nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('scopes', sa.Text(), nullable=False),
    sa.Column('granted_at', When, nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_oidc_consent_account_id_account'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['client_id'], ['oidc_client.id'], name=op.f('fk_oidc_consent_client_id_oidc_client'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id', 'client_id', name=op.f('pk_oidc_consent'))
    )
    op.create_table('oidc_code',
    sa.Column('id', BigId, nullable=False),
    sa.Column('code_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('account_id', BigId, nullable=False),
    sa.Column('redirect_uri', sa.Text(), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('nonce', sa.String(length=255), nullable=True),
    sa.Column('code_challenge', sa.String(length=128), nullable=True),
    sa.Column('code_challenge_method', sa.String(length=16), nullable=True),
    sa.Column('auth_time', When, nullable=False),
    sa.Column('expires_at', When, nullable=False),
    sa.Column('used_at', When, nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_oidc_code_account_id_account'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['client_id'], ['oidc_client.id'], name=op.f('fk_oidc_code_client_id_oidc_client'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oidc_code')),
    sa.UniqueConstraint('code_hash', name=op.f('uq_oidc_code_code_hash'))
    )
    op.create_index(op.f('ix_oidc_code_account_id'), 'oidc_code', ['account_id'], unique=False)
    op.create_index(op.f('ix_oidc_code_client_id'), 'oidc_code', ['client_id'], unique=False)
    op.create_table('oidc_token',
    sa.Column('id', BigId, nullable=False),
    sa.Column('access_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('refresh_hash', sa.LargeBinary(length=32), nullable=True),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('account_id', BigId, nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('family', sa.String(length=32), nullable=False),
    sa.Column('auth_time', When, nullable=False),
    sa.Column('issued_at', When, nullable=False),
    sa.Column('access_expires_at', When, nullable=False),
    sa.Column('refresh_expires_at', When, nullable=True),
    sa.Column('revoked_at', When, nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_oidc_token_account_id_account'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['client_id'], ['oidc_client.id'], name=op.f('fk_oidc_token_client_id_oidc_client'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oidc_token')),
    sa.UniqueConstraint('access_hash', name=op.f('uq_oidc_token_access_hash')),
    sa.UniqueConstraint('refresh_hash', name=op.f('uq_oidc_token_refresh_hash'))
    )
    op.create_index(op.f('ix_oidc_token_account_id'), 'oidc_token', ['account_id'], unique=False)
    op.create_index(op.f('ix_oidc_token_client_id'), 'oidc_token', ['client_id'], unique=False)
    op.create_index(op.f('ix_oidc_token_family'), 'oidc_token', ['family'], unique=False)


def downgrade() -> None:
    op.drop_table('oidc_token')
    op.drop_table('oidc_code')
    op.drop_table('oidc_consent')
    op.drop_table('oidc_client')
    op.drop_table('account_totp')
    op.drop_index('ix_web_session_account', table_name='web_session')
    op.drop_table('web_session')
