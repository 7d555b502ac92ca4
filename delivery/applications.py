"""Application notices in the application's mail thread.

A drop of the ``*-contact-change`` types reports the status of a citizen's own application
(MISSION.md item 4). When the row's ``application_number`` names an application that citizen
mailed to the same agency (``mailserver/services/applications.py``), the notice joins that
conversation: ``In-Reply-To`` the thread's latest message and ``References`` the whole chain,
and the application takes the row's status. Runs inside the delivery transaction, so the thread
and the status change exactly when the notice is delivered. Applications are few: these notices
leave the skeleton's fast structure path and are analysed like any other mail.
"""
from __future__ import annotations

import re

from sqlalchemy import select

from mailserver.mime import analyze
from mailserver.store.models import Application, utcnow

NUMBER_FIELD = "application_number"
MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


def _fold_references(refs: list[str]) -> str:
    """References with one message id per line (folding keeps every line short)."""
    return "\r\n ".join(refs)


def thread_into_applications(session, agency_id: str, rows: list) -> None:
    """Give each row that answers a known application its place in the thread (in place)."""
    numbered = {}
    for r in rows:
        number = str(r.values.get(NUMBER_FIELD) or "").strip()
        if number:
            numbered.setdefault(number, []).append(r)
    if not numbered:
        return
    apps = session.scalars(select(Application).where(Application.agency_id == agency_id,
                                                     Application.number.in_(list(numbered)))).all()
    for app in apps:
        for r in numbered[app.number]:
            if r.account_id != app.account_id:
                continue  # the number belongs to someone else's application: a standalone notice
            refs = app.thread_refs.split()
            head_end = r.raw.find(b"\r\n\r\n")
            found = MESSAGE_ID.search(r.raw, 0, head_end if head_end >= 0 else len(r.raw))
            threading = f"In-Reply-To: {refs[-1]}\r\nReferences: {_fold_references(refs)}\r\n".encode("ascii")
            r.raw = threading + r.raw
            r.analyzed = analyze(r.raw)
            status = str(r.values.get("status") or "").strip()
            if status:
                app.status = status[:64]
            if found:
                app.thread_refs = f"{app.thread_refs} {found.group(1).decode('ascii')}"
            app.updated_at = utcnow()
