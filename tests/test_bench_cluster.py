"""`civicmail bench cluster` at the suite's size, through the real CLI: two `serve` nodes on a
throwaway PostgreSQL database, SMTP submission over both, IDLE on one node told of mail sent
through the other, and three overlapping drops through both; its correctness lines are read back
(the timings are not asserted: they belong in docs/benchmarks.md)."""
from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import pg_databases


def _bench(pg_admin_url: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mailserver.cli", "bench", "cluster", "--store-url", pg_admin_url,
                           "--dir", str(tmp_path / "work"), *args],
                          capture_output=True, text=True, timeout=600, check=False)


def _database(out: str) -> str:
    name = re.search(r"^store: PostgreSQL database (civicmail_bench_[0-9a-f]+) on ", out, re.M).group(1)
    assert f"store: database {name} dropped" in out and name not in pg_databases()
    return name


def test_bench_cluster_two_nodes_on_postgresql(pg_admin_url, tmp_path):
    run = _bench(pg_admin_url, tmp_path, "--nodes", "2", "--seconds", "2", "--rows", "200", "--users", "30")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    _database(run.stdout)
    ports = re.findall(r"^node [ab]: pid \d+, SMTP (\d+), submission (\d+), IMAP (\d+)$", run.stdout, re.M)
    assert len(ports) == 2 and not set(ports[0]) & set(ports[1]), out  # each node on ports of its own
    m = re.search(r"^  ok     smtp: every 250 stored once in its recipient's INBOX: ([\d,]+) accepted, ([\d,]+) stored; "
                  r"0 lost, 0 stored twice, 0 stored without a 250$", run.stdout, re.M)
    assert m and m.group(1) == m.group(2) and int(m.group(1).replace(",", "")) > 0, out
    # both nodes took submissions
    split = re.search(r"messages/s \(node a ([\d,]+), node b ([\d,]+)\)", run.stdout)
    assert split and all(int(n.replace(",", "")) > 0 for n in split.groups()), out
    m = re.search(r"^  ok     idle: every probe accepted and its IDLE session told: ([\d,]+) told$", run.stdout, re.M)
    assert m and int(m.group(1)) >= 10, out
    # per stage, the notifications each node received: in the IDLE stage, at least one a probe
    # (each is one commit to an INBOX whose session is on the other node)
    heard = re.findall(r"change notifications received \(LISTEN, only the channels of a node's sessions\): "
                       r"node a ([\d,]+), node b ([\d,]+)$", run.stdout, re.M)
    assert len(heard) == 3, out
    assert sum(int(n.replace(",", "")) for n in heard[1]) >= int(m.group(1).replace(",", "")), out
    assert re.search(r"IDLE notice across nodes +[\d,]+ probes, 30 sessions in IDLE; end of DATA -> EXISTS: median "
                     r"[\d.]+ ms", run.stdout), out
    for line in ("ok     drop: three drops, all done: drop 1 done, drop 2 done, drop 3 done",
                 "ok     drop: every row delivered exactly once: 200 notices to 200 citizens of 200; "
                 "INBOX sizes {1: 200}; rows by status {'delivered': 200, 'duplicate': 400}",
                 "ok     spool: both files moved to done/, none to failed/: done/ ['backward.csv', 'forward.csv'], "
                 "failed/ []",
                 "ok     agency: exactly one summary of the mailed drop: 1 message in "
                 "traffic-police@bench.example.cn's INBOX",
                 "ok     nodes: each stopped cleanly, no traceback in any log: exit statuses [0, 0]"):
        assert line in run.stdout, out
    sources = re.findall(r"drop \d \((spool forward\.csv|spool backward\.csv|mail mailed\.csv), node [ab]\): done",
                         run.stdout)
    assert sorted(sources) == ["mail mailed.csv", "spool backward.csv", "spool forward.csv"], out
    assert "ok     smtp: no message refused for good (5xx): none refused" in run.stdout, out
    assert "FAILED" not in run.stdout
    # the nodes' logs stay in --dir, one per node
    assert sorted(p.name for p in (tmp_path / "work").glob("node-*.log")) == ["node-a.log", "node-b.log"]


def test_bench_cluster_exits_nonzero_when_a_check_fails(pg_admin_url, tmp_path):
    """The nodes refuse every 4 KB submission (a message size limit of 3,000 bytes; the IDLE
    probes and a 5-row mailed drop still fit): no message is answered 250, so both SMTP checks fail
    and the exit status says so; the other stages still run and report."""
    run = _bench(pg_admin_url, tmp_path, "--seconds", "0.5", "--rows", "5", "--users", "4",
                 "--concurrency", "2", "--set", "smtp.max_message_size=3000")
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    _database(run.stdout)
    assert re.search(r"^  FAILED smtp: every 250 stored once in its recipient's INBOX: 0 accepted, 0 stored", run.stdout,
                     re.M), out
    assert re.search(r"^  FAILED smtp: no message refused for good \(5xx\): refused: \{'552': \d+\}$", run.stdout, re.M), out
    assert ("Error: 2 checks failed: smtp: every 250 stored once in its recipient's INBOX; smtp: no message "
            "refused for good (5xx)") in run.stderr, out
    assert "ok     drop: every row delivered exactly once: 5 notices to 5 citizens of 5" in run.stdout, out


def test_bench_cluster_needs_a_postgresql_url(tmp_path):
    run = subprocess.run([sys.executable, "-m", "mailserver.cli", "bench", "cluster", "--store-url", ""],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 2 and "PostgreSQL" in run.stderr, run.stdout + run.stderr
