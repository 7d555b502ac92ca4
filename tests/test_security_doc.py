"""docs/security.md is the one place where an operator sees every bound (issue 11, "Done means"):
every configuration key is in it with its default, except the keys that bound nothing (where
things are, what they are called, on/off switches of features), listed here with why."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from mailserver.config import Config

DOC = Path(__file__).resolve().parent.parent / "docs" / "security.md"

#: keys that bound no cost and guard nothing: names, places, credentials, feature choices
NOT_BOUNDS = {
    "server.hostname", "server.data_dir", "city.name", "city.domain", "city.extra_domains",
    "store.url", "store.listen_url", "store.mode", "lmtp.target", "lmtp.starttls", "lmtp.cafile",
    "blobs.backend", "blobs.dir", "blobs.sync", "blobs.bucket", "blobs.endpoint", "blobs.region", "blobs.prefix",
    "blobs.access_key", "blobs.secret_key_env", "keys.dir", "tls.cert", "tls.key", "smtp.listen",
    "submission.listen", "submissions.listen", "imap.listen", "imaps.listen", "dkim.selector", "dkim.key",
    "outbound.relay", "outbound.relay_username", "outbound.relay_password", "outbound.relay_starttls",
    "delivery.templates_dir", "delivery.spool_dir", "http.listen", "http.base_url", "http.tls", "http.metrics",
    "http.metrics_listen", "oidc.enabled", "oidc.portal_redirect_path", "oidc.webmail_url", "ca.crl_url",
    "ca.agency_key_type", "ca.citizen_key_type", "ca.sign_notices", "ca.sign_submissions", "check.nameservers",
    "server.event_loop",
}


def config_keys() -> list[str]:
    return [f"{section.name}.{key.name}" for section in dataclasses.fields(Config) if section.name != "source"
            for key in dataclasses.fields(section.default_factory())]


def documented(doc: str, key: str) -> bool:
    """``section.key`` in backquotes, or in a row naming several keys of one section
    (``passwords.memory_cost_kib``, ``time_cost``)."""
    section, name = key.split(".")
    if f"`{key}`" in doc:
        return True
    return any(f"`{name}`" in row for row in doc.splitlines() if row.startswith(f"| `{section}."))


def test_every_bound_of_the_configuration_is_in_docs_security():
    doc = DOC.read_text(encoding="utf-8")
    keys = config_keys()
    assert len(keys) > 100 and NOT_BOUNDS <= set(keys), sorted(NOT_BOUNDS - set(keys))
    missing = [k for k in keys if k not in NOT_BOUNDS and not documented(doc, k)]
    assert missing == [], f"docs/security.md does not list {missing}"


def test_every_row_of_a_key_gives_a_default_and_a_reason():
    keys = set(config_keys())
    rows = [r for r in DOC.read_text(encoding="utf-8").splitlines()
            if (m := re.match(r"\| `([a-z]+\.[a-z_]+)`", r)) and m.group(1) in keys]
    assert len(rows) > 50
    for row in rows:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]
        assert len(cells) == 3 and all(cells), row
