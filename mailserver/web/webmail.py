"""The webmail (issue 15 item 3): Roundcube, configured against this city's IMAP and submission
listeners, signing citizens in through civicmail's OpenID Connect provider (client ``webmail``),
then logging in to IMAP and SMTP with XOAUTH2 and the access token it got: no second password.

``roundcube_settings`` is what `civicmail webmail config` prints as a ``config.inc.php``
fragment; ``install_plugin`` copies ``civicmail_identity`` (roundcube/civicmail_identity/), the
Roundcube plugin that names a citizen's identity with the registered real name from the ID
token's ``name`` claim (Roundcube 1.6 reads only the address from it; its own
``new_user_identity`` plugin looks names up in LDAP, which a city running civicmail has not got).
Blocking, and no aiohttp: the CLI imports it.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

#: the plugin's folder, as Roundcube wants it (plugins/<name>/<name>.php)
PLUGIN = "civicmail_identity"
PLUGIN_DIR = Path(__file__).parent / "roundcube" / PLUGIN
#: what Roundcube asks the provider for: sign-in (openid), the address it logs in to IMAP as
#: (email), the real name of the identity (profile), and a token IMAP and SMTP accept (mail)
SCOPE = "openid email profile mail"


@dataclass(frozen=True)
class Php:
    """A PHP expression written as is (not a quoted value)."""

    code: str


@dataclass(frozen=True)
class Setting:
    key: str
    value: object
    comment: str = ""


def _endpoint(config, protocol: str) -> tuple[str, bool] | None:
    """``host:port`` of the listener Roundcube should use for ``protocol`` (implicit TLS
    first, as client_endpoints orders them), and whether it is implicit TLS."""
    for proto, _service, port, implicit in config.client_endpoints():
        if proto == protocol:
            return f"{config.client_host}:{port}", implicit
    return None


def _self_signed(cert_path: Path) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.issuer == cert.subject


def roundcube_settings(config, webmail_url: str, client_secret: str) -> list[Setting]:
    """Roundcube's settings for this city: mail over TLS as the city serves it, OAuth2 against
    the provider, the identity plugin, one identity per user with a fixed address."""
    issuer = config.public_url
    settings: list[Setting] = []
    imap, smtp = _endpoint(config, "imap"), _endpoint(config, "smtp")
    if imap:
        where, implicit = imap
        settings.append(Setting("imap_host", ("ssl://" if implicit else "tls://") + where,
                                "IMAP " + ("with implicit TLS (IMAPS)" if implicit else "with STARTTLS")))
    if smtp:
        where, implicit = smtp
        settings.append(Setting("smtp_host", ("ssl://" if implicit else "tls://") + where,
                                "submission " + ("with implicit TLS (SMTPS)" if implicit else "with STARTTLS")))
    settings += [
        Setting("smtp_user", "%u", "the signed-in address; the OAuth hook sends the token with XOAUTH2"),
        Setting("smtp_pass", "%p"),
    ]
    cert = config.data_path(config.tls.cert)
    if _self_signed(cert):
        tls = {"ssl": {"verify_peer": True, "verify_peer_name": True, "cafile": str(cert),
                       "peer_name": config.client_host}}
        settings += [
            Setting("imap_conn_options", tls, "the city's certificate is self-signed: trust exactly it (Roundcube "
                                              "must be able to read the file; copy it if the data directory is "
                                              "private)"),
            Setting("smtp_conn_options", tls),
        ]
    settings += [
        Setting("mail_domain", config.city.domain),
        Setting("identities_level", 3, "one identity per citizen, its address fixed (submission accepts no "
                                       "other From:)"),
        Setting("oauth_provider", "generic", "sign-in through the city's OpenID Connect provider"),
        Setting("oauth_provider_name", f"{config.city.name}市民邮箱账号"),
        Setting("oauth_client_id", "webmail"),
        Setting("oauth_client_secret", client_secret, "derived from the city's keys: the same each time this "
                                                      "command runs"),
        Setting("oauth_auth_uri", issuer + "/oidc/authorize"),
        Setting("oauth_token_uri", issuer + "/oidc/token"),
        Setting("oauth_identity_uri", issuer + "/oidc/userinfo"),
        Setting("oauth_scope", SCOPE),
        Setting("oauth_identity_fields", ["email"], "the IMAP login is the ID token's email claim"),
        Setting("oauth_login_redirect", True, "a visitor not signed in goes straight to the city's sign-in "
                                              "(the portal's link opens the mailbox)"),
    ]
    if issuer.startswith("https:") and config.http.tls and _self_signed(cert):
        settings.append(Setting("oauth_verify_peer", str(cert), "the provider's self-signed certificate"))
    settings.append(Setting("plugins", Php(f"array_merge($config['plugins'] ?? [], [{php_value(PLUGIN)}])"),
                            "the citizen's registered real name on the identity (`--plugins-dir` installs it)"))
    return settings


def php_value(value) -> str:
    """``value`` as a PHP literal (strings single-quoted, lists and dicts as short arrays)."""
    if isinstance(value, Php):
        return value.code
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(php_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "[" + ", ".join(f"{php_value(k)} => {php_value(v)}" for k, v in value.items()) + "]"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def render_php(settings: list[Setting], header: list[str]) -> str:
    """A config.inc.php fragment: ``$config[...] = ...;`` lines under ``header`` comments."""
    lines = [f"// {line}" for line in header]
    for setting in settings:
        if setting.comment:
            lines.append(f"// {setting.comment}")
        lines.append(f"$config[{php_value(setting.key)}] = {php_value(setting.value)};")
    return "\n".join(lines) + "\n"


def install_plugin(plugins_dir: Path) -> tuple[Path, bool]:
    """Copy the plugin into Roundcube's plugins folder: (its folder there, whether it changed)."""
    target = plugins_dir / PLUGIN
    changed = not target.is_dir() or any(
        not (target / f.name).is_file() or (target / f.name).read_bytes() != f.read_bytes()
        for f in PLUGIN_DIR.iterdir())
    if changed:
        target.mkdir(parents=True, exist_ok=True)
        for f in PLUGIN_DIR.iterdir():
            shutil.copyfile(f, target / f.name)
    return target, changed

