"""services: topics and subscriptions, bulletins, surveys and ballots, applications, processed service mail

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('application',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('number', sa.String(length=32), nullable=False),
    sa.Column('agency_id', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('subject', sa.String(length=500), nullable=False),
    sa.Column('status', sa.String(length=64), nullable=False),
    sa.Column('root_message_id', sa.String(length=500), nullable=False),
    sa.Column('thread_refs', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_application_account_id_account')),
    sa.ForeignKeyConstraint(['agency_id'], ['agency.id'], name=op.f('fk_application_agency_id_agency')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_application')),
    sa.UniqueConstraint('number', name=op.f('uq_application_number'))
    )
    with op.batch_alter_table('application', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_application_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_application_agency_id'), ['agency_id'], unique=False)
        batch_op.create_index('ix_application_root_message_id', ['root_message_id'], unique=False)

    op.create_table('application_desk',
    sa.Column('agency_id', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('mailbox_account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_application_desk_account_id_account')),
    sa.ForeignKeyConstraint(['agency_id'], ['agency.id'], name=op.f('fk_application_desk_agency_id_agency')),
    sa.ForeignKeyConstraint(['mailbox_account_id'], ['account.id'], name=op.f('fk_application_desk_mailbox_account_id_account')),
    sa.PrimaryKeyConstraint('agency_id', name=op.f('pk_application_desk')),
    sa.UniqueConstraint('account_id', name=op.f('uq_application_desk_account_id'))
    )
    op.create_table('service_account',
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('ref', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_service_account_account_id_account'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('account_id', name=op.f('pk_service_account')),
    sa.UniqueConstraint('kind', 'ref', name='uq_service_account_kind_ref')
    )
    op.create_table('service_processed',
    sa.Column('message_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_service_processed_account_id_account'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('message_id', name=op.f('pk_service_processed'))
    )
    with op.batch_alter_table('service_processed', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_service_processed_account_id'), ['account_id'], unique=False)

    op.create_table('survey',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('anonymous', sa.Boolean(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('questions', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_survey_account_id_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_survey')),
    sa.UniqueConstraint('account_id', name=op.f('uq_survey_account_id'))
    )
    op.create_table('topic',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('notice_type_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_topic_account_id_account')),
    sa.ForeignKeyConstraint(['notice_type_id'], ['notice_type.id'], name=op.f('fk_topic_notice_type_id_notice_type')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_topic')),
    sa.UniqueConstraint('account_id', name=op.f('uq_topic_account_id'))
    )
    op.create_table('ballot',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('survey_id', sa.String(length=64), nullable=False),
    sa.Column('voter_key', sa.LargeBinary(length=32), nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('answers', sa.Text(), nullable=False),
    sa.Column('replies', sa.Integer(), nullable=False),
    sa.Column('source_message_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_ballot_account_id_account'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['survey_id'], ['survey.id'], name=op.f('fk_ballot_survey_id_survey'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ballot')),
    sa.UniqueConstraint('survey_id', 'voter_key', name='uq_ballot_survey_id')
    )
    op.create_table('bulletin',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('topic_id', sa.String(length=64), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=500), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['topic_id'], ['topic.id'], name=op.f('fk_bulletin_topic_id_topic'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bulletin')),
    sa.UniqueConstraint('topic_id', 'sha256', name='uq_bulletin_topic_id')
    )
    op.create_table('subscription',
    sa.Column('topic_id', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_subscription_account_id_account'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['topic_id'], ['topic.id'], name=op.f('fk_subscription_topic_id_topic'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('topic_id', 'account_id', name=op.f('pk_subscription'))
    )
    op.create_table('survey_recipient',
    sa.Column('survey_id', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_survey_recipient_account_id_account'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['survey_id'], ['survey.id'], name=op.f('fk_survey_recipient_survey_id_survey'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('survey_id', 'account_id', name=op.f('pk_survey_recipient'))
    )
    op.create_table('bulletin_delivery',
    sa.Column('bulletin_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['account.id'], name=op.f('fk_bulletin_delivery_account_id_account'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['bulletin_id'], ['bulletin.id'], name=op.f('fk_bulletin_delivery_bulletin_id_bulletin'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('bulletin_id', 'account_id', name=op.f('pk_bulletin_delivery'))
    )


def downgrade() -> None:
    op.drop_table('bulletin_delivery')
    op.drop_table('survey_recipient')
    op.drop_table('subscription')
    op.drop_table('bulletin')
    op.drop_table('ballot')
    op.drop_table('topic')
    op.drop_table('survey')
    with op.batch_alter_table('service_processed', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_service_processed_account_id'))

    op.drop_table('service_processed')
    op.drop_table('service_account')
    op.drop_table('application_desk')
    with op.batch_alter_table('application', schema=None) as batch_op:
        batch_op.drop_index('ix_application_root_message_id')
        batch_op.drop_index(batch_op.f('ix_application_agency_id'))
        batch_op.drop_index(batch_op.f('ix_application_account_id'))

    op.drop_table('application')
