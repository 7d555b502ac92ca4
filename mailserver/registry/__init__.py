"""The real-name registry: citizens and their one account each, agencies and their grants.

Built on the store and identity; used by the CLI, SMTP, IMAP and the pipeline. Operations are
functions over a ``Registry`` (the store plus the keys), one module per subject.
"""
from .context import Registry

__all__ = ["Registry"]
