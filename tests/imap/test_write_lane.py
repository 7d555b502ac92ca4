"""IMAP writes from many sessions at once (on SQLite they share the write lane's transactions,
lanes.BatchLane + GroupCommit.batch): a tagged OK means the write is committed, as another
connection to the database sees it at once, and every session with the folder selected is told
of every change."""
from __future__ import annotations

import re
import threading
import time

from sqlalchemy import text

from mailserver.store import open_store
from mailserver.store.blobs import blob_key
from tests.imap.conftest import start_server

SESSIONS = 6
ROUNDS = 8


def test_every_acknowledged_write_of_concurrent_sessions_is_committed_and_told(config):
    running = start_server(config)
    store = open_store(config)  # connections of its own, as another process would have
    problems: list[str] = []
    account = running.users[0][1]

    def in_database(uid: int) -> tuple[int, int] | None:
        with store.reader() as s:
            row = s.execute(text("SELECT m.uid, m.flags FROM message m JOIN folder f ON f.id = m.folder_id "
                                 "WHERE f.account_id = :a AND f.name = 'INBOX' AND m.uid = :u"),
                            {"a": account, "u": uid}).first()
        return tuple(row) if row else None

    def writer(n: int) -> None:
        try:
            c = running.client(0)
            c.select("INBOX")
            mine = []
            for i in range(ROUNDS):
                typ, data = c.append("INBOX", None, None, f"Subject: w{n}.{i}\r\n\r\nbody\r\n".encode())
                uid = int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1))
                if in_database(uid) is None:
                    problems.append(f"APPEND {uid} acknowledged, not in the database")
                typ, _ = c.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Flagged)")
                row = in_database(uid)
                if typ != "OK" or row is None or not row[1] & 4:  # FLAGGED
                    problems.append(f"STORE {uid} acknowledged, flags in the database {row}")
                mine.append(uid)
            c.uid("STORE", ",".join(map(str, mine[:2])), "+FLAGS.SILENT", "(\\Deleted)")
            c.expunge()
            for uid in mine[:2]:
                if in_database(uid) is not None:
                    problems.append(f"EXPUNGE of {uid} acknowledged, still in the database")
            c.logout()
        except Exception as exc:  # noqa: BLE001 - reported below
            problems.append(f"writer {n}: {exc!r}")

    try:
        watcher = running.client(0)
        watcher.select("INBOX")
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(SESSIONS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not problems, problems[:5]
        # the session that only watched is told of every message that came and went
        typ, data = watcher.noop()
        untagged = watcher.untagged_responses
        exists = [int(x) for x in untagged.get("EXISTS", [])]
        # told in one go (the messages expunged meanwhile it never saw, so no EXPUNGE for them)
        assert exists and exists[-1] == SESSIONS * (ROUNDS - 2)
        typ, data = watcher.uid("SEARCH", "ALL")
        assert len(data[0].split()) == SESSIONS * (ROUNDS - 2)
        typ, data = watcher.uid("SEARCH", "FLAGGED")
        assert len(data[0].split()) == SESSIONS * (ROUNDS - 2)
        watcher.logout()
    finally:
        running._stop()  # type: ignore[attr-defined]
        store.dispose()


def test_appends_are_parsed_and_their_bodies_stored_while_the_write_lane_waits(sqlite_config):
    """APPEND's parse and blob write run beside the write lane (prepare_append on the heavy
    lane): with every write of the process held up, the bodies of two sessions' APPENDs are
    still put in the blob store, and neither is acknowledged until its write is committed."""
    running = start_server(sqlite_config)
    blobs = running.ctx.store.blobs
    raws = [f"Subject: held {n}\r\n\r\nbody {n}\r\n".encode() for n in range(2)]
    answers: list[str] = []

    def append(c, raw: bytes) -> None:
        answers.append(c.append("INBOX", None, None, raw)[0])
        c.logout()

    try:
        # logged in first: a login may record its time, a write that would wait too
        threads = [threading.Thread(target=append, args=(running.client(0), raw)) for raw in raws]
        with running.ctx.store.commits.exclusive():  # the write lane's batch waits for this
            for t in threads:
                t.start()
            deadline = time.monotonic() + 30
            while not all(blobs.exists(blob_key(r)) for r in raws) and time.monotonic() < deadline:
                time.sleep(0.02)
            staged = [blobs.exists(blob_key(r)) for r in raws]
            held_answers = list(answers)
        for t in threads:
            t.join(60)
        assert staged == [True, True]
        assert held_answers == []
        assert answers == ["OK", "OK"]
        c = running.client(0)
        c.select("INBOX")
        typ, data = c.uid("SEARCH", "SUBJECT", "held")
        assert len(data[0].split()) == 2
        c.logout()
    finally:
        running._stop()  # type: ignore[attr-defined]
