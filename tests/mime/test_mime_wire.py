"""ENVELOPE, BODY and BODYSTRUCTURE of hand-written messages, as exact wire strings."""
from __future__ import annotations

import pytest
from mime_samples import BARE_LF, DIGEST, EIGHTBIT, FORWARDED, GROUP, MISSING, NESTED
from mime_wire import check_body, parse

from mailserver.mime import analyze
from mailserver.mime.headers import decode_param, parse_params
from mailserver.mime.wire import string

# (message, envelope, body, bodystructure, header_size); every expected string checked by hand
# against RFC 3501 7.4.2 before it was frozen here.
CASES = {
    "NESTED": (NESTED,
        '("Mon, 4 Mar 2024 09:30:00 +0800" "=?UTF-8?B?6am+6am26K+B5o2i6K+B5o+Q6YaS?=" (("=?UTF-8?B?5Lqk6K2m5pSv6Zif?=" '
        'NIL "notice" "traffic.gov.cn")) (("=?UTF-8?B?5Lqk6K2m5pSv6Zif?=" NIL "notice" "traffic.gov.cn")) '
        '(("=?UTF-8?B?5Lqk6K2m5pSv6Zif?=" NIL "notice" "traffic.gov.cn")) (("=?UTF-8?B?5byg5Lyf?=" '
        'NIL "zhang.wei" "city.cn")) NIL NIL NIL "<n1@traffic.gov.cn>")',
        '((("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "BASE64" 48 1)("TEXT" "HTML" ("CHARSET" '
        '"utf-8") NIL NIL "QUOTED-PRINTABLE" 64 1) "ALTERNATIVE")("APPLICATION" "PDF" ("NAME*" '
        '"UTF-8\'\'%E6%8D%A2%E8%AF%81%E9%A1%BB%E7%9F%A5.pdf") "<att1@traffic.gov.cn>" "=?UTF-8?B?6aG755+l?=" '
        '"BASE64" 12) "MIXED")',
        '((("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "BASE64" 48 1 NIL NIL NIL NIL)("TEXT" '
        '"HTML" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 64 1 NIL NIL NIL NIL) "ALTERNATIVE" '
        '("BOUNDARY" "inner") NIL NIL NIL)("APPLICATION" "PDF" ("NAME*" "UTF-8\'\'%E6%8D%A2%E8%AF%81%E9%A1%BB%E7%9F%A5.pdf") '
        '"<att1@traffic.gov.cn>" "=?UTF-8?B?6aG755+l?=" "BASE64" 12 NIL ("ATTACHMENT" ("FILENAME*" '
        '"UTF-8\'\'%E6%8D%A2%E8%AF%81%E9%A1%BB%E7%9F%A5.pdf")) "zh-CN" NIL) "MIXED" ("BOUNDARY" '
        '"outer") NIL NIL NIL)',
        298),
    "FORWARDED": (FORWARDED,
        '("Tue, 5 Mar 2024 10:00:00 +0000" "Fwd: minutes" (("Alice" NIL "alice" "example.com")) '
        '(("Alice" NIL "alice" "example.com")) (("Alice" NIL "alice" "example.com")) ((NIL '
        'NIL "bob" "example.org")) NIL NIL NIL "<outer@example.com>")',
        '(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 10 1)("MESSAGE" "RFC822" NIL '
        'NIL NIL "7BIT" 179 ("Mon, 4 Mar 2024 08:00:00 +0000" "minutes" (("Carol" NIL "carol" '
        '"example.net")) (("Carol" NIL "carol" "example.net")) (("Carol" NIL "carol" "example.net")) '
        'NIL NIL NIL "<agenda@example.net>" "<inner@example.net>") ("TEXT" "PLAIN" ("CHARSET" '
        '"us-ascii") NIL NIL "7BIT" 20 2) 8) "MIXED")',
        '(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 10 1 NIL NIL NIL NIL)("MESSAGE" '
        '"RFC822" NIL NIL NIL "7BIT" 179 ("Mon, 4 Mar 2024 08:00:00 +0000" "minutes" (("Carol" '
        'NIL "carol" "example.net")) (("Carol" NIL "carol" "example.net")) (("Carol" NIL "carol" '
        '"example.net")) NIL NIL NIL "<agenda@example.net>" "<inner@example.net>") ("TEXT" '
        '"PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 20 2 NIL NIL NIL NIL) 8 NIL ("INLINE" '
        'NIL) NIL NIL) "MIXED" ("BOUNDARY" "b1") NIL NIL NIL)',
        194),
    "GROUP": (GROUP,
        '(NIL "group test" (("Office, City" NIL "office" "city.cn")) (("Clerk" NIL "clerk" '
        '"city.cn")) (("Office, City" NIL "office" "city.cn")) ((NIL NIL "Council" NIL)("Li, '
        'Na" NIL "li.na" "city.cn")(NIL NIL "wang.fang" "city.cn")(NIL NIL NIL NIL)(NIL NIL '
        '"undisclosed-recipients" NIL)(NIL NIL NIL NIL)) ((NIL "@relay.example" "route" "example.org")(NIL '
        'NIL "nodomain" ".MISSING-HOST-NAME.")) NIL NIL NIL)',
        '("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 6 1)',
        '("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 6 1 NIL NIL NIL NIL)',
        254),
    "MISSING": (MISSING,
        '(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)',
        '("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 47 2)',
        '("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 47 2 NIL NIL NIL NIL)',
        19),
    "BARE_LF": (BARE_LF,
        '(NIL "lf" NIL NIL NIL NIL NIL NIL NIL NIL)',
        '(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 5 2) "ALTERNATIVE")',
        '(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 5 2 NIL NIL NIL NIL) "ALTERNATIVE" '
        '("BOUNDARY" "z") NIL NIL NIL)',
        61),
    "DIGEST": (DIGEST,
        '(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)',
        '(("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 21 (NIL "one" NIL NIL NIL NIL NIL NIL NIL '
        'NIL) ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 5 1) 3) "DIGEST")',
        '(("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 21 (NIL "one" NIL NIL NIL NIL NIL NIL NIL '
        'NIL) ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 5 1 NIL NIL NIL NIL) 3 '
        'NIL NIL NIL NIL) "DIGEST" ("BOUNDARY" "d") NIL NIL NIL)',
        46),
    "EIGHTBIT": (EIGHTBIT,
        '(NIL {18}\r\n公积金对账单 (({6}\r\n王芳 NIL "wang.fang" "city.cn")) (({6}\r\n王芳 NIL "wang.fang" '
        '"city.cn")) (({6}\r\n王芳 NIL "wang.fang" "city.cn")) NIL NIL NIL NIL NIL)',
        '("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 6 1)',
        '("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 6 1 NIL NIL NIL NIL)',
        65),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_exact_wire_strings(name):
    raw, envelope, body, bodystructure, header_size = CASES[name]
    analyzed = analyze(raw)
    assert analyzed.envelope == envelope
    assert analyzed.body == body
    assert analyzed.bodystructure == bodystructure
    assert analyzed.header_size == header_size
    assert analyzed.size == len(raw)
    check_body(parse(body), extended=False)  # the RFC 3501 grammar throughout
    check_body(parse(bodystructure), extended=True)


def test_literal_counts_utf8_bytes():
    envelope = analyze(EIGHTBIT).envelope
    assert "{18}\r\n公积金对账单 " in envelope  # 6 characters, 18 UTF-8 bytes
    assert parse(envelope)[1] == "公积金对账单"


def test_rfc2231_continuations_are_joined_and_decodable():
    params = parse_params("; name*0*=UTF-8''%E5%B8%82; name*1*=%E6%B0%91; name*2=\" 1.pdf\"; Charset=x")
    assert params == [("name*", "UTF-8''%E5%B8%82%E6%B0%91%201.pdf"), ("charset", "x")]
    assert decode_param(*params[0]) == ("name", "市民 1.pdf")
    plain = parse_params('; filename*0="long "; filename*1="name.txt"; filename="ignored.txt"')
    assert plain == [("filename", "long name.txt")]


def test_rfc2231_gb18030_charset_and_language():
    params = parse_params("; filename*=gb18030'zh-cn'%CA%D0%C3%F1.txt")
    assert decode_param(*params[0]) == ("filename", "市民.txt")


def test_quoting_escapes_and_falls_back_to_literals():
    assert string('say "hi" \\ bye') == '"say \\"hi\\" \\\\ bye"'
    assert string("two\r\nlines") == "{10}\r\ntwo\r\nlines"
    assert string("nul\x00gone") == '"nulgone"'
    assert parse(string("张伟")) == "张伟"


def test_multipart_without_boundary_reads_as_text():
    raw = b"Content-Type: multipart/mixed\r\n\r\n--x\r\nhello\r\n"
    assert analyze(raw).body == '("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 12 2)'


def test_multipart_without_any_delimiter_has_one_empty_part():
    raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\nno delimiters here\r\n"
    assert analyze(raw).body == '(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 0 0) "MIXED")'


def test_missing_closing_delimiter_and_lookalike_boundaries():
    raw = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--bb\r\n"
           b"--b  \r\nContent-Type: text/html\r\n\r\ntwo\r\n")
    # "--bb" is text of part 1; the delimiter with trailing blanks counts; no closing delimiter
    assert analyze(raw).body == ('(("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 9 2)'
                                 '("TEXT" "HTML" ("CHARSET" "us-ascii") NIL NIL "7BIT" 5 1) "MIXED")')


def test_language_list_location_and_disposition_params():
    raw = (b"Content-Type: text/plain; charset=utf-8; format=flowed\r\n"
           b"Content-Disposition: inline; filename=\"a \\\"b\\\".txt\"; size=3\r\n"
           b"Content-Language: zh-CN, en\r\nContent-Location: http://city.cn/a.txt\r\n\r\nabc")
    assert analyze(raw).bodystructure == (
        '("TEXT" "PLAIN" ("CHARSET" "utf-8" "FORMAT" "flowed") NIL NIL "7BIT" 3 1 NIL '
        '("INLINE" ("FILENAME" "a \\"b\\".txt" "SIZE" "3")) ("zh-CN" "en") "http://city.cn/a.txt")')


def test_encoded_message_rfc822_keeps_the_grammar():
    raw = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nU3ViamVjdDogeA0KDQpib2R5\r\n--b--\r\n")
    assert analyze(raw).body == (
        '(("MESSAGE" "RFC822" NIL NIL NIL "BASE64" 24 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) '
        '("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 0 0) 1) "MIXED")')


def test_invalid_content_type_counts_as_absent():
    for value in (b"text", b"\x00text/plain", b"text/pl ain", b"/plain", b"text/"):
        raw = b"Content-Type: " + value + b"\r\n\r\nabc\r\n"
        assert analyze(raw).body == '("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 5 1)', value


def test_invalid_transfer_encoding_reads_as_7bit():
    raw = b"Content-Transfer-Encoding: ?invalid\r\n\r\nHello another world\r\n"
    assert analyze(raw).body == '("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 21 1)'


def test_8bit_parameters_and_rfc2047_file_names_pass_through():
    raw = ("Content-Type: application/pdf; name=\"数据.pdf\"\r\n"
           "Content-Disposition: attachment; filename=\"=?UTF-8?B?5pWw5o2uLnBkZg==?=\"\r\n\r\nx").encode()
    body = analyze(raw).bodystructure
    assert body == ('("APPLICATION" "PDF" ("NAME" {10}\r\n数据.pdf) NIL NIL "7BIT" 1 NIL '
                    '("ATTACHMENT" ("FILENAME" "=?UTF-8?B?5pWw5o2uLnBkZg==?=")) NIL NIL)')
    assert decode_param("filename", parse(body)[8][1][1]) == ("filename", "数据.pdf")


def test_raw_gb18030_header_is_read_as_chinese():
    raw = "Subject: 医疗消费对账\r\nFrom: 社保 <shebao@city.cn>\r\n\r\nx".encode("gb18030")
    envelope = parse(analyze(raw).envelope)
    assert envelope[1] == "医疗消费对账" and envelope[2] == [["社保", None, "shebao", "city.cn"]]
