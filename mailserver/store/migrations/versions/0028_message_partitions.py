"""message hash-partitioned by account on PostgreSQL

``message`` becomes ``PARTITION BY HASH (account_id)`` with ``MESSAGE_PARTITIONS`` partitions
(``message_p00`` ...), primary key ``(account_id, id)`` (ids still come from one sequence, so
``id`` stays unique), the unique key ``(account_id, folder_id, uid)`` and the index
``(account_id, folder_id, modseq)`` (both from 0027) made on the parent, hence in every
partition: a statement that names the account (every IMAP read and write, the writers, the
services worker: 0027's audit) reads and writes one partition's table and indexes. SQLite keeps
one plain table: nothing changes there.

Why 16, as ``notice`` (0026), and not the 64 docs/scale.md first planned: at city size (a
billion messages, ~250 bytes a row with its four indexes: **A**) 16 partitions are ~16 GB each,
small enough to vacuum and reindex one at a time for years; the statements that cannot prune
pay one index probe per partition (the foreign key check of ``content`` when a content row is
deleted: its ``message.content_id`` index in each partition; whole-table counts), and a generic
plan of a pruned statement still locks every partition at executor start (PostgreSQL 15):
both grow with the count. Hash partitions cannot be split in place: more is a new migration
that moves every row again.

The rows move in the migration's one transaction (Alembic's, store/migrate.py), by ranges of
``MOVE_BATCH`` ids, as 0026 moves ``notice``: the old table is renamed first, so every writer and
reader of messages (SMTP, IMAP, the pipeline) waits for the COMMIT: stop ``serve`` while it
runs. A city's billion messages cannot move this way (docs/scale.md: copy beside, then swap).
The downgrade moves them back into one plain table the same way.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-07
"""
from alembic import op

from mailserver.store.rebuild import rebuild


revision = '0028'
down_revision = '0027'
branch_labels = None
depends_on = None

#: partitions of ``message`` (hash of account_id); changing it means moving every row again
MESSAGE_PARTITIONS = 16
#: ids moved per statement
MOVE_BATCH = 50_000

COLUMNS = "id, account_id, folder_id, uid, modseq, flags, keywords, internaldate, savedate, size, content_id"
# the model's indexes (models/mail.py), made on the partitioned table and so in every partition
INDEXES = (("ix_message_content_id", "content_id"),
           ("ix_message_account_folder_modseq", "account_id, folder_id, modseq"))
CONSTRAINTS = ("pk_message", "uq_message_account_folder_uid", "fk_message_account_folder_folder",
               "fk_message_content_id_content")


def _table_sql(partitioned: bool) -> str:
    pk = "account_id, id" if partitioned else "id"
    return ("CREATE TABLE message ("
            "id BIGINT NOT NULL DEFAULT nextval('message_id_seq'::regclass), "
            "account_id BIGINT NOT NULL, folder_id BIGINT NOT NULL, uid BIGINT NOT NULL, modseq BIGINT NOT NULL, "
            "flags INTEGER NOT NULL, keywords VARCHAR(1000), internaldate TIMESTAMP WITH TIME ZONE NOT NULL, "
            "savedate TIMESTAMP WITH TIME ZONE, size INTEGER NOT NULL, content_id BIGINT NOT NULL, "
            f"CONSTRAINT pk_message PRIMARY KEY ({pk}), "
            "CONSTRAINT uq_message_account_folder_uid UNIQUE (account_id, folder_id, uid), "
            "CONSTRAINT fk_message_account_folder_folder FOREIGN KEY (account_id, folder_id) "
            "REFERENCES folder (account_id, id) ON DELETE CASCADE, "
            "CONSTRAINT fk_message_content_id_content FOREIGN KEY (content_id) REFERENCES content (id))"
            + (" PARTITION BY HASH (account_id)" if partitioned else ""))


def _rebuild(partitioned: bool) -> None:
    """``message`` made anew (partitioned or not), its rows moved over in id ranges
    (``store.rebuild``)."""
    rebuild("message", _table_sql(partitioned), MESSAGE_PARTITIONS if partitioned else 0, CONSTRAINTS, INDEXES,
            COLUMNS, MOVE_BATCH)


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        _rebuild(partitioned=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        _rebuild(partitioned=False)
