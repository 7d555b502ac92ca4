"""The fast parser against the slow correct one: every message of the shared corpus, analysed by
mailserver.mime, must agree with the stdlib ``email`` parser under ``policy.default``
(part tree, types, parameters, decoded file names and subjects, sizes, line counts, sections)."""
from __future__ import annotations

import email
import itertools
import mailbox
import subprocess
import sys
from email import policy
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from mime_wire import check_body, parse

from mailserver.mime import analyze, fetch_section, search_matches
from mailserver.mime.headers import decode_param, decode_words

GEN_MBOX = Path("/work/shared/corpus/gen_mbox.py")
CORPORA = ((250, 42), (150, 7))


def load_corpus(directory: Path, count: int, seed: int) -> list[bytes]:
    """The corpus messages as stored: mbox bytes with LF turned into CRLF."""
    out = directory / f"corpus-{count}-{seed}.mbox"
    subprocess.run([sys.executable, str(GEN_MBOX), str(out), str(count), str(seed)], check=True,
                   stdout=subprocess.DEVNULL, cwd=directory)
    box = mailbox.mbox(out)
    try:
        return [box.get_bytes(key).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for key in box.keys()]
    finally:
        box.close()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[bytes]:
    if not GEN_MBOX.exists():
        pytest.skip(f"{GEN_MBOX} not present")
    directory = tmp_path_factory.mktemp("corpus")
    messages = []
    for count, seed in CORPORA:
        messages += load_corpus(directory, count, seed)
    return messages


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
        return
    expected = [(a.display_name, a.username, a.domain) for a in header.addresses]
    got = [(decode_words(name or ""), mbox, host) for name, _, mbox, host in (mine or []) if host is not None]
    assert got == expected


def check_envelope(env, message) -> None:
    date, subject, from_, sender, reply_to, to, cc, bcc, in_reply_to, message_id = env
    assert parsedate_to_datetime(date) == message["date"].datetime
    if message["subject"] is None:
        assert subject is None
    else:
        assert decode_words(subject) == str(message["subject"])
    check_addresses(from_, message["from"])
    assert sender == from_ and reply_to == from_  # the corpus has neither: both default to From
    check_addresses(to, message["to"])
    check_addresses(cc, message["cc"])
    assert bcc is None
    assert message_id == str(message["message-id"]).strip()
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


def test_corpus_matches_the_email_oracle(corpus):
    kinds = set()
    for raw in corpus:
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
        kinds.update(p.get_content_type() for p in oracle.walk())
    # the corpus exercised what it promises
    assert {"multipart/mixed", "multipart/alternative", "message/rfc822", "text/html",
            "application/octet-stream"} <= kinds


def test_corpus_search_finds_decoded_subjects_and_bodies(corpus):
    for raw in corpus:
        oracle = email.message_from_bytes(raw, policy=policy.default)
        text = analyze(raw).search_text
        subject = str(oracle["subject"] or "")
        if subject.strip():
            word = subject.split()[-1]
            assert search_matches(text, "subject", word.upper()), subject
            assert search_matches(text, "text", word)
            assert not search_matches(text, "body", subject + " \u2603 not there")
        name = oracle["from"].addresses[0].display_name
        if name:
            assert search_matches(text, "from", name)
        plain = oracle.get_body(("plain",))
        if plain is not None:
            line = next((ln.strip() for ln in plain.get_content().splitlines() if len(ln.strip()) > 8), None)
            if line:
                assert search_matches(text, "body", line[:20]), line
                assert search_matches(text, "text", line[:20])
                assert not search_matches(text, "subject", line[:20] + "\u2603")
