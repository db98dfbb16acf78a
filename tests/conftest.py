""" Fixtures shared by the core's tests (helpers are in core_test_helpers.py). Servers come from
the core's own test kit (zato.testing). """

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core_test_helpers import PluginSite
from zato.odb import sqlite_url
from zato.testing import create_test_server_dir
from zato.testing._postgres import PostgresServer, PostgresUnavailable


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    site = PluginSite(tmp_path / "site", monkeypatch)
    yield site
    site.cleanup()


@pytest.fixture
def server_dir(tmp_path: Path) -> Path:
    return create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 3})


@pytest.fixture(scope="session")
def postgres():
    """ A real PostgreSQL server for the session (skipped locally if not installed; required in CI). """
    try:
        server = PostgresServer().start()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """ A new empty configuration database: SQLite, then a real PostgreSQL. """
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "zato.db")
    return request.getfixturevalue("postgres").create_database()
