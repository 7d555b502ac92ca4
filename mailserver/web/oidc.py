"""The OpenID Connect provider on the citizens' HTTP listener (issue 14 section 1), on authlib.

authlib's ``AuthorizationServer`` and its grants do the protocol (request validation, the RFC
6749 / 7636 / 7009 errors, code and token issuance, the ID token's ``at_hash``); this module
gives it the store (registry/oidc.py), the keys (identity/oidckeys.py), and aiohttp. authlib
is synchronous: a request's body is read on the loop, then authlib runs on the store lane
(``ctx.run_store``), which is where every store call it makes belongs anyway.

Routes: discovery ``/.well-known/openid-configuration``, ``/oidc/jwks``, ``/oidc/authorize``
(sign-in page, consent page), ``/oidc/signin`` and ``/oidc/consent`` (their forms, CSRF-checked),
``/oidc/totp`` and ``/oidc/passkey`` (the second step, after the password, for an account with a
TOTP secret or passkeys: either signs in), ``/oidc/token``, ``/oidc/revoke`` (RFC 7009),
``/oidc/userinfo``, ``/oidc/logout`` (RP-initiated logout). The sign-in checks the password
through ``ServerContext.login``: one throttle for IMAP, SMTP and the web (the second step spends
its attempts too). The web session remembers how it was signed in; the ID tokens issued from it
say so in ``amr`` (RFC 8176).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.parse
from pathlib import Path

from aiohttp import web
from authlib.oauth2 import AuthorizationServer, OAuth2Request
from authlib.oauth2.rfc6749 import OAuth2Error, grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6749.requests import OAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import grants as oidc_grants
from authlib.oidc.core.errors import ConsentRequiredError, LoginRequiredError
from authlib.oidc.core.util import create_half_hash
from jinja2 import Environment, FileSystemLoader, select_autoescape
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from multidict import MultiDict

from ..errors import AuthenticationFailed, Throttled
from ..identity.oidckeys import ALG, KeyFile
from ..registry import oidc as records
from ..registry import passkeys, totp
from ..store.models import utcnow
from .middleware import content_security_policy
from .sessions import CSRF_FIELD, Sessions

log = logging.getLogger("civicmail.oidc")
HERE = Path(__file__).parent
#: the port label of web sign-ins in ServerContext.login (logs, metrics)
PORT = "web"
#: what each scope tells a website, as the consent page says it
SCOPE_TEXT = {
    "openid": "您在本市的登录身份（每个网站各不相同的编号）",
    "profile": "您的实名登记姓名",
    "email": "您的市民邮箱地址",
    "mail": "代您收发市民邮箱中的邮件",
    "id_number_masked": "您的身份证号（部分隐去）",
}
#: longest query string of an authorization request kept in a form
MAX_REQUEST = 4096
#: where this request's forms may end up: the website's redirect URI, once checked (CSP form-action)
FORM_TARGET = web.RequestKey("civicmail_form_target", str)
#: seconds between a password accepted and its account's second factor (then the password again)
TOTP_PAGE_SECONDS = 300
#: what a sign-in used, as the ID token's ``amr`` says it (RFC 8176): the password; with a TOTP
#: code; with a passkey (``hwk``, or ``swk`` for a synced one). ``mfa`` with a second factor, so
#: a website that wants two factors need not know every method's name
AMR_PASSWORD, AMR_TOTP, AMR_PASSKEY = "pwd", "pwd otp mfa", "pwd {key} mfa"


def templates() -> Environment:
    """The web face's templates, compiled once per process: ``auto_reload=False``, or Jinja would
    stat every template a page extends on every request (an upgrade restarts the server)."""
    return Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                       trim_blocks=True, lstrip_blocks=True, auto_reload=False)


# -- authlib over aiohttp ------------------------------------------------------------------
class _Payload(OAuth2Payload):
    def __init__(self, params: MultiDict) -> None:
        self._data = {k: params[k] for k in params.keys()}
        self._datalist = {k: params.getall(k) for k in params.keys()}

    @property
    def data(self):
        return self._data

    @property
    def datalist(self):
        return self._datalist


class Request(OAuth2Request):
    """An HTTP request, its query and form already read, as authlib wants it."""

    def __init__(self, method: str, uri: str, headers, query: MultiDict, form: MultiDict, issuer: str) -> None:
        super().__init__(method, uri, headers=headers)
        self._args = {k: query[k] for k in query.keys()}
        self._form = {k: form[k] for k in form.keys()}
        merged = MultiDict(query)
        merged.extend(form)
        self.payload = _Payload(merged)
        self.issuer = issuer
        #: the session's sign-in time (the ID token's auth_time), and the client's address (audit)
        self.auth_time = None
        self.remote = "?"
        #: how the session signed in (RFC 8176, space-separated): the ID token's amr
        self.amr = "pwd"

    @property
    def args(self):
        return self._args

    @property
    def form(self):
        return self._form


class Server(AuthorizationServer):
    def __init__(self, ctx, keys: KeyFile) -> None:
        super().__init__(scopes_supported=list(records.SCOPES + records.GRANTABLE_CLAIMS))
        self.ctx = ctx
        self.reg = ctx.registry
        self.keys = keys
        oidc = ctx.config.oidc
        self.register_token_generator("default", BearerTokenGenerator(
            lambda **kw: records.new_secret(), lambda **kw: records.new_secret(),
            lambda client, grant_type: oidc.access_token_ttl))
        self.register_grant(CodeGrant, [S256Challenge(required=True), OpenIDCode(self)])
        self.register_grant(RefreshGrant)
        self.register_endpoint(Revocation)

    def query_client(self, client_id):
        return records.query_client(self.reg, client_id)

    def save_token(self, token, request):
        if request.authorization_code is not None:
            family, auth_time = records.code_family(request.authorization_code), request.authorization_code.auth_time
        else:
            family, auth_time = request.refresh_token.family, request.refresh_token.auth_time
        records.save_token(self.reg, token, request.client.id, request.user.account_id, token.get("scope", ""),
                           family, auth_time)

    def create_oauth2_request(self, request):
        return request

    def handle_response(self, status, body, headers):
        return status, body, headers

    def send_signal(self, name, *args, **kwargs):
        pass


class CodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def save_authorization_code(self, code, request):
        data = request.payload.data
        records.save_code(self.server.reg, code, request.client.id, request.user.account_id,
                          request.payload.redirect_uri or "", request.scope or "", data.get("nonce"),
                          data.get("code_challenge"), data.get("code_challenge_method"), request.auth_time,
                          request.user.address, request.remote, request.amr)

    def query_authorization_code(self, code, client):
        return records.query_code(self.server.reg, code, client.id)

    def delete_authorization_code(self, authorization_code):
        records.use_code(self.server.reg, authorization_code)

    def authenticate_user(self, authorization_code):
        return records.load_user(self.server.reg, authorization_code.account_id)


class S256Challenge(CodeChallenge):
    """PKCE with S256 only; required of public clients already at the authorization request."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        if grant.request.client.public and not data.get("code_challenge"):
            raise InvalidRequestError("PKCE: code_challenge (S256) is required of public clients")
        if data.get("code_challenge") and data.get("code_challenge_method", "plain") != "S256":
            raise InvalidRequestError("PKCE: code_challenge_method must be S256")
        return super().validate_code_challenge(grant, redirect_uri)

    def get_authorization_code_challenge(self, authorization_code):
        return authorization_code.code_challenge

    def get_authorization_code_challenge_method(self, authorization_code):
        return authorization_code.code_challenge_method


class OpenIDCode(oidc_grants.OpenIDCode):
    def __init__(self, server: Server) -> None:
        super().__init__(require_nonce=False)
        self.server = server

    def exists_nonce(self, nonce, request):
        return records.nonce_used(self.server.reg, request.payload.client_id, nonce)

    def encode_id_token(self, token, request):
        now = int(time.time())
        code = request.authorization_code
        claims = {"iss": request.issuer, "aud": request.client.id, "iat": now,
                  "exp": now + self.server.ctx.config.oidc.id_token_ttl, "auth_time": code.get_auth_time(),
                  "amr": code.get_amr()}
        if code.nonce:
            claims["nonce"] = code.nonce
        claims["at_hash"] = create_half_hash(token["access_token"], ALG).decode()
        claims.update(records.user_claims(self.server.reg, request.client, request.user, token.get("scope", "")))
        key = self.server.keys.get().current
        return jwt.encode({"alg": ALG, "kid": key.kid}, claims, key.key, [ALG])


class RefreshGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: every refresh replaces the refresh token

    def authenticate_refresh_token(self, refresh_token):
        return records.refresh_token(self.server.reg, refresh_token)

    def authenticate_user(self, refresh_token):
        return records.load_user(self.server.reg, refresh_token.account_id)

    def revoke_old_credential(self, refresh_token):
        records.revoke_token(self.server.reg, refresh_token)


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def query_token(self, token_string, token_type_hint):
        return records.query_token(self.server.reg, token_string, token_type_hint)

    def revoke_token(self, token, request):
        records.revoke_token(self.server.reg, token)


# -- the routes ------------------------------------------------------------------------------
class Provider:
    def __init__(self, ctx, sessions: Sessions) -> None:
        self.ctx = ctx
        self.reg = ctx.registry
        self.sessions = sessions
        self.keys = KeyFile(ctx.config.data_path(ctx.config.keys.dir))
        self.server = Server(ctx, self.keys)
        self.env = templates()
        self.city = ctx.config.city.name
        self._pending_key = ctx.registry.keyring.secret_hash("web-totp-pending", "v1")
        #: the WebAuthn relying party (None: passkeys are off, http.public_url is no https domain)
        self.rp = passkeys.relying_party(ctx.config)

    def issuer(self, request: web.Request) -> str:
        """``http.base_url``; unset (development), the address this listener answered on."""
        if self.ctx.config.http.base_url:
            return self.ctx.config.public_url
        host, port = request.transport.get_extra_info("sockname")[:2]
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.ctx.config.http.tls else 'http'}://{host}:{port}"

    def render(self, request: web.Request, template: str, status: int = 200, **values) -> web.Response:
        text = self.env.get_template(template).render(city=self.city, csrf_token=self.sessions.csrf_token(request),
                                                      **values)
        response = web.Response(status=status, text=text, content_type="text/html", charset="utf-8")
        response.headers["Cache-Control"] = "no-store"
        if request.get(FORM_TARGET):
            response.headers["Content-Security-Policy"] = content_security_policy(request[FORM_TARGET])
        return response

    async def _note_target(self, request: web.Request, request_query: str) -> None:
        """The redirect URI of the authorization request a sign-in form carries, if its website
        registered it: the pages of this sign-in may send the browser there (``render``)."""
        query = MultiDict(urllib.parse.parse_qsl(request_query, keep_blank_values=True))
        client_id, uri = query.get("client_id"), query.get("redirect_uri")
        client = await self.ctx.run_store(records.query_client, self.reg, client_id) if client_id else None
        if client is None:
            return
        target = uri if uri and client.check_redirect_uri(uri) else None if uri else client.get_default_redirect_uri()
        if target:
            request[FORM_TARGET] = target

    def _oauth(self, request: web.Request, query: MultiDict, form: MultiDict, path: str) -> Request:
        issuer = self.issuer(request)
        return Request(request.method, issuer + path, request.headers, query, form, issuer)

    def _answer(self, result) -> web.Response:
        status, body, headers = result
        if status == 302:
            response = web.Response(status=302, headers=dict(headers))
        else:
            response = web.Response(status=status, text=json.dumps(body) if isinstance(body, dict) else body,
                                    headers={k: v for k, v in headers if k.lower() != "content-type"},
                                    content_type="application/json")
        response.headers["Cache-Control"] = "no-store"
        return response

    def _error_page(self, request: web.Request, oreq: Request, error: OAuth2Error) -> web.Response:
        """An error with a redirect goes back to the website; one without (unknown client, wrong
        redirect URI: RFC 6749 4.1.2.1 forbids redirecting) is a page naming the error."""
        status, body, headers = self.server.handle_error_response(oreq, error)
        if status == 302:
            return self._answer((status, body, headers))
        return self.render(request, "message.html", status=400, title="无法登录", alert=True,
                           text=f"该网站的登录请求无效（{error.error}）。请返回原网站重试。")

    # -- discovery and keys --------------------------------------------------------------
    async def discovery(self, request: web.Request) -> web.Response:
        iss = self.issuer(request)
        return web.json_response({
            "issuer": iss,
            "authorization_endpoint": iss + "/oidc/authorize",
            "token_endpoint": iss + "/oidc/token",
            "userinfo_endpoint": iss + "/oidc/userinfo",
            "jwks_uri": iss + "/oidc/jwks",
            "revocation_endpoint": iss + "/oidc/revoke",
            "end_session_endpoint": iss + "/oidc/logout",
            "scopes_supported": list(records.SCOPES + records.GRANTABLE_CLAIMS),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": [ALG],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
            "prompt_values_supported": ["none", "login", "consent"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "amr", "name", "email",
                                 "email_verified", "real_name_verified", "id_number_masked"],
            "ui_locales_supported": ["zh-CN"],
        })

    async def jwks(self, request: web.Request) -> web.Response:
        # off the loop: the first use of a key imports it (a check of the RSA key: tenths of a second)
        published = await self.ctx.run_store(self._published)
        response = web.json_response({"keys": published})
        response.headers["Cache-Control"] = "max-age=300"
        return response

    def _published(self) -> list[dict]:
        return self.keys.get().published(self.ctx.config.oidc.id_token_ttl)

    # -- authorization: sign-in, consent, code ---------------------------------------------
    async def authorize(self, request: web.Request) -> web.Response:
        if request.method == "POST":  # OIDC Core 3.1.2.1: the same parameters, form-encoded
            form = await request.post()
            query = MultiDict((k, str(v)) for k, v in form.items() if k != CSRF_FIELD)
        else:
            query = MultiDict(request.query)
        return await self._authorize(request, query, signed_in_now=False)

    async def _authorize(self, request: web.Request, query: MultiDict, signed_in_now: bool,
                         decision: str | None = None) -> web.Response:
        session = await self.sessions.current(request)
        user = await self.ctx.run_store(records.load_user, self.reg, session.account_id) if session else None
        oreq = self._oauth(request, query, MultiDict(), "/oidc/authorize")
        try:
            grant = await self.ctx.run_store(self.server.get_consent_grant, oreq, user)
        except OAuth2Error as error:
            return self._error_page(request, oreq, error)
        redirect_uri = grant.redirect_uri
        if redirect_uri:
            request[FORM_TARGET] = redirect_uri
        prompts = (query.get("prompt") or "").split()
        request_query = urllib.parse.urlencode(list(query.items()))
        client = oreq.client
        if len(request_query) > MAX_REQUEST:
            return self._error_page(request, oreq, InvalidRequestError("request too long"))
        need_login = user is None or ("login" in prompts and not signed_in_now)
        max_age = query.get("max_age")
        if user is not None and max_age is not None and not signed_in_now:
            if not max_age.isdigit():
                return self._error_page(request, oreq, InvalidRequestError("max_age", redirect_uri=redirect_uri,
                                                                           state=query.get("state")))
            need_login = need_login or (utcnow() - session.auth_time).total_seconds() > int(max_age)
        if need_login:
            if "none" in prompts:
                return self._error_page(request, oreq, LoginRequiredError(redirect_uri=redirect_uri,
                                                                          state=query.get("state")))
            return self._signin_page(request, client, request_query)
        scope = set(oreq.scope.split())
        if not client.builtin:
            agreed = await self.ctx.run_store(records.consented, self.reg, user.account_id, client.id)
            if decision is None and ("consent" in prompts or not scope <= agreed):
                if "none" in prompts:
                    return self._error_page(request, oreq, ConsentRequiredError(redirect_uri=redirect_uri,
                                                                                state=query.get("state")))
                return self.render(request, "consent.html", title="授权确认", client_name=client.name,
                                   items=[SCOPE_TEXT[s] for s in records.SCOPES + records.GRANTABLE_CLAIMS
                                          if s in scope],
                                   action="/oidc/consent", request_query=request_query)
            if decision is not None:
                await self.ctx.run_store(records.record_consent, self.reg, user.account_id, user.address, client.id,
                                         oreq.scope, decision == "allow", request.remote or "?")
        oreq.user = user
        oreq.auth_time = session.auth_time if session else utcnow()
        oreq.amr = session.amr if session else "pwd"
        oreq.remote = request.remote or "?"
        granted = None if decision == "deny" else user
        result = await self.ctx.run_store(self.server.create_authorization_response, oreq, granted, grant)
        return self._answer(result)

    def _signin_page(self, request: web.Request, client, request_query: str, error: str = "", address: str = "",
                     status: int = 200) -> web.Response:
        return self.render(request, "signin.html", status=status, title="登录", client_name=client.name if client else "",
                           action="/oidc/signin", request_query=request_query, error=error, address=address)

    async def signin(self, request: web.Request) -> web.Response:
        form = await request.post()
        address = str(form.get("address", ""))[:254]
        password = str(form.get("password", ""))
        request_query = str(form.get("request", ""))[:MAX_REQUEST]
        query = MultiDict(urllib.parse.parse_qsl(request_query, keep_blank_values=True))
        client_id = query.get("client_id")
        ip = request.remote or "?"
        await self._note_target(request, request_query)
        try:
            principal = await self.ctx.login(ip, address, password, PORT)
            if principal.account_id is None:
                raise AuthenticationFailed("no mailbox")
        except Throttled:
            await self.ctx.run_store(records.record_signin, self.reg, "-", client_id, ip, "throttled")
            return self._signin_page(request, None, request_query, "尝试次数过多，请稍后再试。", address, 429)
        except AuthenticationFailed:
            # the name tried is not recorded: it is sometimes a password typed in the wrong field
            await self.ctx.run_store(records.record_signin, self.reg, "-", client_id, ip, "failed")
            return self._signin_page(request, None, request_query, "邮箱地址或密码不正确。", address, 401)
        page = await self._second_factor_page(request, request_query,
                                              self._pending(principal.account_id, principal.address))
        if page is not None:
            return page
        return await self._signed_in(request, principal.account_id, principal.address or principal.login, query)

    # -- the second factor (TOTP or a passkey) ---------------------------------------------
    def _pending(self, account_id: int, address: str, now: float | None = None) -> str:
        """What the code page carries between the password and the code: the account, until
        when, under an HMAC (nothing to store; a forged or stale one is refused)."""
        until = int((time.time() if now is None else now) + TOTP_PAGE_SECONDS)
        body = f"{account_id}.{until}.{address}"
        mac = hmac.new(self._pending_key, body.encode(), hashlib.sha256).hexdigest()
        return f"{body}.{mac}"

    def _pending_account(self, pending: str) -> tuple[int, str] | None:
        body, _, mac = pending.rpartition(".")
        good = hmac.new(self._pending_key, body.encode(), hashlib.sha256).hexdigest()
        if not body or not hmac.compare_digest(good, mac):
            return None
        account_id, until, address = body.split(".", 2)
        return (int(account_id), address) if int(until) >= time.time() else None

    async def _second_factor_page(self, request: web.Request, request_query: str, pending: str, error: str = "",
                                  status: int = 200) -> web.Response | None:
        """The second step of a sign-in whose account has a second factor: its TOTP code form, and
        a passkey button (with a new challenge for this browser session) if it has passkeys:
        either one signs in. None if the account has neither."""
        found = self._pending_account(pending)
        if found is None:
            return None
        account_id = found[0]
        has_totp = await self.ctx.run_store(totp.required, self.reg, account_id)
        options = None
        if self.rp is not None:
            options = await self.ctx.run_store(passkeys.signin_options, self.reg, self.rp, account_id,
                                               passkeys.binding_of(self.sessions.binding(request)))
        if not has_totp and options is None:
            if self.rp is None and await self.ctx.run_store(passkeys.has_passkeys, self.reg, account_id):
                # passkeys made, but http.public_url is no https domain now: no second factor can
                # be given, and none is skipped either
                log.warning("account %s has passkeys, which http.base_url %r does not allow", account_id,
                            self.ctx.config.http.base_url)
                return self.render(request, "message.html", status=503, title="暂时无法登录", alert=True,
                                   text="您的账号需要通行密钥确认登录，但本站目前无法使用通行密钥。请稍后再试或联系客服。")
            return None
        return self.render(request, "totp.html", status=status, title="两步验证", action="/oidc/totp",
                           request_query=request_query, pending=pending, error=error, has_totp=has_totp,
                           passkey_options=options)

    async def _second_factor_failed(self, request: web.Request, request_query: str, pending: str, error: str,
                                    status: int) -> web.Response:
        page = await self._second_factor_page(request, request_query, pending, error, status)
        if page is None:  # the factor went meanwhile (removed on another device): the password again
            return self._signin_page(request, None, request_query, "请重新登录。", status=401)
        return page

    async def totp(self, request: web.Request) -> web.Response:
        form = await request.post()
        request_query = str(form.get("request", ""))[:MAX_REQUEST]
        pending = str(form.get("pending", ""))[:400]
        await self._note_target(request, request_query)
        found = self._pending_account(pending)
        if found is None:  # stale (or forged): the password again
            return self._signin_page(request, None, request_query, "验证已超时，请重新登录。", status=401)
        account_id, address = found
        ip = request.remote or "?"
        throttle = self.ctx.login_throttle  # the same throttle as passwords: guessing codes costs attempts
        if not await throttle.acquire(ip, address):
            return await self._second_factor_failed(request, request_query, pending, "尝试次数过多，请稍后再试。", 429)
        try:
            ok = await self.ctx.run_store(totp.verify, self.reg, account_id, str(form.get("code", ""))[:16])
        except BaseException:
            throttle.released(ip, address)
            raise
        if not ok:
            throttle.failed(ip, address)
            query = MultiDict(urllib.parse.parse_qsl(request_query, keep_blank_values=True))
            await self.ctx.run_store(records.record_signin, self.reg, address, query.get("client_id"), ip,
                                     "failed-totp")
            return await self._second_factor_failed(request, request_query, pending, "验证码不正确。", 401)
        throttle.succeeded(ip, address)
        query = MultiDict(urllib.parse.parse_qsl(request_query, keep_blank_values=True))
        return await self._signed_in(request, account_id, address, query, AMR_TOTP)

    async def passkey(self, request: web.Request) -> web.Response:
        """The second step with a passkey: the browser's assertion (``credential``, the JSON of
        ``navigator.credentials.get()``) for one of this session's challenges, made with one of
        the pending account's passkeys. Guessing costs what guessing passwords costs."""
        form = await request.post()
        request_query = str(form.get("request", ""))[:MAX_REQUEST]
        pending = str(form.get("pending", ""))[:400]
        await self._note_target(request, request_query)
        found = self._pending_account(pending)
        if found is None or self.rp is None:
            return self._signin_page(request, None, request_query, "验证已超时，请重新登录。", status=401)
        account_id, address = found
        ip = request.remote or "?"
        throttle = self.ctx.login_throttle
        if not await throttle.acquire(ip, address):
            return await self._second_factor_failed(request, request_query, pending, "尝试次数过多，请稍后再试。", 429)
        try:
            method = await self.ctx.run_store(passkeys.authenticate, self.reg, self.rp, account_id, address,
                                              passkeys.binding_of(self.sessions.binding(request)),
                                              str(form.get("credential", "")))
        except passkeys.PasskeyRefused as refused:
            throttle.failed(ip, address)
            query = MultiDict(urllib.parse.parse_qsl(request_query, keep_blank_values=True))
            await self.ctx.run_store(records.record_signin, self.reg, address, query.get("client_id"), ip,
                                     "failed-passkey", reason=refused.reason)
            return await self._second_factor_failed(request, request_query, pending,
                                                    "通行密钥验证未通过，请重试或改用其他方式。", 401)
        except BaseException:
            throttle.released(ip, address)
            raise
        throttle.succeeded(ip, address)
        query = MultiDict(urllib.parse.parse_qsl(request_query, keep_blank_values=True))
        return await self._signed_in(request, account_id, address, query, AMR_PASSKEY.format(key=method))

    async def _signed_in(self, request: web.Request, account_id: int, address: str, query: MultiDict,
                         amr: str = AMR_PASSWORD) -> web.Response:
        """The password (and the second factor, if the account has one) checked: a new session
        signed in as ``amr`` says, the audit row, then back to the authorization request, if
        there was one."""
        client_id = query.get("client_id")
        await self.sessions.sign_in(request, account_id, amr)
        await self.ctx.run_store(records.record_signin, self.reg, address, client_id, request.remote or "?", "ok", amr)
        if not client_id:
            return self.render(request, "message.html", title="已登录", text="您已登录市民邮箱账号。")
        return await self._authorize(request, query, signed_in_now=True)

    async def consent(self, request: web.Request) -> web.Response:
        form = await request.post()
        query = MultiDict(urllib.parse.parse_qsl(str(form.get("request", ""))[:MAX_REQUEST], keep_blank_values=True))
        decision = "allow" if form.get("decision") == "allow" else "deny"
        return await self._authorize(request, query, signed_in_now=False, decision=decision)

    # -- the token endpoints -------------------------------------------------------------
    async def token(self, request: web.Request) -> web.Response:
        form = MultiDict((k, str(v)) for k, v in (await request.post()).items())
        oreq = self._oauth(request, MultiDict(), form, "/oidc/token")
        return self._answer(await self.ctx.run_store(self.server.create_token_response, oreq))

    async def revoke(self, request: web.Request) -> web.Response:
        form = MultiDict((k, str(v)) for k, v in (await request.post()).items())
        oreq = self._oauth(request, MultiDict(), form, "/oidc/revoke")
        return self._answer(await self.ctx.run_store(self.server.create_endpoint_response, "revocation", oreq))

    async def userinfo(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        value = auth[7:] if auth[:7].lower() == "bearer " else ""
        found = await self.ctx.run_store(self._userinfo, value)
        if found is None:
            return web.json_response({"error": "invalid_token"}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return web.json_response(found, headers={"Cache-Control": "no-store"})

    def _userinfo(self, value: str) -> dict | None:
        token = records.query_token(self.reg, value, "access_token") if value else None
        if token is None or token.revoked or token.is_expired() or "openid" not in token.scope.split():
            return None
        user = records.load_user(self.reg, token.account_id)
        client = records.query_client(self.reg, token.client_id)
        return records.user_claims(self.reg, client, user, token.scope) if user and client else None

    # -- RP-initiated logout --------------------------------------------------------------
    async def logout(self, request: web.Request) -> web.Response:
        """GET asks (a link alone must not sign anyone out); the form's POST signs out and goes
        back to ``post_logout_redirect_uri`` if the website (``client_id``, or the audience of
        ``id_token_hint``) registered a redirect URI of the same origin."""
        if request.method == "POST":
            params = MultiDict((k, str(v)) for k, v in (await request.post()).items())
        else:
            params = MultiDict(request.query)
        back = await self.ctx.run_store(self._logout_target, params)
        if back:
            request[FORM_TARGET] = back  # the form's answer redirects there
        if request.method != "POST":
            hidden = [(k, params[k]) for k in ("id_token_hint", "client_id", "post_logout_redirect_uri", "state")
                      if k in params]
            return self.render(request, "message.html", title="退出登录", text="要退出市民邮箱账号的登录吗？",
                               form_action="/oidc/logout", hidden=hidden, button="退出登录")
        if back:
            response = web.Response(status=302, headers={"Location": back})
        else:
            response = self.render(request, "message.html", title="已退出", text="您已退出登录。")
        await self.sessions.sign_out(request, response)
        return response

    def _logout_target(self, params: MultiDict) -> str | None:
        client_id = params.get("client_id")
        hint = params.get("id_token_hint")
        if hint:
            try:
                keys = KeySet.import_key_set({"keys": self._published()})
                aud = jwt.decode(hint, keys, [ALG]).claims.get("aud")  # an expired hint is still a hint
            except (JoseError, ValueError):
                return None
            aud = aud[0] if isinstance(aud, list) and aud else aud
            if client_id and client_id != aud:
                return None
            client_id = aud
        uri = params.get("post_logout_redirect_uri")
        client = records.query_client(self.reg, client_id) if client_id and uri else None
        if client is None:
            return None
        asked = urllib.parse.urlsplit(uri)
        for known in map(urllib.parse.urlsplit, client.redirect_uris):
            if (known.scheme, known.netloc) == (asked.scheme, asked.netloc) and not asked.fragment:
                state = params.get("state")
                return uri + (("&" if asked.query else "?") + urllib.parse.urlencode({"state": state}) if state else "")
        return None


#: the routes that are not this face's own forms: the token endpoints, authenticated by client
#: credentials, and the authorization endpoint, which a website may POST to (OIDC Core 3.1.2.1)
#: with the same effect as its GET
CSRF_EXEMPT = ("/oidc/token", "/oidc/revoke", "/oidc/authorize")


def add_routes(app: web.Application, ctx, sessions: Sessions) -> Provider:
    provider = Provider(ctx, sessions)
    app.router.add_get("/.well-known/openid-configuration", provider.discovery)
    app.router.add_get("/oidc/jwks", provider.jwks)
    app.router.add_route("GET", "/oidc/authorize", provider.authorize)
    app.router.add_route("POST", "/oidc/authorize", provider.authorize)
    app.router.add_post("/oidc/signin", provider.signin)
    app.router.add_post("/oidc/totp", provider.totp)
    app.router.add_post("/oidc/passkey", provider.passkey)
    app.router.add_post("/oidc/consent", provider.consent)
    app.router.add_post("/oidc/token", provider.token)
    app.router.add_post("/oidc/revoke", provider.revoke)
    app.router.add_get("/oidc/userinfo", provider.userinfo)
    app.router.add_route("GET", "/oidc/logout", provider.logout)
    app.router.add_route("POST", "/oidc/logout", provider.logout)
    return provider
