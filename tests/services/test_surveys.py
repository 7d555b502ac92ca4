"""A survey with 100 citizens answering over SMTP submission: some twice, some quoting the ballot
and signing, some in full-width characters, one unknown choice, one forged sender; an exact
tally, receipts, a refusal after closing; and an appraisal."""
from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from mailserver.errors import ValidationError
from mailserver.services import surveys
from mailserver.services.ballots import parse_vote
from mailserver.store.models import Ballot

from .conftest import mail

SURVEY = """
id = "bus-2027"
title = "2027 年公交线路调整意见征集"
kind = "survey"

[[questions]]
text = "您是否支持取消文三路站？"
choices = ["支持", "反对", "无所谓"]

[[questions]]
text = "您最常乘坐的时段？"
choices = ["早高峰", "晚高峰"]
"""

APPRAISAL = """
id = "depts-2026"
title = "2026 年度部门满意度评议"
kind = "appraisal"
anonymous = false
departments = ["交警支队", "社保局", "公积金中心"]
"""


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def define(tmp_path: Path, text: str) -> dict:
    path = tmp_path / "survey.toml"
    path.write_text(text, encoding="utf-8")
    return surveys.load_definition(path)


def test_parse_vote_is_forgiving():
    q = [["A", "B", "C"], ["A", "B"]]
    assert parse_vote("1A 2B", q).answers == {1: "A", 2: "B"}
    assert parse_vote("1: c\n2. a", q).answers == {1: "C", 2: "A"}
    assert parse_vote("１Ａ　２Ｂ", q).answers == {1: "A", 2: "B"}
    assert parse_vote("1、B，2）A", q).answers == {1: "B", 2: "A"}
    assert parse_vote("1A\n1C", q).answers == {1: "C"}  # the later answer in one reply counts
    quoted = "2B\n\n> 1. 您是否支持？\n>    A  支持\n> 1A 2A\n-- \n张伟 1C"
    assert parse_vote(quoted, q).answers == {2: "B"}
    assert parse_vote("1A\n\n在 2027年1月1日，survey 写道：\n1B", q).answers == {1: "A"}
    assert parse_vote("1A\n-----Original Message-----\n1B", q).answers == {1: "A"}
    assert parse_vote("1D 2A", q).unknown == ["1D"]
    assert parse_vote("3A", q).unknown == ["3A"]
    assert parse_vote("I live at No. 2023, bus 12", q).answers == {}


def test_a_survey_definition_with_errors_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="question 1"):
        define(tmp_path, 'id = "x"\ntitle = "t"\n[[questions]]\ntext = "q"\nchoices = ["only one"]\n')
    with pytest.raises(ValidationError, match="kind"):
        define(tmp_path, 'id = "x"\ntitle = "t"\nkind = "poll"\n')
    with pytest.raises(ValidationError, match="TOML"):
        define(tmp_path, 'id = "x\n')


def test_hundred_citizens_vote_with_an_exact_tally(server_factory, tmp_path):
    server = server_factory(100)
    reg = server.registry
    citizens = server.citizens
    address = surveys.add_survey(reg, define(tmp_path, SURVEY))
    assert surveys.send_ballots(reg, "bus-2027") == 100
    assert surveys.send_ballots(reg, "bus-2027") == 0  # nobody gets it twice
    server.settle()
    ballot = parse(server.inbox(citizens[5])[0])
    assert ballot["Reply-To"] == address and "1A 2C" in ballot.get_body(("plain",)).get_content()

    expected: dict[int, str] = {}
    sent = 0

    def vote(i: int, body: str) -> None:
        nonlocal sent
        who = citizens[i]
        server.send(who, who, address, mail(who, address, "Re: " + str(ballot["Subject"]), body, f"<v{sent}@test>"))
        sent += 1

    for i in range(100):
        final = ("ABC"[i % 3], "AB"[i % 2])
        body = f"1{final[0]} 2{final[1]}"
        if i % 10 == 0:  # votes twice: the first is replaced
            vote(i, f"1{'ABC'[(i + 1) % 3]} 2{'AB'[(i + 1) % 2]}")
        if i % 7 == 0:  # quotes the ballot (its example "1A 2C") and signs with digits in the signature
            body = f"{body}\n\n> 请直接回复本邮件作答，例如“1A 2C”\n> 1A 2A\n-- \n市民 1C 2A\n"
        if i % 11 == 0:  # full-width, one per line
            body = f"１{chr(ord(final[0]) + 0xFEE0)}\n２：{chr(ord(final[1]) + 0xFEE0)}"
        if i == 99:  # an unknown choice first: explained, not counted
            vote(i, "1Z 2A")
        vote(i, body)
        expected[i] = "".join(final)
    # a forged sender: unauthenticated over port 25, From: a citizen's address, even writing the
    # trusted header itself (SMTP strips it from anything not authenticated)
    server.send(None, citizens[1], address, mail(citizens[1], address, "Re: vote", "1C 2A",
                                                 extra=f"X-Civicmail-Authenticated: citizen={citizens[1]}"))
    sent += 1
    done = server.wait_processed(sent)
    assert done == {"vote": 100, "vote-replaced": 10, "vote-rejected": 1, "ignored-unverified": 1}

    t = surveys.tally(reg, "bus-2027")
    assert t.ballots == 100
    counts = {(n, code): votes for n, _, code, _, votes in t.rows}
    for n in (1, 2):
        for code in "ABC"[:3 if n == 1 else 2]:
            assert counts[(n, code)] == sum(1 for v in expected.values() if v[n - 1] == code), (n, code)
    assert sum(counts[(1, c)] for c in "ABC") == 100
    assert t.csv().splitlines()[0] == "question,question_text,choice,choice_text,votes"

    # receipts and the explanation
    inbox99 = [parse(r) for r in server.inbox(citizens[99])]
    subjects = [str(m["Subject"]) for m in inbox99]
    assert any("未能计票" in s for s in subjects) and any("回执" in s for s in subjects)
    explanation = next(m for m in inbox99 if "未能计票" in str(m["Subject"]))
    assert "1Z" in explanation.get_body(("plain",)).get_content()
    replaced = [parse(r) for r in server.inbox(citizens[10])][-1]
    assert "已替换" in replaced.get_body(("plain",)).get_content() and replaced["In-Reply-To"]
    assert len(server.inbox(citizens[1])) == 2  # ballot + one receipt: the forgery got nothing

    # anonymous: the store does not say whose a ballot is, and the CLI will not show it
    with server.store.reader() as s:
        assert set(s.scalars(select(Ballot.account_id).where(Ballot.survey_id == "bus-2027"))) == {None}
    with pytest.raises(ValidationError, match="anonymous"):
        surveys.named_ballots(reg, "bus-2027")

    # closed: refused politely, nothing counted
    surveys.close_survey(reg, "bus-2027")
    vote(3, "1C 2B")
    assert server.wait_processed(sent)["refused-closed"] == 1
    assert surveys.tally(reg, "bus-2027").rows == t.rows
    assert "已结束" in str(parse(server.inbox(citizens[3])[-1])["Subject"])


def test_appraisal_rates_departments_and_names_voters_when_not_anonymous(server, tmp_path):
    reg = server.registry
    address = surveys.add_survey(reg, define(tmp_path, APPRAISAL))
    server.settle()
    a, b, _ = server.citizens
    server.send(a, a, address, mail(a, address, "评议", "1:5\n2:4\n3:3"))
    server.send(b, b, address, mail(b, address, "评议", "1-3 2 2 3:5"))
    server.send(b, b, address, mail(b, address, "评议", "1:6"))  # 6 is not a rating
    done = server.wait_processed(3)
    assert done == {"vote": 2, "vote-rejected": 1}
    t = surveys.tally(reg, "depts-2026")
    assert t.averages() == {1: 4.0, 2: 3.0, 3: 4.0}
    named = dict(surveys.named_ballots(reg, "depts-2026"))
    assert named[a] == {"1": "5", "2": "4", "3": "3"}
    assert json.loads(json.dumps(named[b])) == {"1": "3", "2": "2", "3": "5"}
