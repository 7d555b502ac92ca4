"""foundation: registry, mailboxes, drops, outbound queue

Revision ID: 0001
Revises: 
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('address_counter',
    sa.Column('base', sa.String(length=200), nullable=False),
    sa.Column('last', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('base', name=op.f('pk_address_counter'))
    )
    op.create_table('agency',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agency'))
    )
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=254), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_at'), ['at'], unique=False)

    op.create_table('citizen',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('id_index', sa.LargeBinary(length=32), nullable=False),
    sa.Column('id_cipher', sa.LargeBinary(length=64), nullable=False),
    sa.Column('phone', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_citizen')),
    sa.UniqueConstraint('id_index', name=op.f('uq_citizen_id_index'))
    )
    op.create_table('content',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('raw', sa.LargeBinary(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('header_size', sa.Integer(), nullable=False),
    sa.Column('envelope', sa.Text(), nullable=True),
    sa.Column('body', sa.Text(), nullable=True),
    sa.Column('bodystructure', sa.Text(), nullable=True),
    sa.Column('search_text', sa.Text(), nullable=True),
    sa.Column('refcount', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_content'))
    )
    op.create_table('notice_type',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('agency_id', sa.String(length=64), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('mandatory', sa.Boolean(), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notice_type'))
    )
    op.create_table('account',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('address', sa.String(length=254), nullable=False),
    sa.Column('citizen_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('agency_id', sa.String(length=64), nullable=True),
    sa.Column('password_hash', sa.String(length=128), nullable=True),
    sa.Column('activation_hash', sa.LargeBinary(length=32), nullable=True),
    sa.Column('activation_expires', sa.DateTime(timezone=True), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('quota_bytes', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_login_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['agency_id'], ['agency.id'], name=op.f('fk_account_agency_id_agency')),
    sa.ForeignKeyConstraint(['citizen_id'], ['citizen.id'], name=op.f('fk_account_citizen_id_citizen')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_account')),
    sa.UniqueConstraint('address', name=op.f('uq_account_address')),
    sa.UniqueConstraint('citizen_id', name=op.f('uq_account_citizen_id'))
    )
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.create_index('ix_account_agency_id', ['agency_id'], unique=False)

    op.create_table('agency_credential',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('agency_id', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['agency_id'], ['agency.id'], name=op.f('fk_agency_credential_agency_id_agency')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agency_credential'))
    )
    with op.batch_alter_table('agency_credential', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agency_credential_agency_id'), ['agency_id'], unique=False)

    op.create_table('agency_grant',
    sa.Column('agency_id', sa.String(length=64), nullable=False),
    sa.Column('notice_type_id', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['agency_id'], ['agency.id'], name=op.f('fk_agency_grant_agency_id_agency')),
    sa.ForeignKeyConstraint(['notice_type_id'], ['notice_type.id'], name=op.f('fk_agency_grant_notice_type_id_notice_type')),
    sa.PrimaryKeyConstraint('agency_id', 'notice_type_id', name=op.f('pk_agency_grant'))
    )
    op.create_table('agency_sender',
    sa.Column('address', sa.String(length=254), nullable=False),
    sa.Column('agency_id', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['agency_id'], ['agency.id'], name=op.f('fk_agency_sender_agency_id_agency')),
    sa.PrimaryKeyConstraint('address', name=op.f('pk_agency_sender'))
    )
    with op.batch_alter_table('agency_sender', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agency_sender_agency_id'), ['agency_id'], unique=False)

    op.create_table('drop',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('agency_id', sa.String(length=64), nullable=False),
    sa.Column('notice_type_id', sa.String(length=64), nullable=False),
    sa.Column('filename', sa.String(length=1000), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('rows_total', sa.Integer(), nullable=False),
    sa.Column('rows_delivered', sa.Integer(), nullable=False),
    sa.Column('rows_rejected', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['agency_id'], ['agency.id'], name=op.f('fk_drop_agency_id_agency')),
    sa.ForeignKeyConstraint(['notice_type_id'], ['notice_type.id'], name=op.f('fk_drop_notice_type_id_notice_type')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_drop'))
    )
    with op.batch_alter_table('drop', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_drop_sha256'), ['sha256'], unique=False)

    op.create_table('drop_row',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('drop_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('line', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('idempotency_key', sa.String(length=128), nullable=True),
    sa.ForeignKeyConstraint(['drop_id'], ['drop.id'], name=op.f('fk_drop_row_drop_id_drop'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_drop_row'))
    )
    with op.batch_alter_table('drop_row', schema=None) as batch_op:
        batch_op.create_index('ix_drop_row_drop_line', ['drop_id', 'line'], unique=False)

    op.create_table('folder',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=512), nullable=False),
    sa.Column('special_use', sa.String(length=16), nullable=True),
    sa.Column('subscribed', sa.Boolean(), nullable=False),
    sa.Column('uidvalidity', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('uidnext', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('highestmodseq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('total_size', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('message_count', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_folder_account_id_account'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_folder')),
    sa.UniqueConstraint('account_id', 'name', name='uq_folder_account_name')
    )
    op.create_table('notice',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('idempotency_key', sa.String(length=128), nullable=False),
    sa.Column('agency_id', sa.String(length=64), nullable=False),
    sa.Column('notice_type_id', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('message_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('drop_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_notice_account_id_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notice')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_notice_idempotency_key'))
    )
    with op.batch_alter_table('notice', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notice_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_notice_delivered_at'), ['delivered_at'], unique=False)

    op.create_table('outbound_message',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('sender', sa.String(length=254), nullable=False),
    sa.Column('recipients', sa.Text(), nullable=False),
    sa.Column('raw', sa.LargeBinary(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_outbound_message_account_id_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbound_message'))
    )
    with op.batch_alter_table('outbound_message', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbound_message_next_attempt_at'), ['next_attempt_at'], unique=False)

    op.create_table('message',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('folder_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('uid', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('modseq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('flags', sa.Integer(), nullable=False),
    sa.Column('keywords', sa.String(length=1000), nullable=True),
    sa.Column('internaldate', sa.DateTime(timezone=True), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('content_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['content_id'], ['content.id'], name=op.f('fk_message_content_id_content')),
    sa.ForeignKeyConstraint(['folder_id'], ['folder.id'], name=op.f('fk_message_folder_id_folder'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_message')),
    sa.UniqueConstraint('folder_id', 'uid', name='uq_message_folder_uid')
    )
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_message_content_id'), ['content_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_message_content_id'))

    op.drop_table('message')
    with op.batch_alter_table('outbound_message', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbound_message_next_attempt_at'))

    op.drop_table('outbound_message')
    with op.batch_alter_table('notice', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notice_delivered_at'))
        batch_op.drop_index(batch_op.f('ix_notice_account_id'))

    op.drop_table('notice')
    op.drop_table('folder')
    with op.batch_alter_table('drop_row', schema=None) as batch_op:
        batch_op.drop_index('ix_drop_row_drop_line')

    op.drop_table('drop_row')
    with op.batch_alter_table('drop', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_drop_sha256'))

    op.drop_table('drop')
    with op.batch_alter_table('agency_sender', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agency_sender_agency_id'))

    op.drop_table('agency_sender')
    op.drop_table('agency_grant')
    with op.batch_alter_table('agency_credential', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agency_credential_agency_id'))

    op.drop_table('agency_credential')
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.drop_index('ix_account_agency_id')

    op.drop_table('account')
    op.drop_table('notice_type')
    op.drop_table('content')
    op.drop_table('citizen')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_at'))

    op.drop_table('audit_log')
    op.drop_table('agency')
    op.drop_table('address_counter')
