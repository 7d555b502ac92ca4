"""message.account_id: every message names its folder's account, and its keys lead with it

The first step of partitioning ``message`` by account (docs/scale.md, "Hash partitioning"; the
partitions themselves are 0028, PostgreSQL only): ``message`` gains ``account_id`` (NOT NULL,
filled from ``folder.account_id``), held to its folder by the foreign key ``(account_id,
folder_id)`` to ``folder (account_id, id)`` (a new unique key of ``folder``; ON DELETE CASCADE
as before), so that a message can never name another account than its folder's. The unique key
of a UID in its folder becomes ``(account_id, folder_id, uid)`` and the index of what changed
since a MODSEQ ``(account_id, folder_id, modseq)``: the same uniqueness and the same order (a
folder belongs to one account), led by the column every hot statement now names.

On PostgreSQL the fill is one UPDATE of every message (a rewrite of the table: downtime for
whatever writes messages, as long as a copy of the table takes); on SQLite the table is copied
(Alembic's batch mode).

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


revision = '0027'
down_revision = '0026'
branch_labels = None
depends_on = None

FILL = ("UPDATE message SET account_id = (SELECT folder.account_id FROM folder WHERE folder.id = message.folder_id)")
PG_FILL = "UPDATE message SET account_id = folder.account_id FROM folder WHERE folder.id = message.folder_id"


def upgrade() -> None:
    pg = op.get_bind().dialect.name == 'postgresql'
    with op.batch_alter_table('folder', schema=None) as batch_op:
        batch_op.create_unique_constraint('uq_folder_account_id_id', ['account_id', 'id'])
    op.add_column('message', sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                                       nullable=True))
    op.execute(PG_FILL if pg else FILL)
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.alter_column('account_id', existing_type=sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                              nullable=False)
        batch_op.drop_constraint('fk_message_folder_id_folder', type_='foreignkey')
        batch_op.drop_constraint('uq_message_folder_uid', type_='unique')
        batch_op.drop_index('ix_message_folder_modseq')
        batch_op.create_foreign_key('fk_message_account_folder_folder', 'folder', ['account_id', 'folder_id'],
                                    ['account_id', 'id'], ondelete='CASCADE')
        batch_op.create_unique_constraint('uq_message_account_folder_uid', ['account_id', 'folder_id', 'uid'])
        batch_op.create_index('ix_message_account_folder_modseq', ['account_id', 'folder_id', 'modseq'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('message', schema=None) as batch_op:
        batch_op.drop_index('ix_message_account_folder_modseq')
        batch_op.drop_constraint('uq_message_account_folder_uid', type_='unique')
        batch_op.drop_constraint('fk_message_account_folder_folder', type_='foreignkey')
        batch_op.create_foreign_key('fk_message_folder_id_folder', 'folder', ['folder_id'], ['id'], ondelete='CASCADE')
        batch_op.create_unique_constraint('uq_message_folder_uid', ['folder_id', 'uid'])
        batch_op.create_index('ix_message_folder_modseq', ['folder_id', 'modseq'], unique=False)
        batch_op.drop_column('account_id')
    with op.batch_alter_table('folder', schema=None) as batch_op:
        batch_op.drop_constraint('uq_folder_account_id_id', type_='unique')
