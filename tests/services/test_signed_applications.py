"""Signed applications (issue 14 section 3): an application the citizen signed (S/MIME, made here
by `openssl smime -sign` as a mail client would) with the personal certificate the city CA issued
reaches the agency marked "verified" by the server; a signature that does not hold, one by another
mailbox's certificate, and a forged header on unsigned mail are never marked verified."""
from __future__ import annotations

import base64
import email
import email.policy
import shutil
import subprocess

import pytest
from mailserver.registry.ca import issue_citizen, revoke
from mailserver.services.applications import setup_desk

from tests.cahelpers import make_ca, open_p12

from .conftest import DOMAIN

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed (apt-get install openssl)")
AGENCY_MAILBOX = f"traffic-police@{DOMAIN}"
HEADER = "X-Civicmail-Signature"


def _signing_files(reg, address: str, folder):
    _issued, p12, password = issue_citizen(reg, address)
    return folder, open_p12(p12, password, folder)[1]


def signed_application(files, sender: str, to: str, msgid: str, text: str) -> bytes:
    """What a mail client sends: the headers over openssl's multipart/signed of a text part."""
    entity = ("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
              + base64.encodebytes(text.encode("utf-8")).decode("ascii").replace("\n", "\r\n"))
    (files / "entity.txt").write_bytes(entity.encode("ascii"))
    done = subprocess.run([OPENSSL, "smime", "-sign", "-md", "sha256", "-signer", str(files / "cert.pem"),
                           "-inkey", str(files / "key.pem"), "-certfile", str(files / "chain.pem"),
                           "-in", str(files / "entity.txt")], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    signed = done.stdout.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    head = (f"From: {sender}\r\nTo: {to}\r\nSubject: application\r\nMessage-ID: {msgid}\r\n"
            f"{HEADER}: verified; signer=forged@example\r\n").encode("ascii")
    return head + signed


def _agency_copies(server) -> list:
    c = server.imap(AGENCY_MAILBOX)
    try:
        c.select("INBOX", readonly=True)
        typ, data = c.fetch("1:*", "(BODY.PEEK[])")
        assert typ == "OK"
        return [email.message_from_bytes(p[1], policy=email.policy.default) for p in data if isinstance(p, tuple)]
    finally:
        c.logout()


def test_signed_application_is_marked_verified_for_the_agency(server, tmp_path):
    reg = server.registry
    desk = setup_desk(reg, "traffic-police")
    server.settle()
    make_ca(reg.config)
    alice, bob, carol = server.citizens
    alice_files, _ = _signing_files(reg, alice, tmp_path / "alice")
    carol_files, carol_cert = _signing_files(reg, carol, tmp_path / "carol")

    good = signed_application(alice_files, alice, desk, "<signed-1@client.test>", "变更地址：文三路 100 号")
    server.send(alice, alice, desk, good)
    # one byte of the signed text changed after signing
    bad = signed_application(alice_files, alice, desk, "<signed-2@client.test>", "变更地址：文三路 200 号")
    at = bad.index(b"base64\r\n\r\n") + 12
    bad = bad[:at] + (b"B" if bad[at:at + 1] != b"B" else b"C") + bad[at + 1:]
    server.send(alice, alice, desk, bad)
    # bob sends what carol signed: carol's certificate is not bob's
    stolen = signed_application(carol_files, bob, desk, "<signed-3@client.test>", "申请")
    server.send(bob, bob, desk, stolen)
    # an unsigned application with the header forged
    plain = (f"From: {bob}\r\nTo: {desk}\r\nSubject: application\r\nMessage-ID: <plain-1@client.test>\r\n"
             f"{HEADER}: verified; signer={bob}\r\n\r\nplease\r\n").encode("utf-8")
    server.send(bob, bob, desk, plain)
    # carol's certificate revoked: her signature no longer counts
    revoke(reg, format(carol_cert.serial_number, "x"), "key_compromise")
    revoked = signed_application(carol_files, carol, desk, "<signed-4@client.test>", "申请")
    server.send(carol, carol, desk, revoked)
    assert server.wait_processed(5).get("application") == 5

    marks = {str(m["Message-ID"]): m.get_all(HEADER) for m in _agency_copies(server)}
    assert len(marks["<signed-1@client.test>"]) == 1
    assert marks["<signed-1@client.test>"][0].startswith(f"verified; signer={alice}; serial=")
    assert marks["<signed-2@client.test>"] == ["not verified (the signature does not match the content)"]
    assert marks["<signed-3@client.test>"] == ["not verified (signed with another mailbox's certificate)"]
    assert marks["<plain-1@client.test>"] is None  # stripped, and nothing to verify
    assert marks["<signed-4@client.test>"] == ["not verified (not a valid certificate of the city CA)"]
