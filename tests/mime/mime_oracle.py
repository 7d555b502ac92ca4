"""The stdlib ``email`` parser (policy.default) as the oracle for mailserver.mime: helpers that
compare what analyze / fetch_section produce with what the oracle reads in the same bytes."""
from __future__ import annotations

import email
import itertools
from email import policy
from email.utils import parsedate_to_datetime

from mime_wire import check_body, parse

from mailserver.mime import analyze, fetch_section
from mailserver.mime.headers import decode_param, decode_words


def payload_bytes(part) -> bytes:
    # the undecoded payload as the parser cut it out (surrogateescape keeps 8-bit bytes)
    return part._payload.encode("ascii", "surrogateescape")


def lines_of(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def decoded_params(wire) -> dict[str, str]:
    if wire is None:
        return {}
    return dict(decode_param(wire[i].lower(), wire[i + 1]) for i in range(0, len(wire), 2))


def oracle_params(part) -> dict[str, str]:
    header = part["content-type"]
    params = dict(header.params) if header is not None else {}
    if part.get_content_maintype() == "text" and "charset" not in params:
        params["charset"] = "us-ascii"
    return params


def check_addresses(mine, header) -> None:
    if header is None:
        assert mine is None
        return
    # Names compare without their blanks: in a display name the oracle keeps the blank between
    # two adjacent encoded words, which RFC 2047 6.2 (and mail clients) drop; its own generator
    # splits names at such blanks.
    expected = [("".join(a.display_name.split()), a.username, a.domain) for a in header.addresses]
    got = [("".join(decode_words(name or "").split()), mbox, host)
           for name, _, mbox, host in (mine or []) if host is not None]
    assert got == expected


def check_envelope(env, message) -> None:
    date, subject, from_, sender, reply_to, to, cc, bcc, in_reply_to, message_id = env
    if message["date"] is None:
        assert date is None
    else:
        assert parsedate_to_datetime(date) == message["date"].datetime
    if message["subject"] is None:
        assert subject is None
    else:
        assert decode_words(subject) == str(message["subject"])
    check_addresses(from_, message["from"])
    # absent Sender / Reply-To default to From (RFC 3501 7.4.2)
    check_addresses(sender, message["sender"]) if message["sender"] else None
    assert message["sender"] is not None or sender == from_
    check_addresses(reply_to, message["reply-to"]) if message["reply-to"] else None
    assert message["reply-to"] is not None or reply_to == from_
    check_addresses(to, message["to"])
    check_addresses(cc, message["cc"])
    check_addresses(bcc, message["bcc"])
    assert message_id == (str(message["message-id"]).strip() if message["message-id"] else None)
    if message["in-reply-to"] is not None:
        assert in_reply_to == str(message["in-reply-to"]).strip()


def without_extensions(bs):
    """BODY from BODYSTRUCTURE: the same tree without extension data."""
    if isinstance(bs[0], list):
        kids = leading_lists(bs)
        return kids_body(kids) + [bs[len(kids)]]
    if bs[0].upper() == "MESSAGE" and bs[1].upper() == "RFC822":
        return bs[:7] + [bs[7], without_extensions(bs[8]), bs[9]]
    return bs[:8] if bs[0].upper() == "TEXT" else bs[:7]


def leading_lists(bs) -> list:
    """The body parts of a multipart: the lists before its subtype string."""
    return list(itertools.takewhile(lambda item: isinstance(item, list), bs))


def kids_body(kids):
    return [without_extensions(k) for k in kids]


def check_part(raw: bytes, path: tuple[int, ...], bs, part) -> None:
    ctype = part.get_content_type()
    if ctype.startswith("multipart/"):
        kids = leading_lists(bs)
        subtype, params, dsp, lang, loc = bs[len(kids):]
        assert subtype.lower() == part.get_content_subtype()
        assert decoded_params(params) == dict(part["content-type"].params)
        assert len(kids) == len(part.get_payload())
        for i, (kid, sub) in enumerate(zip(kids, part.get_payload()), start=1):
            check_part(raw, path + (i,), kid, sub)
        return
    maintype, subtype, params, cid, desc, encoding, size = bs[:7]
    assert f"{maintype}/{subtype}".lower() == ctype
    assert decoded_params(params) == oracle_params(part)
    assert encoding.lower() == (part.get("content-transfer-encoding") or "7bit").lower()
    md5, dsp, lang, loc = bs[-4:]
    assert md5 is None and lang is None and loc is None and cid is None and desc is None
    assert (dsp[0].lower() if dsp else None) == part.get_content_disposition()
    filename = decoded_params(dsp[1]).get("filename") if dsp else None
    assert filename == part.get_filename()
    content = fetch_section(raw, path, None)
    assert size == len(content)
    mime_header = fetch_section(raw, path, "MIME")
    assert email.message_from_bytes(mime_header, policy=policy.default).get_content_type() == ctype \
        or (not part["content-type"] and mime_header.strip() == b"")
    if ctype == "message/rfc822":
        inner = part.get_payload()[0]
        env, inner_bs, lines = bs[7:10]
        assert lines == lines_of(content)
        check_envelope(env, inner)
        assert email.message_from_bytes(content, policy=policy.default)["message-id"] == inner["message-id"]
        header = fetch_section(raw, path, "HEADER")
        assert header.endswith(b"\r\n\r\n") and content.startswith(header)
        assert fetch_section(raw, path, "TEXT") == content[len(header):]
        inner_path = path if inner.get_content_maintype() == "multipart" else path + (1,)
        check_part(raw, inner_path, inner_bs, inner)
        return
    assert content == payload_bytes(part)
    if maintype.lower() == "text":
        assert bs[7] == lines_of(content)


def check_against_oracle(raw: bytes) -> set[str]:
    """Compare everything analyze says about ``raw`` with the oracle; the content types seen."""
    oracle = email.message_from_bytes(raw, policy=policy.default)
    analyzed = analyze(raw)
    assert analyzed.size == len(raw)
    header = fetch_section(raw, (), "HEADER")
    assert analyzed.header_size == len(header) and header.endswith(b"\r\n\r\n")
    check_envelope(parse(analyzed.envelope), oracle)
    bs = parse(analyzed.bodystructure)
    check_body(bs, extended=True)
    assert parse(analyzed.body) == without_extensions(bs)
    top = () if oracle.get_content_maintype() == "multipart" else (1,)
    check_part(raw, top, bs, oracle)
    return {p.get_content_type() for p in oracle.walk()}
