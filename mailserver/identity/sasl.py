"""The SASL messages, for IMAP AUTHENTICATE and SMTP AUTH alike: PLAIN (RFC 4616), and the
bearer-token ones, OAUTHBEARER (RFC 7628) and Google's XOAUTH2, that carry an access token of
civicmail's OpenID Connect provider."""
from __future__ import annotations

import json

from ..errors import AuthenticationFailed
from .addresses import normalise_login


class AuthorizationRefused(AuthenticationFailed):
    """The client asked to act as another identity than the one whose credentials it gave."""


def split_plain(message: bytes) -> tuple[str, str]:
    """(authcid, password) of ``[authzid] NUL authcid NUL passwd``; ValueError if it is not that
    (or not UTF-8). An authzid is allowed only when it names the authcid itself (in
    ``normalise_login`` form): acting for someone else is not offered, so any other is refused
    (AuthorizationRefused) before the password is checked."""
    parts = message.decode("utf-8").split("\x00")
    if len(parts) != 3:
        raise ValueError("PLAIN: expected authzid NUL authcid NUL passwd")
    authzid, authcid, password = parts
    if authzid and normalise_login(authzid) != normalise_login(authcid):
        raise AuthorizationRefused("authorization identity differs from the authentication identity")
    return authcid, password


#: the mechanisms that carry a bearer token, as advertised
BEARER_MECHANISMS = ("OAUTHBEARER", "XOAUTH2")


def split_bearer(mechanism: str, message: bytes) -> tuple[str | None, str]:
    """(the address the client names or None, the token) of an OAUTHBEARER or XOAUTH2 message;
    ValueError if it is not one.

    OAUTHBEARER (RFC 7628 3.1): ``n,a=user,`` ^A ``auth=Bearer TOKEN`` ^A (host=, port=) ^A^A;
    channel binding (``p=``) is not offered. XOAUTH2: ``user=USER`` ^A ``auth=Bearer TOKEN`` ^A^A."""
    text = message.decode("utf-8")
    if mechanism == "OAUTHBEARER":
        gs2, sep, rest = text.partition("\x01")
        parts = gs2.split(",")
        if not sep or len(parts) != 3 or parts[0] not in ("n", "y") or parts[2]:
            raise ValueError("OAUTHBEARER: expected a gs2 header")
        user = None
        if parts[1]:
            if not parts[1].startswith("a="):
                raise ValueError("OAUTHBEARER: authzid")
            user = parts[1][2:].replace("=2C", ",").replace("=3D", "=")
    else:
        rest = text
        user = None
    pairs = dict(p.split("=", 1) for p in rest.split("\x01") if "=" in p)
    if not rest.endswith("\x01\x01") and not (mechanism == "XOAUTH2" and rest.endswith("\x01")):
        raise ValueError(f"{mechanism}: expected ^A^A at the end")
    if mechanism == "XOAUTH2":
        user = pairs.get("user")
    auth = pairs.get("auth", "")
    if auth[:7].lower() != "bearer " or not auth[7:].strip():
        raise ValueError(f"{mechanism}: expected auth=Bearer <token>")
    return user or None, auth[7:].strip()


def bearer_error(issuer: str) -> bytes:
    """The failure challenge of RFC 7628 3.2.2 (XOAUTH2 clients read the same JSON): the client
    answers it with ^A and then hears the failure."""
    return json.dumps({"status": "invalid_token", "scope": "mail",
                       "openid-configuration": issuer + "/.well-known/openid-configuration"}).encode()
