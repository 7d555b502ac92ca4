"""The store: one SQLAlchemy schema over SQLite (WAL, the embedded default) or PostgreSQL."""
from .db import Store, open_store

__all__ = ["Store", "open_store"]
