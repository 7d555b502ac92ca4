"""Citizen services over mail: topics and bulletins, surveys and appraisals, applications.

Every service address is a system account (no citizen, no agency) listed in ``service_account``.
SMTP delivers to it like to any mailbox; the worker (``service.py``) reads its INBOX through the
store, handles each message once, and answers through ``store.mailstore``. Nothing here imports
the protocol edges.
"""
