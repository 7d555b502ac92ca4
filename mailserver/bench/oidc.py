"""`civicmail bench oidc`: what single sign-on costs the server (issue 14 sections 1 and 2).

Starts `civicmail serve` on loopback over a fresh data directory (its own process, as in
production) with one registered website, signs CONCURRENCY citizens in once each (password,
consent: not timed), then times:

- **sign-ins**: a signed-in citizen's website sign-in, the whole code flow with PKCE as a
  relying party runs it: GET /oidc/authorize (302 with a code), POST /oidc/token (code and
  verifier exchanged for an access token, a refresh token and a signed ID token);
- **IMAP token logins**: a connection, AUTHENTICATE OAUTHBEARER with such a token, LOGOUT;
  beside the same with LOGIN and the password (argon2 skipped by the login cache after the first,
  as for a mail client that logs in again and again).
"""
from __future__ import annotations

import base64
import hashlib
import imaplib
import re
import secrets
import signal
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import click

from .. import config as config_mod
from ..registry import Registry
from ..store import open_store
from .smtp import prepare_city, start_server

PASSWORD = "bench-password"
REDIRECT = "https://bench-rp.example/callback"
_HTTP = re.compile(r"citizen services HTTP listening on ([\d.]+):(\d+)")
_IMAP = re.compile(r"imap listening on ([\d.]+):(\d+)")


def _register(config_path: Path) -> str:
    from ..registry.oidc import add_client

    config = config_mod.load(config_path)
    store = open_store(config)
    try:
        return add_client(Registry(config, store), "bench-rp", "bench", [REDIRECT])  # type: ignore[return-value]
    finally:
        store.dispose()


def _form(page: str) -> tuple[str, dict]:
    action = re.search(r'<form method="post" action="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    import html

    return action, {k: html.unescape(v) for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">',
                                                                 page)}


class Citizen:
    """One citizen's browser and the website signing them in."""

    def __init__(self, base: str, address: str, secret: str) -> None:
        import requests

        self.base, self.address, self.secret = base, address, secret
        self.http = requests.Session()

    def _authorize_url(self) -> tuple[str, str]:
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        query = urllib.parse.urlencode({"response_type": "code", "client_id": "bench-rp", "redirect_uri": REDIRECT,
                                        "scope": "openid profile email mail", "state": secrets.token_urlsafe(8),
                                        "code_challenge": challenge, "code_challenge_method": "S256"})
        return f"{self.base}/oidc/authorize?{query}", verifier

    def sign_in_first(self) -> None:
        url, _ = self._authorize_url()
        page = self.http.get(url, allow_redirects=False, timeout=60).text
        action, fields = _form(page)
        page = self.http.post(self.base + action, data={**fields, "address": self.address, "password": PASSWORD},
                              allow_redirects=False, timeout=60).text
        action, fields = _form(page)  # the consent page
        answer = self.http.post(self.base + action, data={**fields, "decision": "allow"}, allow_redirects=False,
                                timeout=60)
        if answer.status_code != 302:
            raise RuntimeError(f"first sign-in failed: {answer.status_code}")

    def website_sign_in(self) -> str:
        """The code flow for a signed-in citizen; the access token."""
        url, verifier = self._authorize_url()
        back = self.http.get(url, allow_redirects=False, timeout=60)
        code = urllib.parse.parse_qs(urllib.parse.urlsplit(back.headers["Location"]).query)["code"][0]
        token = self.http.post(self.base + "/oidc/token", auth=("bench-rp", self.secret), timeout=60, data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier})
        token.raise_for_status()
        return token.json()["access_token"]


def _parallel(workers: list, job, count: int) -> float:
    """Run ``job(worker)`` ``count`` times in all, over one thread per worker; the seconds."""
    per = [count // len(workers) + (1 if i < count % len(workers) else 0) for i in range(len(workers))]
    errors: list[BaseException] = []

    def loop(worker, n: int) -> None:
        try:
            for _ in range(n):
                job(worker)
        except BaseException as exc:  # noqa: BLE001 (reported after the run)
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(w, n)) for w, n in zip(workers, per)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} workers failed: {errors[0]!r}")
    return time.monotonic() - started


def run(count: int, concurrency: int, data_dir: Path) -> list[str]:
    addresses = prepare_city(data_dir)[:concurrency]
    config_path = data_dir / "civicmail.toml"
    secret = _register(config_path)
    proc, _, _, log = start_server(config_path, ("login.max_failures_per_ip=100000",))
    try:
        text = "".join(log)
        http_host, http_port = _HTTP.search(text).groups()  # type: ignore[union-attr]
        imap_host, imap_port = _IMAP.search(text).groups()  # type: ignore[union-attr]
        citizens = [Citizen(f"http://{http_host}:{http_port}", a, secret) for a in addresses]
        for c in citizens:
            c.sign_in_first()
        sign_in_seconds = _parallel(citizens, Citizen.website_sign_in, count)
        tokens = {c.address: c.website_sign_in() for c in citizens}

        def bearer_login(c: Citizen) -> None:
            imap = imaplib.IMAP4(imap_host, int(imap_port))
            message = f"n,a={c.address},\x01auth=Bearer {tokens[c.address]}\x01\x01".encode()
            imap.authenticate("OAUTHBEARER", lambda challenge: message)
            imap.logout()

        def password_login(c: Citizen) -> None:
            imap = imaplib.IMAP4(imap_host, int(imap_port))
            imap.login(c.address, PASSWORD)
            imap.logout()

        bearer_seconds = _parallel(citizens, bearer_login, count)
        password_seconds = _parallel(citizens, password_login, count)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    return [
        f"bench oidc: {count:,} website sign-ins (code + PKCE, token exchange, signed ID token) over {concurrency} "
        f"citizens in {sign_in_seconds:.2f} s = {count / sign_in_seconds:,.0f} sign-ins/s",
        f"bench oidc: {count:,} IMAP logins with AUTHENTICATE OAUTHBEARER in {bearer_seconds:.2f} s = "
        f"{count / bearer_seconds:,.0f} logins/s (LOGIN with the password, login cache warm: "
        f"{count / password_seconds:,.0f} logins/s)",
    ]


@click.command("oidc")
@click.option("--count", default=2000, show_default=True, help="sign-ins, and logins of each kind")
@click.option("--concurrency", default=8, show_default=True, help="citizens signing in at once")
@click.option("--dir", "work_dir", type=click.Path(file_okay=False, path_type=Path),
              help="data directory to use (default: a temporary one, removed afterwards)")
def command(count: int, concurrency: int, work_dir: Path | None) -> None:
    """Start `civicmail serve` on loopback and time COUNT website sign-ins (code + PKCE) and IMAP OAUTHBEARER logins."""
    with tempfile.TemporaryDirectory(prefix="civicmail-bench-oidc-") as tmp:
        for line in run(count, concurrency, (work_dir or Path(tmp)) / "data"):
            click.echo(line)
