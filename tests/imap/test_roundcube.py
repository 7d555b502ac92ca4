"""Roundcube, the webmail most cities run (Debian package `roundcube`, installed by .ci/run), against
every service of `serve`: PHP's built-in web server runs it over a config of the test's own, and the
test drives it over HTTP as the browser does (the login form, then the `_remote` JSON actions). The
results are checked in the store, and Roundcube's own IMAP log shows it sorted and threaded on the
server (SORT, THREAD) instead of fetching every header."""
from __future__ import annotations

import base64
import contextlib
import email
import html
import http.cookiejar
import json
import re
import secrets
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from email.message import EmailMessage
from email.policy import SMTP, default
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from mailserver.config import REPO_ROOT
from mailserver.registry.oidc import digest, portal_redirect_uri, query_client, revoke_consent

from mailserver.store import bodies
from mailserver.store.mailstore import deliver
from mailserver.store.models import Account, AuditLog, Content, Folder, Message, OidcToken
from mailserver.store.models.mail import ANSWERED, SEEN
from mailserver.web.webmail import php_value
from tests.abuse import PASSWORD, city, city_factory  # noqa: F401
from tests.serverkit import on_free_ports, start_program

#: the Debian package's layout: the application, and its public web root
ROUNDCUBE = Path("/var/lib/roundcube")
PUBLIC = ROUNDCUBE / "public_html"
#: files of the package's config dir that Roundcube reads beside config.inc.php
PACKAGE_CONFIG = Path("/etc/roundcube")
WAIT = 20  # seconds, for PHP's server to listen

pytestmark = pytest.mark.skipif(shutil.which("php") is None or not (PUBLIC / "index.php").exists(),
                                reason="roundcube or php-cli is not installed (see .ci/run)")

#: (subject, date) of the notices in the citizen's INBOX, in delivery (UID) order; dates out of
#: that order, so a list sorted by date differs from the arrival order
NOTICES = [
    ("驾驶证到期换证提醒", "Fri, 27 Nov 2026 10:02:00 +0800"),
    ("社保缴费通知", "Fri, 27 Nov 2026 10:00:00 +0800"),
    ("公积金提取审核结果", "Fri, 27 Nov 2026 10:03:00 +0800"),
    ("Re: 驾驶证到期换证提醒", "Fri, 27 Nov 2026 10:04:00 +0800"),
]


def _notice(n: int, subject: str, date: str, sender: str, to: str, parent: str | None) -> EmailMessage:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"车管所 <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = date
    msg["Message-ID"] = f"<rc{n}.{uuid.uuid4().hex}@hz.example.cn>"
    if parent:
        msg["In-Reply-To"] = msg["References"] = parent
    msg.set_content(f"通知正文 {n}：请于十二月一日前办理。", cte="base64")
    return msg


def _deliver_notices(town) -> list[EmailMessage]:
    """The notices in citizen 0's INBOX, from citizen 1 (the agency's desk, so a reply stays local);
    the fourth replies to the first, so THREAD has a thread to find."""
    with town.server.store.reader() as s:
        account = s.scalar(select(Account.id).where(Account.address == town.addresses[0]))
    made: list[EmailMessage] = []
    for n, (subject, date) in enumerate(NOTICES):
        parent = made[0]["Message-ID"] if subject.startswith("Re: ") else None
        made.append(_notice(n, subject, date, town.addresses[1], town.addresses[0], parent))
        deliver(town.server.store, bytes(made[-1]), [account])
    return made


def _config(town, root: Path, extra: str = "") -> Path:
    """A config dir of Roundcube's own for this server: plain IMAP and submission on loopback (the
    server's development mode allows it there), SQLite and logs in the temp dir, IMAP debug on;
    ``extra`` (PHP, e.g. what `civicmail webmail config` prints) after, so it wins."""
    conf = root / "config"
    for name in ("logs", "temp", "config"):
        (root / name).mkdir(parents=True, exist_ok=True)  # config: PHP's server may be up already (sso)
    for name in ("defaults.inc.php", "mimetypes.php"):
        (conf / name).symlink_to(PACKAGE_CONFIG / name)
    settings = {
        "db_dsnw": f"sqlite:///{root / 'roundcube.db'}?mode=0600",
        "imap_host": f"127.0.0.1:{town.imap_port}",
        "smtp_host": f"127.0.0.1:{town.port('submission')}",
        "smtp_user": "%u",
        "smtp_pass": "%p",
        "des_key": secrets.token_hex(12),
        "log_driver": "file",
        "log_dir": f"{root / 'logs'}/",
        "temp_dir": f"{root / 'temp'}/",
        "imap_debug": True,
        "smtp_debug": True,
        "plugins": ["archive"],
        "archive_mbox": "Archive",
        "skin": "elastic",
        "enable_spellcheck": False,
        "sent_mbox": "Sent",
    }
    lines = ["<?php", "$config = [];"]
    lines += [f"$config[{json.dumps(key)}] = {php_value(value)};" for key, value in settings.items()]
    (conf / "config.inc.php").write_text("\n".join(lines) + "\n" + extra)
    return conf


class Webmail:
    """A browser's side of Roundcube: a cookie jar, the request token, its forms and JSON actions."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.token = ""

    def get(self, **params: str) -> str:
        return self._open(f"{self.base}/?{urllib.parse.urlencode(params)}")

    def post(self, query: dict[str, str], form: dict[str, str]) -> str:
        return self._open(f"{self.base}/?{urllib.parse.urlencode(query)}", urllib.parse.urlencode(form).encode())

    def _open(self, url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> str:
        request = urllib.request.Request(url, data, headers or {})
        with self.opener.open(request, timeout=60) as response:
            return response.read().decode()

    def remote(self, action: str, method: str = "GET", **params: str) -> dict:
        """An `_remote` action as rcmail.js sends it: the token in X-Roundcube-Request, JSON back."""
        params = {"_task": "mail", "_action": action, "_remote": "1", **params}
        query = urllib.parse.urlencode(params)
        headers = {"X-Roundcube-Request": self.token, "X-Requested-With": "XMLHttpRequest"}
        if method == "GET":
            body = self._open(f"{self.base}/?{query}", None, headers)
        else:
            body = self._open(f"{self.base}/?_task=mail&_action={action}", query.encode(), headers)
        return json.loads(body)

    def login(self, user: str, password: str) -> str:
        page = self.get(_task="login")
        form_token = _field(page, "_token")
        form = {"_token": form_token, "_task": "login", "_action": "login", "_timezone": "Asia/Shanghai", "_url": "",
                "_user": user, "_pass": password}
        page = self.post({"_task": "login"}, form)
        found = re.search(r'"request_token":"([^"]+)"', page)
        assert found, f"Roundcube did not log in; the page:\n{page[-3000:]}"
        self.token = found.group(1)
        return page


def _field(page: str, name: str) -> str:
    found = re.search(rf'<input[^>]*name="{re.escape(name)}"[^>]*value="([^"]*)"', page)
    assert found, f"no {name} in the page:\n{page[-3000:]}"
    return found.group(1)


def _php(conf: Path, log_path: Path, plugins: Path | None, port: int) -> subprocess.Popen:
    """PHP's built-in web server serving Roundcube over the config dir ``conf`` on ``port``, once
    it listens (it reads the config at each request: the files may come after). ``plugins``: a
    plugins folder of the test's own (RCUBE_PLUGINS_DIR, defined before Roundcube defines its
    default), so a plugin is installed without touching the package's folder. A port taken
    meanwhile fails with PHP's "Address already in use" (serverkit.on_free_ports)."""
    command = ["php", "-S", f"127.0.0.1:{port}", "-t", str(PUBLIC)]
    if plugins is not None:
        conf.mkdir(parents=True, exist_ok=True)
        prepend = conf / "prepend.php"
        prepend.write_text(f"<?php define('RCUBE_PLUGINS_DIR', {php_value(str(plugins) + '/')});\n")
        command[1:1] = ["-d", f"auto_prepend_file={prepend}"]
    return start_program(command, log_path, f"Development Server (http://127.0.0.1:{port}) started", WAIT,
                         env={"ROUNDCUBE_CONFIG_DIR": str(conf), "PATH": "/usr/bin:/bin"})


def _end(php: subprocess.Popen) -> None:
    php.terminate()
    php.wait(10)


@contextlib.contextmanager
def _roundcube(php: subprocess.Popen, port: int):
    """Roundcube's base URL while ``php`` (``_php``) serves it on ``port``; PHP stopped after."""
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        _end(php)


@pytest.fixture
def webmail(city, tmp_path):  # noqa: F811
    conf = _config(city, tmp_path / "roundcube")
    php, port = on_free_ports(lambda port: (_php(conf, tmp_path / "php.log", None, port), port))
    with _roundcube(php, port) as base:
        yield Webmail(base), tmp_path / "roundcube" / "logs"


def _compose_form(page: str) -> dict[str, str]:
    """The fields of the compose page's send form as Roundcube filled them in: its hidden inputs,
    the selected identity and store target, the subject, and the recipient and body textareas."""
    form = page[page.index('<form name="form"'):]
    fields = {name: html.unescape(value) for name, value in
              re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form[:form.index("</form>")])}
    fields["_subject"] = html.unescape(_field(page, "_subject"))
    for name in ("_from", "_store_target"):
        select_ = re.search(rf'<select name="{name}".*?</select>', page, re.DOTALL)
        assert select_, f"no {name} in the compose page"
        fields[name] = re.search(r'<option value="([^"]*)" selected>', select_.group(0)).group(1)
    for name, value in re.findall(r'<textarea name="(\w+)"[^>]*>([^<]*)</textarea>', page):
        fields[name] = html.unescape(value)
    return fields


def _rows(listed: dict) -> list[tuple[int, str, dict]]:
    """(uid, subject, row flags) of each add_message_row call in a list response, in display order."""
    calls = re.findall(r"add_message_row\((\d+),(\{.*?\}),(\{.*?\}),(?:true|false)\);", listed["exec"])
    return [(int(uid), json.loads(cols)["subject"], json.loads(flags)) for uid, cols, flags in calls]


def _folder(town, user: int, folder: str) -> list[tuple[int, EmailMessage]]:
    """(flags, parsed message) of each message in a citizen's folder, in UID order, from the store."""
    with town.server.store.reader() as s:
        rows = s.execute(select(Message.flags, Content.raw, Content.blob_key)
                         .join(Content, Content.id == Message.content_id)
                         .join(Folder, Folder.id == Message.folder_id).join(Account, Account.id == Folder.account_id)
                         .where(Account.address == town.addresses[user], Folder.name == folder).order_by(Message.uid))
        return [(flags, email.message_from_bytes(bodies.body(town.server.store, raw, key), policy=default))
                for flags, raw, key in rows]


def _imap_commands(logs: Path) -> list[str]:
    """The commands Roundcube sent, from its IMAP debug log (`C: TAG COMMAND ...`), tags dropped."""
    return re.findall(r"\] C: \S+ (.+)", (logs / "imap.log").read_text())


def test_roundcube_lists_sorted_and_threaded_reads_archives_and_replies(city, webmail):  # noqa: F811
    web, logs = webmail
    notices = _deliver_notices(city)
    web.login(city.addresses[0], PASSWORD)

    # The INBOX by date, newest first, then by threads: the reply (UID 4) under the notice it answers.
    by_date = _rows(web.remote("list", _mbox="INBOX", _sort="date_DESC"))
    assert [uid for uid, _, _ in by_date] == [4, 3, 1, 2], by_date
    assert [subject for _, subject, _ in by_date] == [NOTICES[n][0] for n in (3, 2, 0, 1)]
    threaded = _rows(web.remote("list", _mbox="INBOX", _threads="1"))
    assert [uid for uid, _, _ in threaded] == [1, 4, 3, 2], threaded
    assert threaded[0][2].get("has_children") and threaded[1][2].get("parent_uid") == 1, threaded
    assert not any(flags.get("has_children") or flags.get("parent_uid") for _, _, flags in threaded[2:])
    commands = _imap_commands(logs)
    assert any(re.fullmatch(r"UID SORT \((REVERSE )?DATE\) \S+ ALL", c) for c in commands), commands
    assert any(re.fullmatch(r"UID THREAD REFERENCES \S+ ALL", c) for c in commands), commands

    # Open the third notice: its body (base64 on the wire) is on the page, and it is now \Seen.
    page = web.get(_task="mail", _action="show", _uid="3", _mbox="INBOX")
    assert str(notices[2].get_content()).strip() in html.unescape(page)
    assert _folder(city, 0, "INBOX")[2][0] & SEEN

    # Move it to Archive.
    moved = web.remote("move", method="POST", _uid="3", _mbox="INBOX", _target_mbox="Archive")
    assert "moved successfully" in moved["exec"], moved
    assert [m["Message-ID"] for _, m in _folder(city, 0, "INBOX")] == [notices[n]["Message-ID"] for n in (0, 1, 3)]
    [(_, archived)] = _folder(city, 0, "Archive")
    assert archived["Message-ID"] == notices[2]["Message-ID"]

    # Reply to it from the Archive: Roundcube fills in the recipient, quotes the notice and sends.
    [(archive_uid, subject, _)] = _rows(web.remote("list", _mbox="Archive"))
    assert subject == NOTICES[2][0]
    compose = web.get(_task="mail", _action="compose", _reply_uid=str(archive_uid), _mbox="Archive")
    form = _compose_form(compose)
    assert form["_to"] == f"车管所 <{city.addresses[1]}>" and form["_subject"] == f"Re: {NOTICES[2][0]}", form
    answer = "已收到，谢谢。"
    form["_message"] = f"{answer}\n\n{form['_message']}"
    sent = web.post({"_task": "mail", "_unlock": "loading1", "_framed": "1"}, form)
    assert "sent_successfully" in sent, sent[-3000:]

    # The reply is in the agency desk's INBOX and in the citizen's Sent; the notice is \Answered.
    [(_, received)] = _folder(city, 1, "INBOX")
    [(_, kept)] = _folder(city, 0, "Sent")
    for reply in (received, kept):
        assert reply["In-Reply-To"] == notices[2]["Message-ID"]
        assert str(reply["Subject"]) == f"Re: {NOTICES[2][0]}"
        assert reply.get_content().startswith(answer)
    assert received["Message-ID"] == kept["Message-ID"]
    assert _folder(city, 0, "Archive")[0][0] & ANSWERED
    assert any(c.startswith("UID MOVE 3 ") for c in _imap_commands(logs))


# -- single sign-on (issue 15 item 3): Roundcube configured by `civicmail webmail config` ---------
#: the registered name of citizen 0 (tests/abuse.py)
NAME = "李强"
HTTP = "citizen services HTTP"


@pytest.fixture
def sso(city_factory, tmp_path):  # noqa: F811
    """A city and Roundcube configured by nothing but `civicmail webmail config`'s output (on top
    of its database, logs and debug switches) with the plugin it installs. The printed config
    names the city's IMAPS and SMTPS listeners (bound to port 0, their ports asked after the
    start) and its provider, whose URL (http.listen) the city must know before it starts, as it
    must Roundcube's (PHP's port; the portal links there): those two ports are picked first, PHP
    started, then the city, both again on new ports if either port was taken meanwhile."""
    root = tmp_path / "roundcube"
    conf = root / "config"
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    for plugin in (ROUNDCUBE / "plugins").iterdir():  # the package's own (jqueryui, ...)
        (plugins / plugin.name).symlink_to(plugin.resolve())

    def start(http_port: int, php_port: int):
        php = _php(conf, tmp_path / "php.log", plugins, php_port)
        try:  # where the portal's webmail link goes
            town = city_factory(f"http.listen=127.0.0.1:{http_port}", f"oidc.webmail_url=http://127.0.0.1:{php_port}/")
        except BaseException:
            _end(php)
            raise
        return php, php_port, town

    php, php_port, town = on_free_ports(start, 2)
    url = f"http://127.0.0.1:{php_port}/"
    listens = {"http": town.server.config.http.listen, "imaps": f"127.0.0.1:{town.port('imaps')}",
               "submissions": f"127.0.0.1:{town.port('submissions')}"}
    args = [sys.executable, str(REPO_ROOT / "bin" / "civicmail"), "-c", str(town.server.config.source),
            *[a for name, listen in listens.items() for a in ("--set", f"{name}.listen={listen}")],
            "webmail", "config", "--url", url, "--plugins-dir", str(plugins)]
    with _roundcube(php, php_port) as base:
        made = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stderr
        assert "client webmail registered" in made.stderr and "plugin installed" in made.stderr, made.stderr
        again = subprocess.run(args, capture_output=True, text=True, timeout=120)  # idempotent: same secret
        assert again.returncode == 0 and again.stdout == made.stdout, again.stderr
        assert "already registered" in again.stderr and "plugin already in" in again.stderr, again.stderr
        _config(town, root, made.stdout)
        yield town, base, root / "logs", made.stdout


def test_webmail_config_is_php_roundcube_reads(sso):
    """The fragment is PHP; it names this city's TLS listeners and a client the provider knows:
    built in, Roundcube's OAuth return as its one redirect URI, the printed secret accepted."""
    town, base, _, printed = sso
    checked = subprocess.run(["php", "-l"], input="<?php\n" + printed, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"$config['imap_host'] = 'ssl://localhost:{town.port('imaps')}';" in printed
    assert f"$config['smtp_host'] = 'ssl://localhost:{town.port('submissions')}';" in printed
    assert "$config['oauth_scope'] = 'openid email profile mail';" in printed
    assert "$config['oauth_client_id'] = 'webmail';" in printed
    client = query_client(town.server.registry, "webmail")
    assert client.builtin and not client.public and client.redirect_uris == (base + "/index.php/login/oauth",)
    secret = re.search(r"\$config\['oauth_client_secret'\] = '([^']+)';", printed).group(1)
    revoke = f"http://127.0.0.1:{town.port(HTTP)}/oidc/revoke"
    for tried, status in ((secret, 200), (secret + "x", 401)):  # RFC 7009: an unknown token is 200
        answer = requests.post(revoke, auth=("webmail", tried), data={"token": "unknown"}, timeout=30)
        assert answer.status_code == status, answer.text


def test_signed_in_to_the_city_the_browser_opens_roundcube_without_a_password_and_reads_a_notice(sso):
    town, base, logs, _ = sso
    notices = _deliver_notices(town)
    browser = requests.Session()
    provider = f"http://127.0.0.1:{town.port(HTTP)}"

    # The citizen signs in to the city once (as the portal's sign-in does): the provider's page,
    # its form posted with the CSRF token the page holds.
    page = browser.get(provider + "/oidc/authorize?" + urllib.parse.urlencode(
        {"client_id": "portal", "response_type": "code", "scope": "openid",
         "redirect_uri": portal_redirect_uri(town.server.config)}), timeout=30)
    assert page.status_code == 200 and 'name="password"' in page.text, page.text
    signed = browser.post(provider + "/oidc/signin", data={**_hidden(page.text), "address": town.addresses[0],
                                                           "password": PASSWORD}, allow_redirects=False, timeout=30)
    assert signed.status_code == 302, signed.text

    # Then the portal's link to the webmail: Roundcube sends the browser to the provider, which
    # knows it and sends it straight back with a code (no form, no consent: the city's own
    # webmail); Roundcube exchanges the code and logs in to IMAP with the token.
    landed = browser.get(base + "/", timeout=60)
    hops = [r.headers["Location"] for r in landed.history]
    assert any(h.startswith(provider + "/oidc/authorize?") for h in hops), hops
    assert any(h.startswith(base + "/index.php/login/oauth?code=") for h in hops), hops
    assert 'name="password"' not in landed.text and "_pass" not in landed.text
    found = re.search(r'"request_token":"([^"]+)"', landed.text)
    assert found and '"task":"mail"' in landed.text, landed.text[-3000:]
    headers = {"X-Roundcube-Request": found.group(1), "X-Requested-With": "XMLHttpRequest"}

    # The INBOX lists the notices; one opens with its body.
    listed = browser.get(base + "/", params={"_task": "mail", "_action": "list", "_mbox": "INBOX", "_remote": "1",
                                             "_sort": "date_DESC"}, headers=headers, timeout=60).json()
    assert sorted(subject for _, subject, _ in _rows(listed)) == sorted(subject for subject, _ in NOTICES)
    shown = browser.get(base + "/", params={"_task": "mail", "_action": "show", "_uid": "2", "_mbox": "INBOX"},
                        timeout=60)
    assert str(notices[1].get_content()).strip() in html.unescape(shown.text)
    assert _folder(town, 0, "INBOX")[1][0] & SEEN

    # Roundcube never had a password (the browser gave it to the provider alone): it opened IMAP
    # with the webmail's access token, and the provider's audit trail has the webmail's sign-in.
    commands = _imap_commands(logs)
    assert not any(c.startswith("LOGIN") for c in commands), commands
    with town.server.store.reader() as s:
        details = s.scalars(select(AuditLog.detail).where(AuditLog.action == "oidc.authorize",
                                                          AuditLog.actor == town.addresses[0])).all()
        scopes = s.scalars(select(OidcToken.scope).where(OidcToken.client_id == "webmail")).all()
    assert any(d.startswith("client=webmail ") for d in details), details
    assert scopes and all("mail" in scope.split() for scope in scopes), scopes

    # The identity carries the registered real name: the compose page's sender, and what is sent
    # (over SMTPS, with the token again).
    compose = browser.get(base + "/", params={"_task": "mail", "_action": "compose"}, timeout=60)
    if compose.history:  # Roundcube first redirects to a compose id of its own
        assert "_id=" in compose.url
    sender = re.search(r'<select name="_from".*?</select>', compose.text, re.DOTALL)
    assert sender and f"{NAME} &lt;{town.addresses[0]}&gt;" in sender.group(0), compose.text[-3000:]
    form = _compose_form(compose.text)
    form.update(_to=town.addresses[1], _subject="网页版来信", _message="从网页版发出。")
    sent = browser.post(base + "/", params={"_task": "mail", "_unlock": "loading1", "_framed": "1"}, data=form,
                        timeout=60)
    assert "sent_successfully" in sent.text, sent.text[-3000:]
    [(_, received)] = _folder(town, 1, "INBOX")
    assert received["From"].addresses[0].display_name == NAME
    assert received["From"].addresses[0].addr_spec == town.addresses[0]
    smtp_auth = re.findall(r"> Send: AUTH XOAUTH2 (\S+)", (logs / "smtp.log").read_text())
    assert smtp_auth, (logs / "smtp.log").read_text()[-2000:]
    user, bearer = base64.b64decode(smtp_auth[-1]).decode().split("\x01")[:2]
    assert user == f"user={town.addresses[0]}" and bearer.startswith("auth=Bearer ")
    with town.server.store.reader() as s:
        assert s.scalar(select(OidcToken.client_id).where(OidcToken.access_hash == digest(bearer[12:]))) == "webmail"

    # It was the token: its tokens revoked (as withdrawing a website on the portal's account page
    # does), Roundcube's next IMAP login is refused at once and the INBOX is no longer listed.
    with town.server.store.reader() as s:
        account = s.scalar(select(Account.id).where(Account.address == town.addresses[0]))
    revoke_consent(town.server.registry, account, town.addresses[0], "webmail")
    refused = browser.get(base + "/", params={"_task": "mail", "_action": "list", "_mbox": "INBOX", "_remote": "1"},
                          headers=headers, timeout=60)
    assert not (refused.headers.get("Content-Type", "").startswith("application/json") and _rows(refused.json()))
    # Roundcube's log masks the mechanism, but the server's answer is the bearer mechanisms' own
    # (RFC 7628 3.2.2: an error challenge, then NO): OAUTHBEARER / XOAUTH2 it was.
    imap_log = (logs / "imap.log").read_text()
    challenge = re.findall(r"\] S: \+ (\S+)", imap_log)[-1]
    assert json.loads(base64.b64decode(challenge))["status"] == "invalid_token"
    assert re.match(r"A\d+ NO \[AUTHENTICATIONFAILED\]", re.findall(r"\] S: (A\d+ .*)", imap_log)[-1]), imap_log[-2000:]


def _hidden(page: str) -> dict[str, str]:
    return {k: html.unescape(v) for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page)}


# -- the same, in a real browser (issue 15, "Done means") ---------------------------------------
HAVE_BROWSER = bool(shutil.which("chromium") and shutil.which("chromedriver"))
try:
    import selenium  # noqa: F401
except ImportError:  # pragma: no cover
    HAVE_BROWSER = False


@pytest.mark.skipif(not HAVE_BROWSER, reason="no headless browser: Debian's chromium and chromium-driver "
                                             "(bash .ci/run installs them) and selenium")
def test_the_browser_signed_into_the_portal_follows_its_webmail_link_into_roundcube_and_opens_a_notice(sso):
    """Chromium signs into the portal (the provider's form: the one password typed), follows the
    portal's 网页邮箱 link and lands in Roundcube's inbox signed in by single sign-on, with no
    password asked; it opens a notice and reads its subject and body."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from mailserver.web.tour import DESKTOP, chromium, sign_in, wait_for_page

    town, base, logs, _ = sso
    notices = _deliver_notices(town)
    portal = f"http://127.0.0.1:{town.port(HTTP)}"
    with chromium(DESKTOP, 900) as driver:
        driver.get(portal + "/")
        assert "/signin" in driver.find_element(By.CSS_SELECTOR, "main a.button").get_attribute("href")
        sign_in(driver, portal, town.addresses[0], PASSWORD)
        assert driver.current_url.startswith(portal + "/")
        assert town.addresses[0] in driver.find_element(By.TAG_NAME, "main").text  # the portal, signed in

        link = driver.find_element(By.LINK_TEXT, "网页邮箱")
        assert link.get_attribute("href") == base + "/"
        wait_for_page(driver, link.click)

        # Roundcube's mail view, reached through the provider and back with a code: no form on the
        # way (no consent for the city's own webmail), no password field on the page
        def listed(d) -> list:
            return [r for r in d.find_elements(By.CSS_SELECTOR, "#messagelist tbody tr") if r.text.strip()]

        rows = WebDriverWait(driver, 60).until(lambda d: len(listed(d)) == len(NOTICES) and listed(d))
        assert driver.current_url.startswith(base + "/") and "_task=mail" in driver.current_url, driver.current_url
        assert not driver.find_elements(By.CSS_SELECTOR, "input[type=password]")
        assert sorted(r.find_element(By.CSS_SELECTOR, "span.subject").text for r in rows) \
            == sorted(subject for subject, _ in NOTICES)

        # open the second notice: its subject heads the preview, its body below
        subject, body = NOTICES[1][0], str(notices[1].get_content()).strip()
        row = next(r for r in rows if r.find_element(By.CSS_SELECTOR, "span.subject").text == subject)
        row.find_element(By.CSS_SELECTOR, "td.subject").click()
        driver.switch_to.frame("messagecontframe")
        heading = WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "h2.subject"))
        assert subject in heading[0].text and "_uid=2" in driver.execute_script("return location.href")
        WebDriverWait(driver, 60).until(lambda d: body in d.find_element(By.ID, "messagebody").text)
        driver.switch_to.default_content()

    assert _folder(town, 0, "INBOX")[1][0] & SEEN  # Roundcube read it over IMAP
    # Roundcube never had the password: it opened IMAP with the webmail's token (no LOGIN)
    commands = _imap_commands(logs)
    assert commands and not any(c.startswith("LOGIN") for c in commands), commands
    with town.server.store.reader() as s:
        details = s.scalars(select(AuditLog.detail).where(AuditLog.action == "oidc.authorize",
                                                          AuditLog.actor == town.addresses[0])).all()
    assert any(d.startswith("client=portal ") for d in details), details
    assert any(d.startswith("client=webmail ") for d in details), details
