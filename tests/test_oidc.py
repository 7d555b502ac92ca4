"""Issue 14 sections 1 and 2: civicmail as the city's OpenID Connect provider, and its access
tokens as the mail clients' login.

A relying party (authlib's OAuth2Session over requests, real HTTP) signs a demo citizen in with
code + PKCE; the "browser" is a requests session with its own cookie jar that GETs the pages and
posts their forms as a browser would (CSRF token included). The ID token is verified against the
JWKS with joserfc; the tokens are refreshed, revoked, and used over IMAP (imaplib) and SMTP
submission (smtplib)."""
from __future__ import annotations

import hashlib
import imaplib
import re
import secrets
import smtplib
import subprocess
import sys
import urllib.parse

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.integrations.base_client import OAuthError
from joserfc import jwt
from joserfc.jwk import KeySet

from mailserver.config import REPO_ROOT
from mailserver.registry.oidc import add_client, pairwise_sub
from tests.abuse import PASSWORD, city, city_factory  # noqa: F401

HTTP = "citizen services HTTP"
RP = "https://rp.hz.example.cn/callback"
APP = "http://127.0.0.1/native-callback"


@pytest.fixture
def oidc(city):  # noqa: F811
    reg = city.server.registry
    secret = add_client(reg, "rp", "示例办事网站", [RP], claims=["id_number_masked"])
    add_client(reg, "app", "掌上办事", [APP], public=True)
    base = f"http://127.0.0.1:{city.port(HTTP)}"
    return city, base, secret


class Browser:
    """A citizen's browser: a cookie jar, pages fetched, forms posted with what the page holds."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()

    def get(self, url: str) -> requests.Response:
        return self.http.get(url, allow_redirects=False, timeout=30)

    def submit(self, page: requests.Response, **fields: str) -> requests.Response:
        action = re.search(r'<form method="post" action="([^"]+)"', page.text).group(1)
        hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
        hidden = {k: _unescape(v) for k, v in hidden.items()}
        return self.http.post(self.base + action, data={**hidden, **fields}, allow_redirects=False, timeout=30)


def _unescape(text: str) -> str:
    import html

    return html.unescape(text)


def _sign_in(browser: Browser, url: str, address: str, password: str = PASSWORD,
             decision: str | None = "allow") -> requests.Response:
    page = browser.get(url)
    if page.status_code == 302:  # signed in already, and agreed before
        return page
    if "授权确认" in page.text:  # signed in already: this website's consent
        return browser.submit(page, decision=decision)
    assert page.status_code == 200 and 'lang="zh-CN"' in page.text and '<label for="password">' in page.text
    answer = browser.submit(page, address=address, password=password)
    if answer.status_code == 200 and "授权确认" in answer.text and decision:
        answer = browser.submit(answer, decision=decision)
    return answer


def _rp(base: str, secret: str | None, client_id: str = "rp", redirect: str = RP, scope="openid profile email mail"):
    return OAuth2Session(client_id, secret, redirect_uri=redirect, scope=scope, code_challenge_method="S256",
                         token_endpoint_auth_method="client_secret_basic" if secret else "none")


def _jwks(base: str) -> KeySet:
    config = requests.get(base + "/.well-known/openid-configuration", timeout=30).json()
    assert config["issuer"] == base and "mail" in config["scopes_supported"]
    assert config["code_challenge_methods_supported"] == ["S256"]
    return KeySet.import_key_set(requests.get(config["jwks_uri"], timeout=30).json())


def _oauthbearer(address: str, token: str) -> bytes:
    return f"n,a={address},\x01host=127.0.0.1\x01port=143\x01auth=Bearer {token}\x01\x01".encode()


def _imap_bearer(city, address: str, token: str, mechanism: str = "OAUTHBEARER") -> bool:  # noqa: F811
    imap = city.imap(login=False)
    try:
        assert f"AUTH={mechanism}" in imap.capabilities
        message = _oauthbearer(address, token) if mechanism == "OAUTHBEARER" else \
            f"user={address}\x01auth=Bearer {token}\x01\x01".encode()
        try:
            imap.authenticate(mechanism, lambda challenge: message if not challenge else b"\x01")
        except imaplib.IMAP4.error:
            return False
        typ, data = imap.select("INBOX")
        assert typ == "OK"
        return True
    finally:
        imap.shutdown()


def _smtp_bearer(city, address: str, token: str) -> bool:  # noqa: F811
    smtp = smtplib.SMTP("127.0.0.1", city.port("submission"), timeout=30)
    try:
        smtp.ehlo()
        assert "XOAUTH2" in smtp.esmtp_features["auth"] and "OAUTHBEARER" in smtp.esmtp_features["auth"]
        try:
            smtp.auth("XOAUTH2", lambda challenge=None: f"user={address}\x01auth=Bearer {token}\x01\x01",
                      initial_response_ok=True)
        except smtplib.SMTPAuthenticationError as exc:
            assert exc.smtp_code == 535
            return False
        smtp.sendmail(address, [address], f"From: {address}\r\nTo: {address}\r\nSubject: token\r\n\r\nhi\r\n")
        return True
    finally:
        smtp.close()


def test_relying_party_signs_in_with_code_and_pkce_refreshes_revokes(oidc):
    city, base, secret = oidc
    address = city.addresses[1]
    keys = _jwks(base)
    rp = _rp(base, secret)
    verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(16)
    url, state = rp.create_authorization_url(base + "/oidc/authorize", code_verifier=verifier, nonce=nonce)
    browser = Browser(base)
    back = _sign_in(browser, url, address)
    assert back.status_code == 302
    location = back.headers["Location"]
    assert location.startswith(RP + "?") and f"state={state}" in location
    cookie = next(c for c in browser.http.cookies if c.name == "civicmail_session")
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.path == "/"

    token = rp.fetch_token(base + "/oidc/token", authorization_response=location, code_verifier=verifier)
    assert token["token_type"].lower() == "bearer" and set(token["scope"].split()) == {"openid", "profile", "email",
                                                                                       "mail"}
    claims = jwt.decode(token["id_token"], keys).claims
    assert claims["iss"] == base and claims["aud"] == "rp" and claims["nonce"] == nonce
    assert claims["email"] == address and claims["email_verified"] is True
    assert claims["name"] == "陈静" and claims["real_name_verified"] is True
    assert "id_number_masked" not in claims  # granted to the client, but not asked for
    # pairwise: another website knows the same citizen by another subject
    account_id = city.server.ctx.registry.store and _account_id(city, address)
    assert claims["sub"] == pairwise_sub(city.server.registry, "rp", account_id) != pairwise_sub(
        city.server.registry, "app", account_id)
    info = requests.get(base + "/oidc/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"},
                        timeout=30).json()
    assert info["sub"] == claims["sub"] and info["email"] == address

    # the same access token opens the mailbox over IMAP and SMTP submission
    assert _imap_bearer(city, address, token["access_token"])
    assert _imap_bearer(city, address, token["access_token"], "XOAUTH2")
    assert _smtp_bearer(city, address, token["access_token"])
    # ... but not another citizen's
    assert not _imap_bearer(city, city.addresses[2], token["access_token"])

    # refresh: a new pair; the old refresh token is spent, and using it again revokes the chain
    old = token
    refreshed = rp.refresh_token(base + "/oidc/token", refresh_token=old["refresh_token"])
    assert refreshed["access_token"] != old["access_token"] and refreshed["refresh_token"] != old["refresh_token"]
    assert not _imap_bearer(city, address, old["access_token"])  # the pair it replaced is revoked
    assert _imap_bearer(city, address, refreshed["access_token"])

    # revocation (RFC 7009): refused afterwards, over HTTP, IMAP and SMTP alike
    answer = rp.revoke_token(base + "/oidc/revoke", token=refreshed["access_token"], token_type_hint="access_token")
    assert answer.status_code == 200
    assert requests.get(base + "/oidc/userinfo", headers={"Authorization": f"Bearer {refreshed['access_token']}"},
                        timeout=30).status_code == 401
    assert not _imap_bearer(city, address, refreshed["access_token"])
    assert not _smtp_bearer(city, address, refreshed["access_token"])
    with pytest.raises(OAuthError) as refused:
        rp.refresh_token(base + "/oidc/token", refresh_token=refreshed["refresh_token"])
    assert refused.value.error == "invalid_grant"

    # signed in already: the next website request needs no password and no second consent
    url, state = rp.create_authorization_url(base + "/oidc/authorize", code_verifier=verifier)
    again = browser.get(url)
    assert again.status_code == 302 and again.headers["Location"].startswith(RP + "?code=")
    # prompt=login asks for the password again; max_age=0 too
    assert "password" in browser.get(url + "&prompt=login").text
    assert "password" in browser.get(url + "&max_age=0").text

    # every sign-in and consent is audited, without the password
    rows = _audit(city)
    assert any(a == "oidc.signin" and actor == address and "client=rp" in d for a, actor, d in rows)
    assert any(a == "oidc.consent" and actor == address and "client=rp" in d for a, actor, d in rows)
    # ... and every website sign-in, the one by the session too (who, which website, from where)
    assert sum(a == "oidc.authorize" and actor == address and "client=rp" in d and "ip=127.0.0.1" in d
               for a, actor, d in rows) == 2
    assert not any(PASSWORD in (d or "") for _, _, d in rows)

    # the citizen withdraws the website's consent: its tokens stop at once, and it must ask again
    from mailserver.registry.oidc import list_consents, revoke_consent

    location = again.headers["Location"]
    token = rp.fetch_token(base + "/oidc/token", authorization_response=location, code_verifier=verifier)
    assert _imap_bearer(city, address, token["access_token"])
    reg = city.server.registry
    assert [c.client_id for c in list_consents(reg, account_id)] == ["rp"]
    assert revoke_consent(reg, account_id, address, "rp")
    assert not _imap_bearer(city, address, token["access_token"])
    assert "授权确认" in browser.get(url).text


def _account_id(city, address: str) -> int:  # noqa: F811
    from sqlalchemy import text

    with city.server.store.reader() as s:
        return s.execute(text("SELECT id FROM account WHERE address = :a"), {"a": address}).scalar()


def _expire(city, access_token: str) -> None:  # noqa: F811
    import datetime as dt

    from sqlalchemy import update

    from mailserver.store.models import OidcToken

    with city.server.store.session() as s:
        done = s.execute(update(OidcToken).where(OidcToken.access_hash == hashlib.sha256(access_token.encode()).digest())
                         .values(access_expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)))
        assert done.rowcount == 1


def _audit(city) -> list[tuple[str, str, str]]:  # noqa: F811
    from sqlalchemy import text

    with city.server.store.reader() as s:
        return [tuple(r) for r in s.execute(text("SELECT action, actor, detail FROM audit_log"))]


def _code(browser: Browser, rp: OAuth2Session, base: str, address: str, **params) -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    url, _ = rp.create_authorization_url(base + "/oidc/authorize", code_verifier=verifier, **params)
    back = _sign_in(browser, url, address)
    assert back.status_code == 302, back.text
    return back.headers["Location"], verifier


def test_refusals_carry_the_rfc_errors(oidc):
    city, base, secret = oidc
    address = city.addresses[0]
    rp = _rp(base, secret)
    browser = Browser(base)

    # wrong password: the page again, 401, no session
    url, _ = rp.create_authorization_url(base + "/oidc/authorize", code_verifier=secrets.token_urlsafe(48))
    wrong = _sign_in(browser, url, address, password="not the password")
    assert wrong.status_code == 401 and "密码不正确" in wrong.text
    assert not any(c.name == "civicmail_session" for c in browser.http.cookies)

    # replayed code: invalid_grant (RFC 6749 5.2), and the tokens the first use got are revoked
    location, verifier = _code(browser, rp, base, address)
    first = rp.fetch_token(base + "/oidc/token", authorization_response=location, code_verifier=verifier)
    with pytest.raises(OAuthError) as replay:
        rp.fetch_token(base + "/oidc/token", authorization_response=location, code_verifier=verifier)
    assert replay.value.error == "invalid_grant"
    assert not _imap_bearer(city, address, first["access_token"])

    # a redirect URI not registered: no redirect at all (RFC 6749 4.1.2.1), an error page
    evil = _rp(base, secret, redirect="https://evil.example/cb")
    url, _ = evil.create_authorization_url(base + "/oidc/authorize", code_verifier=secrets.token_urlsafe(48))
    page = browser.get(url)
    assert page.status_code == 400 and "invalid_request" in page.text and "Location" not in page.headers
    # ... and at the token endpoint a redirect_uri other than the code's: invalid_grant
    location, verifier = _code(browser, rp, base, address)
    code = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["code"][0]
    answer = requests.post(base + "/oidc/token", auth=("rp", secret), timeout=30, data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
        "redirect_uri": "https://rp.hz.example.cn/other"})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"

    # a public client without PKCE: invalid_request, back at its redirect URI
    app = OAuth2Session("app", redirect_uri="http://127.0.0.1:53117/native-callback", scope="openid mail")
    url, state = app.create_authorization_url(base + "/oidc/authorize")
    refused = browser.get(url)
    assert refused.status_code == 302
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(refused.headers["Location"]).query)
    assert query["error"] == ["invalid_request"] and query["state"] == [state]
    # ... with PKCE, any loopback port (RFC 8252 7.3) works, no secret
    native = _rp(base, None, "app", "http://127.0.0.1:53117/native-callback", "openid mail")
    location, verifier = _code(browser, native, base, address)
    assert location.startswith("http://127.0.0.1:53117/native-callback?code=")
    token = native.fetch_token(base + "/oidc/token", authorization_response=location, code_verifier=verifier)
    # ... and a wrong verifier is invalid_grant
    location, verifier = _code(browser, native, base, address)
    with pytest.raises(OAuthError) as bad_pkce:
        native.fetch_token(base + "/oidc/token", authorization_response=location,
                           code_verifier=secrets.token_urlsafe(48))
    assert bad_pkce.value.error == "invalid_grant"
    assert _smtp_bearer(city, address, token["access_token"])
    # an expired access token opens nothing (its expiry moved into the past, as time would)
    _expire(city, token["access_token"])
    assert not _imap_bearer(city, address, token["access_token"])
    assert not _smtp_bearer(city, address, token["access_token"])

    # consent denied: access_denied at the redirect URI; prompt=none without a session: login_required
    other = Browser(base)
    url, state = rp.create_authorization_url(base + "/oidc/authorize", code_verifier=secrets.token_urlsafe(48))
    denied = _sign_in(other, url, city.addresses[2], decision="deny")
    assert denied.status_code == 302
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(denied.headers["Location"]).query)
    assert query["error"] == ["access_denied"] and query["state"] == [state]
    fresh = Browser(base)
    quiet = fresh.get(url + "&prompt=none")
    assert quiet.status_code == 302 and "error=login_required" in quiet.headers["Location"]
    assert any(a == "oidc.consent-denied" for a, _, _ in _audit(city))


def test_id_number_masked_only_with_grant_and_consent(oidc):
    city, base, secret = oidc
    address = city.addresses[0]
    browser = Browser(base)
    rp = _rp(base, secret, scope="openid profile id_number_masked")
    verifier = secrets.token_urlsafe(48)
    url, _ = rp.create_authorization_url(base + "/oidc/authorize", code_verifier=verifier)
    consent = browser.submit(browser.get(url), address=address, password=PASSWORD)
    assert "身份证号（部分隐去）" in consent.text
    back = browser.submit(consent, decision="allow")
    token = rp.fetch_token(base + "/oidc/token", authorization_response=back.headers["Location"],
                           code_verifier=verifier)
    claims = jwt.decode(token["id_token"], _jwks(base)).claims
    masked = claims["id_number_masked"]
    assert len(masked) == 18 and masked.startswith("330") and sum(c.isdigit() for c in masked) <= 6  # never the number
    # the public client was not granted the claim: asking for it gets nothing
    app = _rp(base, None, "app", "http://127.0.0.1:40000/native-callback", "openid id_number_masked")
    location, verifier = _code(browser, app, base, address)
    token = app.fetch_token(base + "/oidc/token", authorization_response=location, code_verifier=verifier)
    assert "id_number_masked" not in token["scope"]
    assert "id_number_masked" not in jwt.decode(token["id_token"], _jwks(base)).claims


def test_post_without_csrf_token_is_refused_and_logout(oidc):
    city, base, secret = oidc
    browser = Browser(base)
    rp = _rp(base, secret)
    url, _ = rp.create_authorization_url(base + "/oidc/authorize", code_verifier=secrets.token_urlsafe(48))
    page = browser.get(url)
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
    form = {"address": city.addresses[0], "password": PASSWORD, "request": _unescape(hidden["request"])}
    assert browser.http.post(base + "/oidc/signin", data=form, timeout=30).status_code == 403
    forged = browser.http.post(base + "/oidc/signin", data={**form, "csrf_token": "0" * 64}, timeout=30)
    assert forged.status_code == 403
    # another browser's token is no good in this one either
    other = Browser(base)
    other_page = other.get(url)
    theirs = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', other_page.text))["csrf_token"]
    assert browser.http.post(base + "/oidc/signin", data={**form, "csrf_token": theirs}, timeout=30).status_code == 403

    # RP-initiated logout: a GET only asks; the form's POST ends the session and goes back
    location, verifier = _code(browser, rp, base, city.addresses[0])
    token = rp.fetch_token(base + "/oidc/token", authorization_response=location, code_verifier=verifier)
    logout = base + "/oidc/logout?" + urllib.parse.urlencode({
        "id_token_hint": token["id_token"], "post_logout_redirect_uri": "https://rp.hz.example.cn/bye", "state": "s1"})
    ask = browser.get(logout)
    assert ask.status_code == 200 and "退出登录" in ask.text
    assert browser.get(url).status_code == 302  # still signed in
    done = browser.submit(ask)
    assert done.status_code == 302 and done.headers["Location"] == "https://rp.hz.example.cn/bye?state=s1"
    assert "password" in browser.get(url).text  # signed out


def _cli(city, *args: str) -> subprocess.CompletedProcess:  # noqa: F811
    done = subprocess.run([sys.executable, str(REPO_ROOT / "bin" / "civicmail"), "-c", str(city.server.config.source),
                           *args], capture_output=True, text=True, timeout=120)
    return done


def _client_accepted(base: str, client_id: str, secret: str) -> bool:
    """Whether the token endpoints accept these client credentials (RFC 7009: revoking an
    unknown token is 200; bad credentials are 401 invalid_client)."""
    answer = requests.post(base + "/oidc/revoke", auth=(client_id, secret), data={"token": "unknown"}, timeout=30)
    assert answer.status_code in (200, 401), answer.text
    return answer.status_code == 200


def test_operators_register_websites_and_the_portal_is_registered_by_itself(oidc):
    city, base, _ = oidc
    added = _cli(city, "oidc", "client", "add", "tax-web", "--name", "税务网上办事", "--redirect-uri",
                 "https://tax.hz.example.cn/oidc/callback", "--claims", "id_number_masked")
    assert added.returncode == 0, added.stderr
    secret = added.stdout.splitlines()[-1]
    assert _client_accepted(base, "tax-web", secret) and not _client_accepted(base, "tax-web", secret + "x")
    public = _cli(city, "oidc", "client", "add", "phone-app", "--name", "掌上办事", "--public", "--redirect-uri",
                  "http://127.0.0.1/cb")
    assert public.returncode == 0 and "secret" not in public.stdout
    refused = _cli(city, "oidc", "client", "add", "plain", "--name", "x", "--redirect-uri", "http://web.example/cb")
    assert refused.returncode == 1 and "https" in refused.stderr
    listed = _cli(city, "oidc", "client", "list").stdout
    assert "tax-web" in listed and "phone-app" in listed and "portal" in listed and "built in" in listed
    # the portal: registered by `init` (prepare) with no operator step, its secret known to civicmail
    from mailserver.registry.oidc import portal_client_secret, portal_redirect_uri, query_client

    portal = query_client(city.server.registry, "portal")
    assert portal.redirect_uris == (portal_redirect_uri(city.server.config),) and not portal.public
    assert _client_accepted(base, "portal", portal_client_secret(city.server.registry))
    assert _cli(city, "oidc", "client", "remove", "portal").returncode == 1
    assert _cli(city, "db", "upgrade").returncode == 0  # idempotent: the portal stays as it is
    assert _cli(city, "oidc", "client", "remove", "tax-web").returncode == 0
    assert not _client_accepted(base, "tax-web", secret)
    assert any(a == "oidc.client.add" and "tax-web" in d for a, _, d in _audit(city))


def test_key_rotation_keeps_the_old_key_published(oidc):
    city, base, secret = oidc
    before = {k["kid"] for k in requests.get(base + "/oidc/jwks", timeout=30).json()["keys"]}
    rotated = _cli(city, "oidc", "rotate-keys")
    assert rotated.returncode == 0, rotated.stderr
    after = {k["kid"] for k in requests.get(base + "/oidc/jwks", timeout=30).json()["keys"]}
    assert before < after and len(after) == 2
    # the new ID tokens are signed with the new key
    browser = Browser(base)
    rp = _rp(base, secret)
    location, verifier = _code(browser, rp, base, city.addresses[0])
    token = rp.fetch_token(base + "/oidc/token", authorization_response=location, code_verifier=verifier)
    header = jwt.decode(token["id_token"], _jwks(base)).header
    assert header["kid"] in after - before


def test_totp_second_factor_after_the_password(oidc):
    import pyotp

    city, base, secret = oidc
    address = city.addresses[2]
    made = _cli(city, "oidc", "totp", address)
    assert made.returncode == 0, made.stderr
    uri = made.stdout.splitlines()[-1]
    assert uri.startswith("otpauth://totp/")
    otp = pyotp.parse_uri(uri)
    browser = Browser(base)
    rp = _rp(base, secret)
    verifier = secrets.token_urlsafe(48)
    url, _ = rp.create_authorization_url(base + "/oidc/authorize", code_verifier=verifier)
    code_page = browser.submit(browser.get(url), address=address, password=PASSWORD)
    assert code_page.status_code == 200 and 'autocomplete="one-time-code"' in code_page.text
    assert not any(c.name == "civicmail_session" for c in browser.http.cookies)  # not signed in yet
    wrong = browser.submit(code_page, code=f"{(int(otp.now()) + 1) % 1000000:06d}")
    assert wrong.status_code == 401 and "验证码不正确" in wrong.text
    # a forged pending field (another account) is refused without looking at the code
    forged = browser.submit(code_page, code=otp.now(), pending="1." + code_page.text.split('name="pending" value="')[1]
                            .split(".", 1)[1].split('"')[0])
    assert forged.status_code == 401 and "重新登录" in forged.text
    code = otp.now()
    consent = browser.submit(code_page, code=code)
    back = browser.submit(consent, decision="allow")
    assert back.status_code == 302 and back.headers["Location"].startswith(RP + "?code=")
    # the ID token says how: the password and a one-time code (RFC 8176), two factors
    token = rp.fetch_token(base + "/oidc/token", authorization_response=back.headers["Location"],
                           code_verifier=verifier)
    assert jwt.decode(token["id_token"], _jwks(base)).claims["amr"] == ["pwd", "otp", "mfa"]
    # the same code a second time (someone who saw it) is refused
    again = Browser(base)
    page = again.submit(again.get(url), address=address, password=PASSWORD)
    assert again.submit(page, code=code).status_code == 401
    assert _cli(city, "oidc", "totp", address, "--disable").returncode == 0
    location, verifier = _code(Browser(base), rp, base, address)  # the password alone again
    token = rp.fetch_token(base + "/oidc/token", authorization_response=location, code_verifier=verifier)
    assert jwt.decode(token["id_token"], _jwks(base)).claims["amr"] == ["pwd"]


def test_passkeys_that_cannot_run_here_are_not_skipped(oidc):
    """An account with a passkey, on a city whose http.public_url is no https domain (here:
    127.0.0.1, where browsers refuse WebAuthn): the password alone does not sign it in."""
    from sqlalchemy import select

    from mailserver.store.models import Account, AccountPasskey

    city, base, secret = oidc
    address = city.addresses[0]
    with city.server.registry.store.session() as s:
        account_id = s.scalar(select(Account.id).where(Account.address == address))
        s.add(AccountPasskey(handle="h-test", account_id=account_id, name="手机", credential_id=b"\x01" * 16,
                             public_key=b"\x02" * 77, sign_count=0, transports="internal", synced=False))
    rp = _rp(base, secret)
    url, _ = rp.create_authorization_url(base + "/oidc/authorize", code_verifier=secrets.token_urlsafe(48))
    browser = Browser(base)
    answer = browser.submit(browser.get(url), address=address, password=PASSWORD)
    assert answer.status_code == 503 and "通行密钥" in answer.text
    assert not any(c.name == "civicmail_session" for c in browser.http.cookies)


def test_sessions_are_bounded_listed_and_revocable(city_factory):  # noqa: F811
    from mailserver.web.sessions import list_sessions, revoke_session

    city = city_factory("oidc.max_sessions_per_account=2")
    reg = city.server.registry
    secret = add_client(reg, "rp", "示例办事网站", [RP])
    base = f"http://127.0.0.1:{city.port(HTTP)}"
    rp = _rp(base, secret)
    url, _ = rp.create_authorization_url(base + "/oidc/authorize", code_verifier=secrets.token_urlsafe(48))
    address = city.addresses[0]
    browsers = [Browser(base) for _ in range(3)]
    for browser in browsers:
        assert _sign_in(browser, url, address).status_code == 302
    account_id = _account_id(city, address)
    sessions = list_sessions(reg, account_id)
    assert len(sessions) == 2  # the third sign-in ended the oldest
    assert "password" in browsers[0].get(url).text
    assert browsers[1].get(url).status_code == 302 and browsers[2].get(url).status_code == 302
    # a citizen ends one of their sessions by its handle; another account's handle ends nothing
    newest = sessions[0]
    assert not revoke_session(reg, _account_id(city, city.addresses[1]), newest.handle)
    assert revoke_session(reg, account_id, newest.handle)
    assert "password" in browsers[2].get(url).text and browsers[1].get(url).status_code == 302


def test_over_tls_the_cookies_are_secure_and_host_only(city_factory):  # noqa: F811
    import http.client
    import ssl

    city = city_factory("http.tls=true")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the self-signed certificate `init` made
    add_client(city.server.registry, "rp", "示例办事网站", [RP])
    conn = http.client.HTTPSConnection("127.0.0.1", city.port(HTTP), timeout=30, context=context)
    query = urllib.parse.urlencode({"response_type": "code", "client_id": "rp", "redirect_uri": RP,
                                    "scope": "openid", "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
                                    "code_challenge_method": "S256"})
    conn.request("GET", "/oidc/authorize?" + query)
    response = conn.getresponse()
    body = response.read().decode()
    conn.close()
    assert response.status == 200 and 'name="csrf_token"' in body
    cookie = response.getheader("Set-Cookie")
    assert cookie.startswith("__Host-civicmail_csrf=")
    attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite=lax", "path=/"} <= attributes
    assert response.getheader("Strict-Transport-Security")
