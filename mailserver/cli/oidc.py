"""`civicmail oidc`: the OpenID Connect provider's websites (clients) and signing keys."""
from __future__ import annotations

import click

from .app import App, echo_table


@click.group("oidc")
def command() -> None:
    """The OpenID Connect provider: register city websites, rotate the signing keys."""


@command.group("client")
def client() -> None:
    """City websites that sign citizens in (relying parties)."""


@client.command("add")
@click.argument("client_id")
@click.option("--name", required=True, help="the website's name, as the consent page shows it")
@click.option("--redirect-uri", "redirect_uris", multiple=True, required=True, metavar="URI",
              help="where citizens are sent back (exact; https, or http on loopback); repeatable")
@click.option("--public", is_flag=True,
              help="a native or browser app that cannot keep a secret: no secret, PKCE (S256) required")
@click.option("--claims", "claims", multiple=True, metavar="CLAIM",
              help="an extra claim it may ask for with the citizen's consent (id_number_masked); repeatable")
@click.pass_obj
def add(app: App, client_id: str, name: str, redirect_uris: tuple[str, ...], public: bool,
        claims: tuple[str, ...]) -> None:
    """Register a website; print its client secret alone on the last line (nothing for --public)."""
    from ..registry.oidc import add_client

    claim_list = [c for value in claims for c in value.replace(",", " ").split()]
    secret = add_client(app.registry, client_id, name, list(redirect_uris), public=public, claims=claim_list)
    issuer = app.config.public_url
    click.echo(f"client {client_id} registered ({'public, PKCE S256 required' if public else 'confidential'})")
    click.echo(f"issuer: {issuer} (discovery: {issuer}/.well-known/openid-configuration)")
    if secret:
        click.echo("client secret (shown once, kept only hashed):")
        click.echo(secret)


@client.command("list")
@click.pass_obj
def list_(app: App) -> None:
    """The registered websites: id, name, kind, redirect URIs, extra claims."""
    from ..registry.oidc import list_clients

    echo_table([(c.id, c.name, "public" if c.public else ("built in" if c.builtin else "confidential"),
                 " ".join(c.redirect_uris), " ".join(c.claims) or "-") for c in list_clients(app.registry)],
               ("id", "name", "kind", "redirect URIs", "claims"))


@client.command("remove")
@click.argument("client_id")
@click.pass_obj
def remove(app: App, client_id: str) -> None:
    """Unregister a website; its tokens stop working at once."""
    from ..registry.oidc import remove_client

    remove_client(app.registry, client_id)
    click.echo(f"client {client_id} removed")


@command.command("rotate-keys")
@click.pass_obj
def rotate_keys(app: App) -> None:
    """Make a new ID-token signing key current; the previous one stays published until its tokens expire.

    `serve` notices the new key file by itself. Keys retired longer than oidc.id_token_ttl ago
    are dropped."""
    from ..identity.keys import key_file_lock
    from ..identity.oidckeys import SigningKeys

    keys_dir = app.config.data_path(app.config.keys.dir)
    with key_file_lock(keys_dir):
        ring = SigningKeys.load(keys_dir).rotated(app.config.oidc.id_token_ttl)
        ring.save(keys_dir)
    click.echo(f"signing key {ring.current.kid} is current; {len(ring.keys) - 1} earlier key(s) still published")


@command.command("totp")
@click.argument("address")
@click.option("--disable", is_flag=True, help="remove the account's second factor")
@click.pass_obj
def totp_cmd(app: App, address: str, disable: bool) -> None:
    """Give an account a TOTP second factor for the web sign-in; print its otpauth URI (for a QR code) on the last line.

    A new secret replaces any earlier one. The citizen adds the URI (or the secret) to an
    authenticator app; from then on the web sign-in asks for its 6-digit code after the password."""
    from ..registry import totp

    if disable:
        click.echo(f"second factor of {address} " + ("removed" if totp.disable(app.registry, address) else
                                                     "was not set"))
        return
    secret, uri = totp.enable(app.registry, address)
    click.echo(f"TOTP second factor set for {address} (secret {secret}); authenticator URI:")
    click.echo(uri)


@command.command("passkeys")
@click.argument("address")
@click.option("--remove-all", is_flag=True, help="remove every passkey of the account (a lost device)")
@click.pass_obj
def passkeys_cmd(app: App, address: str, remove_all: bool) -> None:
    """List an account's passkeys (the web sign-in's second factor), or remove them all.

    Citizens add and remove passkeys on the portal's account page; this is for one who lost the
    device and so cannot sign in to remove it (the password, and a TOTP code if set, then sign
    in again)."""
    from ..registry import passkeys

    if remove_all:
        click.echo(f"{passkeys.remove_all(app.registry, address)} passkey(s) of {address} removed")
        return
    found = passkeys.account_passkeys(app.registry, address)
    if not found:
        click.echo(f"{address} has no passkeys")
        return
    echo_table([(key.name, f"{key.created_at:%Y-%m-%d}",
                 f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never",
                 "synced" if key.synced else "this device") for key in found],
               ("name", "added", "last used", "kind"))
