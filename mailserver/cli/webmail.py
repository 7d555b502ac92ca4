"""`civicmail webmail`: Roundcube as the citizens' webmail, signed in through the city's provider."""
from __future__ import annotations

from pathlib import Path

import click

from .app import App


@click.group("webmail")
def command() -> None:
    """The webmail (Roundcube): its configuration for this city, single sign-on included."""


@command.command("config")
@click.option("--url", metavar="URL", help="Roundcube's public URL (default: oidc.webmail_url, else "
                                           "http.base_url + /webmail/)")
@click.option("--plugins-dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="also install the civicmail_identity plugin there (Debian: /var/lib/roundcube/plugins)")
@click.pass_obj
def config_cmd(app: App, url: str | None, plugins_dir: Path | None) -> None:
    """Print Roundcube's configuration for this city (a config.inc.php fragment), registering its OpenID Connect client.

    IMAP and submission as this city serves them (implicit TLS first), and Roundcube's OAuth2
    login against civicmail's provider: client "webmail", confidential, redirect URI
    URL/index.php/login/oauth, registered or brought up to date here (run it again at will: the
    secret is derived from the city's keys and stays the same). Roundcube then logs in to IMAP
    and SMTP with XOAUTH2 and the citizen's access token. Append the output to Roundcube's
    config.inc.php; what was registered or installed goes to stderr."""
    from ..registry.oidc import WEBMAIL_ID, ensure_webmail_client, webmail_redirect_uri
    from ..web.webmail import install_plugin, render_php, roundcube_settings

    webmail_url = url or app.config.webmail_url
    secret, done = ensure_webmail_client(app.registry, webmail_url)
    click.echo(done or f"OpenID Connect client {WEBMAIL_ID} already registered "
                       f"({webmail_redirect_uri(webmail_url)})", err=True)
    if plugins_dir is not None:
        target, changed = install_plugin(plugins_dir)
        click.echo(f"plugin {'installed in' if changed else 'already in'} {target}", err=True)
    header = [f"Roundcube for {app.config.city.name} ({webmail_url}), made by `civicmail webmail config`.",
              f"Single sign-on: civicmail's OpenID Connect provider {app.config.public_url}."]
    click.echo(render_php(roundcube_settings(app.config, webmail_url, secret), header), nl=False)
