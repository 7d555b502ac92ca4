"""The fast parser against the slow correct one: every message of the shared corpus, analysed by
mailserver.mime, must agree with the stdlib ``email`` parser under ``policy.default``
(part tree, types, parameters, decoded file names and subjects, sizes, line counts, sections)."""
from __future__ import annotations

import email
from email import policy

import pytest
from mime_oracle import check_against_oracle
from mime_samples import GEN_MBOX, load_corpus

from mailserver.mime import analyze, search_matches

CORPORA = ((250, 42), (150, 7))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[bytes]:
    if not GEN_MBOX.exists():
        pytest.skip(f"{GEN_MBOX} not present")
    directory = tmp_path_factory.mktemp("corpus")
    messages = []
    for count, seed in CORPORA:
        messages += load_corpus(directory, count, seed)
    return messages


def test_corpus_matches_the_email_oracle(corpus):
    kinds = set()
    for raw in corpus:
        kinds |= check_against_oracle(raw)
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


def _sent_date_oracle(raw: bytes):
    """How SEARCH SENTBEFORE read the Date before: the stdlib header parser (compat32)."""
    import email.parser
    import email.utils

    value = email.parser.BytesHeaderParser().parsebytes(raw.split(b"\r\n\r\n", 1)[0]).get("Date")
    try:
        return email.utils.parsedate_to_datetime(str(value)).date() if value else None
    except (TypeError, ValueError, IndexError):
        return None


EDGE_DATES = (b"Date: Tue, 2 Jan 2019 09:00:00 +0800\r\n\r\n", b"Date: Tue,\r\n 2 Jan 2019\r\n 23:30:00 -0500\r\n\r\nx",
              b"Subject: none\r\n\r\n", b"Date: yesterday\r\n\r\n", b"Date: 2 Jan 2019 09:00 +0000\r\nDate: 5 May 2020"
              b" 09:00 +0000\r\n\r\n", b"Date: Mon, 31 Feb 2019 09:00:00 +0000\r\n\r\n")


def test_search_sent_dates_match_the_email_oracle(corpus):
    from mailserver.mime.search import SearchHeader

    for raw in list(corpus) + list(EDGE_DATES):
        assert SearchHeader(raw).sent_date == _sent_date_oracle(raw), raw[:200]
