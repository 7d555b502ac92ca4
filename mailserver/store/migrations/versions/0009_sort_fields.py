"""content: what SORT and THREAD read (base subject, sent date, sort addresses, display names,
Message-ID, References), filled for every existing message

Revision ID: 0009
Revises: 0007
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa

from mailserver.mime import sort_fields_of
from mailserver.mime.sortkeys import COLUMNS, MAX_KEY_CHARS, MAX_MSGID_CHARS

revision = '0009'
down_revision = '0007'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
#: content rows read and written per statement of the backfill
BATCH = 1000
#: the backfill's bound parameters (a column's own name is reserved in an UPDATE's SET)
_NAMES = tuple(f'v_{c}' for c in COLUMNS)


def _columns() -> list[sa.Column]:
    key = sa.String(MAX_KEY_CHARS)
    return [sa.Column('sort_subject', key, nullable=True), sa.Column('sort_reply', sa.Boolean(), nullable=True),
            sa.Column('sort_date', BigId, nullable=True), sa.Column('sort_from', key, nullable=True),
            sa.Column('sort_to', key, nullable=True), sa.Column('sort_cc', key, nullable=True),
            sa.Column('display_from', key, nullable=True), sa.Column('display_to', key, nullable=True),
            sa.Column('message_id', sa.String(MAX_MSGID_CHARS), nullable=True),
            sa.Column('thread_refs', sa.Text(), nullable=True)]


def upgrade() -> None:
    # Plain ADD COLUMN (no batch copy): the content table holds every message's bytes.
    for column in _columns():
        op.add_column('content', column)
    _backfill(op.get_bind())


def _backfill(conn) -> None:
    """Every content row's fields from its header, in batches (keyset on id): the headers of
    one batch are in memory at a time, never the folder's."""
    content = sa.table('content', sa.column('id'), sa.column('raw', sa.LargeBinary()), sa.column('header_size'),
                       *(sa.column(c) for c in COLUMNS))
    header = sa.func.substr(content.c.raw, 1, content.c.header_size)
    update = (content.update().where(content.c.id == sa.bindparam('cid'))
              .values({c: sa.bindparam(n) for c, n in zip(COLUMNS, _NAMES)}))
    last = 0
    while True:
        rows = conn.execute(sa.select(content.c.id, header).where(content.c.id > last)
                            .order_by(content.c.id).limit(BATCH)).all()
        if not rows:
            return
        conn.execute(update, [{'cid': cid, **dict(zip(_NAMES, sort_fields_of(bytes(raw or b''))))}
                              for cid, raw in rows])
        last = rows[-1][0]


def downgrade() -> None:
    with op.batch_alter_table('content', schema=None) as batch_op:
        for column in reversed(COLUMNS):
            batch_op.drop_column(column)
