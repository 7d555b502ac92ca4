"""A notice as a citizen's mail client shows it: read over IMAP after `civicmail drop run`."""
from __future__ import annotations

import csv
import imaplib
import re

from click.testing import CliRunner

from drophelpers import CATALOG
from imap_helpers import imap_server
from mailcheck import parse
from mailserver.cli import cli


def test_signature_separator_and_caption_as_clients_need_them(sqlite_registry, sqlite_city):
    config = sqlite_registry.config
    sample = CATALOG["licence-renewal"].folder / "sample.csv"
    run = CliRunner().invoke(cli, ["-c", str(config.source), "drop", "run", str(sample), "--agency", "traffic-police",
                                   "--notice-type", "licence-renewal"], catch_exceptions=False)
    assert run.exit_code == 0 and "delivered  3" in run.output
    with open(sample, encoding="utf-8", newline="") as fh:
        address = sqlite_city[next(csv.DictReader(fh))["id_number"]]
    with imap_server(config) as port:
        c = imaplib.IMAP4("127.0.0.1", port, timeout=30)
        try:
            c.login(address, "citizen-pw-1")
            c.select("INBOX", readonly=True)
            typ, data = c.fetch("1", "(BODY.PEEK[])")
            assert typ == "OK"
        finally:
            c.logout()
    notice = parse(data[0][1])
    # the text part's signature separator is "-- " (RFC 3676 4.3): clients fold the footer after it
    lines = notice.get_body(("plain",)).get_content().splitlines()
    assert lines.count("-- ") == 1 and "--" not in lines
    assert lines[lines.index("-- ") + 1].startswith("本邮件由")
    # the facts table's caption says it goes on top, inline (webmail strips <style>): a skin with
    # `caption { caption-side: bottom }` (Roundcube's Elastic) would otherwise put it under the table
    page = notice.get_body(("html",)).get_content()
    [caption] = re.findall(r"<caption\b[^>]*>", page)
    style = re.search(r'style="([^"]*)"', caption).group(1)
    assert "caption-side:top" in style.replace(" ", "").split(";")
