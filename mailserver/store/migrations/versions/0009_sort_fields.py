"""content_sort: what SORT and THREAD read of each content row (base subject, sent date, sort
addresses, display names, Message-ID, References), filled for every existing message

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa

from mailserver.mime import sort_fields_of
from mailserver.mime.sortkeys import COLUMNS, MAX_KEY_CHARS, MAX_MSGID_CHARS

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
#: content rows read and written per statement of the backfill
BATCH = 1000


def upgrade() -> None:
    key = sa.String(MAX_KEY_CHARS)
    op.create_table('content_sort',
    sa.Column('content_id', BigId, autoincrement=False, nullable=False),
    sa.Column('sort_subject', key, nullable=False),
    sa.Column('sort_reply', sa.Boolean(), nullable=False),
    sa.Column('sort_date', BigId, nullable=True),
    sa.Column('sort_from', key, nullable=False),
    sa.Column('sort_to', key, nullable=False),
    sa.Column('sort_cc', key, nullable=False),
    sa.Column('display_from', key, nullable=False),
    sa.Column('display_to', key, nullable=False),
    sa.Column('message_id', sa.String(MAX_MSGID_CHARS), nullable=True),
    sa.Column('thread_refs', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['content_id'], ['content.id'], name=op.f('fk_content_sort_content_id_content'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('content_id', name=op.f('pk_content_sort'))
    )
    _backfill(op.get_bind())


def _backfill(conn) -> None:
    """Every content row's fields from its header, in batches (keyset on id): the headers of
    one batch are in memory at a time, never the store's."""
    content = sa.table('content', sa.column('id'), sa.column('raw', sa.LargeBinary()), sa.column('header_size'))
    header = sa.func.substr(content.c.raw, 1, content.c.header_size)
    insert = sa.table('content_sort', sa.column('content_id'), *(sa.column(c) for c in COLUMNS)).insert()
    last = 0
    while True:
        rows = conn.execute(sa.select(content.c.id, header).where(content.c.id > last)
                            .order_by(content.c.id).limit(BATCH)).all()
        if not rows:
            return
        conn.execute(insert, [{'content_id': cid, **dict(zip(COLUMNS, sort_fields_of(bytes(raw or b''))))}
                              for cid, raw in rows])
        last = rows[-1][0]


def downgrade() -> None:
    op.drop_table('content_sort')
