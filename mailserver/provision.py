"""Setting up a data directory: the configuration file, the database, ID-number keys, the TLS
certificate and DKIM key, the DNS records to publish, and the demo city of ``init --demo``.

``civicmail init`` is a thin caller of this module; benchmarks and tests set up their data
directories with it too, without importing the CLI.
"""
from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

from . import datadir
from .config import REPO_ROOT, Config
from .errors import Conflict
from .identity.certs import dkim_dns_record, make_dkim_key, make_self_signed
from .identity.keys import IdKeyring
from .registry import Registry
from .registry.agencies import add_agency, grant, list_agencies, sync_notice_types
from .registry.citizens import add_citizen
from .registry.oidc import ensure_provider
from .store import migrate, open_store

TEMPLATE = REPO_ROOT / "config" / "civicmail.toml"

#: the sample drops `init --demo` runs, so that every demo INBOX holds notices of three or four
#: types from all three agencies; the README's walkthrough runs one more (violation-points)
DEMO_DROPS = ("licence-renewal", "vehicle-inspection", "overdue-fine", "medical-statement", "pension-statement",
              "provident-fund-statement")


def write_config(path: Path, domain: str, hostname: str, store_url: str = "") -> None:
    """The commented default configuration, with this city's domain and host name, and the store
    URL given to ``init`` (empty: the SQLite file in the data directory)."""
    text = TEMPLATE.read_text(encoding="utf-8")
    for key, value in (("domain", domain), ("hostname", hostname), ("url", store_url)):
        # json.dumps writes a TOML basic string (quotes, backslashes and non-ASCII escaped)
        text = re.sub(rf'(?m)^{key} = ".*"$', lambda _: f"{key} = {json.dumps(value)}", text, count=1)
    path.write_text(text, encoding="utf-8")


def sync_catalog(registry: Registry) -> int:
    from delivery.catalog import load_catalog

    return sync_notice_types(registry, [d.as_row() for d in load_catalog(registry.config.templates_dir).values()])


def prepare(config: Config) -> list[str]:
    """Everything but the demo; idempotent. Returns lines describing what was made."""
    made = []
    data = config.data_dir
    data.mkdir(mode=datadir.DIR_MODE, parents=True, exist_ok=True)
    datadir.create_database_file(config)
    keys_dir = config.data_path(config.keys.dir)
    if not (keys_dir / "idnumber.json").exists():
        IdKeyring.generate().save(keys_dir)
        made.append(f"ID-number keys     {keys_dir} (back this folder up separately)")
    store = open_store(config)
    try:
        before = migrate.current_revision(store)
        migrate.upgrade(store)
        made.append(f"database           {store.url.split('///')[-1] if store.dialect == 'sqlite' else store.dialect}"
                    f" at revision {migrate.current_revision(store)}" + ("" if before else " (new)"))
        registry = Registry(config, store)
        made.append(f"notice types       {sync_catalog(registry)} loaded from {config.templates_dir}")
        made.extend(ensure_provider(registry))
    finally:
        store.dispose()
    cert, key = config.data_path(config.tls.cert), config.data_path(config.tls.key)
    if not cert.exists() or not key.exists():
        make_self_signed(cert, key, config.server.hostname)
        made.append(f"TLS certificate    {cert} (self-signed for {config.server.hostname}, localhost)")
    dkim = config.data_path(config.dkim.key)
    if not dkim.exists():
        make_dkim_key(dkim)
        made.append(f"DKIM key           {dkim} (selector {config.dkim.selector})")
    datadir.secure(config)
    return made


def dns_records(config: Config) -> list[str]:
    domain, host = config.city.domain, config.server.hostname
    dkim = dkim_dns_record(config.data_path(config.dkim.key))
    return [
        f"{domain}.  MX   10 {host}.",
        f'{domain}.  TXT  "v=spf1 mx -all"',
        f'{config.dkim.selector}._domainkey.{domain}.  TXT  "{dkim}"',
        f'_dmarc.{domain}.  TXT  "v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"',
    ] + [  # RFC 6186: how mail clients find the servers from an address alone
        f"_{service}._tcp.{domain}.  SRV  0 1 {port} {config.client_host}."
        for _, service, port, _ in config.client_endpoints()
    ] + ([f"autoconfig.{domain}.  CNAME  {host}.   ; Thunderbird autoconfig, served on http.listen"]
         if config.http.listen else [])


def demo_password() -> str:
    return "demo-" + secrets.token_urlsafe(8)


def make_demo(registry: Registry) -> list[tuple[str, str, str]]:
    """The three agencies of MISSION.md with their grants, and the people of the sample drops
    as citizens. Returns (who, login, password) for what was made now; what exists already is
    left alone."""
    from delivery.catalog import load_agencies, load_catalog, sample_people

    from .services.applications import setup_desk

    catalog = load_catalog(registry.config.templates_dir)
    existing = {a.id for a in list_agencies(registry)}
    made = []
    for agency_id, info in load_agencies(registry.config.templates_dir).items():
        if agency_id in existing:
            continue
        password = demo_password()
        add_agency(registry, agency_id, info["name"], [info["sender"]], password, actor="init --demo")
        grant(registry, agency_id, sorted(d.id for d in catalog.values() if d.agency == agency_id), actor="init --demo")
        if any(d.agency == agency_id and d.kind == "application" for d in catalog.values()):
            setup_desk(registry, agency_id)  # the address its application notices name
        made.append((info["name"], agency_id, password))
    for n, (number, name) in enumerate(sample_people(catalog).items(), start=1):
        password = demo_password()
        try:
            citizen = add_citizen(registry, name, number, f"138{n:08d}", password=password, actor="init --demo")
        except Conflict:
            continue
        made.append((name, citizen.address, password))
    return made


#: the demo city's appraisal of its departments (the source document's "网上评议"), answered by mail
#: (a reply to its ballot) or on the portal
DEMO_APPRAISAL = {"id": "demo-appraisal", "title": "2026年度市直部门满意度评议", "kind": "appraisal",
                  "anonymous": True, "address": "appraisal-2026",
                  "departments": ["市公安局交通警察支队", "市人力资源和社会保障局", "市住房公积金管理中心"]}


def make_demo_appraisal(registry: Registry) -> str | None:
    """The demo appraisal, its ballot mailed to every citizen; a line saying so, or None if it
    exists already."""
    from .services.surveys import RATINGS, Question, add_survey, send_ballots

    definition = dict(DEMO_APPRAISAL, questions=[Question(d, RATINGS) for d in DEMO_APPRAISAL["departments"]])
    try:
        address = add_survey(registry, definition)
    except Conflict:
        return None
    sent = send_ballots(registry, definition["id"])
    return f"appraisal          {definition['title']} ({address}): ballot mailed to {sent} citizens"


def make_demo_ca(registry: Registry) -> list[str]:
    """The city CA (as `ca init`) and a signing certificate for each demo agency (as `ca issue
    agency`), so that the demo drops' notices are S/MIME-signed. Returns a line for each thing
    made now; what exists already is kept (a second `init --demo` makes nothing)."""
    from delivery.catalog import load_agencies

    from .identity.ca import ROOT_CERT, AgencySigner, CityCA
    from .registry.ca import init_ca, issue_agency

    config = registry.config
    ca_dir = config.data_path(config.ca.dir)
    lines = []
    if not CityCA.exists(ca_dir):
        ca = init_ca(registry, actor="init --demo")
        lines.append(f"city CA made: issuing CA in {ca_dir}, its root's key in {config.data_path(config.ca.root_dir)} "
                     f"(CRL at {ca.crl_url})")
    for agency_id in load_agencies(config.templates_dir):
        if AgencySigner.load(ca_dir, agency_id) is None:
            issued = issue_agency(registry, agency_id, actor="init --demo")
            lines.append(f"agency {agency_id}: signing certificate {issued.serial} for {issued.address}")
    if lines:
        lines.append(f"root certificate {ca_dir / ROOT_CERT} (trust it in a mail client to see the notices "
                     "as signed; `civicmail ca root` prints it)")
    return lines


def run_demo_drops(registry: Registry) -> list[str]:
    """Run the DEMO_DROPS sample drops (those not run yet). Returns a line for each drop run."""
    from delivery.catalog import load_catalog
    from delivery.read import AlreadyRun
    from delivery.runner import run_drop

    catalog = load_catalog(registry.config.templates_dir)
    lines = []
    for notice_type in DEMO_DROPS:
        definition = catalog[notice_type]
        try:
            result = run_drop(registry, definition.folder / "sample.csv", definition.agency, notice_type,
                              source="demo")
        except AlreadyRun:
            continue
        delivered = result.summary.counts.get("delivered", 0)
        lines.append(f"drop {result.drop_id:<3} {notice_type:<26} {definition.agency:<16} {delivered} notices delivered")
    return lines


def make_spool_folders(registry: Registry) -> list[Path]:
    """The spool folder of every grant (an agency's system writes its drops there). Returns those made now."""
    from delivery.spool import make_folders

    return make_folders(registry.config, [(a.id, nt) for a in list_agencies(registry) for nt in a.grants])
