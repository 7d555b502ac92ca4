"""Surveys and appraisals: defined from TOML, ballots mailed, answers taken from replies.

One counted vote per real-name account: the ballot row is keyed by an HMAC of (survey, account)
under the ID-number MAC key, which lives in the key folder, not in the database. A later reply
replaces the earlier. Someone reading the database sees answers but not whose they are; only a
survey declared ``anonymous = false`` also keeps the account.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..cells import SpreadsheetWriter
from ..errors import Conflict, NotFound, ValidationError
from ..store.api import NewMessage
from ..store.models import Account, Ballot, Subscription, Survey, SurveyRecipient, Topic
from . import replies
from .accounts import citizen_account, create_system_account
from .ballots import parse_vote
from .mail import Inbound, compose
from .outcome import Handled

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
RATINGS = [("1", "很不满意 / very dissatisfied"), ("2", "不满意 / dissatisfied"), ("3", "一般 / neutral"),
           ("4", "满意 / satisfied"), ("5", "很满意 / very satisfied")]
SURVEY_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
BATCH = 500
RCPT_MARK = "rcpt.placeholder@invalid"


@dataclass(frozen=True)
class Question:
    text: str
    choices: list[tuple[str, str]]  # (code, label)


def load_definition(path: Path) -> dict:
    """Read and check a survey file; the error names what is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError(f"{path}: not valid TOML: {exc}") from None
    survey_id = str(data.get("id", "")).strip()
    if not SURVEY_ID.match(survey_id):
        raise ValidationError(f"{path}: id: lower-case letters, digits and '-'")
    title = str(data.get("title", "")).strip()
    if not title:
        raise ValidationError(f"{path}: title is missing")
    kind = data.get("kind", "survey")
    if kind == "appraisal":
        departments = data.get("departments") or []
        if not departments or not all(isinstance(d, str) and d.strip() for d in departments):
            raise ValidationError(f"{path}: an appraisal needs departments = [\"...\", ...]")
        questions = [Question(d.strip(), RATINGS) for d in departments]
    elif kind == "survey":
        questions = []
        for n, q in enumerate(data.get("questions") or [], 1):
            choices = q.get("choices") if isinstance(q, dict) else None
            if not isinstance(q, dict) or not str(q.get("text", "")).strip() or not choices \
                    or not 2 <= len(choices) <= len(LETTERS):
                raise ValidationError(f"{path}: question {n} needs text and 2 to 26 choices")
            questions.append(Question(str(q["text"]).strip(), [(LETTERS[i], str(c)) for i, c in enumerate(choices)]))
        if not questions:
            raise ValidationError(f"{path}: a survey needs [[questions]]")
    else:
        raise ValidationError(f"{path}: kind is survey or appraisal, not {kind!r}")
    anonymous = data.get("anonymous", True)
    if not isinstance(anonymous, bool):
        raise ValidationError(f"{path}: anonymous is true or false")
    return {"id": survey_id, "title": title, "kind": kind, "anonymous": anonymous,
            "address": data.get("address") or f"survey-{survey_id}", "questions": questions}


def questions_of(survey: Survey) -> list[Question]:
    return [Question(q["text"], [tuple(c) for c in q["choices"]]) for q in json.loads(survey.questions)]


def add_survey(reg, definition: dict) -> str:
    with reg.store.session() as s:
        if s.get(Survey, definition["id"]) is not None:
            raise Conflict(f"survey {definition['id']} exists")
        account = create_system_account(s, reg, definition["address"], "survey", definition["id"])
        s.add(Survey(id=definition["id"], title=definition["title"], kind=definition["kind"],
                     anonymous=definition["anonymous"], account_id=account.id,
                     questions=json.dumps([{"text": q.text, "choices": q.choices} for q in definition["questions"]],
                                          ensure_ascii=False)))
        return account.address


def _survey(session: Session, survey_id: str) -> tuple[Survey, str]:
    row = session.execute(select(Survey, Account.address).join(Account, Account.id == Survey.account_id)
                          .where(Survey.id == survey_id)).first()
    if row is None:
        raise NotFound(f"no survey {survey_id}")
    return row[0], row[1]


def choices_text(questions: list[Question]) -> str:
    lines = []
    for n, q in enumerate(questions, 1):
        lines.append(f"{n}. {q.text}")
        lines.extend(f"   {code}  {label}" for code, label in q.choices)
    return "\n".join(lines)


def ballot_text(survey: Survey, questions: list[Question]) -> str:
    intro = replies.APPRAISAL_INTRO if survey.kind == "appraisal" else replies.BALLOT_INTRO
    outro = replies.BALLOT_OUTRO.format(
        secrecy=replies.SECRET if survey.anonymous else replies.NOT_SECRET,
        secrecy_en=replies.SECRET_EN if survey.anonymous else replies.NOT_SECRET_EN)
    return intro.format(title=survey.title) + choices_text(questions) + "\n" + outro


def send_ballots(reg, survey_id: str, to: str = "all") -> int:
    """Blocking: mail the ballot to every citizen (``all``) or a topic's subscribers, once each."""
    with reg.store.reader() as s:
        survey, address = _survey(s, survey_id)
        if survey.state != "open":
            raise ValidationError(f"survey {survey_id} is closed")
        if to != "all" and s.get(Topic, to.removeprefix("topic:")) is None:
            raise NotFound(f"no topic {to} (use all, or a topic id)")
        subject = (replies.APPRAISAL_SUBJECT if survey.kind == "appraisal" else replies.BALLOT_SUBJECT).format(
            title=survey.title)
        msg = compose(sender=address, sender_name=survey.title, to=RCPT_MARK, subject=subject,
                      text=ballot_text(survey, questions_of(survey)), domain=reg.domain, auto="auto-generated",
                      extra={"Reply-To": address})
    template = msg.as_bytes()
    end = template.index(b"\r\n\r\n")
    # a cursor in account order, skipping who has it by the recipient key (constant cost per batch)
    query = (select(Account.id, Account.address)
             .outerjoin(SurveyRecipient, (SurveyRecipient.survey_id == survey_id)
                        & (SurveyRecipient.account_id == Account.id))
             .where(Account.citizen_id.is_not(None), Account.state != "disabled", SurveyRecipient.account_id.is_(None)))
    if to != "all":
        query = query.join(Subscription, Subscription.account_id == Account.id).where(
            Subscription.topic_id == to.removeprefix("topic:"))
    sent = last = 0
    while True:
        with reg.store.session() as s:
            batch = s.execute(query.where(Account.id > last).order_by(Account.id).limit(BATCH)).all()
            if not batch:
                break
            last = batch[-1][0]
            s.execute(SurveyRecipient.__table__.insert(), [{"survey_id": survey_id, "account_id": a} for a, _ in batch])
            stored = reg.store.mail.deliver_in(s, [NewMessage(account_id=a, raw=template[:end].replace(
                RCPT_MARK.encode(), addr.encode()) + template[end:]) for a, addr in batch])
        reg.store.mail.changed(d.folder_id for d in stored)
        sent += len(batch)
    return sent


def close_survey(reg, survey_id: str) -> None:
    with reg.store.session() as s:
        survey, _ = _survey(s, survey_id)
        if survey.state != "closed":
            survey.state = "closed"
            survey.closed_at = dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class Tally:
    survey_id: str
    title: str
    kind: str
    state: str
    ballots: int
    #: (question number, question, choice code, choice label, votes)
    rows: list[tuple[int, str, str, str, int]]

    def averages(self) -> dict[int, float]:
        """Appraisals: the mean rating per department (question)."""
        sums: dict[int, list[int]] = {}
        for n, _, code, _, votes in self.rows:
            s = sums.setdefault(n, [0, 0])
            s[0] += int(code) * votes
            s[1] += votes
        return {n: (t / c if c else 0.0) for n, (t, c) in sums.items()}

    def csv(self) -> str:
        out = io.StringIO()
        w = SpreadsheetWriter(out, lineterminator="\n")
        w.writerow(["question", "question_text", "choice", "choice_text", "votes"])
        w.writerows(self.rows)
        return out.getvalue()


def tally(reg, survey_id: str) -> Tally:
    with reg.store.reader() as s:
        survey, _ = _survey(s, survey_id)
        counts: dict[tuple[int, str], int] = {}
        ballots = 0
        for (answers,) in s.execute(select(Ballot.answers).where(Ballot.survey_id == survey_id)):
            ballots += 1
            for n, code in json.loads(answers).items():
                counts[(int(n), code)] = counts.get((int(n), code), 0) + 1
        rows = [(n, q.text, code, label, counts.get((n, code), 0))
                for n, q in enumerate(questions_of(survey), 1) for code, label in q.choices]
        return Tally(survey.id, survey.title, survey.kind, survey.state, ballots, rows)


def named_ballots(reg, survey_id: str) -> list[tuple[str, dict]]:
    """Who answered what: only for a survey declared non-anonymous."""
    with reg.store.reader() as s:
        survey, _ = _survey(s, survey_id)
        if survey.anonymous:
            raise ValidationError(f"survey {survey_id} is anonymous: only its tally can be shown")
        return [(addr or "(account removed)", json.loads(answers)) for addr, answers in s.execute(
            select(Account.address, Ballot.answers).outerjoin(Account, Account.id == Ballot.account_id)
            .where(Ballot.survey_id == survey_id).order_by(Account.address))]


# -- mail ------------------------------------------------------------------------------------
def voter_key(reg, survey_id: str, account_id: int) -> bytes:
    return reg.keyring.secret_hash("ballot", f"{survey_id}\0{account_id}")


def handle_vote(reg, session: Session, inbound: Inbound) -> Handled:
    if inbound.verified_kind != "citizen":
        return Handled("ignored-unverified")  # a From: alone may be forged: never counted
    voter = citizen_account(session, inbound.verified or "")
    if voter is None:
        return Handled("ignored-not-citizen")
    survey, address = _survey(session, inbound.ref)
    questions = questions_of(survey)

    def answer(subject: str, text: str) -> list[tuple]:
        return [(voter.id, compose(sender=address, sender_name=survey.title, to=voter.address,
                                   subject=subject.format(title=survey.title), text=text, domain=reg.domain,
                                   in_reply_to=inbound.header_message_id or None, references=inbound.references))]

    if survey.state != "open":
        closed = (survey.closed_at or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%d")
        return Handled("refused-closed", answer(replies.CLOSED_SUBJECT, replies.CLOSED_TEXT.format(closed=closed)))
    vote = parse_vote(inbound.text(), [[code for code, _ in q.choices] for q in questions])
    if vote.unknown or not vote.answers:
        tokens = ", ".join(vote.unknown)
        text = replies.FORMAT_TEXT.format(
            unknown=replies.UNKNOWN_LIST.format(tokens=tokens) if tokens else "",
            unknown_en=replies.UNKNOWN_LIST_EN.format(tokens=tokens) if tokens else "",
            choices=choices_text(questions))
        return Handled("vote-rejected", answer(replies.FORMAT_SUBJECT, text))
    ballot = record_ballot(reg, session, survey, voter.id, vote.answers, inbound.message_id)
    if ballot == "superseded":
        return Handled("vote-superseded")
    labels = {(n, code): label for n, q in enumerate(questions, 1) for code, label in q.choices}
    listing = "\n".join(f"  {n}. {questions[n - 1].text}: {c} {labels[(n, c)]}" for n, c in sorted(vote.answers.items()))
    text = (replies.RECEIPT_REPLACED if ballot == "replaced" else "") + replies.RECEIPT_TEXT.format(answers=listing)
    return Handled("vote-replaced" if ballot == "replaced" else "vote",
                   answer(replies.RECEIPT_SUBJECT, text))


def record_ballot(reg, session: Session, survey: Survey, voter_id: int, answers: dict[int, str],
                  source_message_id: int) -> str:
    """The one rule for a vote, by mail or on the web: one ballot per real-name account (keyed by
    ``voter_key``), a later answer replacing the earlier. ``source_message_id`` orders them: a
    mail's own message id, or for a web vote the newest message id at that moment (a reply mailed
    after it is newer; one mailed before it but handled late is older). "new", "replaced", or
    "superseded" (an older answer handled after a newer one: it replaces nothing)."""
    key = voter_key(reg, survey.id, voter_id)
    text = json.dumps({str(n): c for n, c in sorted(answers.items())})
    ballot = session.scalar(select(Ballot).where(Ballot.survey_id == survey.id, Ballot.voter_key == key))
    now = dt.datetime.now(dt.timezone.utc)
    if ballot is None:
        session.add(Ballot(survey_id=survey.id, voter_key=key, account_id=None if survey.anonymous else voter_id,
                           answers=text, replies=1, updated_at=now, source_message_id=source_message_id))
        return "new"
    if ballot.source_message_id > source_message_id:
        # an older reply handled after a newer one (two workers): it counts as sent, replaces nothing
        ballot.replies += 1
        return "superseded"
    ballot.answers, ballot.replies, ballot.updated_at = text, ballot.replies + 1, now
    ballot.source_message_id = source_message_id
    return "replaced"


def my_ballot(reg, session: Session, survey_id: str, account_id: int) -> dict[int, str]:
    """The account's counted answers in a survey ({} if none): what the web form shows as chosen."""
    answers = session.scalar(select(Ballot.answers).where(Ballot.survey_id == survey_id,
                                                          Ballot.voter_key == voter_key(reg, survey_id, account_id)))
    return {int(n): c for n, c in json.loads(answers).items()} if answers else {}
