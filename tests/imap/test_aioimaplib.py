"""The server under aioimaplib: concurrency, IDLE pushes (in-process and from another process),
MOVE, SEARCH in Chinese, BODYSTRUCTURE with Chinese file names."""
from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import textwrap

import aioimaplib

from mailserver.store.mailstore import deliver

from .conftest import PASSWORD
from .test_protocol import CHINESE_FILENAME_2231, notice


async def _client(server, user=0) -> aioimaplib.IMAP4:
    c = aioimaplib.IMAP4("127.0.0.1", server.port, timeout=30)
    await c.wait_hello_from_server()
    resp = await c.login(server.users[user][0], PASSWORD)
    assert resp.result == "OK"
    return c


def test_twenty_sessions_append_fifty_each(server):
    async def one(n: int) -> list[int]:
        c = await _client(server)
        uids = []
        for i in range(50):
            resp = await c.append(f"Subject: {n}-{i}\r\n\r\nbody\r\n".encode(), mailbox="INBOX")
            assert resp.result == "OK"
            uids.append(int(re.search(rb"APPENDUID \d+ (\d+)", resp.lines[-1]).group(1)))
        await c.logout()
        return uids

    async def main():
        return await asyncio.gather(*(one(n) for n in range(20)))

    results = asyncio.run(main())
    # Checked with imaplib: aioimaplib recurses once per response line and cannot read 1,000 at once.
    c = server.client()
    assert c.select("INBOX")[1] == [b"1000"]
    typ, data = c.uid("FETCH", "1:*", "(UID)")
    c.logout()
    listed = [int(re.search(rb"UID (\d+)", d).group(1)) for d in data]
    appended = [u for r in results for u in r]
    assert len(set(appended)) == 1000
    assert all(r == sorted(r) for r in results)  # each session's UIDs grow
    assert listed == sorted(listed) and len(set(listed)) == 1000 and set(listed) == set(appended)


def test_idle_push_and_move_and_search(server):
    async def main():
        c = await _client(server)
        await c.select("INBOX")
        idle = await c.idle_start(timeout=30)
        await asyncio.get_running_loop().run_in_executor(
            None, deliver, server.ctx.store, notice("养老账户个人对账信息", "本年缴费 12 个月"), [server.users[0][1]])
        pushed = await c.wait_server_push(timeout=10)
        c.idle_done()
        await asyncio.wait_for(idle, 10)
        assert b"1 EXISTS" in b" ".join(pushed if isinstance(pushed, list) else [pushed])
        resp = await c.search("SUBJECT", "养老")
        assert resp.result == "OK" and resp.lines[0] == b"1"
        resp = await c.fetch("1", "(BODYSTRUCTURE)")
        text = b" ".join(resp.lines)
        assert b'"MIXED"' in text.upper() and CHINESE_FILENAME_2231 in text
        resp = await c.move("1", "Archive")
        assert resp.result == "OK"
        assert any(b"COPYUID" in line for line in resp.lines)
        assert any(line == b"1 EXPUNGE" for line in resp.lines)
        resp = await c.status("Archive", "(MESSAGES)")
        assert b"MESSAGES 1" in resp.lines[0]
        await c.logout()

    asyncio.run(main())


def test_idle_hears_a_delivery_made_by_another_process(server, sqlite_config):
    """The pipeline writes from another process: the folder watcher tells IDLE clients."""
    script = textwrap.dedent(f"""
        from mailserver import config as config_mod
        from mailserver.store import open_store
        from mailserver.store.mailstore import deliver
        cfg = config_mod.load(__import__("pathlib").Path({str(sqlite_config.source)!r}))
        store = open_store(cfg)
        deliver(store, b"Subject: from the pipeline\\r\\n\\r\\nhi\\r\\n", [{server.users[0][1]}])
        store.dispose()
    """)

    async def main():
        c = await _client(server)
        await c.select("INBOX")
        idle = await c.idle_start(timeout=30)
        await asyncio.sleep(0.3)  # let the watcher see the folder is watched
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
        assert await proc.wait() == 0
        pushed = await c.wait_server_push(timeout=10)
        c.idle_done()
        await asyncio.wait_for(idle, 10)
        await c.logout()
        return pushed

    pushed = asyncio.run(main())
    assert b"1 EXISTS" in b" ".join(pushed if isinstance(pushed, list) else [pushed])
    assert subprocess is not None


def test_idle_hears_another_node_on_postgresql(pg_url, tmp_path):
    """PostgreSQL: a write from another node arrives by LISTEN/NOTIFY, not by the poll."""
    from tests.conftest import make_config
    from mailserver.provision import prepare

    from .conftest import start_server

    cfg = make_config(tmp_path / "pg", store_url=pg_url)
    prepare(cfg)
    server = start_server(cfg)
    script = textwrap.dedent(f"""
        from mailserver import config as config_mod
        from mailserver.store import open_store
        from mailserver.store.mailstore import deliver
        cfg = config_mod.load(__import__("pathlib").Path({str(cfg.source)!r}), ('store.url="{pg_url}"',))
        store = open_store(cfg)
        deliver(store, b"Subject: from another node\\r\\n\\r\\nhi\\r\\n", [{server.users[0][1]}])
        store.dispose()
    """)

    async def main():
        c = await _client(server)
        await c.select("INBOX")
        idle = await c.idle_start(timeout=30)
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
        assert await proc.wait() == 0
        pushed = await c.wait_server_push(timeout=4)  # the fallback poll is every 30 s
        c.idle_done()
        await asyncio.wait_for(idle, 10)
        await c.logout()
        return pushed

    try:
        pushed = asyncio.run(main())
    finally:
        server._stop()
    assert b"1 EXISTS" in b" ".join(pushed if isinstance(pushed, list) else [pushed])
