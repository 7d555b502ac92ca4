"""A PostgreSQL table made anew in a migration: hash-partitioned by account, or back into one
plain table, its rows moved over (migrations 0026 ``notice`` and 0028 ``message``;
docs/scale.md, "Hash partitioning").

In the migration's one transaction: the old table is renamed (``<table>_moving``: its exclusive
lock is held until the COMMIT, so every reader and writer of the table waits), its constraints
and indexes dropped, the new table made (with its partitions) and its indexes made on it (so in
every partition), the rows copied over server-side in id ranges, the old table dropped. The id
sequence ``<table>_id_seq`` carries on."""
from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op


def rebuild(table: str, table_sql: str, partitions: int, constraints: Sequence[str],
            indexes: Sequence[tuple[str, str]], columns: str, batch: int) -> None:
    """``table`` made again by ``table_sql`` (a CREATE TABLE; with ``partitions`` > 0 it ends in
    PARTITION BY HASH, and ``<table>_p00`` ... are made), with ``indexes`` ((name, columns)
    each); ``constraints``: the names any version of the old table may have; ``columns``: what
    is copied, ``batch`` ids a statement."""
    moving = f"{table}_moving"
    op.execute(f"ALTER TABLE {table} RENAME TO {moving}")
    for name in constraints:
        op.execute(f"ALTER TABLE {moving} DROP CONSTRAINT IF EXISTS {name}")
    for name, _ in indexes:
        op.execute(f"DROP INDEX IF EXISTS {name}")
    op.execute(f"ALTER SEQUENCE {table}_id_seq OWNED BY NONE")  # or it goes with the old table
    op.execute(table_sql)
    for n in range(partitions):
        op.execute(f"CREATE TABLE {table}_p{n:02d} PARTITION OF {table} "
                   f"FOR VALUES WITH (MODULUS {partitions}, REMAINDER {n})")
    for name, indexed in indexes:
        op.execute(f"CREATE INDEX {name} ON {table} ({indexed})")
    op.execute(f"ALTER SEQUENCE {table}_id_seq OWNED BY {table}.id")
    bind = op.get_bind()
    low, high = bind.execute(sa.text(f"SELECT min(id), max(id) FROM {moving}")).one()
    if low is not None:
        for start in range(low, high + 1, batch):
            bind.execute(sa.text(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {moving} "
                                 "WHERE id >= :lo AND id < :hi"), {"lo": start, "hi": start + batch})
    op.execute(f"DROP TABLE {moving}")
