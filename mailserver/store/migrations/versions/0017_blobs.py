"""content: bodies in a blob store (issue 13 item 2): ``raw`` becomes nullable beside a
``blob_key`` (the SHA-256 of the bytes in the blob store); ``blob_release``, the keys whose last
content row went, for the collector; ``blob_state``, the collector's epoch

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07

Existing bodies stay in ``raw`` and are read from there (a partial index lists them); ``civicmail blobs migrate`` (or serve in
the background, ``blobs.migrate_batch``) moves them out in batches. On SQLite the content table
is rebuilt to drop the NOT NULL (one copy of the table, once).
"""
from alembic import op
import sqlalchemy as sa


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('content', schema=None) as batch_op:
        batch_op.alter_column('raw', existing_type=sa.LargeBinary(), nullable=True)
        batch_op.add_column(sa.Column('blob_key', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_content_blob_key'), ['blob_key'], unique=False)
    # the bodies still in the database: what `blobs migrate` reads, and counts, without a scan
    op.create_index('ix_content_in_database', 'content', ['id'], unique=False,
                    sqlite_where=sa.text('raw IS NOT NULL'), postgresql_where=sa.text('raw IS NOT NULL'))
    op.create_table('blob_release',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('blob_key', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_blob_release'))
    )
    op.create_index('ix_blob_release_at', 'blob_release', ['at'], unique=False)
    op.create_table('blob_state',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('epoch', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_blob_state'))
    )
    op.execute("INSERT INTO blob_state (id, epoch) VALUES (1, 0)")


def downgrade() -> None:
    moved = op.get_bind().execute(sa.text("SELECT count(*) FROM content WHERE raw IS NULL")).scalar()
    if moved:
        raise RuntimeError(f"{moved} message bodies are in the blob store, not in the database: a downgrade "
                           "below 0017 would lose them")
    op.drop_table('blob_state')
    op.drop_index('ix_blob_release_at', table_name='blob_release')
    op.drop_table('blob_release')
    op.drop_index('ix_content_in_database', table_name='content')
    with op.batch_alter_table('content', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_content_blob_key'))
        batch_op.drop_column('blob_key')
        batch_op.alter_column('raw', existing_type=sa.LargeBinary(), nullable=False)
