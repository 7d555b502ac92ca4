"""notice: the two indexes no query needs dropped (ix_notice_account_id, ix_notice_delivered_at)

Every notice the pipeline's writer inserts updated five B-trees. Two of them no statement reads:

- ``ix_notice_account_id`` (account_id) is the first column of ``ix_notice_account_delivered``
  (account_id, delivered_at), which serves every lookup by account as well: the portal's count,
  page and filter choices ("my notices", ``web/portaldata.py``), and the foreign key's check
  when an account row is deleted;
- ``ix_notice_delivered_at`` (delivered_at alone): no statement filters or sorts notices by time
  without the account (``civicmail stats`` reads ``notice_count``, migration 0023).

The lookups by key (``delivery/deliver.py``, ``delivery/external.py``) use the unique
``(idempotency_key, account_id)``, by id the primary key. On PostgreSQL the indexes are
partitioned (0026): dropping the parent's drops every partition's. The downgrade makes them again.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-07
"""
from alembic import op


revision = '0029'
down_revision = '0028'
branch_labels = None
depends_on = None

#: (name, column) of the indexes dropped
INDEXES = (("ix_notice_account_id", "account_id"), ("ix_notice_delivered_at", "delivered_at"))


def upgrade() -> None:
    for name, _ in INDEXES:
        op.drop_index(name, table_name="notice")


def downgrade() -> None:
    for name, column in INDEXES:
        op.create_index(name, "notice", [column])
