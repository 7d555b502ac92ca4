"""The figures the city reports: messages delivered (by agency and notice type, per day and in
total), citizens registered and activated, active users, and growth against the same period a
year before.

"Delivered" counts the pipeline's notices (one per notice in a citizen's mailbox) by UTC day,
agency and notice type, read from the counter the pipeline's writer maintains with them
(``notice_count``, ``store/counters.py``), never by counting the ``notice`` rows; "messages
stored" sums each folder's maintained message count;
"active" means a citizen's IMAP login (``login_day``) in the ACTIVE_DAYS days that end on the
period's last day, and the same for the days ending a year before. Logins from before the
``login_day`` table (migration 0006) are known only by each account's last one.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

from sqlalchemy import case, func, select

from ..store.models import Account, Citizen, Folder, LoginDay, NoticeCount
from .context import Registry

ACTIVE_DAYS = 30


@dataclass(frozen=True)
class Stats:
    citizens_registered: int
    accounts_activated: int
    accounts_pending: int
    accounts_disabled: int
    messages_stored: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Period:
    first: dt.date
    last: dt.date

    def year_before(self) -> "Period":
        return Period(_minus_year(self.first), _minus_year(self.last))

    def bounds(self) -> tuple[dt.datetime, dt.datetime]:
        """[start, end) in UTC."""
        start = dt.datetime.combine(self.first, dt.time(), dt.timezone.utc)
        return start, dt.datetime.combine(self.last + dt.timedelta(days=1), dt.time(), dt.timezone.utc)


@dataclass(frozen=True)
class CityFigures:
    """Stats plus the report: what `civicmail stats` prints."""

    base: Stats
    period: Period
    active_users: int
    active_users_year_before: int
    notices_total: int
    notices_period: int
    notices_year_before: int
    citizens_registered_period: int
    citizens_registered_year_before: int
    citizens_total_year_before: int
    #: (agency, notice type, delivered in total, delivered in the period)
    by_type: list[tuple[str, str, int, int]] = field(default_factory=list)
    #: (day, agency, notice type, delivered)
    per_day: list[tuple[dt.date, str, str, int]] = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON: the foundation's keys unchanged, the report's beside them."""
        out = self.base.as_dict()
        out.update({
            "period": {"first": self.period.first.isoformat(), "last": self.period.last.isoformat(),
                       "year_before": {"first": self.period.year_before().first.isoformat(),
                                       "last": self.period.year_before().last.isoformat()}},
            "active_users": self.active_users,
            "active_days": ACTIVE_DAYS,
            "notices_delivered": {"total": self.notices_total, "period": self.notices_period,
                                  "year_before": self.notices_year_before,
                                  "growth": growth(self.notices_period, self.notices_year_before)},
            "citizens": {"registered_total": self.base.citizens_registered,
                         "registered_total_year_before": self.citizens_total_year_before,
                         "registered_total_growth": growth(self.base.citizens_registered,
                                                           self.citizens_total_year_before),
                         "registered_period": self.citizens_registered_period,
                         "registered_year_before": self.citizens_registered_year_before,
                         "registered_growth": growth(self.citizens_registered_period,
                                                     self.citizens_registered_year_before),
                         "activated": self.base.accounts_activated},
            "active_users_year_before": self.active_users_year_before,
            "active_users_growth": growth(self.active_users, self.active_users_year_before),
            "by_agency_and_type": [{"agency": a, "notice_type": t, "total": n, "period": p}
                                   for a, t, n, p in self.by_type],
            "per_day": [{"day": d.isoformat(), "agency": a, "notice_type": t, "delivered": n}
                        for d, a, t, n in self.per_day],
        })
        return out


def growth(now: int, before: int) -> float | None:
    """Relative change (0.25 = +25%); None when there is nothing to compare with."""
    return round((now - before) / before, 4) if before else None


def _minus_year(day: dt.date) -> dt.date:
    try:
        return day.replace(year=day.year - 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year - 1, day=28)


def stats(reg: Registry) -> Stats:
    with reg.store.reader() as s:
        states = dict(s.execute(select(Account.state, func.count()).where(Account.citizen_id.is_not(None))
                                .group_by(Account.state)).all())
        return Stats(
            citizens_registered=s.scalar(select(func.count()).select_from(Citizen)) or 0,
            accounts_activated=states.get("active", 0),
            accounts_pending=states.get("pending", 0),
            accounts_disabled=states.get("disabled", 0),
            # each folder's count, kept by the mail write path (IMAP STATUS MESSAGES reads it)
            messages_stored=int(s.scalar(select(func.sum(Folder.message_count))) or 0),
        )


def city_figures(reg: Registry, days: int = 30, today: dt.date | None = None,
                 now: dt.datetime | None = None) -> CityFigures:
    """The report for the ``days`` days up to and including ``today`` (UTC)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    today = today or now.date()
    period = Period(today - dt.timedelta(days=max(days, 1) - 1), today)
    before = period.year_before()
    start, end = period.bounds()
    b_start, b_end = before.bounds()
    base = stats(reg)

    def count(s, model, column, lo=None, hi=None) -> int:
        q = select(func.count()).select_from(model)
        if lo is not None:
            q = q.where(column >= lo)
        if hi is not None:
            q = q.where(column < hi)
        return s.scalar(q) or 0

    def active(s, last: dt.date) -> int:
        """Citizens with an IMAP login in the ACTIVE_DAYS days up to and including ``last``."""
        return s.scalar(select(func.count(func.distinct(LoginDay.account_id)))
                        .join(Account, Account.id == LoginDay.account_id)
                        .where(LoginDay.day > last - dt.timedelta(days=ACTIVE_DAYS), LoginDay.day <= last,
                               Account.citizen_id.is_not(None))) or 0

    def delivered(s, lo: dt.date | None = None, hi: dt.date | None = None) -> int:
        """Notices delivered on the days lo..hi (both included), from the maintained counter."""
        q = select(func.sum(NoticeCount.delivered))
        if lo is not None:
            q = q.where(NoticeCount.day >= lo)
        if hi is not None:
            q = q.where(NoticeCount.day <= hi)
        return int(s.scalar(q) or 0)

    with reg.store.reader() as s:
        c = NoticeCount
        in_period = (c.day >= period.first) & (c.day <= period.last)
        by_type = [(a, t, int(n), int(p or 0)) for a, t, n, p in s.execute(
            select(c.agency_id, c.notice_type_id, func.sum(c.delivered),
                   func.sum(case((in_period, c.delivered), else_=0)))
            .group_by(c.agency_id, c.notice_type_id).order_by(c.agency_id, c.notice_type_id))]
        per_day = [(d, a, t, int(n)) for d, a, t, n in s.execute(
            select(c.day, c.agency_id, c.notice_type_id, c.delivered).where(in_period, c.delivered > 0)
            .order_by(c.day, c.agency_id, c.notice_type_id))]
        return CityFigures(
            base=base, period=period, active_users=active(s, period.last),
            active_users_year_before=active(s, before.last),
            notices_total=delivered(s),
            notices_period=delivered(s, period.first, period.last),
            notices_year_before=delivered(s, before.first, before.last),
            citizens_registered_period=count(s, Citizen, Citizen.created_at, start, end),
            citizens_registered_year_before=count(s, Citizen, Citizen.created_at, b_start, b_end),
            citizens_total_year_before=count(s, Citizen, Citizen.created_at, None, b_end),
            by_type=by_type, per_day=per_day)
