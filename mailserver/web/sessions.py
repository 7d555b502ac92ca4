"""Web sessions and CSRF for every page of the HTTP face (the OpenID Connect sign-in now, the
portal later).

Sessions are server-side rows (``web_session``): the cookie holds 256 random bits and the table
only their SHA-256, so a copy of the database signs no one in. The cookie is ``HttpOnly``,
``SameSite=Lax``, ``Path=/``, and with TLS ``Secure`` and ``__Host-`` named (no subdomain can
set or read it). A session ends after ``oidc.session_idle_seconds`` without a request and
``oidc.session_max_seconds`` after its sign-in; an account holds at most
``oidc.max_sessions_per_account`` (a new sign-in ends the oldest). A signed-in citizen can list
their sessions and end any of them (``list_sessions``, ``revoke_session``).

CSRF: every POST to this face carries ``csrf_token``, an HMAC of the session's cookie value (or,
before sign-in, of a random pre-session cookie) under the MAC key: a synchronizer token tied to
the session that needs no row of its own. ``csrf_middleware`` refuses a POST without a valid one
with 403 before its handler runs; only endpoints that are not browser forms (the token and
revocation endpoints, authenticated by client credentials, and RFC 8058 one-click unsubscribe,
authenticated by its URL's HMAC) are exempt, by route, where the app is built.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy import delete, select, update

from ..registry.context import Registry
from ..store.driver import driver_rows, driver_time, raw_reader
from ..store.models import WebSession, as_utc, utcnow

#: the form field and the header (for the rare script) carrying the CSRF token
CSRF_FIELD = "csrf_token"
#: last_seen_at is written at most this often per session (not on every page)
TOUCH_EVERY = dt.timedelta(seconds=60)
#: the request's session, once looked up; the cookies this request made; whether it signed out
SESSION_KEY = web.RequestKey("civicmail_session", object)
NEW_SECRET = web.RequestKey("civicmail_new_secret", str)
NEW_PRE = web.RequestKey("civicmail_new_pre", str)
SIGNED_OUT = web.RequestKey("civicmail_signed_out", bool)


@dataclass(frozen=True)
class Session:
    id: int
    handle: str
    account_id: int
    created_at: dt.datetime
    auth_time: dt.datetime
    last_seen_at: dt.datetime
    ip: str | None
    user_agent: str | None
    #: how it was signed in (RFC 8176 values, space-separated): the ID tokens' ``amr``
    amr: str = "pwd"


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii", "replace")).digest()


def _session(row: WebSession) -> Session:
    return Session(row.id, row.handle, row.account_id, as_utc(row.created_at), as_utc(row.auth_time),
                   as_utc(row.last_seen_at), row.ip, row.user_agent, row.amr)


# -- the store side (blocking: on the store lane) ---------------------------------------
def create_session(reg: Registry, account_id: int, ip: str, user_agent: str, amr: str = "pwd") -> str:
    """A new session for a password (and second factor, as ``amr`` says) just checked; its cookie value. The account's sessions past
    the bound, oldest first, and its expired ones are ended."""
    secret = secrets.token_urlsafe(32)
    oidc = reg.config.oidc
    now = utcnow()
    with reg.store.session() as s:
        s.execute(delete(WebSession).where(WebSession.account_id == account_id,
                                           (WebSession.last_seen_at < now - dt.timedelta(seconds=oidc.session_idle_seconds))
                                           | (WebSession.auth_time < now - dt.timedelta(seconds=oidc.session_max_seconds))))
        ids = list(s.scalars(select(WebSession.id).where(WebSession.account_id == account_id)
                             .order_by(WebSession.created_at.desc(), WebSession.id.desc())))
        if len(ids) >= oidc.max_sessions_per_account:
            s.execute(delete(WebSession).where(WebSession.id.in_(ids[oidc.max_sessions_per_account - 1:])))
        s.add(WebSession(secret_hash=_hash(secret), handle=secrets.token_urlsafe(12), account_id=account_id,
                         created_at=now, auth_time=now, last_seen_at=now, ip=ip[:64], user_agent=user_agent[:200],
                         amr=amr))
    return secret


#: the session of a cookie (every page of the provider and the sign-in look it up): plain SQL on
#: the DBAPI cursor (store/driver.py), cheaper than an ORM session and statement
_LOOKUP = ("SELECT id, handle, account_id, created_at, auth_time, last_seen_at, ip, user_agent, amr FROM web_session "
           "WHERE secret_hash = ?")


def lookup_session(reg: Registry, secret: str) -> Session | None:
    """The live session of this cookie value, or None (an ended, idle or too old one is removed)."""
    if not secret or len(secret) > 64:
        return None
    oidc = reg.config.oidc
    now = utcnow()
    with raw_reader(reg.store) as r:
        rows = driver_rows(r, _LOOKUP, _hash(secret))
    if not rows:
        return None
    id_, handle, account_id, created_at, auth_time, last_seen_at, ip, user_agent, amr = rows[0]
    found = Session(id_, handle, account_id, driver_time(created_at), driver_time(auth_time),
                    driver_time(last_seen_at), ip, user_agent, amr or "pwd")
    if (now - found.last_seen_at).total_seconds() > oidc.session_idle_seconds or \
            (now - found.auth_time).total_seconds() > oidc.session_max_seconds:
        end_session(reg, secret)
        return None
    if now - found.last_seen_at > TOUCH_EVERY:
        with reg.store.session() as s:
            s.execute(update(WebSession).where(WebSession.id == found.id).values(last_seen_at=now))
    return found


def end_session(reg: Registry, secret: str) -> None:
    with reg.store.session() as s:
        s.execute(delete(WebSession).where(WebSession.secret_hash == _hash(secret)))


def list_sessions(reg: Registry, account_id: int) -> list[Session]:
    """The account's sessions, newest first (the portal's "sessions" list)."""
    with reg.store.reader() as s:
        return [_session(r) for r in s.scalars(select(WebSession).where(WebSession.account_id == account_id)
                                               .order_by(WebSession.created_at.desc()))]


def revoke_session(reg: Registry, account_id: int, handle: str) -> bool:
    """End one of the account's sessions by its handle; False if the account has none such
    (a handle of someone else's session ends nothing)."""
    with reg.store.session() as s:
        return s.execute(delete(WebSession).where(WebSession.account_id == account_id,
                                                  WebSession.handle == handle)).rowcount > 0


# -- the HTTP side -----------------------------------------------------------------------
class Sessions:
    """Cookies, the request's session and CSRF tokens, for one app."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        tls = ctx.config.http.tls or ctx.config.public_url.startswith("https:")
        self.secure = tls
        prefix = "__Host-" if tls else ""
        self.cookie = prefix + "civicmail_session"
        self.pre_cookie = prefix + "civicmail_csrf"
        self._csrf_key = ctx.registry.keyring.secret_hash("web-csrf-key", "v1")

    def _set(self, response: web.StreamResponse, name: str, value: str, max_age: int | None = None) -> None:
        response.set_cookie(name, value, path="/", secure=self.secure, httponly=True, samesite="Lax",
                            max_age=max_age)

    async def current(self, request: web.Request) -> Session | None:
        if SESSION_KEY in request:
            return request[SESSION_KEY]  # type: ignore[return-value]
        secret = request.cookies.get(self.cookie, "")
        found = await self.ctx.run_store(lookup_session, self.ctx.registry, secret) if secret else None
        request[SESSION_KEY] = found
        return found

    async def sign_in(self, request: web.Request, account_id: int, amr: str = "pwd") -> Session:
        """A new session (a new id: no session fixation), signed in as ``amr`` says; ``finish``
        sets its cookie."""
        old = request.cookies.get(self.cookie)
        if old:
            await self.ctx.run_store(end_session, self.ctx.registry, old)
        secret = await self.ctx.run_store(create_session, self.ctx.registry, account_id, request.remote or "?",
                                          request.headers.get("User-Agent", ""), amr)
        request[NEW_SECRET] = secret
        request[SESSION_KEY] = session = await self.ctx.run_store(lookup_session, self.ctx.registry, secret)
        return session

    async def sign_out(self, request: web.Request, response: web.StreamResponse) -> None:
        secret = request.cookies.get(self.cookie)
        if secret:
            await self.ctx.run_store(end_session, self.ctx.registry, secret)
        response.del_cookie(self.cookie, path="/")
        request[SESSION_KEY] = None
        request[SIGNED_OUT] = True

    def binding(self, request: web.Request) -> str:
        """The cookie value this request's session (or pre-session) is, which its CSRF token is
        tied to, made now if there is none (a WebAuthn challenge is bound to it too)."""
        self.csrf_token(request)
        return self._binding(request) or ""

    def _binding(self, request: web.Request) -> str | None:
        return request.get(NEW_SECRET) or request.cookies.get(self.cookie) \
            or request.get(NEW_PRE) or request.cookies.get(self.pre_cookie)

    def csrf_token(self, request: web.Request) -> str:
        """The token for a form on this page (a pre-session cookie is made if there is no
        cookie to tie it to; ``finish`` sets it on the response)."""
        binding = self._binding(request)
        if not binding:
            binding = request[NEW_PRE] = secrets.token_urlsafe(32)
        return hmac.new(self._csrf_key, binding.encode(), hashlib.sha256).hexdigest()

    def csrf_valid(self, request: web.Request, token: str) -> bool:
        for binding in (request.cookies.get(self.cookie), request.cookies.get(self.pre_cookie)):
            if binding and hmac.compare_digest(
                    hmac.new(self._csrf_key, binding.encode(), hashlib.sha256).hexdigest(), token or ""):
                return True
        return False

    def finish(self, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        """Set the cookies this request made: a new session's, and the pre-session cookie a
        page's CSRF token was tied to."""
        secret = request.get(NEW_SECRET)
        if secret and not request.get(SIGNED_OUT):
            self._set(response, self.cookie, secret, self.ctx.config.oidc.session_max_seconds)
        pre = request.get(NEW_PRE)
        if pre:
            self._set(response, self.pre_cookie, pre)
        return response


def csrf_middleware(sessions: Sessions, exempt: set[str]):
    """403 for a POST (any unsafe method) without a valid CSRF token, unless its route's
    canonical path is in ``exempt``; and the cookies a request made, on its response."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        resource = request.match_info.route.resource
        if request.method in ("GET", "HEAD", "OPTIONS") or request.match_info.http_exception is not None \
                or (resource is not None and resource.canonical in exempt):  # (404 and 405 as they are)
            return sessions.finish(request, await handler(request))
        token = request.headers.get("X-CSRF-Token", "")
        if not token and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            token = str(form.get(CSRF_FIELD, ""))
        if not sessions.csrf_valid(request, token):
            raise web.HTTPForbidden()
        return sessions.finish(request, await handler(request))

    return middleware
