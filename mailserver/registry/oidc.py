"""The OpenID Connect provider's records (issue 14 sections 1 and 2): registered websites,
remembered consents, codes and tokens, and what a signed-in citizen's claims are. Blocking:
the web face and the protocol edges call these on the store lane.

Secrets (client secrets, codes, tokens) are kept only as SHA-256 (``digest``). The portal is
registered by civicmail itself (``ensure_portal_client``, from `init` and `db upgrade`), the
webmail by `civicmail webmail config` (``ensure_webmail_client``): their secrets are derived
from the ID-number MAC key (``builtin_client_secret``), so the portal, in the same process,
knows its own without a file, and `webmail config` prints the same secret every time it runs.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import re
import secrets
import urllib.parse
from dataclasses import dataclass

from sqlalchemy import delete, select, update

from ..errors import AuthenticationFailed, Conflict, NotFound, ValidationError
from ..identity import idnumber
from ..store.driver import driver_rows, raw_reader
from ..store.models import Account, OidcClient, OidcCode, OidcConsent, OidcToken, as_utc, utcnow
from . import audit
from .auth import Principal
from .context import Registry

#: scopes a website may be granted; "mail" opens IMAP and SMTP (OAUTHBEARER / XOAUTH2)
SCOPES = ("openid", "profile", "email", "mail")
#: claims a website gets only with an operator's grant (--claims) and the citizen's consent
GRANTABLE_CLAIMS = ("id_number_masked",)
PORTAL_ID = "portal"
PORTAL_NAME = "市民门户"
#: the webmail (Roundcube), registered by `civicmail webmail config`
WEBMAIL_ID = "webmail"
WEBMAIL_NAME = "市民邮箱网页版"
_CLIENT_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def _is_loopback_uri(parts: urllib.parse.SplitResult) -> bool:
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def check_redirect_uri_form(uri: str, public: bool) -> str:
    """A redirect URI an operator may register: absolute, no fragment; https, or http on a
    loopback address (RFC 8252 7.3, native apps), or a private-use scheme of a native (public)
    app (RFC 8252 7.1, ``com.example.app:/cb``)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.fragment or not parts.scheme:
        raise ValidationError(f"redirect URI {uri!r}: must be absolute, without a fragment")
    if parts.scheme == "https" and parts.hostname:
        return uri
    if _is_loopback_uri(parts):
        return uri
    if public and "." in parts.scheme and parts.scheme not in ("http", "https"):
        return uri
    raise ValidationError(f"redirect URI {uri!r}: must be https (http only on a loopback address)")


@dataclass(frozen=True)
class Client:
    """A registered website as authlib's ClientMixin wants it."""

    id: str
    name: str
    secret_hash: bytes | None
    redirect_uris: tuple[str, ...]
    scopes: tuple[str, ...]
    claims: tuple[str, ...]
    builtin: bool = False

    @property
    def public(self) -> bool:
        return self.secret_hash is None

    # -- authlib's ClientMixin ------------------------------------------------------------
    def get_client_id(self) -> str:
        return self.id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str) -> str:
        """The asked scope less what this website may not have: its scopes, and the extra
        claims an operator granted it (asked for as scopes of the same name)."""
        if not scope:
            return ""
        return " ".join(s for s in scope.split() if s in self.scopes or s in self.claims)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        """Exact match; for a loopback URI any port (RFC 8252 7.3: the native app's port is
        chosen when it runs)."""
        if redirect_uri in self.redirect_uris:
            return True
        asked = urllib.parse.urlsplit(redirect_uri)
        if not _is_loopback_uri(asked):
            return False
        for uri in self.redirect_uris:
            known = urllib.parse.urlsplit(uri)
            if _is_loopback_uri(known) and (known.hostname, known.path, known.query) == (
                    asked.hostname, asked.path, asked.query):
                return True
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return self.secret_hash is not None and hmac.compare_digest(digest(client_secret), self.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.public:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


def _client(row: OidcClient) -> Client:
    return Client(row.id, row.name, row.secret_hash, tuple(row.redirect_uris.split()), tuple(row.scopes.split()),
                  tuple(row.claims.split()), row.builtin)


#: the sign-in's lookups (a sign-in makes ten of them) as plain SQL on the DBAPI cursor
#: (store/driver.py): SQLAlchemy's session and statement handling cost more than the queries
_CLIENT = "SELECT id, name, secret_hash, redirect_uris, scopes, claims, builtin FROM oidc_client WHERE id = ?"
_USER = ("SELECT account.id, account.address, account.state, citizen.name, citizen.id_cipher FROM account "
         "LEFT OUTER JOIN citizen ON citizen.id = account.citizen_id WHERE account.id = ?")
_NONCE = "SELECT 1 FROM oidc_code WHERE client_id = ? AND nonce = ? LIMIT 1"


def query_client(reg: Registry, client_id: str) -> Client | None:
    if not client_id or len(client_id) > 64:
        return None
    with raw_reader(reg.store) as r:
        rows = driver_rows(r, _CLIENT, client_id)
    if not rows:
        return None
    id_, name, secret_hash, uris, scopes, claims, builtin = rows[0]
    return Client(id_, name, None if secret_hash is None else bytes(secret_hash), tuple(uris.split()),
                  tuple(scopes.split()), tuple(claims.split()), bool(builtin))


def add_client(reg: Registry, client_id: str, name: str, redirect_uris: list[str], *, public: bool = False,
               claims: list[str] = (), scopes: list[str] = SCOPES, actor: str = "operator") -> str | None:
    """Register a website; its secret (shown once, kept only hashed), or None for a public one."""
    if not _CLIENT_ID.match(client_id):
        raise ValidationError(f"client id {client_id!r}: lower-case letters, digits, . _ - (at most 64)")
    if not redirect_uris:
        raise ValidationError("at least one --redirect-uri")
    uris = [check_redirect_uri_form(u, public) for u in redirect_uris]
    unknown = [c for c in claims if c not in GRANTABLE_CLAIMS]
    if unknown:
        raise ValidationError(f"unknown claim {unknown[0]!r} (grantable: {', '.join(GRANTABLE_CLAIMS)})")
    bad = [s for s in scopes if s not in SCOPES]
    if bad or "openid" not in scopes:
        raise ValidationError(f"scopes: openid and any of {', '.join(SCOPES)}")
    secret = None if public else new_secret()
    with reg.store.session() as s:
        if s.get(OidcClient, client_id) is not None:
            raise Conflict(f"client {client_id} is already registered")
        s.add(OidcClient(id=client_id, name=name, secret_hash=digest(secret) if secret else None,
                         redirect_uris="\n".join(uris), scopes=" ".join(scopes), claims=" ".join(claims)))
        audit.record(s, "oidc.client.add", f"{client_id} ({'public' if public else 'confidential'}) "
                                           f"claims={' '.join(claims) or '-'}", actor=actor)
    return secret


def list_clients(reg: Registry) -> list[Client]:
    with reg.store.reader() as s:
        return [_client(r) for r in s.scalars(select(OidcClient).order_by(OidcClient.id))]


def remove_client(reg: Registry, client_id: str, actor: str = "operator") -> None:
    """Unregister a website: its codes, tokens and consents go with it."""
    with reg.store.session() as s:
        row = s.get(OidcClient, client_id)
        if row is None:
            raise NotFound(f"no client {client_id}")
        if row.builtin:
            raise Conflict(f"client {client_id} is civicmail's own (the portal, registered by `db upgrade`, or the "
                           "webmail, by `webmail config`)")
        for model in (OidcToken, OidcCode, OidcConsent):
            s.execute(delete(model).where(model.client_id == client_id))
        s.delete(row)
        audit.record(s, "oidc.client.remove", client_id, actor=actor)


def builtin_client_secret(reg: Registry, client_id: str) -> str:
    """The client secret of one of civicmail's own clients (the portal, the webmail): derived
    from the MAC key, so never written anywhere, and the same every time it is asked for."""
    return base64.urlsafe_b64encode(reg.keyring.secret_hash("oidc-client-secret", client_id)).decode().rstrip("=")


def portal_client_secret(reg: Registry) -> str:
    return builtin_client_secret(reg, PORTAL_ID)


def portal_redirect_uri(config) -> str:
    return config.public_url + config.oidc.portal_redirect_path


def ensure_builtin_client(reg: Registry, client_id: str, name: str, redirect_uri: str,
                          actor: str | None = None) -> str | None:
    """Register (or bring up to date) one of civicmail's own confidential clients: a line saying
    what was done, or None if it was already as it should be. Built-in clients are the city's
    own faces of the mailbox: no consent page. Audited only with an ``actor`` (an operator's
    command); `init` and `db upgrade` registering the portal is no one acting."""
    secret_hash = digest(builtin_client_secret(reg, client_id))
    with reg.store.session() as s:
        row = s.get(OidcClient, client_id)
        if row is None:
            s.add(OidcClient(id=client_id, name=name, secret_hash=secret_hash, redirect_uris=redirect_uri,
                             scopes=" ".join(SCOPES), claims="", builtin=True))
            done = f"OpenID Connect client {client_id} registered ({redirect_uri})"
        elif row.redirect_uris == redirect_uri and row.secret_hash == secret_hash and row.builtin:
            return None
        else:
            row.redirect_uris, row.secret_hash, row.builtin = redirect_uri, secret_hash, True
            done = f"OpenID Connect client {client_id} updated ({redirect_uri})"
        if actor:
            audit.record(s, "oidc.client.add", f"{client_id} (built in) {redirect_uri}", actor=actor)
        return done


def ensure_portal_client(reg: Registry) -> str | None:
    """The portal, registered by `init` and `db upgrade`."""
    return ensure_builtin_client(reg, PORTAL_ID, PORTAL_NAME, portal_redirect_uri(reg.config))


def ensure_webmail_client(reg: Registry, webmail_url: str, actor: str = "operator") -> tuple[str, str | None]:
    """The webmail (Roundcube at ``webmail_url``), registered by `webmail config`: (its client
    secret, a line saying what was done or None). Its redirect URI is Roundcube's OAuth return,
    ``index.php/login/oauth`` under its URL."""
    uri = webmail_redirect_uri(webmail_url)
    check_redirect_uri_form(uri, public=False)
    return builtin_client_secret(reg, WEBMAIL_ID), ensure_builtin_client(reg, WEBMAIL_ID, WEBMAIL_NAME, uri, actor)


def webmail_redirect_uri(webmail_url: str) -> str:
    return webmail_url.split("?", 1)[0].rstrip("/") + "/index.php/login/oauth"


# -- the citizen as a website sees them ---------------------------------------------------
@dataclass(frozen=True)
class User:
    account_id: int
    address: str
    #: the registered real name (None for an account without a citizen: an agency's mailbox)
    name: str | None
    id_cipher: bytes | None

    def get_user_id(self) -> int:  # authlib
        return self.account_id


def load_user(reg: Registry, account_id: int) -> User | None:
    """The active account, or None (disabled since, or gone)."""
    with raw_reader(reg.store) as r:
        rows = driver_rows(r, _USER, account_id)
    if not rows or rows[0][2] != "active":
        return None
    id_, address, _, name, id_cipher = rows[0]
    return User(id_, address, name, None if id_cipher is None else bytes(id_cipher))


def pairwise_sub(reg: Registry, client_id: str, account_id: int) -> str:
    """The subject a website knows a citizen by: a keyed hash of (website, account), so two
    websites cannot join what they learn (OIDC Core 8.1, pairwise identifiers)."""
    raw = reg.keyring.secret_hash("oidc-sub", f"{client_id}\0{account_id}")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def user_claims(reg: Registry, client: Client, user: User, scope: str) -> dict:
    """The claims of an ID token (and of userinfo) for the granted ``scope``; the extra claims
    (``id_number_masked``) are in the scope only if the client was granted them and the citizen
    agreed (the consent is what put them there)."""
    scopes = set(scope.split())
    claims: dict = {"sub": pairwise_sub(reg, client.id, user.account_id)}
    if "profile" in scopes and user.name:
        claims["name"] = user.name
        claims["real_name_verified"] = True
    if "email" in scopes:
        claims["email"] = user.address
        claims["email_verified"] = True
    if "id_number_masked" in scopes and "id_number_masked" in client.claims and user.id_cipher:
        claims["id_number_masked"] = idnumber.mask(reg.keyring.decrypt(user.id_cipher))
    return claims


# -- consent -------------------------------------------------------------------------------
def consented(reg: Registry, account_id: int, client_id: str) -> frozenset[str]:
    with reg.store.reader() as s:
        scopes = s.scalar(select(OidcConsent.scopes).where(OidcConsent.account_id == account_id,
                                                           OidcConsent.client_id == client_id))
    return frozenset(scopes.split()) if scopes else frozenset()


def record_consent(reg: Registry, account_id: int, address: str, client_id: str, scope: str, allowed: bool,
                   ip: str) -> None:
    """Remember (or, when denied, forget) what the citizen agreed to, and audit the answer."""
    with reg.store.session() as s:
        row = s.get(OidcConsent, (account_id, client_id))
        if allowed:
            if row is None:
                s.add(OidcConsent(account_id=account_id, client_id=client_id, scopes=scope))
            else:
                row.scopes, row.granted_at = " ".join(sorted(set(row.scopes.split()) | set(scope.split()))), utcnow()
        audit.record(s, "oidc.consent" if allowed else "oidc.consent-denied",
                     f"client={client_id} scope={scope} ip={ip}", actor=address)


@dataclass(frozen=True)
class Consent:
    client_id: str
    client_name: str
    scopes: tuple[str, ...]
    granted_at: dt.datetime


def list_consents(reg: Registry, account_id: int) -> list[Consent]:
    """The websites the citizen has agreed to sign in to (the portal's "city websites" list)."""
    with reg.store.reader() as s:
        rows = s.execute(select(OidcConsent.client_id, OidcClient.name, OidcConsent.scopes, OidcConsent.granted_at)
                         .join(OidcClient, OidcClient.id == OidcConsent.client_id)
                         .where(OidcConsent.account_id == account_id).order_by(OidcConsent.granted_at.desc()))
        return [Consent(r[0], r[1], tuple(r[2].split()), as_utc(r[3])) for r in rows]


def revoke_consent(reg: Registry, account_id: int, address: str, client_id: str) -> bool:
    """Withdraw a website's consent: its tokens for this citizen stop working at once (mail
    clients included), and its next sign-in asks again. False if there was none."""
    with reg.store.session() as s:
        gone = s.execute(delete(OidcConsent).where(OidcConsent.account_id == account_id,
                                                   OidcConsent.client_id == client_id)).rowcount
        s.execute(update(OidcToken).where(OidcToken.account_id == account_id, OidcToken.client_id == client_id,
                                          OidcToken.revoked_at.is_(None)).values(revoked_at=utcnow()))
        if gone:
            audit.record(s, "oidc.consent-revoked", f"client={client_id}", actor=address)
        return bool(gone)


def record_signin(reg: Registry, address: str, client_id: str | None, ip: str, outcome: str,
                  amr: str | None = None, reason: str | None = None) -> None:
    """Audit a web sign-in: who, for which website, from where, with what (never the password)."""
    detail = f"client={client_id or '-'} ip={ip}" + (f" amr={','.join(amr.split())}" if amr else "")
    with reg.store.session() as s:
        audit.record(s, "oidc.signin" if outcome == "ok" else f"oidc.signin-{outcome}", detail,
                     actor=address[:254], reason=reason)


# -- codes and tokens ---------------------------------------------------------------------
@dataclass(frozen=True)
class Code:
    """An authorization code as authlib's AuthorizationCodeMixin wants it."""

    id: int
    client_id: str
    account_id: int
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: dt.datetime
    #: how the citizen signed in (RFC 8176 values, space-separated)
    amr: str = "pwd"

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(as_utc(self.auth_time).timestamp())

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> list[str]:
        return self.amr.split()


def save_code(reg: Registry, code: str, client_id: str, account_id: int, redirect_uri: str, scope: str,
              nonce: str | None, challenge: str | None, method: str | None, auth_time: dt.datetime,
              address: str = "-", ip: str = "?", amr: str = "pwd") -> None:
    """Keep a new code, and audit the sign-in to the website it is for (``oidc.authorize``: with a
    password just typed, or by the session of an earlier one), in the same transaction."""
    now = utcnow()
    with reg.store.session() as s:
        # codes live a minute: those of this account that have expired go as a new one comes (bounded)
        s.execute(delete(OidcCode).where(OidcCode.account_id == account_id, OidcCode.expires_at < now))
        s.add(OidcCode(code_hash=digest(code), client_id=client_id, account_id=account_id, redirect_uri=redirect_uri,
                       scope=scope, nonce=nonce, code_challenge=challenge, code_challenge_method=method,
                       auth_time=auth_time, amr=amr, expires_at=now + dt.timedelta(seconds=reg.config.oidc.code_ttl)))
        audit.record(s, "oidc.authorize", f"client={client_id} scope={scope} ip={ip}", actor=address)


def nonce_used(reg: Registry, client_id: str, nonce: str) -> bool:
    with raw_reader(reg.store) as r:
        return bool(driver_rows(r, _NONCE, client_id, nonce))


def query_code(reg: Registry, code: str, client_id: str) -> Code | None:
    """The unused, unexpired code of this client. A code used a second time is refused and
    what it was exchanged for is revoked (RFC 6749 4.1.2: it may have been stolen)."""
    with reg.store.session() as s:
        row = s.scalar(select(OidcCode).where(OidcCode.code_hash == digest(code)))
        if row is None or row.client_id != client_id:
            return None
        if row.used_at is not None:
            s.execute(update(OidcToken).where(OidcToken.family == _family(row.id), OidcToken.revoked_at.is_(None))
                      .values(revoked_at=utcnow()))
            return None
        if as_utc(row.expires_at) <= utcnow():
            return None
        return Code(row.id, row.client_id, row.account_id, row.redirect_uri, row.scope, row.nonce,
                    row.code_challenge, row.code_challenge_method, row.auth_time, row.amr)


def use_code(reg: Registry, code: Code) -> None:
    with reg.store.session() as s:
        s.execute(update(OidcCode).where(OidcCode.id == code.id).values(used_at=utcnow()))


def _family(code_id: int) -> str:
    return f"code-{code_id}"


@dataclass(frozen=True)
class Token:
    """An access / refresh token pair as authlib's TokenMixin wants it."""

    id: int
    client_id: str
    account_id: int
    scope: str
    family: str
    auth_time: dt.datetime
    access_expires_at: dt.datetime
    refresh_expires_at: dt.datetime | None
    revoked: bool

    def check_client(self, client) -> bool:
        return client.get_client_id() == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return max(0, int((as_utc(self.access_expires_at) - utcnow()).total_seconds()))

    def is_expired(self) -> bool:
        return as_utc(self.access_expires_at) <= utcnow()

    def is_revoked(self) -> bool:
        return self.revoked

    def refresh_expired(self) -> bool:
        return self.refresh_expires_at is None or as_utc(self.refresh_expires_at) <= utcnow()


def _token(row: OidcToken) -> Token:
    return Token(row.id, row.client_id, row.account_id, row.scope, row.family, row.auth_time, row.access_expires_at,
                 row.refresh_expires_at, row.revoked_at is not None)


def save_token(reg: Registry, token: dict, client_id: str, account_id: int, scope: str, family: str,
               auth_time: dt.datetime) -> None:
    now = utcnow()
    oidc = reg.config.oidc
    refresh = token.get("refresh_token")
    with reg.store.session() as s:
        # an account's dead tokens go as new ones come, so the table stays bounded per account
        s.execute(delete(OidcToken).where(OidcToken.account_id == account_id, OidcToken.access_expires_at < now,
                                          (OidcToken.refresh_expires_at.is_(None)) | (OidcToken.refresh_expires_at < now)))
        s.add(OidcToken(access_hash=digest(token["access_token"]), refresh_hash=digest(refresh) if refresh else None,
                        client_id=client_id, account_id=account_id, scope=scope, family=family, auth_time=auth_time,
                        access_expires_at=now + dt.timedelta(seconds=int(token.get("expires_in", oidc.access_token_ttl))),
                        refresh_expires_at=now + dt.timedelta(seconds=oidc.refresh_token_ttl) if refresh else None))


def code_family(code: Code) -> str:
    return _family(code.id)


def query_token(reg: Registry, value: str, hint: str | None = None) -> Token | None:
    h = digest(value)
    with reg.store.reader() as s:
        row = None
        if hint != "refresh_token":
            row = s.scalar(select(OidcToken).where(OidcToken.access_hash == h))
        if row is None and hint != "access_token":
            row = s.scalar(select(OidcToken).where(OidcToken.refresh_hash == h))
        return _token(row) if row is not None else None


def refresh_token(reg: Registry, value: str) -> Token | None:
    """The live token whose refresh token this is. A refresh token already rotated away being
    used again means two parties hold it: the whole family is revoked (RFC 9700 4.14.2)."""
    with reg.store.session() as s:
        row = s.scalar(select(OidcToken).where(OidcToken.refresh_hash == digest(value)))
        if row is None:
            return None
        if row.revoked_at is not None:
            s.execute(update(OidcToken).where(OidcToken.family == row.family, OidcToken.revoked_at.is_(None))
                      .values(revoked_at=utcnow()))
            return None
        token = _token(row)
        return None if token.refresh_expired() else token


def revoke_token(reg: Registry, token: Token, family: bool = False) -> None:
    """Revoke a pair (its access and refresh tokens together); ``family``: every pair descended
    from the same sign-in (RFC 7009 2.1: revoking a refresh token may revoke the grant)."""
    with reg.store.session() as s:
        where = OidcToken.family == token.family if family else OidcToken.id == token.id
        s.execute(update(OidcToken).where(where, OidcToken.revoked_at.is_(None)).values(revoked_at=utcnow()))


def revoke_issued(reg: Registry, values: list[str]) -> set[int]:
    """Revoke at once the pairs these access or refresh token values belong to, in one
    transaction (the portal, which reads the store itself, keeps no token it is issued): the
    accounts they were for (empty if none is known)."""
    hashes = [digest(v) for v in values if v]
    if not hashes:
        return set()
    with reg.store.session() as s:
        rows = s.execute(select(OidcToken.id, OidcToken.account_id).where(
            OidcToken.access_hash.in_(hashes) | OidcToken.refresh_hash.in_(hashes))).all()
        if rows:
            s.execute(update(OidcToken).where(OidcToken.id.in_([r.id for r in rows]), OidcToken.revoked_at.is_(None))
                      .values(revoked_at=utcnow()))
    return {r.account_id for r in rows}


def bearer_principal(reg: Registry, value: str, login: str | None = None) -> Principal:
    """The citizen an access token with the ``mail`` scope stands for (IMAP and SMTP
    OAUTHBEARER / XOAUTH2); AuthenticationFailed if it is unknown, expired, revoked, without
    that scope, for a disabled account or an agency's mailbox, or for another address than
    ``login`` (when given). One indexed query: every mail login with a token pays it."""
    from ..identity.addresses import normalise_login

    row = None
    if value:
        with reg.store.reader() as s:
            row = s.execute(select(OidcToken.scope, OidcToken.access_expires_at, OidcToken.revoked_at, Account.id,
                                   Account.address, Account.state, Account.agency_id)
                            .join(Account, Account.id == OidcToken.account_id)
                            .where(OidcToken.access_hash == digest(value))).first()
    if row is None or row.revoked_at is not None or as_utc(row.access_expires_at) <= utcnow() \
            or "mail" not in row.scope.split() or row.state != "active" or row.agency_id:
        raise AuthenticationFailed("invalid token")
    if login and normalise_login(login) != row.address:
        raise AuthenticationFailed("invalid token")
    return Principal("citizen", row.address, row.id, row.address)


def ensure_provider(reg: Registry) -> list[str]:
    """What `init` and `db upgrade` do for the provider: a signing key if there is none, and the
    portal registered as its first client. Lines saying what was made."""
    from ..errors import ConfigError
    from ..identity.oidckeys import KEYFILE, SigningKeys

    made = []
    try:
        reg.keyring  # noqa: B018 (the portal's secret is derived from it)
    except ConfigError:  # a database without its data directory: `init` does this later
        return ["OpenID Connect: not set up here (no ID-number keys; `civicmail init` sets it up)"]
    keys_dir = reg.config.data_path(reg.config.keys.dir)
    if SigningKeys.ensure(keys_dir):
        made.append(f"OpenID Connect key {keys_dir / KEYFILE}")
    portal = ensure_portal_client(reg)
    if portal:
        made.append(portal)
    return made
