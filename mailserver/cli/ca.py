"""`civicmail ca`: the city's certificate authority (agencies' signing certificates, citizens'
personal certificates, revocation)."""
from __future__ import annotations

import click

from .app import App, echo_table, path_arg


@click.group("ca")
def command() -> None:
    """The city CA: make it, issue and revoke agencies' and citizens' certificates, print the root."""


@command.command("init")
@click.pass_obj
def init_cmd(app: App) -> None:
    """Make the city's root CA (in ca.root_dir) and the issuing CA under it (in ca.dir).

    The root's key signs nothing else: move ca.root_dir off the machine afterwards (the
    server never reads it). Refuses if a CA exists already."""
    from ..registry.ca import init_ca

    config = app.config
    root_dir, ca_dir = config.data_path(config.ca.root_dir), config.data_path(config.ca.dir)
    ca = init_ca(app.registry)
    click.echo(f"root certificate  {root_dir / 'root.pem'} (its key: {root_dir / 'root.key'}: move the folder "
               "off this machine)")
    click.echo(f"issuing CA        {ca_dir / 'issuing.pem'}")
    click.echo(f"CRL published at  {ca.crl_url}")
    click.echo("give citizens the root certificate (`civicmail ca root`) to install in their mail clients")


@command.group("issue")
def issue() -> None:
    """Issue a certificate to an agency or a citizen."""


@issue.command("agency")
@click.argument("agency_id")
@click.pass_obj
def issue_agency_cmd(app: App, agency_id: str) -> None:
    """Give an agency an S/MIME signing certificate (the pipeline signs its notices with it)."""
    from ..registry.ca import issue_agency

    issued = issue_agency(app.registry, agency_id)
    click.echo(f"agency {agency_id}: certificate {issued.serial} for {issued.address} ({issued.key_type}), "
               f"valid until {issued.cert.not_valid_after_utc:%Y-%m-%d}")


@issue.command("citizen")
@click.argument("address")
@click.option("--out", "out", required=True, type=path_arg, metavar="FILE.p12",
              help="where to write the PKCS#12 file (certificate, key and the city's chain)")
@click.pass_obj
def issue_citizen_cmd(app: App, address: str, out) -> None:
    """Give a citizen a personal certificate as a PKCS#12 file; its one-time password is printed
    alone on the last line.

    The key exists only in that file (the city keeps no copy). Hand the file and the password to
    the citizen by different channels."""
    import os

    from ..registry.ca import issue_citizen

    if out.exists():
        raise click.UsageError(f"{out} exists: choose a new file")
    issued, p12, password = issue_citizen(app.registry, address)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(p12)
    click.echo(f"citizen {issued.address}: certificate {issued.serial} ({issued.key_type}), valid until "
               f"{issued.cert.not_valid_after_utc:%Y-%m-%d}, written to {out}; its password:")
    click.echo(password)


@command.command("revoke")
@click.argument("serial")
@click.option("--reason", default="unspecified", show_default=True,
              type=click.Choice(["unspecified", "key_compromise", "affiliation_changed", "superseded",
                                 "cessation_of_operation"]),
              help="the RFC 5280 reason written in the CRL")
@click.pass_obj
def revoke_cmd(app: App, serial: str, reason: str) -> None:
    """Revoke a certificate by its serial number (`ca list`): it goes on the CRL at once."""
    from ..registry.ca import revoke

    view = revoke(app.registry, serial, reason)
    click.echo(f"revoked {view.serial} ({view.kind} {view.subject}): {reason}")


@command.command("root")
@click.pass_obj
def root_cmd(app: App) -> None:
    """Print the city's root certificate (PEM), for citizens to install in their mail clients."""
    from ..identity.ca import CityCA

    click.echo(CityCA.from_config(app.config).root_pem().decode("ascii"), nl=False)


@command.command("list")
@click.option("--subject", metavar="AGENCY|ADDRESS", help="only this agency's or mailbox's certificates")
@click.pass_obj
def list_cmd(app: App, subject: str | None) -> None:
    """List the certificates the city CA issued, with their state."""
    from ..registry.ca import list_certificates

    rows = [(c.serial, c.kind, c.subject, c.key_type, f"{c.not_after:%Y-%m-%d}",
             f"revoked {c.revoked_at:%Y-%m-%d} ({c.revocation_reason})" if c.revoked_at else "valid")
            for c in list_certificates(app.registry, subject)]
    echo_table(rows, ("serial", "kind", "subject", "key", "not after", "state"))
