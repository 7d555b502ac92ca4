"""PostgreSQL: the hot statements on ``message`` name the account's own partition (issue 13).

``message`` is hash-partitioned by account (migration 0028). A statement on the partitioned
table, prepared and run with a generic plan (``db.PLAN_CACHE_MODE``), is pruned to one partition
only when it starts, after PostgreSQL 15 has locked every partition the plan holds (16, past
the 16 fast-path lock slots a backend has) and set up the pruning; the same statement on the
leaf table locks one. pgbench, two of the IMAP mix's reads (the look at what changed, SELECT's
messages) as prepared statements with generic plans: 0.25 to 0.30 ms on the partitioned table
against 0.16 to 0.23 on the account's leaf (docs/benchmarks.md, branch pgimap).

The leaf is found here, without asking the database: PostgreSQL's hash of a bigint with its
partitioning seed (``hashint8extended``, ``hash_combine64``), modulo the partitions' count,
which ``Store.message_partitions`` reads from the catalog once (0: not partitioned as 0028
makes it, or SQLite; the statements then name ``message``). tests/test_message_partitions.py
holds the hash against ``satisfies_hash_partition`` and every routed statement's plan against
the partition its rows are in. A row written through a leaf is checked against the leaf's
bounds by PostgreSQL: a wrong leaf fails the statement, it never misplaces a row.
"""
from __future__ import annotations

import functools

_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1
#: PostgreSQL's HASH_PARTITION_SEED (partbounds.c)
_SEED = 0x7A5B22367996DCFD
#: what hash_combine64(0, h) adds to h
_COMBINE = 0x49A0F4DD15E5A8E3


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def _seeded() -> tuple[int, int, int]:
    """Bob Jenkins' lookup3 state after ``hash_uint32_extended``'s seed is mixed in: the same
    for every key, so worked out once."""
    a = b = c = (0x9E3779B9 + 4 + 3923095) & _M32
    a = (a + (_SEED >> 32)) & _M32
    b = (b + (_SEED & _M32)) & _M32
    a = (a - c) & _M32; a ^= _rot(c, 4); c = (c + b) & _M32  # noqa: E702 - lookup3's mix()
    b = (b - a) & _M32; b ^= _rot(a, 6); a = (a + c) & _M32  # noqa: E702
    c = (c - b) & _M32; c ^= _rot(b, 8); b = (b + a) & _M32  # noqa: E702
    a = (a - c) & _M32; a ^= _rot(c, 16); c = (c + b) & _M32  # noqa: E702
    b = (b - a) & _M32; b ^= _rot(a, 19); a = (a + c) & _M32  # noqa: E702
    c = (c - b) & _M32; c ^= _rot(b, 4); b = (b + a) & _M32  # noqa: E702
    return a, b, c


_A, _B, _C = _seeded()


def partition_of(account_id: int, partitions: int) -> int:
    """The remainder of the hash partition (modulus ``partitions``) a bigint account id goes to,
    as PostgreSQL computes it (``hashint8extended`` with the seed, then ``hash_combine64``)."""
    lo, hi = account_id & _M32, (account_id >> 32) & _M32
    k = lo ^ (hi if account_id >= 0 else ~hi & _M32)
    a, b, c = (_A + k) & _M32, _B, _C
    c ^= b; c = (c - _rot(b, 14)) & _M32  # noqa: E702 - lookup3's final()
    a ^= c; a = (a - _rot(c, 11)) & _M32  # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & _M32  # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & _M32  # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & _M32  # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & _M32  # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & _M32  # noqa: E702
    return ((((b << 32) | c) + _COMBINE) & _M64) % partitions


#: accounts whose leaf is remembered (``message_table``): a miss costs the hash again (5 us),
#: a hit a tenth of that; 4,096 entries take about half a megabyte
_REMEMBERED = 4096


@functools.lru_cache(maxsize=_REMEMBERED)
def message_table(partitions: int, account_id: int) -> str:
    """The table a statement on the account's messages names: its leaf partition, or
    ``message`` when ``partitions`` is 0."""
    if not partitions:
        return "message"
    return f"message_p{partition_of(account_id, partitions):02d}"


@functools.lru_cache(maxsize=512)
def on_table(sql: str, table: str) -> str:
    """``sql`` with ``{message}`` as ``table`` (a statement's text per leaf made once: at most
    the routed statements' shapes times the partitions, which the cache holds)."""
    return sql.replace("{message}", table)


#: the catalog's word on ``message``'s partitions: each leaf's name and bound (0028's shape)
PARTITIONS_SQL = ("SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                  "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_partitioned_table p ON p.partrelid = i.inhparent "
                  "JOIN pg_attribute a ON a.attrelid = i.inhparent AND a.attnum = p.partattrs[0] "
                  "WHERE i.inhparent = to_regclass('message') AND p.partstrat = 'h' AND p.partnatts = 1 "
                  "AND a.attname = 'account_id'")


def partitions_from(rows: list[tuple[str, str]]) -> int:
    """The count of ``message``'s hash partitions if they are as 0028 makes them (``message_pNN``
    for remainder NN of one modulus, every remainder there), else 0 (the statements name
    ``message``)."""
    n = len(rows)
    want = {(f"message_p{r:02d}", f"FOR VALUES WITH (modulus {n}, remainder {r})") for r in range(n)}
    return n if n and set(rows) == want else 0
