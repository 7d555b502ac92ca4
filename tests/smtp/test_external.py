"""Certificate login on SMTPS (issue 14 section 3): the implicit-TLS submission listener asks for
an optional city certificate; AUTH EXTERNAL with one the city issued logs in as its mailbox and
the citizen sends as that mailbox (smtplib over real sockets). Without a certificate EXTERNAL is
neither offered nor accepted, and the session goes on."""
from __future__ import annotations

import datetime as dt
import smtplib

import pytest
from mailserver.identity import idnumber
from mailserver.registry.ca import issue_citizen
from mailserver.registry.citizens import add_citizen
from tests.abuse import ALL_PORTS_ZERO, PASSWORD
from tests.cahelpers import client_tls, make_ca, open_p12
from tests.serverkit import LoopServer, prepared_city


@pytest.fixture
def city(tmp_path):
    def populate(reg):
        config = reg.config
        make_ca(config)
        addresses = [add_citizen(reg, name, idnumber.make("330106", dt.date(1982, 3, n + 1), 500 + n),
                                 password=PASSWORD).address for n, name in enumerate(("孙丽", "周杰"))]
        _issued, p12, password = issue_citizen(reg, addresses[0])
        return addresses, open_p12(p12, password, tmp_path / "citizen")[0]

    config, (addresses, pem) = prepared_city(tmp_path / "data", ALL_PORTS_ZERO, populate)
    server = LoopServer(config).start()
    try:
        yield server, addresses, pem
    finally:
        server.stop()


def _smtps(port: int, pem=None) -> smtplib.SMTP_SSL:
    return smtplib.SMTP_SSL("127.0.0.1", port, context=client_tls(pem), timeout=30)


def test_auth_external_on_smtps_sends_as_the_certificates_mailbox(city):
    server, addresses, pem = city
    me, other = addresses
    with _smtps(server.port("submissions"), pem) as smtp:
        smtp.ehlo()
        assert "EXTERNAL" in smtp.esmtp_features["auth"].split()
        code, text = smtp.docmd("AUTH", "EXTERNAL =")
        assert code == 235, text
        refused = smtp.sendmail(me, [other], f"From: {me}\r\nTo: {other}\r\nSubject: cert\r\n\r\nhello\r\n".encode())
        assert refused == {}
    assert any(b"Subject: cert" in raw for raw in server.inbox(other))


def test_no_certificate_no_external(city):
    server, addresses, pem = city
    with _smtps(server.port("submissions")) as smtp:
        smtp.ehlo()
        assert "EXTERNAL" not in smtp.esmtp_features["auth"].split()
        code, _ = smtp.docmd("AUTH", "EXTERNAL =")
        assert code == 535
        smtp.login(addresses[0], PASSWORD)  # the session went on
    with _smtps(server.port("submissions"), pem) as smtp:  # another mailbox as authorization identity
        smtp.ehlo()
        import base64

        code, _ = smtp.docmd("AUTH", "EXTERNAL " + base64.b64encode(addresses[1].encode()).decode())
        assert code == 535
