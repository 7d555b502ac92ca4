"""The citizen portal (issue 15 items 2 and 5): server-rendered pages in Chinese on the citizens'
HTTP listener, signed in through the city's own OpenID Connect provider (web/oidc.py).

Sign-in is the code flow with PKCE, the portal being the provider's confidential client
``portal`` (registered by ``init`` and ``db upgrade``): ``/signin`` sends the browser to
``/oidc/authorize`` with a state, a nonce and an S256 challenge kept in a short signed cookie;
``/portal/callback`` checks the state, redeems the code at the provider's token endpoint (the
same app: its authlib server is called in process, with the portal's secret and the verifier),
verifies the ID token (signature against the JWKS, issuer, audience, nonce), revokes the tokens
(the portal needs none: it reads the store itself) and sets the portal's own cookie. That
cookie names the account and the provider session it came from, under an HMAC; it is good while
that session lives, so signing out of the provider, or ending the session from the account
page, signs the portal out too. ``/signout`` (POST) ends both.

Every page but ``/``, ``/signin``, ``/activate`` and the callback needs the portal's session
(else a redirect to ``/signin``); every object a URL names is looked up as the signed-in
account's (portaldata.py), else 404. Every form is CSRF-checked (sessions.py's middleware).
"""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import logging
import secrets
import time
import urllib.parse
from dataclasses import dataclass

from aiohttp import web
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from multidict import MultiDict

from ..errors import AuthenticationFailed, NotFound, Throttled, ValidationError
from ..identity.oidckeys import ALG
from ..registry import citizens, passkeys, totp
from ..registry import oidc as records
from ..services.http import MOBILECONFIG_TYPE, mobileconfig
from . import portaldata as data
from .middleware import html
from .oidc import Request as TokenRequest
from .sessions import list_sessions, revoke_session

log = logging.getLogger("civicmail.portal")
#: seconds a sign-in may take between /signin and the callback
FLOW_SECONDS = 600
#: what the portal asks the provider for (it reads the rest from the store itself)
SCOPE = "openid profile email"
#: shortest new password (the registry's own rule is the argon2 hash; this is the form's)
MIN_PASSWORD = 8
#: the request's signed-in citizen, once looked up
CITIZEN = web.RequestKey("civicmail_portal_citizen", object)


@dataclass(frozen=True)
class Citizen:
    account_id: int
    address: str
    name: str
    handle: str


def redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})


def signed_in(handler):
    """A page of the signed-in citizen: without the portal's session, a redirect to /signin."""
    @functools.wraps(handler)
    async def wrapped(self, request: web.Request) -> web.StreamResponse:
        me = await self.citizen(request)
        if me is None:
            return to_sign_in(request)
        return await handler(self, request, me)
    return wrapped


def to_sign_in(request: web.Request) -> web.Response:
    """Where a page of the signed-in citizen sends a request without the portal's session."""
    if request.method == "GET":
        return redirect("/signin?" + urllib.parse.urlencode({"next": request.path_qs}))
    return redirect("/signin")


class Portal:
    def __init__(self, ctx, sessions, provider) -> None:
        self.ctx = ctx
        self.reg = ctx.registry
        self.sessions = sessions
        self.provider = provider
        self.env = provider.env
        self.city = ctx.config.city.name
        self._key = ctx.registry.keyring.secret_hash("portal-cookie", "v1")
        prefix = "__Host-" if sessions.secure else ""
        self.cookie = prefix + "civicmail_portal"
        self.flow_cookie = prefix + "civicmail_portal_flow"
        #: (the provider's published keys, them imported): see _keys
        self._keyset: tuple[list, KeySet] | None = None

    # -- cookies ---------------------------------------------------------------------------
    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def _sealed(self, text: str) -> str:
        """TEXT under the HMAC, as RFC 6265 cookie-octets (base64url: no tab, quote, backslash or
        non-ASCII, which strict cookie jars such as aiohttp's drop)."""
        return f"{base64.urlsafe_b64encode(text.encode()).decode().rstrip('=')}.{self._mac(text)}"

    def _opened(self, value: str) -> str | None:
        encoded, _, mac = value.rpartition(".")
        try:
            text = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except ValueError:
            return None
        return text if text and hmac.compare_digest(self._mac(text), mac) else None

    def _set(self, response: web.StreamResponse, name: str, value: str, max_age: int | None = None) -> None:
        response.set_cookie(name, value, path="/", secure=self.sessions.secure, httponly=True, samesite="Lax",
                            max_age=max_age)

    async def citizen(self, request: web.Request) -> Citizen | None:
        """The signed-in citizen of this request, or None."""
        if CITIZEN in request:
            return request[CITIZEN]  # type: ignore[return-value]
        found = self._from_cookie(request)
        if found is not None and not await self.ctx.run_store(data.live_session, self.reg, found.account_id,
                                                              found.handle):
            found = None
        request[CITIZEN] = found
        return found

    def _from_cookie(self, request: web.Request) -> Citizen | None:
        """Who the portal's cookie names (its HMAC checked), before its session is checked live."""
        text = self._opened(request.cookies.get(self.cookie, "")[:600])
        if not text:
            return None
        account_id, handle, address, name = text.split("\t", 3)
        return Citizen(int(account_id), address, name, handle)

    # -- pages -----------------------------------------------------------------------------
    def render(self, request: web.Request, template: str, status: int = 200, **values) -> web.Response:
        text = self.env.get_template(template).render(
            city=self.city, csrf_token=self.sessions.csrf_token(request), me=request.get(CITIZEN),
            path=request.path, webmail_url=self.webmail_url(request), **values)
        response = web.Response(status=status, text=text, content_type="text/html", charset="utf-8")
        response.headers["Cache-Control"] = "no-store"
        return response

    def webmail_url(self, request: web.Request) -> str:
        """Roundcube's address as `civicmail webmail config` set it up (Config.webmail_url), with
        the issuer this request reached when no http.base_url is set (a listener on port 0)."""
        configured = self.ctx.config.oidc.webmail_url
        return (configured or self.provider.issuer(request) + "/webmail").rstrip("/") + "/"

    def not_found(self, request: web.Request) -> web.Response:
        return self.render(request, "portal_message.html", status=404, title="找不到该页面",
                           text="您要找的内容不存在，或不属于您的账号。")

    async def home(self, request: web.Request) -> web.Response:
        me = await self.citizen(request)
        return self.render(request, "portal_home.html", title="首页" if me else "欢迎",
                           flash=FLASH.get(request.query.get("m", ""), ""))

    # -- sign-in as the provider's relying party ---------------------------------------------
    def _redirect_uri(self, request: web.Request) -> str:
        return self.provider.issuer(request) + self.ctx.config.oidc.portal_redirect_path

    async def signin(self, request: web.Request) -> web.Response:
        nxt = request.query.get("next", "/")
        if not nxt.startswith("/") or nxt.startswith("//"):
            nxt = "/"
        state, nonce, verifier = secrets.token_urlsafe(16), secrets.token_urlsafe(16), secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        query = urllib.parse.urlencode({
            "response_type": "code", "client_id": records.PORTAL_ID, "redirect_uri": self._redirect_uri(request),
            "scope": SCOPE, "state": state, "nonce": nonce, "code_challenge": challenge,
            "code_challenge_method": "S256"})
        response = redirect("/oidc/authorize?" + query)
        flow = "\t".join((state, nonce, verifier, str(int(time.time()) + FLOW_SECONDS), nxt[:500]))
        self._set(response, self.flow_cookie, self._sealed(flow), FLOW_SECONDS)
        return response

    async def callback(self, request: web.Request) -> web.Response:
        flow = self._opened(request.cookies.get(self.flow_cookie, "")[:1200])
        q = request.query
        if flow is None:
            return self._failed(request)
        state, nonce, verifier, until, nxt = flow.split("\t", 4)
        if int(until) < time.time() or not hmac.compare_digest(state, q.get("state", "")) or "code" not in q:
            return self._failed(request)  # also an error from the provider (access_denied, ...)
        form = MultiDict({"grant_type": "authorization_code", "code": q["code"],
                          "redirect_uri": self._redirect_uri(request), "client_id": records.PORTAL_ID,
                          "client_secret": records.portal_client_secret(self.reg), "code_verifier": verifier})
        issuer = self.provider.issuer(request)
        oreq = TokenRequest("POST", issuer + "/oidc/token", {}, MultiDict(), form, issuer)
        status, body, _ = await self.ctx.run_store(self.provider.server.create_token_response, oreq)
        if status != 200:
            log.info("portal sign-in: the token endpoint said %s", body.get("error") if isinstance(body, dict) else status)
            return self._failed(request)
        tokens = body if isinstance(body, dict) else json.loads(body)
        account_id = await self.ctx.run_store(self._redeemed, tokens, oreq.issuer, nonce)
        session = await self.sessions.current(request)
        if account_id is None or session is None or session.account_id != account_id:
            return self._failed(request)
        user = await self.ctx.run_store(records.load_user, self.reg, account_id)
        if user is None:
            return self._failed(request)
        response = redirect(nxt or "/")
        value = "\t".join((str(account_id), session.handle, user.address, (user.name or "")[:60]))
        self._set(response, self.cookie, self._sealed(value), self.ctx.config.oidc.session_max_seconds)
        response.del_cookie(self.flow_cookie, path="/")
        return response

    def _keys(self) -> KeySet:
        """The provider's published keys as a KeySet, imported again only when they change."""
        published = self.provider._published()
        if self._keyset is None or self._keyset[0] != published:
            self._keyset = (published, KeySet.import_key_set({"keys": published}))
        return self._keyset[1]

    def _redeemed(self, tokens: dict, issuer: str, nonce: str) -> int | None:
        """The ID token verified (signature, issuer, audience, expiry, nonce) and the tokens
        revoked at once (one transaction): the account they were for, or None."""
        try:
            claims = jwt.decode(tokens["id_token"], self._keys(), [ALG]).claims
            jwt.JWTClaimsRegistry(iss={"essential": True, "value": issuer},
                                  aud={"essential": True, "value": records.PORTAL_ID},
                                  nonce={"essential": True, "value": nonce}).validate(claims)
        except (JoseError, KeyError, ValueError):
            return None
        accounts = records.revoke_issued(self.reg, [tokens.get("access_token", ""), tokens.get("refresh_token", "")])
        if len(accounts) != 1:
            return None
        account_id = accounts.pop()
        if claims.get("sub") != records.pairwise_sub(self.reg, records.PORTAL_ID, account_id):
            return None
        return account_id

    def _failed(self, request: web.Request) -> web.Response:
        response = self.render(request, "portal_message.html", status=400, title="登录未完成", alert=True,
                               text="登录未能完成（可能已超时）。请重新登录。", link=("/signin", "重新登录"))
        response.del_cookie(self.flow_cookie, path="/")
        return response

    async def signout(self, request: web.Request) -> web.Response:
        """Ends the portal's session and the provider's (RP-initiated logout, in process)."""
        return await self._signed_out(request, "/?m=signed-out")

    async def _signed_out(self, request: web.Request, to: str) -> web.Response:
        """A redirect to ``to`` that ends the portal's session and the provider's."""
        response = redirect(to)
        response.del_cookie(self.cookie, path="/")
        await self.sessions.sign_out(request, response)
        return response

    # -- notices -----------------------------------------------------------------------------
    async def notices(self, request: web.Request) -> web.Response:
        """The portal's most viewed page: the session check and the page's queries in one trip to
        the store lane (``signed_in`` would make it two)."""
        q = request.query
        page = int(q["page"]) if q.get("page", "").isdigit() and len(q["page"]) < 7 else 1
        agency, kind = q.get("agency", "")[:64], q.get("type", "")[:64]
        me = self._from_cookie(request)
        found = None if me is None else await self.ctx.run_store(
            data.list_notices, self.reg, me.account_id, agency, kind, page, me.handle)
        if found is None:
            request[CITIZEN] = None
            return to_sign_in(request)
        request[CITIZEN] = me
        return self.render(request, "portal_notices.html", title="我的通知", found=found, agency=agency, kind=kind)

    @signed_in
    async def notice(self, request: web.Request, me: Citizen) -> web.Response:
        found = await self.ctx.run_store(data.get_notice, self.reg, me.account_id, request.match_info["id"])
        if found is None:
            return self.not_found(request)
        printable = request.path.endswith("/print")
        return self.render(request, "portal_print.html" if printable else "portal_notice.html",
                           title=found.subject or found.title, notice=found)

    # -- subscriptions -----------------------------------------------------------------------
    @signed_in
    async def subscriptions(self, request: web.Request, me: Citizen) -> web.Response:
        flash = ""
        if request.method == "POST":
            form = await request.post()
            name = await self.ctx.run_store(data.subscribe, self.reg, me.account_id, str(form.get("kind", "")),
                                            str(form.get("id", ""))[:64], form.get("action") == "subscribe")
            if name is None:
                return self.not_found(request)
            flash = f"已订阅“{name}”。" if form.get("action") == "subscribe" else f"已退订“{name}”。"
        choices = await self.ctx.run_store(data.subscriptions, self.reg, me.account_id)
        return self.render(request, "portal_subscriptions.html", title="订阅", choices=choices, flash=flash)

    # -- surveys -----------------------------------------------------------------------------
    @signed_in
    async def surveys(self, request: web.Request, me: Citizen) -> web.Response:
        found = await self.ctx.run_store(data.my_surveys, self.reg, me.account_id)
        return self.render(request, "portal_surveys.html", title="调查与评议", surveys=found)

    @signed_in
    async def survey(self, request: web.Request, me: Citizen) -> web.Response:
        survey_id = request.match_info["id"][:64]
        flash, error = "", ""
        if request.method == "POST":
            form = await request.post()
            answers = {}
            for key, value in form.items():
                if key.startswith("q") and key[1:].isdigit() and len(key) < 5:
                    answers[int(key[1:])] = str(value)[:4]
            outcome = await self.ctx.run_store(data.vote, self.reg, me.account_id, survey_id, answers)
            if outcome is None:
                return self.not_found(request)
            flash = {"new": "您的评议已提交。", "replaced": "您的评议已更新，以本次为准。",
                     "superseded": "您的评议已提交。"}.get(outcome, "")
            error = {"closed": "该调查已结束，不再接受答卷。", "invalid": "请至少回答一个问题。"}.get(outcome, "")
        found = await self.ctx.run_store(data.get_survey, self.reg, me.account_id, survey_id)
        if found is None:
            return self.not_found(request)
        return self.render(request, "portal_survey.html", status=400 if error else 200, title=found.title,
                           survey=found, flash=flash, error=error)

    # -- applications ------------------------------------------------------------------------
    @signed_in
    async def applications(self, request: web.Request, me: Citizen) -> web.Response:
        found = await self.ctx.run_store(data.my_applications, self.reg, me.account_id)
        return self.render(request, "portal_applications.html", title="我的办事申请", applications=found)

    @signed_in
    async def application(self, request: web.Request, me: Citizen) -> web.Response:
        found = await self.ctx.run_store(data.get_application, self.reg, me.account_id, request.match_info["number"])
        if found is None:
            return self.not_found(request)
        item, thread = found
        return self.render(request, "portal_application.html", title=f"申请 {item.number}", app=item, thread=thread)

    # -- account -----------------------------------------------------------------------------
    @signed_in
    async def account(self, request: web.Request, me: Citizen) -> web.Response:
        return await self._account_page(request, me)

    async def _account_page(self, request: web.Request, me: Citizen, status: int = 200, **values) -> web.Response:
        sessions = await self.ctx.run_store(list_sessions, self.reg, me.account_id)
        consents = await self.ctx.run_store(records.list_consents, self.reg, me.account_id)
        has_totp = await self.ctx.run_store(totp.required, self.reg, me.account_id)
        keys = await self.ctx.run_store(passkeys.list_passkeys, self.reg, me.account_id)
        return self.render(request, "portal_account.html", status=status, title="账号与安全", sessions=sessions,
                           consents=consents, has_totp=has_totp, passkeys=keys, passkeys_on=self.provider.rp is not None,
                           passkeys_open=self.provider.rp is not None and len(keys) < passkeys.MAX_PASSKEYS,
                           **values)

    @signed_in
    async def password(self, request: web.Request, me: Citizen) -> web.Response:
        """The current password (through the one login throttle), then the registry's
        ``set_password``; every web session of the account ends: sign in with the new one."""
        form = await request.post()
        new, again = str(form.get("new_password", "")), str(form.get("new_password_again", ""))
        if len(new) < MIN_PASSWORD or len(new) > 200 or new != again:
            return await self._account_page(request, me, 400, password_error=(
                f"新密码至少 {MIN_PASSWORD} 位，且两次输入必须一致。"))
        try:
            await self.ctx.login(request.remote or "?", me.address, str(form.get("password", ""))[:200], "web")
        except Throttled:
            return await self._account_page(request, me, 429, password_error="尝试次数过多，请稍后再试。")
        except AuthenticationFailed:
            return await self._account_page(request, me, 400, password_error="当前密码不正确。")
        await self.ctx.run_heavy(me.address, citizens.set_password, self.reg, me.address, new, me.address)
        for s in await self.ctx.run_store(list_sessions, self.reg, me.account_id):
            await self.ctx.run_store(revoke_session, self.reg, me.account_id, s.handle)
        return await self._signed_out(request, "/?m=password-changed")

    @signed_in
    async def end_session(self, request: web.Request, me: Citizen) -> web.Response:
        form = await request.post()
        if not await self.ctx.run_store(revoke_session, self.reg, me.account_id, str(form.get("handle", ""))[:40]):
            return self.not_found(request)
        return redirect("/account")

    @signed_in
    async def revoke_consent(self, request: web.Request, me: Citizen) -> web.Response:
        form = await request.post()
        if not await self.ctx.run_store(records.revoke_consent, self.reg, me.account_id, me.address,
                                        str(form.get("client", ""))[:64]):
            return self.not_found(request)
        return redirect("/account")

    @signed_in
    async def totp_switch(self, request: web.Request, me: Citizen) -> web.Response:
        form = await request.post()
        if form.get("action") == "enable":
            secret, uri = await self.ctx.run_store(totp.enable, self.reg, me.address, me.address)
            return await self._account_page(request, me, totp_secret=secret, totp_uri=uri)
        await self.ctx.run_store(totp.disable, self.reg, me.address, me.address)
        return redirect("/account")

    # -- passkeys: made by passkeys.js (options from /account/passkeys/options, the browser's
    # answer posted with the form), listed, removed -----------------------------------------
    @signed_in
    async def passkey_options(self, request: web.Request, me: Citizen) -> web.Response:
        """The options of ``navigator.credentials.create()``, with a challenge bound to this
        browser session (CSRF-checked like a form: the script sends the page's token)."""
        if self.provider.rp is None:
            return html(404)
        try:
            options = await self.ctx.run_store(passkeys.registration_options, self.reg, self.provider.rp,
                                               me.account_id, passkeys.binding_of(self.sessions.binding(request)))
        except passkeys.PasskeyRefused:
            return web.json_response({"error": "too-many"}, status=409)
        return web.Response(text=options, content_type="application/json", headers={"Cache-Control": "no-store"})

    @signed_in
    async def passkey_add(self, request: web.Request, me: Citizen) -> web.Response:
        if self.provider.rp is None:
            return self.not_found(request)
        form = await request.post()
        try:
            made = await self.ctx.run_store(passkeys.register, self.reg, self.provider.rp, me.account_id, me.address,
                                            passkeys.binding_of(self.sessions.binding(request)),
                                            str(form.get("name", ""))[:200], str(form.get("credential", "")))
        except passkeys.PasskeyRefused as refused:
            log.info("passkey not added: %s", refused.reason)
            return await self._account_page(request, me, 400, passkey_error="未能添加通行密钥（可能已超时），请重试。")
        return await self._account_page(request, me, passkey_message=f"已添加通行密钥“{made.name}”。")

    @signed_in
    async def passkey_remove(self, request: web.Request, me: Citizen) -> web.Response:
        form = await request.post()
        if not await self.ctx.run_store(passkeys.remove, self.reg, me.account_id, me.address,
                                        str(form.get("handle", ""))[:40]):
            return self.not_found(request)
        return await self._account_page(request, me, passkey_message="已删除该通行密钥，它不能再用于登录。")

    @signed_in
    async def profile(self, request: web.Request, me: Citizen) -> web.Response:
        """``/mobileconfig``: the signed-in citizen's Apple profile."""
        body = mobileconfig(self.ctx.config, me.address)
        if body is None:
            return html(404)
        return web.Response(body=body, headers={
            "Content-Type": MOBILECONFIG_TYPE,
            "Content-Disposition": f'attachment; filename="{self.ctx.config.city.domain}.mobileconfig"'})

    # -- activation --------------------------------------------------------------------------
    async def activate(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return self.render(request, "portal_activate.html", title="激活账号")
        form = await request.post()
        address = str(form.get("address", "")).strip()[:254]
        new, again = str(form.get("new_password", "")), str(form.get("new_password_again", ""))
        if len(new) < MIN_PASSWORD or len(new) > 200 or new != again:
            return self.render(request, "portal_activate.html", status=400, title="激活账号", address=address,
                               error=f"密码至少 {MIN_PASSWORD} 位，且两次输入必须一致。")
        throttle = self.ctx.login_throttle  # guessing codes costs what guessing passwords costs
        ip = request.remote or "?"
        if not await throttle.acquire(ip, address):
            return self.render(request, "portal_activate.html", status=429, title="激活账号", address=address,
                               error="尝试次数过多，请稍后再试。")
        try:
            await self.ctx.run_heavy(address, citizens.activate, self.reg, address, str(form.get("code", ""))[:64], new)
        except (AuthenticationFailed, NotFound, ValidationError):
            throttle.failed(ip, address)
            return self.render(request, "portal_activate.html", status=400, title="激活账号", address=address,
                               error="邮箱地址或激活码不正确，或激活码已使用、已过期。")
        except BaseException:
            throttle.released(ip, address)
            raise
        throttle.succeeded(ip, address)
        return redirect("/?m=activated")


#: what `next` after sign-in and the flash messages of the home page say
FLASH = {"signed-out": "您已退出登录。", "password-changed": "密码已修改，请用新密码重新登录。",
         "activated": "账号已激活，请登录。"}


def add_routes(app: web.Application, ctx, sessions, provider) -> Portal:
    portal = Portal(ctx, sessions, provider)
    r = app.router
    r.add_get("/", portal.home)
    r.add_get("/signin", portal.signin)
    r.add_get(ctx.config.oidc.portal_redirect_path, portal.callback)
    r.add_post("/signout", portal.signout)
    r.add_get("/notices", portal.notices)
    r.add_get("/notices/{id}", portal.notice)
    r.add_get("/notices/{id}/print", portal.notice)
    r.add_route("GET", "/subscriptions", portal.subscriptions)
    r.add_route("POST", "/subscriptions", portal.subscriptions)
    r.add_get("/surveys", portal.surveys)
    r.add_route("GET", "/surveys/{id}", portal.survey)
    r.add_route("POST", "/surveys/{id}", portal.survey)
    r.add_get("/applications", portal.applications)
    r.add_get("/applications/{number}", portal.application)
    r.add_get("/account", portal.account)
    r.add_post("/account/password", portal.password)
    r.add_post("/account/sessions", portal.end_session)
    r.add_post("/account/consents", portal.revoke_consent)
    r.add_post("/account/totp", portal.totp_switch)
    r.add_post("/account/passkeys/options", portal.passkey_options)
    r.add_post("/account/passkeys", portal.passkey_add)
    r.add_post("/account/passkeys/remove", portal.passkey_remove)
    r.add_route("GET", "/activate", portal.activate)
    r.add_route("POST", "/activate", portal.activate)
    return portal
