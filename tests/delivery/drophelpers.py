"""Helpers for the pipeline tests: a small city: the three agencies with their grants, the sample drops' citizens."""
from __future__ import annotations

import csv
from pathlib import Path

from delivery.catalog import load_agencies, load_catalog, sample_people
from mailserver.config import REPO_ROOT
from mailserver.registry import Registry
from mailserver.registry.agencies import add_agency, grant
from mailserver.registry.citizens import add_citizen

TEMPLATES = REPO_ROOT / "templates"
CATALOG = load_catalog(TEMPLATES)


def make_city(registry: Registry) -> dict[str, str]:
    """Register agencies and the sample citizens; returns id_number -> mailbox address."""
    for agency_id, info in load_agencies(TEMPLATES).items():
        add_agency(registry, agency_id, info["name"], [info["sender"]], "agency-password-1")
        grant(registry, agency_id, sorted(d.id for d in CATALOG.values() if d.agency == agency_id))
    return {number: add_citizen(registry, name, number, password="citizen-pw-1").address
            for number, name in sample_people(CATALOG).items()}


def write_csv(path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def mail_pension_drop(config, host: str, port: int) -> None:
    """The social security bureau mails its pension-statement sample to drops@ over submission, as
    an agency clerk would (loopback, development: no TLS needed)."""
    import smtplib
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = msg["Sender"] = f"social-security@{config.city.domain}"
    msg["To"] = f"drops@{config.city.domain}"
    msg["Subject"] = "十一月 pension-statement"
    msg.set_content("见附件")
    msg.add_attachment((CATALOG["pension-statement"].folder / "sample.csv").read_bytes(), maintype="text",
                       subtype="csv", filename="pension.csv")
    with smtplib.SMTP(host, port, timeout=30) as smtp:
        smtp.login("social-security", "agency-password-1")
        smtp.send_message(msg)
