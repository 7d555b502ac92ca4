"""drop: a count of rows per status not delivered (invalid, unmatched, held, opted-out, duplicate,
failed), for the metrics' rows by outcome

``rows_rejected`` lumped them together, and a scrape cannot group the drop_row table (a row per
line of every file ever run) by status each time. The pipeline's writer now keeps these counts
in each batch's own transaction (``delivery.deliver.record_rows``); this migration fills them
from the rows already there, in one statement (the pipeline's writer waits for its lock).

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


revision = '0024'
down_revision = '0023'
branch_labels = None
depends_on = None

#: column -> the drop_row status it counts
COLUMNS = {'rows_invalid': 'invalid', 'rows_unmatched': 'unmatched', 'rows_held': 'held',
           'rows_opted_out': 'opted-out', 'rows_duplicate': 'duplicate', 'rows_failed': 'failed'}


def upgrade() -> None:
    with op.batch_alter_table('drop', schema=None) as batch_op:
        for column in COLUMNS:
            batch_op.add_column(sa.Column(column, sa.Integer(), server_default='0', nullable=False))
    counts = ", ".join(f"{column} = (SELECT count(*) FROM drop_row WHERE drop_row.drop_id = \"drop\".id "
                       f"AND drop_row.status = '{status}')" for column, status in COLUMNS.items())
    op.execute(f'UPDATE "drop" SET {counts}')


def downgrade() -> None:
    with op.batch_alter_table('drop', schema=None) as batch_op:
        for column in reversed(list(COLUMNS)):
            batch_op.drop_column(column)
