"""The SASL PLAIN message (RFC 4616), for IMAP AUTHENTICATE and SMTP AUTH alike."""
from __future__ import annotations

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
