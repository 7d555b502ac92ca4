"""Citizen services: topics and bulletins, surveys and ballots, applications, and the record of
which service mail has been handled.

Every service address is an ordinary local account with no citizen and no agency (a "system
account"); ``service_account`` says what each one is for. SMTP delivers to them like to any
mailbox; the services worker reads their INBOXes through the store.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, BigId, utcnow


class ServiceAccount(Base):
    """A system account and the service it belongs to: kind topic / survey / apply, ref its id."""

    __tablename__ = "service_account"

    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    ref: Mapped[str] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("kind", "ref", name="uq_service_account_kind_ref"),)


class ServiceProcessed(Base):
    """A message in a service INBOX that has been handled (the worker's idempotency record)."""

    __tablename__ = "service_processed"

    message_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), index=True)
    #: what was done: subscribed, unsubscribed, vote, vote-rejected, closed, application, status, ignored-...
    outcome: Mapped[str] = mapped_column(String(32))
    processed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Topic(Base):
    __tablename__ = "topic"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), unique=True)
    #: set for an optional statement: the topic is opt-out, kept in delivery's notice_opt_out
    notice_type_id: Mapped[str | None] = mapped_column(ForeignKey("notice_type.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Subscription(Base):
    __tablename__ = "subscription"

    topic_id: Mapped[str] = mapped_column(ForeignKey("topic.id", ondelete="CASCADE"), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Bulletin(Base):
    """One publication to a topic; (topic, sha256 of the source) makes publishing idempotent."""

    __tablename__ = "bulletin"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    topic_id: Mapped[str] = mapped_column(ForeignKey("topic.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("topic_id", "sha256", name="uq_bulletin_topic_id"),)


class BulletinDelivery(Base):
    """A bulletin delivered to one subscriber: the primary key makes it exactly once."""

    __tablename__ = "bulletin_delivery"

    bulletin_id: Mapped[int] = mapped_column(ForeignKey("bulletin.id", ondelete="CASCADE"), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)


class Survey(Base):
    __tablename__ = "survey"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    #: survey (questions with lettered choices) or appraisal (a rating 1-5 per department)
    kind: Mapped[str] = mapped_column(String(16))
    anonymous: Mapped[bool] = mapped_column(Boolean, default=True)
    #: open, closed
    state: Mapped[str] = mapped_column(String(16), default="open")
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), unique=True)
    #: the questions (JSON list of {"text", "choices"})
    questions: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[dt.datetime | None]


class SurveyRecipient(Base):
    """A ballot mailed to one account (so `survey send` run twice mails nobody twice)."""

    __tablename__ = "survey_recipient"

    survey_id: Mapped[str] = mapped_column(ForeignKey("survey.id", ondelete="CASCADE"), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"), primary_key=True)


class Ballot(Base):
    """One counted vote per real-name account and survey.

    ``voter_key`` is an HMAC (the ID-number MAC key, kept outside the database) of the survey and
    the account: one row per voter, a later vote replaces it, and nothing in the database says
    whose it is. ``account_id`` is filled only for surveys declared non-anonymous.
    """

    __tablename__ = "ballot"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    survey_id: Mapped[str] = mapped_column(ForeignKey("survey.id", ondelete="CASCADE"))
    voter_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id", ondelete="SET NULL"))
    #: JSON object {question number: choice}
    answers: Mapped[str] = mapped_column(Text)
    #: how many replies this voter sent (the later replaced the earlier)
    replies: Mapped[int] = mapped_column(Integer, default=1)
    #: the stored message the counted answers came from: a reply handled late (another worker,
    #: a retry) never replaces one that arrived after it
    source_message_id: Mapped[int] = mapped_column(BigId, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("survey_id", "voter_key", name="uq_ballot_survey_id"),)


class ApplicationDesk(Base):
    """An agency's application address (a system account) and the mailbox it forwards to."""

    __tablename__ = "application_desk"

    agency_id: Mapped[str] = mapped_column(ForeignKey("agency.id"), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), unique=True)
    #: the agency's own mailbox (Account.agency_id == agency), where applications arrive
    mailbox_account_id: Mapped[int] = mapped_column(ForeignKey("account.id"))


class Application(Base):
    """A citizen's request to an agency, and where its mail thread stands."""

    __tablename__ = "application"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agency.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), index=True)
    subject: Mapped[str] = mapped_column(String(500))
    #: received, then whatever the agency says (in-progress, approved, rejected, ...)
    status: Mapped[str] = mapped_column(String(64), default="received")
    #: Message-ID of the citizen's first mail, and the References chain of the thread so far
    root_message_id: Mapped[str] = mapped_column(String(500))
    thread_refs: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_application_root_message_id", "root_message_id"),)
