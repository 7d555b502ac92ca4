"""notice hash-partitioned by account on PostgreSQL; the idempotency key unique per account

The unique index on ``notice.idempotency_key`` (a random 128-bit key) was one city-wide B-tree:
every notice inserted dirtied a random leaf page of it, and a unique index of a partitioned table
must contain the partition key. On PostgreSQL ``notice`` becomes ``PARTITION BY HASH
(account_id)`` with ``NOTICE_PARTITIONS`` partitions (``notice_p00`` ...), primary key
``(account_id, id)`` and the key unique as ``(idempotency_key, account_id)``: each index lives in
its partition, and an insert touches the indexes of its account's partition only. SQLite keeps one
plain table; its unique constraint becomes the same ``(idempotency_key, account_id)``, so that a
key means the same on both engines: one notice per key and account (docs/scale.md, "Hash
partitioning").

The rows move in the migration's one transaction (Alembic's, store/migrate.py), by ranges of
``MOVE_BATCH`` ids: the old table is renamed first, so the pipeline's writers wait for the
COMMIT; stop the pipeline (`serve` nodes' drops) while it runs. The downgrade moves them back
into one plain table the same way.

Revision ID: 0026
Revises: 0023
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa

from mailserver.store.rebuild import rebuild


revision = '0026'
down_revision = '0024'
branch_labels = None
depends_on = None

#: partitions of ``notice`` (hash of account_id); changing it means moving every row again
NOTICE_PARTITIONS = 16
#: ids moved per statement
MOVE_BATCH = 50_000

COLUMNS = "id, idempotency_key, agency_id, notice_type_id, account_id, message_id, drop_id, delivered_at, state"
# the model's indexes (models/delivery.py), made on the partitioned table and so in every partition
INDEXES = (("ix_notice_account_id", "account_id"), ("ix_notice_delivered_at", "delivered_at"),
           ("ix_notice_account_delivered", "account_id, delivered_at"))


def _table_sql(partitioned: bool) -> str:
    pk, unique = ("account_id, id", "idempotency_key, account_id") if partitioned else ("id", "idempotency_key")
    uq_name = "uq_notice_idempotency_key_account" if partitioned else "uq_notice_idempotency_key"
    return ("CREATE TABLE notice ("
            "id BIGINT NOT NULL DEFAULT nextval('notice_id_seq'::regclass), "
            "idempotency_key VARCHAR(128) NOT NULL, agency_id VARCHAR(64) NOT NULL, "
            "notice_type_id VARCHAR(64) NOT NULL, account_id BIGINT NOT NULL, message_id BIGINT, drop_id BIGINT, "
            "delivered_at TIMESTAMP WITH TIME ZONE NOT NULL, state VARCHAR(16), "
            f"CONSTRAINT pk_notice PRIMARY KEY ({pk}), "
            f"CONSTRAINT {uq_name} UNIQUE ({unique}), "
            "CONSTRAINT fk_notice_account_id_account FOREIGN KEY (account_id) REFERENCES account (id))"
            + (" PARTITION BY HASH (account_id)" if partitioned else ""))


def _rebuild(partitioned: bool) -> None:
    """``notice`` made anew (partitioned or not), its rows moved over in id ranges
    (``store.rebuild``)."""
    rebuild("notice", _table_sql(partitioned), NOTICE_PARTITIONS if partitioned else 0,
            ("pk_notice", "uq_notice_idempotency_key", "uq_notice_idempotency_key_account",
             "fk_notice_account_id_account"), INDEXES, COLUMNS, MOVE_BATCH)


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        _rebuild(partitioned=True)
        return
    with op.batch_alter_table('notice', schema=None) as batch_op:
        batch_op.drop_constraint('uq_notice_idempotency_key', type_='unique')
        batch_op.create_unique_constraint('uq_notice_idempotency_key_account', ['idempotency_key', 'account_id'])


def downgrade() -> None:
    """Refused if a key was delivered to two accounts (allowed from this revision on): the old
    constraint could not hold both rows, and dropping one would lose a delivered notice."""
    bind = op.get_bind()
    twice = bind.execute(sa.text("SELECT idempotency_key FROM notice GROUP BY idempotency_key "
                                 "HAVING count(*) > 1 LIMIT 1")).scalar()
    if twice is not None:
        raise RuntimeError(f"cannot downgrade below 0026: idempotency key {twice} was delivered to more than one "
                           "account, which the older unique key cannot hold; nothing was changed")
    if bind.dialect.name == 'postgresql':
        _rebuild(partitioned=False)
        return
    with op.batch_alter_table('notice', schema=None) as batch_op:
        batch_op.drop_constraint('uq_notice_idempotency_key_account', type_='unique')
        batch_op.create_unique_constraint('uq_notice_idempotency_key', ['idempotency_key'])
