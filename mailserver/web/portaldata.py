"""What the citizen portal reads and writes (blocking: every function runs on the store lane).

Every function takes the signed-in account and answers only about that account's objects: an
object of someone else's, or none at all, is None (the page is then a 404, the same for both,
so an id tried tells nothing). Object ids in the portal's URLs are opaque (``PublicIds``);
surveys and applications keep the ids the city already prints (a survey's name, an
application's number), which are not row numbers either and are checked the same way.
"""
from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import html as htmlmod
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import nh3
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from sqlalchemy import func, or_, select, update

from ..services import surveys as survey_service
from ..services.applications import status_label
from ..services.replies import APPLICATION_HEADER, STATUS_HEADER
from ..services.topics import is_subscribed, set_statement, set_subscribed
from ..store import bodies
from ..store.mailstore import newest_message_id
from ..store.driver import RawRead, driver_rows, driver_time, raw_reader
from ..store.models import (Agency, Application, Content, Folder, Message, Notice, NoticeOptOut, NoticeType,
                            Survey, SurveyRecipient, Topic, WebSession, as_utc, utcnow)
from .sessions import TOUCH_EVERY

#: notices on one page of "my notices"
PER_PAGE = 20
#: the most thread messages an application's page reads (its Message-IDs, then its messages)
MAX_THREAD = 50
#: the tags and attributes a notice's HTML keeps (nh3's defaults minus images: the CSP allows
#: only our own, and a notice's pictures are decoration)
NOTICE_TAGS = nh3.ALLOWED_TAGS - {"img"}


class PublicIds:
    """Opaque ids for rows: the row id and a kind under one AES block (a keyed permutation of
    128 bits), URL-safe base64: 22 characters that reveal no count and cannot be guessed."""

    def __init__(self, key: bytes) -> None:
        self.cipher = Cipher(algorithms.AES(key[:32]), modes.ECB())

    def encode(self, kind: int, row_id: int) -> str:
        block = kind.to_bytes(8, "big") + row_id.to_bytes(8, "big")
        enc = self.cipher.encryptor()
        return base64.urlsafe_b64encode(enc.update(block) + enc.finalize()).decode().rstrip("=")

    def encode_many(self, kind: int, row_ids: list[int]) -> list[str]:
        """``encode`` of each row id, through one encryptor (ECB: each block on its own)."""
        prefix = kind.to_bytes(8, "big")
        enc = self.cipher.encryptor()
        out = enc.update(b"".join(prefix + row_id.to_bytes(8, "big") for row_id in row_ids)) + enc.finalize()
        return [base64.urlsafe_b64encode(out[i:i + 16]).decode().rstrip("=") for i in range(0, len(out), 16)]

    def decode(self, kind: int, text: str) -> int | None:
        if len(text) != 22:
            return None
        try:
            raw = base64.urlsafe_b64decode(text + "==")
        except ValueError:
            return None
        if len(raw) != 16:
            return None
        dec = self.cipher.decryptor()
        block = dec.update(raw) + dec.finalize()
        return int.from_bytes(block[8:], "big") if int.from_bytes(block[:8], "big") == kind else None


NOTICE = 1


def ids(reg) -> PublicIds:
    return PublicIds(reg.keyring.secret_hash("portal-public-ids", "v1"))


# -- the portal's session -------------------------------------------------------------------
#: the provider session a portal cookie names (plain SQL on the DBAPI cursor: every signed-in
#: page runs it, and SQLAlchemy's session and statement handling cost more than the query)
_LIVE_SESSION = "SELECT auth_time, last_seen_at FROM web_session WHERE handle = ? AND account_id = ?"


def _last_seen(r: RawRead, reg, account_id: int, handle: str) -> dt.datetime | None:
    """When the live provider session the portal's cookie names was last used, or None if it is
    not live (ended, revoked from the account page, idle or too old)."""
    oidc = reg.config.oidc
    rows = driver_rows(r, _LIVE_SESSION, handle, account_id)
    if not rows:
        return None
    now = utcnow()
    auth_time, last_seen_at = driver_time(rows[0][0]), driver_time(rows[0][1])
    if (now - last_seen_at).total_seconds() > oidc.session_idle_seconds \
            or (now - auth_time).total_seconds() > oidc.session_max_seconds:
        return None
    return last_seen_at


def _seen(reg, account_id: int, handle: str, last_seen_at: dt.datetime) -> None:
    """A page of the portal is a use of the provider session it came from: its last use is
    written at most every TOUCH_EVERY (as the provider's own pages do), so a citizen reading on
    the portal is not signed out as idle while the provider's pages go unvisited."""
    if utcnow() - last_seen_at > TOUCH_EVERY:
        with reg.store.session() as s:
            s.execute(update(WebSession).where(WebSession.handle == handle, WebSession.account_id == account_id)
                      .values(last_seen_at=utcnow()))


def live_session(reg, account_id: int, handle: str) -> bool:
    """Whether the provider session the portal's cookie names is still the account's and live
    (ended, revoked from the account page, idle or too old: the portal is signed out too)."""
    with raw_reader(reg.store) as r:
        seen = _last_seen(r, reg, account_id, handle)
    if seen is not None:
        _seen(reg, account_id, handle, seen)
    return seen is not None


# -- notices ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoticeItem:
    public_id: str
    agency: str
    title: str
    delivered_at: dt.datetime

    # the list's two renderings of the time, as attributes: a method called from a template goes
    # through Jinja's Context.call, which costs more than the call (40 of them on a page)
    @property
    def delivered_iso(self) -> str:
        return self.delivered_at.isoformat()

    @property
    def delivered_text(self) -> str:
        return self.delivered_at.strftime("%Y-%m-%d %H:%M")


@dataclass
class NoticePage:
    items: list[NoticeItem]
    page: int
    pages: int
    agencies: list[tuple[str, str]]
    types: list[tuple[str, str]]


#: accounts whose filter choices are kept (in each server process)
CHOICES_CACHED = 4096


def _notice_where(agency: bool, kind: bool) -> str:
    return "account_id = ?" + (" AND agency_id = ?" if agency else "") + (" AND notice_type_id = ?" if kind else "")


#: the statements of "my notices" (plain SQL on the DBAPI cursor, as _LIVE_SESSION), for each
#: combination of the two filters: the count (and the newest id, which marks a change), and the
#: page, sorted and cut on ``notice`` alone (ix_notice_account_delivered) before only its rows
#: are joined to their agency's and type's names
_COUNT = {(a, k): f"SELECT COUNT(*), MAX(id) FROM notice WHERE {_notice_where(a, k)}"
          for a in (False, True) for k in (False, True)}
_PAGE = {(a, k): "SELECT n.id, n.agency_id, agency.name, notice_type.title, n.delivered_at FROM ("
                 "SELECT id, agency_id, notice_type_id, delivered_at FROM notice "
                 f"WHERE {_notice_where(a, k)} ORDER BY delivered_at DESC, id DESC LIMIT ? OFFSET ?) n "
                 "LEFT OUTER JOIN agency ON agency.id = n.agency_id "
                 "LEFT OUTER JOIN notice_type ON notice_type.id = n.notice_type_id "
                 "ORDER BY n.delivered_at DESC, n.id DESC"
         for a in (False, True) for k in (False, True)}
#: the agencies and types the account has notices of
_KINDS = ("SELECT p.agency_id, agency.name, p.notice_type_id, notice_type.title FROM ("
          "SELECT DISTINCT agency_id, notice_type_id FROM notice WHERE account_id = ?) p "
          "LEFT OUTER JOIN agency ON agency.id = p.agency_id "
          "LEFT OUTER JOIN notice_type ON notice_type.id = p.notice_type_id")
#: (database, account id) -> ((its notices' count, their newest id), (agencies, types)); LRU,
#: CHOICES_CACHED at most
_choices: OrderedDict[tuple[str, int], tuple[tuple[int, int], tuple[list, list]]] = OrderedDict()
_choices_lock = threading.Lock()


def _filter_choices(r: RawRead, url: str, account_id: int) -> tuple[int, list, list]:
    """The account's count of notices, and the agencies and types it has notices of: those read
    again only when its notices changed (a notice delivered raises the newest id, one removed
    lowers the count)."""
    mark = tuple(driver_rows(r, _COUNT[False, False], account_id)[0])
    key = (url, account_id)
    with _choices_lock:
        cached = _choices.get(key)
        if cached is not None and cached[0] == mark:
            _choices.move_to_end(key)
            return (mark[0], *cached[1])
    kinds = driver_rows(r, _KINDS, account_id)
    found = (sorted({(k[0], k[1] or k[0]) for k in kinds}), sorted({(k[2], k[3] or k[2]) for k in kinds}))
    with _choices_lock:
        _choices[key] = (mark, found)  # type: ignore[assignment]
        _choices.move_to_end(key)
        while len(_choices) > CHOICES_CACHED:
            _choices.popitem(last=False)
    return (mark[0], *found)


def list_notices(reg, account_id: int, agency: str = "", notice_type: str = "", page: int = 1,
                 handle: str | None = None) -> NoticePage | None:
    """One page of the account's notices, newest first, filtered by agency and type; the
    filters' choices are the agencies and types the account has notices of. One read-only
    transaction on a pooled DBAPI connection: the count, the page, the choices (cached while the
    account's notices are unchanged). With ``handle``, the portal's session is checked first in
    the same transaction (``live_session``): None if it is not live."""
    seen = None
    with raw_reader(reg.store) as r:
        if handle is not None:
            seen = _last_seen(r, reg, account_id, handle)
            if seen is None:
                return None
        total, agencies, types = _filter_choices(r, reg.store.url, account_id)
        filters = (bool(agency), bool(notice_type))
        params = [account_id] + [v for v in (agency, notice_type) if v]
        if agency or notice_type:
            total = driver_rows(r, _COUNT[filters], *params)[0][0] or 0
        pages = max(1, -(-total // PER_PAGE))
        page = min(max(1, page), pages)
        rows = driver_rows(r, _PAGE[filters], *params, PER_PAGE, (page - 1) * PER_PAGE)
    if seen is not None:
        _seen(reg, account_id, handle, seen)
    pub = ids(reg)
    items = [NoticeItem(public_id, r[2] or r[1], r[3] or "", driver_time(r[4]))
             for public_id, r in zip(pub.encode_many(NOTICE, [r[0] for r in rows]), rows)]
    return NoticePage(items, page, pages, agencies, types)


@dataclass(frozen=True)
class NoticeView:
    public_id: str
    agency: str
    title: str
    subject: str
    delivered_at: dt.datetime
    html: str


def sanitise(html: str) -> str:
    """A notice's HTML as the portal shows it: nh3's allow-list (no scripts, styles, event
    attributes, forms, frames or images); links open without a referrer."""
    return nh3.clean(html, tags=NOTICE_TAGS, link_rel="noopener noreferrer")


def get_notice(reg, account_id: int, public_id: str) -> NoticeView | None:
    """The account's notice by its public id, its body sanitised; None if it is not theirs (or
    they deleted its message)."""
    row_id = ids(reg).decode(NOTICE, public_id)
    if row_id is None:
        return None
    with reg.store.reader() as s:
        row = s.execute(select(Notice.agency_id, Agency.name, NoticeType.title, Notice.delivered_at, Content.raw,
                               Content.blob_key)
                        .join(Message, (Message.account_id == Notice.account_id) & (Message.id == Notice.message_id))
                        .join(Folder, (Folder.id == Message.folder_id) & (Folder.account_id == Notice.account_id))
                        .join(Content, Content.id == Message.content_id)
                        .outerjoin(Agency, Agency.id == Notice.agency_id)
                        .outerjoin(NoticeType, NoticeType.id == Notice.notice_type_id)
                        .where(Notice.id == row_id, Notice.account_id == account_id).limit(1)).first()
    if row is None:
        return None
    msg = email.message_from_bytes(bodies.body(reg.store, row.raw, row.blob_key), policy=email.policy.default)
    body = msg.get_body(preferencelist=("html", "plain"))
    text = body.get_content() if body is not None else ""
    if body is not None and body.get_content_subtype() != "html":
        text = "<pre>" + htmlmod.escape(text) + "</pre>"
    return NoticeView(public_id, row.name or row.agency_id, row.title or "", str(msg.get("Subject", "")),
                      as_utc(row.delivered_at), sanitise(text))


# -- subscriptions ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    kind: str  # "topic" or "statement"
    id: str
    name: str
    subscribed: bool


def subscriptions(reg, account_id: int) -> list[Choice]:
    """The topics (a topic tied to a notice type is that statement's) and the optional
    statements, each with whether the account receives it."""
    with reg.store.reader() as s:
        topics = list(s.scalars(select(Topic).order_by(Topic.name)))
        covered = {t.notice_type_id for t in topics if t.notice_type_id}
        opted_out = set(s.scalars(select(NoticeOptOut.notice_type_id).where(NoticeOptOut.account_id == account_id)))
        choices = [Choice("topic", t.id, t.name, is_subscribed(s, t, account_id)) for t in topics]
        for nt in s.scalars(select(NoticeType).where(NoticeType.mandatory.is_(False)).order_by(NoticeType.title)):
            if nt.id not in covered:
                choices.append(Choice("statement", nt.id, nt.title, nt.id not in opted_out))
    return choices


def subscribe(reg, account_id: int, kind: str, object_id: str, wanted: bool) -> str | None:
    """Subscribe to (or leave) a topic, or receive (or opt out of) an optional statement: its
    name, or None if there is no such topic or optional statement."""
    with reg.store.session() as s:
        if kind == "topic":
            topic = s.get(Topic, object_id)
            if topic is None:
                return None
            set_subscribed(s, topic, account_id, wanted)
            return topic.name
        nt = s.get(NoticeType, object_id) if kind == "statement" else None
        if nt is None or nt.mandatory:
            return None
        set_statement(s, account_id, nt.id, wanted)
        return nt.title


# -- surveys and appraisals ------------------------------------------------------------------
@dataclass(frozen=True)
class SurveyItem:
    id: str
    title: str
    kind: str
    state: str
    answered: bool


def my_surveys(reg, account_id: int) -> list[SurveyItem]:
    """The surveys and appraisals whose ballot the account was sent, open ones first."""
    with reg.store.reader() as s:
        rows = list(s.scalars(select(Survey).join(SurveyRecipient, SurveyRecipient.survey_id == Survey.id)
                              .where(SurveyRecipient.account_id == account_id)
                              .order_by(Survey.state.desc(), Survey.created_at.desc())))
        return [SurveyItem(r.id, r.title, r.kind, r.state, bool(survey_service.my_ballot(reg, s, r.id, account_id)))
                for r in rows]


@dataclass
class SurveyView:
    id: str
    title: str
    kind: str
    state: str
    anonymous: bool
    questions: list
    mine: dict[int, str]
    #: the tally (closed surveys only: results are shown once answering is over)
    tally: object | None = None
    averages: dict = field(default_factory=dict)


def _recipient(s, survey_id: str, account_id: int) -> Survey | None:
    return s.scalar(select(Survey).join(SurveyRecipient, SurveyRecipient.survey_id == Survey.id)
                    .where(Survey.id == survey_id, SurveyRecipient.account_id == account_id))


def get_survey(reg, account_id: int, survey_id: str) -> SurveyView | None:
    with reg.store.reader() as s:
        survey = _recipient(s, survey_id, account_id)
        if survey is None:
            return None
        view = SurveyView(survey.id, survey.title, survey.kind, survey.state, survey.anonymous,
                          survey_service.questions_of(survey), survey_service.my_ballot(reg, s, survey.id, account_id))
    if view.state == "closed":
        view.tally = survey_service.tally(reg, survey_id)
        view.averages = view.tally.averages() if view.kind == "appraisal" else {}
    return view


def vote(reg, account_id: int, survey_id: str, answers: dict[int, str]) -> str | None:
    """A web vote under the mail vote's rule (``record_ballot``): "new", "replaced", "closed",
    "invalid" (no answer, or a choice the question has not); None if not the account's survey."""
    with reg.store.session() as s:
        survey = _recipient(s, survey_id, account_id)
        if survey is None:
            return None
        if survey.state != "open":
            return "closed"
        questions = survey_service.questions_of(survey)
        if not answers or any(not 1 <= n <= len(questions) or code not in {c for c, _ in questions[n - 1].choices}
                              for n, code in answers.items()):
            return "invalid"
        newest = newest_message_id(s)
        return survey_service.record_ballot(reg, s, survey, account_id, answers, newest)


# -- applications ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ApplicationItem:
    number: str
    agency: str
    subject: str
    status: str
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class ThreadMessage:
    date: str
    sender: str
    subject: str
    status: str
    text: str


def my_applications(reg, account_id: int) -> list[ApplicationItem]:
    with reg.store.reader() as s:
        rows = s.execute(select(Application, Agency.name).join(Agency, Agency.id == Application.agency_id)
                         .where(Application.account_id == account_id).order_by(Application.updated_at.desc())).all()
        return [ApplicationItem(a.number, name, a.subject, status_label(a.status), as_utc(a.created_at),
                                as_utc(a.updated_at)) for a, name in rows]


def get_application(reg, account_id: int, number: str) -> tuple[ApplicationItem, list[ThreadMessage]] | None:
    """The account's application by its number, and its thread as it is in their mailbox
    (acknowledgement, the agency's answers with the status each set), oldest first."""
    with reg.store.reader() as s:
        row = s.execute(select(Application, Agency.name).join(Agency, Agency.id == Application.agency_id)
                        .where(Application.number == number[:32], Application.account_id == account_id)).first()
        if row is None:
            return None
        app, name = row
        item = ApplicationItem(app.number, name, app.subject, status_label(app.status), as_utc(app.created_at),
                               as_utc(app.updated_at))
        number = app.number
        refs = [r for r in app.thread_refs.split() if r.startswith("<") and r.endswith(">")][:MAX_THREAD]
        raws = list(s.execute(select(Content.raw, Content.blob_key).join(Message, Message.content_id == Content.id)
                              .join(Folder, Folder.id == Message.folder_id)
                              .where(Message.account_id == account_id, Folder.account_id == account_id,
                                     Folder.special_use.is_distinct_from("\\Sent"),
                                     or_(*[Content.envelope.contains(r[1:-1]) for r in refs]))
                              .order_by(Message.id).limit(MAX_THREAD))) if refs else []
    thread = []
    for raw in (bodies.body(reg.store, raw, key) for raw, key in raws):
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        if str(msg.get(APPLICATION_HEADER, "")).strip() != number and msg.get("Message-ID") not in refs:
            continue
        body = msg.get_body(preferencelist=("plain",))
        status = str(msg.get(STATUS_HEADER, "")).strip()
        thread.append(ThreadMessage(str(msg.get("Date", "")), str(msg.get("From", "")), str(msg.get("Subject", "")),
                                    status_label(status) if status else "",
                                    body.get_content()[:20000] if body is not None else ""))
    return item, thread
