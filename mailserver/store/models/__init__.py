"""The one schema, on SQLite and PostgreSQL. One module per part of the system; all share Base.

Every table here is created by an Alembic migration (``mailserver/store/migrations``); a test
checks that the migrations and these models agree.
"""
from .base import Base, as_utc, utcnow
from .registry import (Account, AddressCounter, Agency, AgencyCredential, AgencyGrant, AgencySender, AuditLog, Citizen,
                       IssuedCertificate, LoginDay, NoticeType)
from .mail import Annotation, Content, ContentSort, Expunged, Folder, MailboxSubscription, Message
from .delivery import Drop, DropRow, Notice, NoticeCount, NoticeOptOut
from .lease import Lease
from .blob import BlobRelease, BlobState
from .queue import OutboundMessage
from .oidc import (AccountPasskey, AccountTotp, OidcClient, OidcCode, OidcConsent, OidcToken, WebauthnChallenge,
                   WebSession)
from .services import (Application, ApplicationDesk, Ballot, Bulletin, BulletinDelivery, ServiceAccount,  # noqa: F401
                       ServiceProcessed, Subscription, Survey, SurveyRecipient, Topic)

__all__ = [
    "Base", "utcnow", "as_utc",
    "Citizen", "Account", "AddressCounter", "Agency", "AgencyCredential", "AgencySender", "AgencyGrant",
    "NoticeType", "AuditLog", "LoginDay", "IssuedCertificate",
    "Folder", "Message", "Annotation", "Content", "ContentSort", "Expunged", "MailboxSubscription",
    "Drop", "DropRow", "Notice", "NoticeCount", "NoticeOptOut",
    "OutboundMessage", "Lease", "BlobRelease", "BlobState",
    "WebSession", "AccountTotp", "OidcClient", "OidcConsent", "OidcCode", "OidcToken", "AccountPasskey",
    "WebauthnChallenge",
]
