"""SEARCH on decoded text: Chinese in RFC 2047 subjects and GB18030 bodies, HTML, addresses."""
from __future__ import annotations

import base64

import pytest
from mime_samples import EIGHTBIT, FORWARDED, GB18030, GROUP, NESTED

from mailserver.mime import analyze, header_contains, search_matches


def test_chinese_rfc2047_subject_split_across_gb2312_words():
    text = analyze(GB18030).search_text
    assert search_matches(text, "subject", "公积金对账单")  # the words join into one phrase
    assert search_matches(text, "subject", "对账单 2024")
    assert not search_matches(text, "subject", "养老")
    assert search_matches(text, "from", "公积金")
    assert search_matches(text, "from", "FUND@housing.gov.cn")


def test_chinese_in_base64_gb18030_body():
    text = analyze(GB18030).search_text
    assert search_matches(text, "body", "市民邮箱")
    assert search_matches(text, "text", "测试正文")
    assert not search_matches(text, "subject", "市民邮箱")
    assert not search_matches(text, "body", "医疗")


def test_base64_utf8_and_alternative_indexed_once():
    text = analyze(NESTED).search_text
    assert search_matches(text, "body", "下月到期")  # base64 text/plain
    assert search_matches(text, "to", "张伟")
    assert search_matches(text, "subject", "驾驶证换证提醒")
    # of multipart/alternative only the text/plain alternative is indexed: the HTML says the same
    assert not search_matches(text, "body", "您的驾驶证&")


def test_qp_html_reduced_to_text():
    raw = (b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
           b"<html><head><title>t</title><style>p { color: red }</style></head><body>"
           b"<p>=E6=82=A8=E7=9A=84<b>=E9=A9=BE=E9=A9=B6=E8=AF=81</b>&amp;</p><script>var x;</script>"
           b"<p>second=\r\n paragraph</p></body></html>\r\n")
    text = analyze(raw).search_text
    assert search_matches(text, "body", "您的驾驶证&")  # tags inside a word vanish, entities decoded
    assert search_matches(text, "body", "second paragraph")  # QP soft line break joined
    for markup in ("<b>", "color", "var x", "amp;"):
        assert not search_matches(text, "body", markup)


def test_case_folding_and_blank_runs():
    text = analyze(FORWARDED).search_text
    assert search_matches(text, "subject", "FWD: MINUTES")
    assert search_matches(text, "body", "see   BELOW")
    assert search_matches(text, "body", "line one. line two")  # a line break matches a blank
    # the forwarded message's header and text are part of this message's body
    assert search_matches(text, "body", "carol")
    assert not search_matches(text, "from", "carol")


def test_addresses_groups_cc_bcc():
    text = analyze(GROUP).search_text
    assert search_matches(text, "to", "li, na")
    assert search_matches(text, "to", "council")
    assert search_matches(text, "cc", "route@example.org")
    assert not search_matches(text, "bcc", "a")
    assert search_matches(text, "bcc", "")  # an empty needle matches everything


def test_raw_utf8_header():
    text = analyze(EIGHTBIT).search_text
    assert search_matches(text, "subject", "对账单")
    assert search_matches(text, "from", "王芳")


@pytest.mark.parametrize("charset,subject", [
    ("utf-8", "中文主题"), ("gb2312", "中文主题"), ("gbk", "中文主题"), ("gb18030", "中文主题"),
    ("big5", "中文主題"), ("iso-8859-1", "Grüße"), ("iso-8859-5", "Привет"), ("windows-1251", "Привет"),
    ("windows-1252", "Café €"), ("iso-8859-2", "Łódź"),
])
def test_rfc2047_charsets(charset, subject):
    encoded = base64.b64encode(subject.encode(charset)).decode()
    raw = f"Subject: =?{charset}?B?{encoded}?=\r\nContent-Type: text/plain; charset={charset}\r\n" \
          f"Content-Transfer-Encoding: 8bit\r\n\r\n".encode() + subject.encode(charset) + b"\r\n"
    text = analyze(raw).search_text
    assert search_matches(text, "subject", subject.upper())
    assert search_matches(text, "body", subject)
    assert header_contains(raw, "SUBJECT", subject.lower())


def test_q_encoded_words_and_unknown_charset():
    raw = b"Subject: =?utf-8?Q?=E4=B8=AD=E6=96=87_and?= plain =?x-unknown?Q?caf=C3=A9?=\r\n\r\n"
    text = analyze(raw).search_text
    assert search_matches(text, "subject", "中文 and plain café")


def test_header_contains():
    assert header_contains(NESTED, "Content-Type", "multipart/MIXED")
    assert header_contains(NESTED, "message-id", "")  # present
    assert not header_contains(NESTED, "x-absent", "")
    assert header_contains(NESTED, "from", "交警")
    assert not header_contains(NESTED, "from", "zhang")
    assert header_contains(NESTED, "to", "zhang.wei")


def test_unknown_key_and_missing_text():
    assert not search_matches(analyze(NESTED).search_text, "flagged", "x")
    assert not search_matches(None, "body", "x")


def test_a_stub_plain_alternative_does_not_hide_the_html():
    html = "<p>" + "市民邮箱的正文只在超文本里。" * 40 + "</p>"
    raw = ("Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n\r\n请用支持HTML的客户端阅读。\r\n--b\r\n"
           f"Content-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--b--\r\n").encode()
    text = analyze(raw).search_text
    assert search_matches(text, "body", "只在超文本里")
    assert search_matches(text, "body", "支持html的客户端")
