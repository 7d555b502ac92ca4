"""Issue 15: the citizen portal, in a real headless browser (Debian's chromium driven by Selenium
through chromium-driver) and, for the cross-account and CSRF checks, over real HTTP with requests.

The city is the README's demo (`civicmail init --demo`, run as a command: its citizens, six
sample drops, the demo appraisal), served in process on ephemeral ports by every service of
`serve`. The browser signs in through the city's own OpenID Connect provider, as a citizen would.
"""
from __future__ import annotations

import contextlib
import csv
import html
import os
import plistlib
import re
import shutil
import subprocess
import sys

import pytest
import requests
from sqlalchemy import select

from mailserver import config as config_mod
from mailserver.bench.util import throwaway_store
from mailserver.config import REPO_ROOT
from mailserver.services.surveys import RATINGS, Question, add_survey, tally
from mailserver.store.models import Account, Application, OidcToken, SurveyRecipient
from tests.abuse import ALL_PORTS_ZERO
from tests.conftest import PG_ADMIN, pg_unavailable
from tests.serverkit import LoopServer, on_free_ports

HTTP = "citizen services HTTP"
CLI = [sys.executable, "-m", "mailserver.cli"]
LOGIN = re.compile(r"^ +(\S+) +(\S+@\S+) +(demo-\S+)$", re.M)
NEW_PASSWORD = "a new password 2026"

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
    HAVE_SELENIUM = True
except ImportError:  # pragma: no cover
    HAVE_SELENIUM = False
browser_only = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER and HAVE_SELENIUM),
    reason="no headless browser: Debian's chromium and chromium-driver (bash .ci/run installs them) and selenium")


def civicmail(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
                          env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})


@contextlib.contextmanager
def demo_store(engine: str):
    """``init``'s arguments for the demo city's store: the SQLite file in its data directory, or a
    throwaway database on the PostgreSQL test server (dropped afterwards; skipped where there is
    no server, a failure under CI, as conftest.pg_admin_url does)."""
    if engine == "sqlite":
        yield []
        return
    reason = pg_unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with throwaway_store(PG_ADMIN) as url:
        yield ["--set", f"store.url={url}"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def demo(request, tmp_path_factory):
    """The demo city served in process, on each engine (the HTTP and browser tests run on both)."""
    with demo_store(request.param) as store:
        data = tmp_path_factory.mktemp("portal") / "data"
        done = civicmail("--set", "passwords.memory_cost_kib=1024", *store, "init", str(data), "--demo")
        assert done.returncode == 0, done.stderr
        logins = {addr: pw for _, addr, pw in LOGIN.findall(done.stdout) if "@" in addr}
        assert "demo-appraisal" in done.stdout or "appraisal" in done.stdout
        config = config_mod.load(data / "civicmail.toml", ALL_PORTS_ZERO)
        assert config.store_url.startswith(request.param), config.store_url
        server = LoopServer(config).start()
        try:
            yield server, f"http://127.0.0.1:{server.port(HTTP)}", logins, data
        finally:
            server.stop()


# -- requests: a browser's cookie jar, forms posted as a browser posts them --------------------
class Client:
    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()

    def get(self, path: str, **kw) -> requests.Response:
        return self.http.get(self.base + path, timeout=30, **kw)

    def post(self, path: str, data: dict, page: requests.Response | None = None) -> requests.Response:
        fields = dict(data)
        if page is not None:
            fields.setdefault("csrf_token", csrf(page))
        return self.http.post(self.base + path, data=fields, timeout=30)

    def sign_in(self, address: str, password: str, path: str = "/notices") -> requests.Response:
        page = self.get(path)  # -> /signin -> /oidc/authorize: the provider's sign-in page
        assert "/oidc/signin" in page.text
        hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
        return self.http.post(self.base + "/oidc/signin", timeout=30,
                              data={**{k: html.unescape(v) for k, v in hidden.items()},
                                    "address": address, "password": password})


def csrf(page: requests.Response) -> str:
    return html.unescape(re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1))


def two_citizens(logins: dict) -> tuple[tuple[str, str], tuple[str, str]]:
    (a, pa), (b, pb) = sorted(logins.items())[:2]
    return (a, pa), (b, pb)


def test_signed_out_home_offers_sign_in_and_pages_need_it(demo):
    _, base, _, _ = demo
    home = requests.get(base + "/", timeout=30)
    assert home.status_code == 200 and 'href="/signin"' in home.text
    assert 'lang="zh-CN"' in home.text and 'role="main"' in home.text
    page = requests.get(base + "/account", timeout=30, allow_redirects=False)
    assert page.status_code == 302 and page.headers["Location"].startswith("/signin?next=")


def test_a_second_citizen_gets_404_for_each_object_of_the_first(demo):
    server, base, logins, _ = demo
    (a, pa), (b, pb) = two_citizens(logins)
    first, second = Client(base), Client(base)
    listing = first.sign_in(a, pa)
    assert listing.status_code == 200
    notice = re.findall(r'href="(/notices/[A-Za-z0-9_-]{22})"', listing.text)[0]
    assert first.get(notice).status_code == 200
    assert first.get(notice + "/print").status_code == 200
    second.sign_in(b, pb)
    assert second.get(notice).status_code == 404
    assert second.get(notice + "/print").status_code == 404
    # an id made up, and the row number itself: 404 alike
    assert second.get("/notices/AAAAAAAAAAAAAAAAAAAAAA").status_code == 404
    assert second.get("/notices/1").status_code == 404
    # an application of the first citizen's (made in the store as the application desk makes one)
    reg = server.ctx.registry
    with reg.store.session() as s:
        account_id = s.scalar(select(Account.id).where(Account.address == a))
        s.add(Application(number="2026-990001", agency_id="traffic-police", account_id=account_id,
                          subject="驾驶证补领", status="received", root_message_id="<x@y>", thread_refs="<x@y>"))
    assert "2026-990001" in first.get("/applications").text
    assert first.get("/applications/2026-990001").status_code == 200
    assert second.get("/applications/2026-990001").status_code == 404
    assert "2026-990001" not in second.get("/applications").text
    # a survey the second citizen was never sent
    add_survey(reg, {"id": "only-first", "title": "仅第一位", "kind": "appraisal", "anonymous": True,
                     "address": "only-first", "questions": [Question("某部门", RATINGS)]})
    with reg.store.session() as s:
        s.add(SurveyRecipient(survey_id="only-first", account_id=account_id))
    assert first.get("/surveys/only-first").status_code == 200
    page = second.get("/surveys/demo-appraisal")
    assert second.get("/surveys/only-first").status_code == 404
    assert second.post("/surveys/only-first", {"q1": "5"}, page).status_code == 404
    # a session of the first citizen's, ended by the second: nothing ends
    account = first.get("/account")
    handle = re.search(r'name="handle" value="([^"]+)"', account.text).group(1)
    mine = second.get("/account")
    assert second.post("/account/sessions", {"handle": handle}, mine).status_code == 404
    assert first.get("/account").status_code == 200 and "/oidc/signin" not in first.get("/account").text
    # a topic or statement that is not one: 404
    assert second.post("/subscriptions", {"kind": "statement", "id": "licence-renewal", "action": "unsubscribe"},
                       mine).status_code == 404


def test_a_form_without_its_csrf_token_is_refused(demo):
    _, base, logins, _ = demo
    (a, pa), _ = two_citizens(logins)
    c = Client(base)
    c.sign_in(a, pa, "/subscriptions")
    before = c.get("/subscriptions").text
    for path, fields in (("/subscriptions", {"kind": "statement", "id": "pension-statement", "action": "unsubscribe"}),
                         ("/account/password", {"password": pa, "new_password": "x" * 12,
                                                "new_password_again": "x" * 12}),
                         ("/signout", {}), ("/surveys/demo-appraisal", {"q1": "1"})):
        assert c.post(path, fields).status_code == 403, path
        assert c.post(path, {**fields, "csrf_token": "0" * 64}).status_code == 403, path
    assert c.get("/subscriptions").text.count("已订阅") == before.count("已订阅")
    assert c.get("/account").status_code == 200  # still signed in, password unchanged


def test_the_signed_in_citizens_apple_profile(demo):
    _, base, logins, _ = demo
    (a, pa), _ = two_citizens(logins)
    c = Client(base)
    c.sign_in(a, pa)
    profile = c.get("/mobileconfig")
    assert profile.headers["Content-Type"] == "application/x-apple-aspen-config"
    account = plistlib.loads(profile.content)["PayloadContent"][0]
    assert account["EmailAddress"] == a
    # every page links to the webmail that `civicmail webmail config` sets up (signed in by the same provider)
    assert f'<a href="{c.base.rstrip("/")}/webmail/">网页邮箱</a>' in c.get("/account").text


def test_the_portal_keeps_no_token_it_is_issued(demo):
    """The portal reads the store itself: the tokens its sign-in is issued are revoked (access
    and refresh together, in the callback) the moment its ID token is verified."""
    server, base, logins, _ = demo
    (a, pa), _ = two_citizens(logins)
    assert Client(base).sign_in(a, pa).status_code == 200
    with server.store.reader() as s:
        issued = s.execute(select(OidcToken.refresh_hash, OidcToken.revoked_at)
                           .join(Account, Account.id == OidcToken.account_id)
                           .where(OidcToken.client_id == "portal", Account.address == a)).all()
    assert issued and all(t.revoked_at is not None for t in issued), issued
    assert any(t.refresh_hash is not None for t in issued)  # the pair had a refresh token: revoked with it


def test_reading_on_the_portal_keeps_the_session_alive_and_an_idle_one_ends(demo):
    """A portal page is a use of the provider session it came from: one last used more than a
    minute ago is marked used now (so reading only the portal never looks idle), and one idle
    past oidc.session_idle_seconds signs the portal out."""
    import datetime as dt

    from sqlalchemy import update

    from mailserver.store.models import WebSession, as_utc, utcnow

    server, base, logins, _ = demo
    (a, pa), _ = two_citizens(logins)
    c = Client(base)
    assert c.sign_in(a, pa).status_code == 200
    idle = server.config.oidc.session_idle_seconds
    with server.store.session() as s:
        account = s.scalar(select(Account.id).where(Account.address == a))
    for path in ("/notices", "/account"):  # the list (its own session check) and any other page
        with server.store.session() as s:  # last used just inside the idle limit
            s.execute(update(WebSession).where(WebSession.account_id == account)
                      .values(last_seen_at=utcnow() - dt.timedelta(seconds=idle - 30)))
        assert c.get(path, allow_redirects=False).status_code == 200, path
        with server.store.reader() as s:
            seen = [as_utc(t) for t in s.scalars(select(WebSession.last_seen_at).where(WebSession.account_id == account))]
        assert seen and max(seen) > utcnow() - dt.timedelta(seconds=60), (path, seen)
    with server.store.session() as s:  # now idle past the limit
        s.execute(update(WebSession).where(WebSession.account_id == account)
                  .values(last_seen_at=utcnow() - dt.timedelta(seconds=idle + 10)))
    for path in ("/notices", "/account"):
        gone = c.get(path, allow_redirects=False)
        assert gone.status_code == 302 and gone.headers["Location"].startswith("/signin"), path


def test_web_vote_and_mail_vote_are_one_ballot(demo):
    """The web vote goes through the mail vote's record_ballot: a second web vote replaces the
    first, and the tally (the same function the CLI prints) counts one ballot for the citizen."""
    server, base, logins, _ = demo
    (a, pa), (b, pb) = two_citizens(logins)
    c = Client(base)
    page = c.sign_in(b, pb, "/surveys/demo-appraisal")
    before = tally(server.ctx.registry, "demo-appraisal").ballots
    assert c.post("/surveys/demo-appraisal", {"q1": "2"}, page).status_code == 200
    done = c.post("/surveys/demo-appraisal", {"q1": "3", "q2": "4"}, page)
    assert "以本次为准" in done.text
    after = tally(server.ctx.registry, "demo-appraisal")
    assert after.ballots == before + 1
    assert c.post("/surveys/demo-appraisal", {"q1": "9"}, page).status_code == 400


def test_my_notices_pages_filters_and_a_new_type(demo, tmp_path):
    """"My notices" in pages of 20, newest first, every notice on exactly one page; its filter
    choices follow a notice of a new type delivered through the pipeline (they are cached per
    account while its notices are unchanged)."""
    _, base, logins, data = demo
    rows = (data / "demo-credentials.txt").read_text(encoding="utf-8").splitlines()
    address = next(r.split("\t")[1] for r in rows if r.startswith("陈建国\t"))
    c = Client(base)
    first = c.sign_in(address, logins[address])
    assert first.status_code == 200 and 'value="fitness-certificate"' not in first.text  # none of that type yet
    drop = tmp_path / "renewals.csv"
    drop.write_text("reference,id_number,name,licence_number,expiry_date,office\n" + "".join(
        f"PORTAL-{n:03d},330102196804120318,陈建国,33010{n:013d},2027-01-15,示例市车辆管理所\n" for n in range(25)),
        encoding="utf-8")
    config = str(data / "civicmail.toml")
    for path, kind in ((drop, "licence-renewal"), (REPO_ROOT / "templates/fitness-certificate/sample.csv",
                                                   "fitness-certificate")):
        done = civicmail("-c", config, "drop", "run", str(path), "--agency", "traffic-police", "--notice-type", kind)
        assert done.returncode == 0 and re.search(r"delivered +[1-9]", done.stdout), done.stdout + done.stderr
    page = c.get("/notices")
    assert 'value="fitness-certificate"' in page.text  # the new type among the choices
    pages = int(re.search(r"第 1 / (\d+) 页", page.text).group(1))
    assert pages >= 2
    seen = []
    for n in range(1, pages + 1):
        listing = c.get(f"/notices?page={n}").text
        ids = re.findall(r'href="/notices/([A-Za-z0-9_-]{22})"', listing)
        assert len(ids) == 20 or n == pages
        times = re.findall(r'<time datetime="([^"]+)"', listing)
        assert times == sorted(times, reverse=True)
        seen += ids
    assert len(seen) == len(set(seen)) >= 27
    only = c.get("/notices?type=fitness-certificate").text
    assert len(re.findall(r'href="/notices/[A-Za-z0-9_-]{22}"', only)) == 1 and "第 1 / 1 页" not in only


def test_serve_workers_answer_the_portal_on_one_port(tmp_path, store_url):
    """With server.workers = 2 both processes serve the citizens' HTTP on the same port
    (SO_REUSEPORT); a sign-in whose steps arrive on fresh connections (so either process may take
    each) completes, and every page view after it is the citizen's list of notices. On SQLite,
    and on PostgreSQL (where any number of processes on any number of machines share the store)."""
    import signal
    import time

    from mailserver.bench.smtp import start_server
    from mailserver.bench.web import _HTTP, CITIZEN_NAME, demo_city

    config, logins = demo_city(tmp_path / "data", "" if store_url.startswith("sqlite") else store_url)
    assert config_mod.load(config).store_url.startswith(store_url.split(":")[0]), config_mod.load(config).store_url
    address, password = logins[CITIZEN_NAME]

    def start(port: int):
        """serve on an HTTP port known before it starts (both processes bind it; port 0 would give
        each its own), again on another if it was taken meanwhile (serverkit.on_free_ports)."""
        proc, _, _, log = start_server(config, ("server.workers=2", f"http.listen=127.0.0.1:{port}"))
        try:
            for _ in range(600):
                if len(_HTTP.findall("".join(log))) >= 2:
                    break
                assert proc.poll() is None, "".join(log[-20:])
                time.sleep(0.1)
        except BaseException:
            proc.kill()
            proc.wait(30)
            raise
        return proc, log, port

    proc, log, port = on_free_ports(start)
    try:
        assert [int(p) for _, p in _HTTP.findall("".join(log))] == [port, port], "".join(log[-20:])
        c = Client(f"http://127.0.0.1:{port}")
        c.http.headers["Connection"] = "close"  # a new connection for every request
        assert c.sign_in(address, password).status_code == 200
        for _ in range(40):
            page = c.get("/notices")
            assert page.status_code == 200 and re.search(r'href="/notices/[A-Za-z0-9_-]{22}"', page.text)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)


# -- the browser ------------------------------------------------------------------------------
@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=375,812"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def go(driver, element) -> None:
    """Click what navigates, and wait for the next page (a click does not wait for it)."""
    from mailserver.web.tour import wait_for_page

    wait_for_page(driver, element.click)


def _sign_in(driver, base: str, address: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/")
    go(driver, driver.find_element(By.CSS_SELECTOR, "main a.button[href='/signin']"))
    driver.find_element(By.ID, "address").send_keys(address)
    driver.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys(password)
    go(driver, driver.find_element(By.CSS_SELECTOR, "form button[type=submit]"))


@browser_only
def test_a_citizen_in_the_browser(demo, browser):
    from selenium.webdriver.common.by import By

    _, base, logins, _ = demo
    address, password = sorted(logins.items())[-1]
    _sign_in(browser, base, address, password)
    assert address in browser.find_element(By.TAG_NAME, "main").text
    # my notices: the demo drops' notices, newest first; one opened, and its printable version
    go(browser, browser.find_element(By.LINK_TEXT, "我的通知"))
    links = browser.find_elements(By.CSS_SELECTOR, "main ol.list a")
    assert len(links) >= 3
    title = links[0].text
    go(browser, links[0])
    assert browser.find_element(By.CSS_SELECTOR, "article.notice").text.strip()
    assert title in browser.find_element(By.CSS_SELECTOR, "p.meta").text
    go(browser, browser.find_element(By.LINK_TEXT, "打印版"))
    assert browser.find_element(By.CSS_SELECTOR, "article.notice").text.strip()
    # the demo appraisal, answered on the web
    browser.get(base + "/surveys")
    go(browser, browser.find_element(By.PARTIAL_LINK_TEXT, "满意度评议"))
    browser.find_element(By.CSS_SELECTOR, "input[name=q1][value='5']").click()
    browser.find_element(By.CSS_SELECTOR, "input[name=q2][value='4']").click()
    go(browser, browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]"))
    assert "已提交" in browser.find_element(By.CSS_SELECTOR, "[role=status]").text
    assert browser.find_element(By.CSS_SELECTOR, "input[name=q1][value='5']").is_selected()
    # unsubscribe from a statement
    browser.get(base + "/subscriptions")
    go(browser, browser.find_element(By.CSS_SELECTOR, "button[aria-label='退订养老账户个人对账信息']"))
    assert "已退订" in browser.find_element(By.CSS_SELECTOR, "[role=status]").text
    assert browser.find_elements(By.CSS_SELECTOR, "button[aria-label='订阅养老账户个人对账信息']")
    # change the password, then sign in again with it
    browser.get(base + "/account")
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.ID, "new_password").send_keys(NEW_PASSWORD)
    browser.find_element(By.ID, "new_password_again").send_keys(NEW_PASSWORD)
    go(browser, browser.find_element(By.XPATH, "//button[text()='修改密码']"))
    assert "重新登录" in browser.find_element(By.CSS_SELECTOR, "[role=status]").text
    browser.get(base + "/notices")
    assert "/oidc/authorize" in browser.current_url  # signed out everywhere
    browser.find_element(By.ID, "address").send_keys(address)
    browser.find_element(By.ID, "password").send_keys(password)  # the old one: refused
    go(browser, browser.find_element(By.CSS_SELECTOR, "form button[type=submit]"))
    assert "不正确" in browser.find_element(By.TAG_NAME, "main").text
    browser.find_element(By.ID, "password").send_keys(NEW_PASSWORD)
    go(browser, browser.find_element(By.CSS_SELECTOR, "form button[type=submit]"))
    assert browser.find_elements(By.CSS_SELECTOR, "main ol.list a")
    logins[address] = NEW_PASSWORD
    # and sign out
    go(browser, browser.find_element(By.XPATH, "//button[text()='退出登录']"))
    assert "已退出" in browser.find_element(By.CSS_SELECTOR, "[role=status]").text


@browser_only
def test_activation_with_a_code_from_citizen_import(demo, browser, tmp_path):
    from selenium.webdriver.common.by import By

    _, base, _, data = demo
    people = tmp_path / "people.csv"
    people.write_text("name,id_number,phone\n王五,440524188001010014,\n", encoding="utf-8")
    done = civicmail("-c", str(data / "civicmail.toml"), "citizen", "import", str(people))
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "people.csv.codes.csv", encoding="utf-8") as fh:
        row = next(csv.DictReader(fh))
    browser.get(base + "/activate")
    browser.find_element(By.ID, "address").send_keys(row["address"])
    browser.find_element(By.ID, "code").send_keys("WRONG-CODE-0000")
    browser.find_element(By.ID, "new_password").send_keys(NEW_PASSWORD)
    browser.find_element(By.ID, "new_password_again").send_keys(NEW_PASSWORD)
    go(browser, browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]"))
    assert "不正确" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    browser.find_element(By.ID, "code").send_keys(row["activation_code"])
    browser.find_element(By.ID, "new_password").send_keys(NEW_PASSWORD)
    browser.find_element(By.ID, "new_password_again").send_keys(NEW_PASSWORD)
    go(browser, browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]"))
    assert "已激活" in browser.find_element(By.CSS_SELECTOR, "[role=status]").text
    _sign_in(browser, base, row["address"], NEW_PASSWORD)
    assert row["address"] in browser.find_element(By.TAG_NAME, "main").text


# -- accessibility: axe-core in the browser, on every page ------------------------------------
AXE = REPO_ROOT / ".ci" / "node" / "node_modules" / "axe-core" / "axe.min.js"
#: axe-core's run, its violations cut to what a failure message needs
AXE_RUN = """const done = arguments[arguments.length - 1];
axe.run(document, {resultTypes: ["violations"]}).then(
    r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                      nodes: v.nodes.slice(0, 5).map(n => n.target.join(" "))}))),
    e => done([{id: "axe-error", impact: "critical", help: String(e), nodes: []}]));"""


def axe_violations(driver) -> list[dict]:
    """axe-core (the npm package, injected as a script) run on the page the browser shows."""
    driver.set_script_timeout(120)
    driver.execute_script(AXE.read_text(encoding="utf-8"))
    return driver.execute_async_script(AXE_RUN)


@browser_only
@pytest.mark.skipif(not AXE.exists(), reason="no axe-core: bash .ci/run installs it with npm into .ci/node")
@pytest.mark.parametrize("demo", ["sqlite"], indirect=True)  # the pages' markup: one engine is enough
def test_no_serious_or_critical_accessibility_violation_on_any_page(demo, browser):
    """Every page of the tour (signed out: home, activation, the provider's sign-in; signed in:
    my notices, a notice, subscriptions, surveys, a survey, applications, account), at phone
    width and at desktop width: no axe-core violation of impact serious or critical."""
    from mailserver.web.tour import DESKTOP, PAGES, PHONE, tour

    _, base, logins, _ = demo
    address, password = sorted(logins.items())[-1]
    # axe runs and reports: a page with an image without a text alternative and no language
    browser.get("data:text/html;charset=utf-8,<html><title>x</title><body><img src='x.png'></body></html>")
    assert {"image-alt", "html-has-lang"} <= {v["id"] for v in axe_violations(browser)}
    found: dict[str, list] = {}
    for width in (PHONE, DESKTOP):
        browser.set_window_size(width, 900)

        def check(name: str) -> None:
            bad = [v for v in axe_violations(browser) if v["impact"] in ("serious", "critical")]
            if bad:
                found[f"{name} at {width} px"] = bad

        seen = tour(browser, base, address, password, check)
        assert seen == [name for name, _, _ in PAGES]
    assert not found, "\n".join(f"{page}: {v['impact']} {v['id']} ({v['help']}) at {v['nodes']}"
                                for page, vs in found.items() for v in vs)
