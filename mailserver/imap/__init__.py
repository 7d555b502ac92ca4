"""Our own asyncio IMAP4rev1 server (see service.py for the listeners)."""
