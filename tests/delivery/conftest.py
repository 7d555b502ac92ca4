"""Fixtures for the pipeline tests: a small city on both engines, or on SQLite only."""
from __future__ import annotations

import pytest

from drophelpers import make_city


@pytest.fixture
def city(registry):
    return make_city(registry)


@pytest.fixture
def sqlite_city(sqlite_registry):
    return make_city(sqlite_registry)
