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
from sqlalchemy import bindparam, func, or_, select

from ..services import surveys as survey_service
from ..services.applications import status_label
from ..services.replies import APPLICATION_HEADER, STATUS_HEADER
from ..services.topics import is_subscribed, set_statement, set_subscribed
from ..store import bodies
from ..store.models import (Agency, Application, Content, Folder, Message, Notice, NoticeOptOut, NoticeType,
                            Survey, SurveyRecipient, Topic, WebSession, as_utc, utcnow)

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
#: built once: every signed-in page runs it
_LIVE_SESSION = select(WebSession.auth_time, WebSession.last_seen_at).where(
    WebSession.handle == bindparam("handle"), WebSession.account_id == bindparam("account"))


def live_session(reg, account_id: int, handle: str) -> bool:
    """Whether the provider session the portal's cookie names is still the account's and live
    (ended, revoked from the account page, idle or too old: the portal is signed out too)."""
    oidc = reg.config.oidc
    now = utcnow()
    with reg.store.reader() as s:
        row = s.connection().execute(_LIVE_SESSION, {"handle": handle, "account": account_id}).first()
    return row is not None and (now - as_utc(row.last_seen_at)).total_seconds() <= oidc.session_idle_seconds \
        and (now - as_utc(row.auth_time)).total_seconds() <= oidc.session_max_seconds


def if_live(reg, account_id: int, handle: str, work, *args):
    """``work(reg, account_id, *args)`` if the portal's session is live (``live_session``), else
    None: a page's session check and its queries in one call on the store lane."""
    return work(reg, account_id, *args) if live_session(reg, account_id, handle) else None


# -- notices ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoticeItem:
    public_id: str
    agency: str
    title: str
    delivered_at: dt.datetime


@dataclass
class NoticePage:
    items: list[NoticeItem]
    page: int
    pages: int
    agencies: list[tuple[str, str]]
    types: list[tuple[str, str]]


#: accounts whose filter choices are kept (in each server process)
CHOICES_CACHED = 4096


def _notice_statements():
    """The statements of "my notices", built once (building a statement costs more than running
    it). Filters are bound as ``'' = :agency OR agency_id = :agency`` so one statement serves
    every filter. The page is sorted and cut on ``notice`` alone, and only its rows are joined to
    their agency's and type's names."""
    account, agency, kind = bindparam("account"), bindparam("agency"), bindparam("kind")
    where = (Notice.account_id == account, or_(agency == "", Notice.agency_id == agency),
             or_(kind == "", Notice.notice_type_id == kind))
    count = select(func.count(), func.max(Notice.id)).select_from(Notice).where(*where)
    newest = (select(Notice.id, Notice.agency_id, Notice.notice_type_id, Notice.delivered_at).where(*where)
              .order_by(Notice.delivered_at.desc(), Notice.id.desc()).offset(bindparam("skip")).limit(PER_PAGE)
              .subquery())
    page = (select(newest.c.id, newest.c.agency_id, Agency.name, NoticeType.title, newest.c.delivered_at)
            .outerjoin(Agency, Agency.id == newest.c.agency_id)
            .outerjoin(NoticeType, NoticeType.id == newest.c.notice_type_id)
            .order_by(newest.c.delivered_at.desc(), newest.c.id.desc()))
    pairs = (select(Notice.agency_id, Notice.notice_type_id).where(Notice.account_id == account).distinct()
             .subquery())
    kinds = (select(pairs.c.agency_id, Agency.name, pairs.c.notice_type_id, NoticeType.title)
             .outerjoin(Agency, Agency.id == pairs.c.agency_id)
             .outerjoin(NoticeType, NoticeType.id == pairs.c.notice_type_id))
    return count, page, kinds


_COUNT, _PAGE, _KINDS = _notice_statements()
#: (database, account id) -> ((its notices' count, their newest id), (agencies, types)); LRU,
#: CHOICES_CACHED at most
_choices: OrderedDict[tuple[str, int], tuple[tuple[int, int], tuple[list, list]]] = OrderedDict()
_choices_lock = threading.Lock()


def _filter_choices(conn, account_id: int) -> tuple[int, list, list]:
    """The account's count of notices, and the agencies and types it has notices of: those read
    again only when its notices changed (a notice delivered raises the newest id, one removed
    lowers the count)."""
    mark = tuple(conn.execute(_COUNT, {"account": account_id, "agency": "", "kind": ""}).one())
    key = (str(conn.engine.url), account_id)
    with _choices_lock:
        cached = _choices.get(key)
        if cached is not None and cached[0] == mark:
            _choices.move_to_end(key)
            return (mark[0], *cached[1])
    kinds = conn.execute(_KINDS, {"account": account_id}).all()
    found = (sorted({(k[0], k[1] or k[0]) for k in kinds}), sorted({(k[2], k[3] or k[2]) for k in kinds}))
    with _choices_lock:
        _choices[key] = (mark, found)  # type: ignore[assignment]
        _choices.move_to_end(key)
        while len(_choices) > CHOICES_CACHED:
            _choices.popitem(last=False)
    return (mark[0], *found)


def list_notices(reg, account_id: int, agency: str = "", notice_type: str = "", page: int = 1) -> NoticePage:
    """One page of the account's notices, newest first, filtered by agency and type; the
    filters' choices are the agencies and types the account has notices of. On one connection,
    Core statements (no ORM objects): the count, the page, the choices (cached while the
    account's notices are unchanged)."""
    pub = ids(reg)
    params = {"account": account_id, "agency": agency, "kind": notice_type}
    with reg.store.reader() as s:
        conn = s.connection()
        total, agencies, types = _filter_choices(conn, account_id)
        if agency or notice_type:
            total = conn.execute(_COUNT, params).scalar() or 0
        pages = max(1, -(-total // PER_PAGE))
        page = min(max(1, page), pages)
        rows = conn.execute(_PAGE, {**params, "skip": (page - 1) * PER_PAGE}).all()
    items = [NoticeItem(pub.encode(NOTICE, r[0]), r[2] or r[1], r[3] or "", as_utc(r[4])) for r in rows]
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
                        .join(Message, Message.id == Notice.message_id)
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
        newest = s.scalar(select(func.max(Message.id))) or 0
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
                              .where(Folder.account_id == account_id, Folder.special_use.is_distinct_from("\\Sent"),
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
