"""Reading service mail (who sent it, which sub-address, the text written) and the small
Markdown converter: pure functions, no server."""
from __future__ import annotations

from mailserver.services import markdown
from mailserver.services.mail import Inbound, parse, rewrite_header, verified_sender

TOPIC = "policy@hz.example.cn"


def inbound(raw: bytes) -> Inbound:
    msg = parse(raw)
    kind, who = verified_sender(msg)
    return Inbound(1, 1, TOPIC, "topic", "policy", raw, msg, kind, who)


def test_only_one_trusted_header_identifies_the_sender():
    assert verified_sender(parse(b"X-Civicmail-Authenticated: citizen=A@x.cn\r\n\r\n")) == ("citizen", "a@x.cn")
    assert verified_sender(parse(b"X-Civicmail-Authenticated: agency=traffic-police\r\n\r\n")) == \
        ("agency", "traffic-police")
    two = b"X-Civicmail-Authenticated: citizen=a@x.cn\r\nX-Civicmail-Authenticated: citizen=b@x.cn\r\n\r\n"
    assert verified_sender(parse(two)) == (None, None)
    assert verified_sender(parse(b"X-Civicmail-Authenticated: root=a\r\n\r\n")) == (None, None)
    assert verified_sender(parse(b"From: a@x.cn\r\n\r\n")) == (None, None)


def test_the_sub_address_comes_from_delivered_to_to_cc_or_received():
    assert inbound(f"To: <policy+Unsubscribe@hz.example.cn>\r\n\r\n".encode()).detail() == "unsubscribe"
    assert inbound(b"To: someone@else.cn\r\nCc: policy+subscribe@hz.example.cn\r\n\r\n").detail() == "subscribe"
    received = b"Received: from x ([127.0.0.1])\r\n\tby mail (civicmail) with ESMTPSA id 1\r\n\tfor " \
               b"<policy+subscribe@hz.example.cn>; Fri, 27 Nov 2026 10:00:00 +0800\r\nTo: list@x.cn\r\n\r\n"
    assert inbound(received).detail() == "subscribe"
    assert inbound(b"To: other+subscribe@hz.example.cn\r\n\r\n").detail() == ""


def test_the_text_of_an_html_only_reply():
    raw = ("Content-Type: text/html; charset=utf-8\r\n\r\n"
           "<html><body><p>1A&nbsp;2B</p><blockquote type=cite>1C<blockquote>2A</blockquote>1B</blockquote>"
           "<script>1C</script></body></html>")
    text = inbound(raw.encode()).text()
    assert text.strip() == "1A\xa02B"  # quoted (nested) blockquotes and scripts are not what was written


def test_rewrite_header_drops_whole_fields_and_prepends():
    raw = b"Reply-To: a@x.cn,\r\n b@x.cn\r\nX-Civicmail-Applicant: forged\r\nSubject: s\r\n\r\nbody\r\n"
    out = rewrite_header(raw, {"reply-to", "x-civicmail-applicant"}, [("Reply-To", "desk@x.cn")])
    assert out == b"Reply-To: desk@x.cn\r\nSubject: s\r\n\r\nbody\r\n"


def test_markdown_escapes_and_refuses_script_links():
    html = markdown.to_html("# T <b>\n\n[x](javascript:alert(1)) <script>\n\n1. one\n2. two\n")
    assert "<script>" not in html and "&lt;script&gt;" in html and 'href="#"' in html
    assert "<ol><li>one</li><li>two</li></ol>" in html and "<h1>T &lt;b&gt;</h1>" in html
    assert markdown.title_and_body("# 标题\n\n正文") == ("标题", "正文")
    assert markdown.to_text("- a\n- [b](https://x.cn)\n") == "  • a\n  • b <https://x.cn>\n"
