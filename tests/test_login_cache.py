"""Issue 12: recently verified logins skip argon2 (Dovecot's auth cache), safely. Over real sockets
(imaplib, the /metrics listener) and the real CLI in a process of its own: a second LOGIN with the
right password is served from the cache; a wrong one after it is still refused; `citizen passwd`
and `citizen disable` in another process take effect at the next login; the throttle's lock-out
still applies to a cached password."""
from __future__ import annotations

import asyncio
import imaplib
import os
import subprocess
import sys
import time

import pytest

from mailserver.identity.logincache import LoginCache
from tests.abuse import PASSWORD, city, city_factory  # noqa: F401  (fixtures)
from tests.test_metrics import METRICS, moved, scrape

NEW_PASSWORD = "a brand new password"


def checks(city, before) -> tuple[float, float]:  # noqa: F811
    """(hashed, cached) password checks since ``before``."""
    after = scrape(city.server)
    return (moved(before, after, "civicmail_password_checks_total", how="hashed"),
            moved(before, after, "civicmail_password_checks_total", how="cached"))


def login(city, user: int, password: str) -> str:  # noqa: F811
    c = imaplib.IMAP4("127.0.0.1", city.imap_port, timeout=30)
    try:
        return c.login(city.addresses[user], password)[0]
    except imaplib.IMAP4.error as exc:
        return str(exc)
    finally:
        c.shutdown()


def cached_login(city):  # noqa: F811
    """Log citizen 1 in twice, the second time from the cache; the scrape from before the first."""
    before = scrape(city.server)
    assert login(city, 1, PASSWORD) == "OK"
    assert login(city, 1, PASSWORD) == "OK"
    assert checks(city, before) == (1, 1)
    return before


def civicmail(city, *args: str, stdin: str | None = None) -> None:  # noqa: F811
    run = subprocess.run([sys.executable, "-m", "mailserver.cli", "-c", str(city.server.config.source), *args],
                         input=stdin, capture_output=True, text=True, timeout=120, env=os.environ)
    assert run.returncode == 0, run.stderr


def test_a_second_login_is_served_from_the_cache_and_a_wrong_password_is_still_refused(city):  # noqa: F811
    assert city.server.port(METRICS)
    before = scrape(city.server)
    assert login(city, 1, PASSWORD) == "OK"
    assert checks(city, before) == (1, 0)
    assert login(city, 1, PASSWORD) == "OK"
    assert login(city, 1, PASSWORD.upper()) != "OK"
    assert checks(city, before) == (2, 1)  # the wrong password was hashed, never matched from the cache
    # the failure forgot the entry: the right password is hashed once more, then cached again
    assert login(city, 1, PASSWORD) == "OK"
    assert login(city, 1, PASSWORD) == "OK"
    assert checks(city, before) == (3, 2)
    # the cache is per login: another citizen's first login is hashed
    assert login(city, 2, PASSWORD) == "OK"
    assert checks(city, before) == (4, 2)


def test_a_password_set_by_the_cli_in_another_process_ends_the_cached_one(city):  # noqa: F811
    before = cached_login(city)
    civicmail(city, "citizen", "passwd", city.addresses[1], "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert "AUTHENTICATIONFAILED" in login(city, 1, PASSWORD)
    assert login(city, 1, NEW_PASSWORD) == "OK"
    assert checks(city, before) == (3, 1)


def test_a_disabled_account_cannot_log_in_from_the_cache(city):  # noqa: F811
    cached_login(city)
    civicmail(city, "citizen", "disable", city.addresses[1])
    assert "AUTHENTICATIONFAILED" in login(city, 1, PASSWORD)


def test_a_locked_out_account_is_refused_though_its_password_is_cached(city_factory):  # noqa: F811
    city = city_factory("login.max_failures_per_account=3", "login.window_seconds=2")  # noqa: F811
    before = scrape(city.server)
    assert login(city, 1, PASSWORD) == "OK"
    for _ in range(3):
        assert "AUTHENTICATIONFAILED" in login(city, 1, "not the password")
    assert "UNAVAILABLE" in login(city, 1, PASSWORD)  # refused unchecked, cache or not
    assert checks(city, before) == (4, 0)
    time.sleep(2.1)  # the window passes: the lock-out left no cached entry behind
    assert login(city, 1, PASSWORD) == "OK"
    assert checks(city, before) == (5, 0)


def test_the_cache_can_be_turned_off(city_factory):  # noqa: F811
    city = city_factory("login.cache_size=0")  # noqa: F811
    before = scrape(city.server)
    for _ in range(3):
        assert login(city, 1, PASSWORD) == "OK"
    assert checks(city, before) == (3, 0)


# -- the cache itself ------------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_the_ttl():
    clock = Clock()
    cache = LoginCache(10, 60, clock)
    cache.add("a@x.cn", "$argon2id$h1", "secret pw")
    assert cache.hit("a@x.cn", "$argon2id$h1", "secret pw")
    assert not cache.hit("a@x.cn", "$argon2id$h2", "secret pw")  # another stored hash: a new password
    assert not cache.hit("b@x.cn", "$argon2id$h1", "secret pw")
    clock.now += 60
    assert not cache.hit("a@x.cn", "$argon2id$h1", "secret pw")
    assert len(cache) == 0


def test_the_cache_is_bounded_least_recently_used_first_out():
    cache = LoginCache(2, 3600)
    for login in ("a@x.cn", "b@x.cn"):
        cache.add(login, "h", "pw")
    assert cache.hit("a@x.cn", "h", "pw")  # a is now the more recent
    cache.add("c@x.cn", "h", "pw")
    assert len(cache) == 2
    assert cache.hit("a@x.cn", "h", "pw") and cache.hit("c@x.cn", "h", "pw")
    assert not cache.hit("b@x.cn", "h", "pw")


@pytest.mark.parametrize("login, stored, password", [("a@x.cn", "h", "pw"), ("a@x.cn", "hp", "w"), ("a@x.cnh", "", "pw")])
def test_fields_cannot_be_shifted_into_each_other(login, stored, password):
    cache = LoginCache(4, 3600)
    cache.add("a@x.cn", "h", "pw")
    assert cache.hit(login, stored, password) == ((login, stored, password) == ("a@x.cn", "h", "pw"))


def test_the_password_is_not_kept():
    cache = LoginCache(4, 3600, secret=b"k" * 32)
    cache.add("a@x.cn", "$argon2id$stored", "the password itself")
    kept = repr(cache._entries).encode() + b"".join(mac for mac, _ in cache._entries.values())
    assert b"the password itself" not in kept and len(next(iter(cache._entries.values()))[0]) == 32
    assert LoginCache(4, 3600, secret=b"j" * 32)._mac("a@x.cn", "$argon2id$stored", "the password itself") \
        != cache._entries["a@x.cn"][0]  # the MAC depends on the process's secret


# -- the server's memory ----------------------------------------------------------------------------------

async def _logins_at_once(port: int, users: list[str]) -> list[bytes]:
    from mailserver.bench.imap import PASSWORD as BENCH_PASSWORD, LineClient

    clients = [await LineClient.connect(port) for _ in users]
    replies = await asyncio.gather(*(c.command(f'LOGIN "{u}" "{BENCH_PASSWORD}"') for c, u in zip(clients, users)))
    for c in clients:
        c.writer.close()
    return [r[-1] for r in replies]


def test_many_logins_at_once_leave_the_server_no_bigger_than_its_hashing_threads(tmp_path):
    """Twelve citizens log in at once with the product's argon2id (19 MiB a hash), to a server in
    a process of its own: its memory grows by at most passwords.hash_threads hashes (2 here), not
    by one hash per thread that ever checked a password (it grew by 232 MiB before)."""
    from mailserver.bench.imap import ServerChild, prepare_data

    users = [u for u, _ in prepare_data(tmp_path, 12, 0, real_hash=True)]
    server = ServerChild(tmp_path, real_hash=True, settings=("passwords.hash_threads=2",))
    try:
        before = server.rss_mib()
        replies = asyncio.run(_logins_at_once(server.port, users))
        grown = server.rss_mib() - before
    finally:
        server.stop()
    assert all(b" OK " in r for r in replies), replies
    assert grown < 19 * 2 + 30, f"the server grew by {grown:.0f} MiB"
