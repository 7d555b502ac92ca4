"""`civicmail bench mime` runs and prints its figures (a short run: the figures are not checked)."""
from __future__ import annotations

import email
from email import policy

from click.testing import CliRunner

from mailserver.bench.mime import command, sample_notice
from mailserver.mime import analyze


def test_sample_notice_is_a_4k_chinese_alternative():
    raw = sample_notice(7)
    assert 3500 < len(raw) < 4500
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative" and not msg.defects
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert "驾驶证" in msg.get_body(("plain",)).get_content()
    assert '"ALTERNATIVE"' in analyze(raw).body


def test_bench_mime_prints_rates():
    result = CliRunner().invoke(command, ["--seconds", "0.05", "--messages", "5"])
    assert result.exit_code == 0, result.output
    assert "bench mime, notice" in result.output and "per CPU-second" in result.output
    assert "messages/s" in result.output.splitlines()[-1]
