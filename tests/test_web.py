"""Issue 15, item 1 (first part): the citizens' HTTP listener on aiohttp, on serve's loop: Apple's
profile beside Thunderbird's autoconfig, security headers, TLS from the mail certificate with
HSTS, bounded requests (body, header, time), and the connection gate still in front."""
from __future__ import annotations

import dataclasses
import http.client
import plistlib
import socket
import ssl
import time

from mailserver import config as config_mod
from mailserver.config import parse_hostport
from tests.abuse import assert_responsive, city, city_factory  # noqa: F401

HTTP = "citizen services HTTP"
DOMAIN = "hz.example.cn"


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            tls: bool = False) -> tuple[int, dict, bytes]:
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the self-signed certificate `init` made
        conn: http.client.HTTPConnection = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_apple_profile_configures_imap_and_submission_for_the_address(city):  # noqa: F811
    cfg = city.server.config
    status, headers, body = request(city.port(HTTP), "GET", f"/mobileconfig?emailaddress=Zhang.Wei%40{DOMAIN}")
    assert status == 200
    assert headers["Content-Type"] == "application/x-apple-aspen-config"
    assert headers["Content-Disposition"] == f'attachment; filename="{DOMAIN}.mobileconfig"'
    profile = plistlib.loads(body)
    assert profile["PayloadType"] == "Configuration" and profile["PayloadVersion"] == 1
    [account] = profile["PayloadContent"]
    assert account["PayloadType"] == "com.apple.mail.managed"
    assert account["EmailAccountType"] == "EmailTypeIMAP"
    address = f"zhang.wei@{DOMAIN}"
    assert account["EmailAddress"] == address
    assert account["IncomingMailServerUsername"] == account["OutgoingMailServerUsername"] == address
    host = cfg.client_host  # the host autoconfig names too: localhost in this loopback city
    assert host == "localhost"
    assert account["IncomingMailServerHostName"] == account["OutgoingMailServerHostName"] == host
    # implicit TLS first, as in autoconfig: the imaps and submissions listeners as configured
    assert account["IncomingMailServerPortNumber"] == parse_hostport(cfg.imaps.listen)[1]
    assert account["OutgoingMailServerPortNumber"] == parse_hostport(cfg.submissions.listen)[1]
    assert account["IncomingMailServerUseSSL"] is True and account["OutgoingMailServerUseSSL"] is True
    assert account["IncomingMailServerAuthentication"] == "EmailAuthPassword"
    # stable identifiers: installing it again replaces the account instead of adding another
    again = plistlib.loads(request(city.port(HTTP), "GET", f"/mobileconfig?emailaddress=zhang.wei%40{DOMAIN}")[2])
    assert again["PayloadUUID"] == profile["PayloadUUID"]
    other = plistlib.loads(request(city.port(HTTP), "GET", f"/mobileconfig?emailaddress=li.na%40{DOMAIN}")[2])
    assert other["PayloadUUID"] != profile["PayloadUUID"]

    # without an address it is the signed-in citizen's (the portal): signed out, the sign-in first
    status, headers, _ = request(city.port(HTTP), "GET", "/mobileconfig")
    assert status == 302 and headers["Location"].startswith("/signin")
    for bad in ("?emailaddress=", "?emailaddress=someone%40example.org", "?emailaddress=no-at-sign",
                "?emailaddress=%3Cscript%3E%40" + DOMAIN, "?emailaddress=" + "a" * 300 + "%40" + DOMAIN):
        assert request(city.port(HTTP), "GET", "/mobileconfig" + bad)[0] == 400, bad
    assert request(city.port(HTTP), "POST", f"/mobileconfig?emailaddress=li.na%40{DOMAIN}", b"")[0] == 405


def test_the_profile_follows_the_listeners_configured():
    """Production ports: 993 and 465 when implicit TLS is on; 143 and 587 (STARTTLS) without."""
    from mailserver.services.http import mobileconfig

    both = config_mod.build({}, ("imaps.listen=0.0.0.0:993", "submissions.listen=0.0.0.0:465",
                                 "imap.listen=0.0.0.0:143", "submission.listen=0.0.0.0:587"))
    account = plistlib.loads(mobileconfig(both, "a@civic.example"))["PayloadContent"][0]
    assert (account["IncomingMailServerPortNumber"], account["OutgoingMailServerPortNumber"]) == (993, 465)
    starttls = both.replace(imaps=dataclasses.replace(both.imaps, listen=""),
                            submissions=dataclasses.replace(both.submissions, listen=""))
    account = plistlib.loads(mobileconfig(starttls, "a@civic.example"))["PayloadContent"][0]
    assert (account["IncomingMailServerPortNumber"], account["OutgoingMailServerPortNumber"]) == (143, 587)
    assert account["IncomingMailServerHostName"] == "mail.civic.example"
    no_imap = starttls.replace(imap=dataclasses.replace(starttls.imap, listen=""))
    assert mobileconfig(no_imap, "a@civic.example") is None


def test_every_page_carries_the_security_headers(city):  # noqa: F811
    port = city.port(HTTP)
    for method, path in (("GET", "/mail/config-v1.1.xml"), ("GET", "/unsubscribe/policy/1/AAAAAAAAAAAA"),
                         ("GET", "/nothing/here"), ("POST", "/mail/config-v1.1.xml")):
        status, headers, body = request(port, method, path)
        assert status in (200, 404, 405), (path, status)
        csp = headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert "Strict-Transport-Security" not in headers  # plain HTTP: HSTS means nothing there
        if status == 404:
            assert "链接无效" in body.decode()  # our page, not the framework's
    assert request(port, "POST", "/mail/config-v1.1.xml")[1]["Allow"] == "GET,HEAD"


def test_tls_from_the_mail_certificate_with_hsts(city_factory):  # noqa: F811
    served = city_factory("http.tls=true")
    port = served.port(HTTP)
    status, headers, body = request(port, "GET", "/mail/config-v1.1.xml", tls=True)
    assert status == 200 and body.startswith(b"<?xml")
    assert headers["Strict-Transport-Security"] == "max-age=31536000"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with context.wrap_socket(sock) as tls:
            presented = ssl.DER_cert_to_PEM_cert(tls.getpeercert(binary_form=True))
    mail_cert = served.server.config.data_path(served.server.config.tls.cert).read_text()
    assert presented.strip() in mail_cert


def test_bodies_headers_and_slow_clients_are_bounded(city_factory):  # noqa: F811
    served = city_factory("http.request_timeout=1", "http.max_body_size=2048", "http.max_header_size=1024")
    port = served.port(HTTP)
    one_click = "/unsubscribe/policy/1/AAAAAAAAAAAA"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    # one-click reads at most 1 KiB; the listener refuses more than http.max_body_size
    assert request(port, "POST", one_click, b"List-Unsubscribe=One-Click&x=" + b"a" * 1100, form)[0] == 413
    assert request(port, "POST", one_click, b"x" * 4096, form)[0] == 413
    assert request(port, "GET", "/x", headers={"X-Long": "a" * 2000})[0] == 400
    assert request(port, "GET", "/mail/config-v1.1.xml")[0] == 200  # and the listener goes on

    # a client that never finishes its request head is closed after http.request_timeout,
    # and meanwhile nobody else waits
    gate = served.server.ctx.gate
    slow = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
    try:
        for sock in slow:
            sock.sendall(b"GET /mail/config-v1.1.xml HTTP/1.1\r\nHost: x\r\n")
        assert_responsive(served)
        assert request(port, "GET", "/mail/config-v1.1.xml")[0] == 200
        started = time.monotonic()
        for sock in slow:
            assert sock.recv(100) == b""  # closed by the server, nothing answered
        assert time.monotonic() - started < 5
    finally:
        for sock in slow:
            sock.close()
    deadline = time.monotonic() + 5
    while gate.open_by["http"]:
        assert time.monotonic() < deadline, "slow clients still hold places in the gate"
        time.sleep(0.05)


def test_a_request_that_does_not_parse_gets_our_400_and_no_traceback(city, caplog):  # noqa: F811
    """aiohttp's own answer quotes the client's bytes and logs a traceback per bad request."""
    port = city.port(HTTP)
    for garbage in (b"GARBAGE\x01<script> /x HTTP/1.1\r\n\r\n",
                    b"POST /unsubscribe/policy/1/AAAAAAAAAAAA HTTP/1.1\r\nHost: x\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\nzz<script>\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(garbage)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b"\r\n")[0].endswith(b" 400 Bad Request"), answer
        assert b"<script>" not in body and b"Bad request." in body
        assert b"\r\nServer: civicmail\r\n" in head + b"\r\n" and b"aiohttp" not in head
        assert b"X-Content-Type-Options: nosniff" in head
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    assert request(port, "GET", "/mail/config-v1.1.xml")[1]["Server"] == "civicmail"
