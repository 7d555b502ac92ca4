"""notice_count: notices delivered per UTC day, agency and notice type, for `civicmail stats`

`stats` counted every ``notice`` row (and every ``message`` row) on each run: at city size a
billion rows. The pipeline's writer now adds each batch's count to this table in the batch's own
transaction; this migration fills it from the notices already there, in one statement (the
table is written only by the pipeline, whose writer waits for this migration's lock).

Revision ID: 0023
Revises: 0020
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


revision = '0023'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('notice_count',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('agency_id', sa.String(length=64), nullable=False),
    sa.Column('notice_type_id', sa.String(length=64), nullable=False),
    sa.Column('delivered', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('day', 'agency_id', 'notice_type_id', name=op.f('pk_notice_count'))
    )
    if op.get_bind().dialect.name == 'postgresql':
        day = "CAST(timezone('UTC', delivered_at) AS date)"
    else:  # SQLite keeps the UTC time as text; date() takes its calendar day
        day = "date(delivered_at)"
    op.execute(f"INSERT INTO notice_count (day, agency_id, notice_type_id, delivered) "
               f"SELECT {day}, agency_id, notice_type_id, count(*) FROM notice WHERE state IS NULL "
               f"GROUP BY {day}, agency_id, notice_type_id")


def downgrade() -> None:
    op.drop_table('notice_count')
