"""civicmail: real-name city mailboxes over SMTP and IMAP, on one SQLAlchemy store."""

__version__ = "0.1.0"
