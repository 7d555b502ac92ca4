"""Issue 14 section 1: passkeys (WebAuthn) as the web sign-in's second factor, and ``amr`` in the
ID token, in a real browser: Debian's chromium through chromium-driver, with Chromium's virtual
authenticator (CTAP2, internal transport, resident keys, user verification) standing in for a
phone's or a laptop's.

WebAuthn runs only in a secure context and its RP ID must be a domain: the city is served at
http://localhost:PORT (``http.base_url``), which browsers treat as secure. The relying party is
a website registered like any (``rp``); its redirect URI is answered by a stand-in page server
on another port (http.server: it only has to answer, the test reads the code from the URL), and
it redeems the code with authlib's client over real HTTP.
"""
from __future__ import annotations

import base64
import datetime as dt
import http.server
import re
import threading

import pytest
from sqlalchemy import select, update

from mailserver import config as config_mod
from mailserver.registry import Registry
from mailserver.registry.oidc import add_client, ensure_provider
from mailserver.store import open_store
from mailserver.store.models import Account, AccountPasskey, AuditLog, WebauthnChallenge
from mailserver.web.tour import wait_for_page
from tests.abuse import ALL_PORTS_ZERO
from tests.serverkit import LoopServer, on_free_ports
from tests.test_portal import AXE, LOGIN, axe_violations, browser, browser_only, civicmail, go  # noqa: F401

class _StandIn(http.server.BaseHTTPRequestHandler):
    """The relying party's redirect URI: a page, whatever the query (the test reads the URL)."""

    def do_GET(self) -> None:  # noqa: N802
        body = '<!DOCTYPE html><html lang="zh-CN"><title>示例办事网站</title><p>返回网站</p></html>'.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """The README's demo city at http://localhost:PORT, a website ``rp`` registered, and the
    stand-in page at its redirect URI: (server, base, logins, rp secret, redirect URI)."""
    data = tmp_path_factory.mktemp("passkeys") / "data"
    done = civicmail("--set", "passwords.memory_cost_kib=1024", "init", str(data), "--demo")
    assert done.returncode == 0, done.stderr
    logins = {addr: pw for _, addr, pw in LOGIN.findall(done.stdout) if "@" in addr}
    stand_in = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    threading.Thread(target=stand_in.serve_forever, daemon=True).start()
    redirect = f"http://localhost:{stand_in.server_address[1]}/callback"

    config = config_mod.load(data / "civicmail.toml", ALL_PORTS_ZERO)
    store = open_store(config)
    try:
        secret = add_client(Registry(config, store), "rp", "示例办事网站", [redirect])
    finally:
        store.dispose()

    def start(port: int) -> tuple[LoopServer, int]:
        """The city on ``port``, known before it starts (http.base_url names it): started again on
        another if that one was taken meanwhile (serverkit.on_free_ports)."""
        overrides = tuple(o for o in ALL_PORTS_ZERO if not o.startswith("http.listen=")) + (
            f"http.listen=127.0.0.1:{port}", f"http.base_url=http://localhost:{port}")
        config = config_mod.load(data / "civicmail.toml", overrides)
        store = open_store(config)
        try:  # the portal's redirect URI, now under http://localhost:PORT (as `db upgrade` does)
            ensure_provider(Registry(config, store))
        finally:
            store.dispose()
        return LoopServer(config).start(), port

    server, port = on_free_ports(start)
    try:
        yield server, f"http://localhost:{port}", logins, secret, redirect
    finally:
        server.stop()
        stand_in.shutdown()


@pytest.fixture
def authenticator(browser):
    """test_portal's Chromium with a virtual authenticator: CTAP2 over the internal transport
    (a platform authenticator), resident keys, user verification that succeeds."""
    from selenium.webdriver.common.virtual_authenticator import Protocol, Transport, VirtualAuthenticatorOptions

    browser.add_virtual_authenticator(VirtualAuthenticatorOptions(
        protocol=Protocol.CTAP2, transport=Transport.INTERNAL, has_resident_key=True,
        has_user_verification=True, is_user_verified=True, is_user_consenting=True))
    return browser


# -- steps, as a citizen takes them ------------------------------------------------------------
def _password(driver, address: str, password: str) -> None:
    """On the provider's sign-in page: the address and the password, submitted."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "address").send_keys(address)
    driver.find_element(By.ID, "password").send_keys(password)
    go(driver, driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]"))


def _ceremony(driver, button) -> None:
    """Click a passkey button and wait for the page its form posts to; if none comes, fail
    with what the page's script said."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By

    try:
        go(driver, button)
    except TimeoutException:
        said = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".passkey-status")]
        raise AssertionError(f"no page after the passkey ceremony; the page says {said}") from None


def _use_passkey(driver) -> None:
    from selenium.webdriver.common.by import By

    _ceremony(driver, driver.find_element(By.XPATH, "//button[text()='使用通行密钥']"))


def _add_passkey(driver, base: str, name: str) -> None:
    """On the account page: name a new passkey and make it with the browser's authenticator."""
    from selenium.webdriver.common.by import By

    driver.get(base + "/account")
    driver.find_element(By.ID, "passkey_name").send_keys(name)
    _ceremony(driver, driver.find_element(By.XPATH, "//button[text()='添加通行密钥']"))
    assert f"已添加通行密钥“{name}”" in driver.find_element(By.CSS_SELECTOR, "#main [role=status]").text
    assert name in [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".passkey-name")]


def _sign_out(driver) -> None:
    from selenium.webdriver.common.by import By

    go(driver, driver.find_element(By.XPATH, "//button[text()='退出登录']"))


def _portal_sign_in(driver, base: str, address: str, password: str) -> None:
    driver.get(base + "/signin")
    _password(driver, address, password)


def _credential_id(server, address: str, name: str) -> str:
    """The credential ID of the account's passkey NAME, base64url as WebAuthn's JSON has it."""
    with server.ctx.registry.store.reader() as s:
        raw = s.scalar(select(AccountPasskey.credential_id).join(Account, Account.id == AccountPasskey.account_id)
                       .where(Account.address == address, AccountPasskey.name == name))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _assert_with(driver, credential_id: str) -> None:
    """Have the second step's own script ask the authenticator for an assertion with this
    credential (instead of the account's own, which the page lists), on the page's challenge."""
    driver.execute_script("""
        const form = document.querySelector("form[data-passkey=get]");
        const options = JSON.parse(form.dataset.options);
        options.allowCredentials = [{type: "public-key", id: arguments[0]}];
        form.dataset.options = JSON.stringify(options);""", credential_id)


def _serious(driver) -> list[dict]:
    return [v for v in axe_violations(driver) if v["impact"] in ("serious", "critical")]


def _audit(server, action: str) -> list:
    """The audit rows of ACTION, oldest first: (actor, detail, reason)."""
    with server.ctx.registry.store.reader() as s:
        return list(s.execute(select(AuditLog.actor, AuditLog.detail, AuditLog.reason)
                              .where(AuditLog.action == action).order_by(AuditLog.id)))


# -- the tests ---------------------------------------------------------------------------------
@pytest.mark.parametrize("base_url, rp_id, origin", [
    ("https://mail.city.example", "mail.city.example", "https://mail.city.example"),
    ("https://mail.city.example:8443/", "mail.city.example", "https://mail.city.example:8443"),
    ("http://localhost:2080", "localhost", "http://localhost:2080"),
    ("http://mail.city.example", None, None),  # not a secure context: browsers refuse WebAuthn
    ("https://192.0.2.7", None, None),  # an RP ID is a domain
    ("http://127.0.0.1:2080", None, None),
])
def test_the_relying_party_is_the_https_host_of_the_public_url(base_url, rp_id, origin):
    from mailserver.registry.passkeys import relying_party

    rp = relying_party(config_mod.load(None, (f"http.base_url={base_url}",)))
    assert (rp.id, rp.origin) == (rp_id, origin) if rp_id else rp is None


@browser_only
def test_a_passkey_made_on_the_account_page_signs_in_and_the_id_token_says_hwk(city, authenticator):
    import requests
    from authlib.integrations.requests_client import OAuth2Session
    from joserfc import jwt
    from joserfc.jwk import KeySet
    from selenium.webdriver.common.by import By

    browser = authenticator
    server, base, logins, secret, redirect = city
    address, password = sorted(logins.items())[0]
    _portal_sign_in(browser, base, address, password)
    _add_passkey(browser, base, "我的手机")
    assert [row.actor for row in _audit(server, "account.passkey-add")].count(address) == 1
    _sign_out(browser)

    # a city website signs the citizen in: password, then the passkey
    rp = OAuth2Session("rp", secret, redirect_uri=redirect, scope="openid profile email",
                       code_challenge_method="S256", token_endpoint_auth_method="client_secret_basic")
    verifier = base64.urlsafe_b64encode(b"v" * 48).decode().rstrip("=")
    url, _ = rp.create_authorization_url(base + "/oidc/authorize", code_verifier=verifier, nonce="n-1")
    browser.get(url)
    _password(browser, address, password)
    assert browser.find_elements(By.ID, "passkey-heading") and not browser.find_elements(By.ID, "code")
    _use_passkey(browser)
    go(browser, browser.find_element(By.CSS_SELECTOR, "button[value=allow]"))  # consent to this website
    assert browser.current_url.startswith(redirect + "?"), browser.current_url
    token = rp.fetch_token(base + "/oidc/token", authorization_response=browser.current_url,
                           code_verifier=verifier)
    keys = KeySet.import_key_set(requests.get(base + "/oidc/jwks", timeout=30).json())
    claims = jwt.decode(token["id_token"], keys).claims
    assert claims["amr"] == ["pwd", "hwk", "mfa"] and claims["nonce"] == "n-1"
    # the authenticator's counter is kept, and the passkey's last use shown
    with server.ctx.registry.store.reader() as s:
        row = s.scalar(select(AccountPasskey).where(AccountPasskey.name == "我的手机"))
        assert row.sign_count >= 1 and row.last_used_at is not None and "internal" in row.transports.split()
        assert s.scalar(select(WebauthnChallenge.id).where(WebauthnChallenge.account_id == row.account_id,
                                                           WebauthnChallenge.purpose == "signin")) is None
    signins = _audit(server, "oidc.signin")
    assert signins[-1].actor == address and "amr=pwd,hwk,mfa" in signins[-1].detail


@browser_only
def test_a_removed_passkey_another_accounts_and_a_cloned_one_do_not_sign_in(city, authenticator):
    from selenium.common.exceptions import NoSuchElementException
    from selenium.webdriver.common.by import By

    browser = authenticator
    server, base, logins, _, _ = city
    (a, pa), (b, pb) = sorted(logins.items())[1:3]
    # B's passkey, on the same authenticator as A's will be
    _portal_sign_in(browser, base, b, pb)
    _add_passkey(browser, base, "B 的钥匙")
    _sign_out(browser)
    # A makes two passkeys (the authenticator refuses a second for the same account while it
    # holds the first, as WebAuthn's excludeCredentials asks, and keeps one discoverable
    # passkey per account: the first is put aside meanwhile, and comes back as a key that is
    # found by its credential ID, as a security key's is)
    from selenium.webdriver.common.virtual_authenticator import Credential

    _portal_sign_in(browser, base, a, pa)
    _add_passkey(browser, base, "旧手机")
    aside = browser.get_credentials()
    browser.remove_all_credentials()
    _add_passkey(browser, base, "新手机")
    for credential in aside:
        fields = credential.to_dict()
        fields.pop("userHandle", None)
        browser.add_credential(Credential.from_dict({**fields, "isResidentCredential": False}))
    assert len(browser.get_credentials()) == 3
    old, theirs = _credential_id(server, a, "旧手机"), _credential_id(server, b, "B 的钥匙")
    # B's passkey cannot be removed from A's page (a form changed to carry its handle: 404)
    with server.ctx.registry.store.reader() as s:
        handle_of_b = s.scalar(select(AccountPasskey.handle).where(AccountPasskey.name == "B 的钥匙"))
    browser.execute_script("document.querySelector('form[action=\"/account/passkeys/remove\"] input[name=handle]')"
                           ".value = arguments[0]", handle_of_b)
    go(browser, browser.find_element(By.CSS_SELECTOR, "button[aria-label='删除通行密钥旧手机']"))
    assert "找不到该页面" in browser.find_element(By.TAG_NAME, "h1").text
    assert _credential_id(server, b, "B 的钥匙")  # still there
    # A removes the old one
    browser.get(base + "/account")
    go(browser, browser.find_element(By.CSS_SELECTOR, "button[aria-label='删除通行密钥旧手机']"))
    assert "不能再用于登录" in browser.find_element(By.CSS_SELECTOR, "#main [role=status]").text
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".passkey-name")] == ["新手机"]
    assert any(row.actor == a and "旧手机" in row.detail for row in _audit(server, "account.passkey-remove"))
    _sign_out(browser)

    _portal_sign_in(browser, base, a, pa)
    for credential_id in (old, theirs):  # the removed passkey; another account's
        _assert_with(browser, credential_id)
        _use_passkey(browser)
        assert "验证未通过" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    refusals = _audit(server, "oidc.signin-failed-passkey")
    assert [(r.actor, r.reason) for r in refusals[-2:]] == [(a, "unknown credential")] * 2
    # a copy of the authenticator taken before its last use (a clone): its counter does not grow
    copy = next(c for c in browser.get_credentials() if c.id.rstrip("=") == _credential_id(server, a, "新手机"))
    _use_passkey(browser)  # A's own passkey, as the page lists it: signed in
    assert browser.find_element(By.XPATH, "//button[text()='退出登录']")
    _sign_out(browser)
    browser.remove_credential(copy.id)
    browser.add_credential(copy)
    _portal_sign_in(browser, base, a, pa)
    _use_passkey(browser)
    assert "验证未通过" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    clones = _audit(server, "account.passkey-clone-suspected")
    assert clones and clones[-1].actor == a
    with pytest.raises(NoSuchElementException):  # and not signed in
        browser.find_element(By.XPATH, "//button[text()='退出登录']")
    # the citizen lost the device: an operator lists and removes the passkeys; the password alone again
    config = str(server.config.source)
    listed = civicmail("-c", config, "oidc", "passkeys", a)
    assert listed.returncode == 0 and "新手机" in listed.stdout and "旧手机" not in listed.stdout, listed.stderr
    removed = civicmail("-c", config, "oidc", "passkeys", a, "--remove-all")
    assert removed.returncode == 0 and "1 passkey(s)" in removed.stdout, removed.stderr
    assert civicmail("-c", config, "oidc", "passkeys", "nobody@" + a.split("@")[1]).returncode != 0
    _portal_sign_in(browser, base, a, pa)
    assert browser.find_element(By.XPATH, "//button[text()='退出登录']")


@browser_only
@pytest.mark.skipif(not AXE.exists(), reason="no axe-core: bash .ci/run installs it with npm into .ci/node")
def test_no_serious_or_critical_accessibility_violation_on_the_passkey_pages(city, authenticator):
    """axe-core, as on every portal page, at phone and desktop width: the account page's
    passkey section (none yet, then one), and the sign-in's second step with a passkey and a
    TOTP code (either signs in), and with the code alone."""
    from selenium.webdriver.common.by import By

    from mailserver.registry import totp

    browser = authenticator
    server, base, logins, _, _ = city
    address, password = sorted(logins.items())[3]
    found: dict[str, list] = {}

    def check(page: str) -> None:
        for width in (375, 1280):
            browser.set_window_size(width, 900)
            found[f"{page} at {width} px"] = _serious(browser)

    _portal_sign_in(browser, base, address, password)
    browser.get(base + "/account")
    check("account")
    _add_passkey(browser, base, "我的电脑")
    check("account with a passkey")
    totp.enable(server.ctx.registry, address, "test")
    _sign_out(browser)
    _portal_sign_in(browser, base, address, password)
    assert browser.find_elements(By.ID, "passkey-heading") and browser.find_elements(By.ID, "code")
    check("second step: a passkey or a code")
    _use_passkey(browser)
    browser.get(base + "/account")
    go(browser, browser.find_element(By.CSS_SELECTOR, "button[aria-label='删除通行密钥我的电脑']"))
    _sign_out(browser)
    _portal_sign_in(browser, base, address, password)
    assert not browser.find_elements(By.ID, "passkey-heading") and browser.find_elements(By.ID, "code")
    check("second step: a code")
    assert not any(found.values()), {page: v for page, v in found.items() if v}


@browser_only
def test_a_challenge_is_good_once_for_minutes_and_only_in_its_browser_session(city, authenticator):
    """The browser's answer to the second step, taken before it is posted: from another browser
    session it is refused (and the challenge stays open for its own, which then signs in); posted
    again by its own session after that, refused (used); an expired challenge, refused."""
    import html

    import requests
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = authenticator
    server, base, logins, _, _ = city
    assert len(logins) >= 5
    address, password = sorted(logins.items())[4]
    _portal_sign_in(browser, base, address, password)
    _add_passkey(browser, base, "平板")
    _sign_out(browser)
    _portal_sign_in(browser, base, address, password)
    fields = {e.get_attribute("name"): e.get_attribute("value")
              for e in browser.find_elements(By.CSS_SELECTOR, "form[data-passkey=get] input[type=hidden]")}
    browser.execute_script("""window.civicSubmit = HTMLFormElement.prototype.submit;
        HTMLFormElement.prototype.submit = function () { window.civicAnswer = this.elements.credential.value; };""")
    browser.find_element(By.XPATH, "//button[text()='使用通行密钥']").click()
    answer = WebDriverWait(browser, 30).until(lambda d: d.execute_script("return window.civicAnswer"))

    def post(http: requests.Session, csrf_token: str, **headers: str) -> requests.Response:
        return http.post(base + "/oidc/passkey", timeout=30, allow_redirects=False, headers=headers,
                         data={**fields, "csrf_token": csrf_token, "credential": answer})

    elsewhere = requests.Session()  # another browser: its own pre-session cookie and CSRF token
    page = elsewhere.get(base + "/signin", timeout=30)
    token = html.unescape(re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1))
    refused = post(elsewhere, token)
    assert refused.status_code == 401 and "验证未通过" in refused.text
    assert not any(c.name.endswith("civicmail_session") for c in elsewhere.cookies)
    wait_for_page(browser, lambda: browser.execute_script(
        "window.civicSubmit.call(document.querySelector('form[data-passkey=get]'))"))
    assert browser.find_element(By.XPATH, "//button[text()='退出登录']")  # signed in, by its own session
    # the same answer again, from the session it was made in: the challenge is used
    pre = next(c for c in browser.get_cookies() if c["name"].endswith("civicmail_csrf"))
    again = post(requests.Session(), fields["csrf_token"], Cookie=f"{pre['name']}={pre['value']}")
    assert again.status_code == 401 and "验证未通过" in again.text
    # an expired challenge
    _sign_out(browser)
    _portal_sign_in(browser, base, address, password)
    with server.ctx.registry.store.session() as s:
        account_id = s.scalar(select(Account.id).where(Account.address == address))
        opened = s.execute(update(WebauthnChallenge).where(WebauthnChallenge.account_id == account_id)
                           .values(expires_at=WebauthnChallenge.expires_at - dt.timedelta(minutes=10))).rowcount
    assert opened >= 1  # (the refused answers above had pages with challenges of their own)
    _use_passkey(browser)
    assert "验证未通过" in browser.find_element(By.CSS_SELECTOR, "[role=alert]").text


@browser_only
def test_the_script_works_in_browsers_without_webauthns_json_helpers(city, authenticator):
    """passkeys.js converts the options and the answer itself where a browser has no
    ``parseCreationOptionsFromJSON`` / ``parseRequestOptionsFromJSON`` / ``toJSON`` (WebAuthn
    level 3; older Safari and Firefox): the same registration and sign-in with them taken away."""
    from selenium.webdriver.common.by import By

    browser = authenticator
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
        delete PublicKeyCredential.parseCreationOptionsFromJSON;
        delete PublicKeyCredential.parseRequestOptionsFromJSON;
        delete PublicKeyCredential.prototype.toJSON;"""})
    from mailserver.registry.citizens import add_citizen

    server, base, _, _, _ = city
    password = "an old browser 2026"
    address = add_citizen(server.ctx.registry, "王五", "440524188001010014", password=password).address
    _portal_sign_in(browser, base, address, password)
    assert browser.execute_script("return [PublicKeyCredential.parseCreationOptionsFromJSON,"
                                  " PublicKeyCredential.prototype.toJSON]") == [None, None]
    _add_passkey(browser, base, "旧浏览器")
    _sign_out(browser)
    _portal_sign_in(browser, base, address, password)
    _use_passkey(browser)
    assert browser.find_element(By.XPATH, "//button[text()='退出登录']")
    with server.ctx.registry.store.reader() as s:
        assert s.scalar(select(AccountPasskey.last_used_at).where(AccountPasskey.name == "旧浏览器")) is not None
