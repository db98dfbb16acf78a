""" Fixtures of the SQL plugin's tests. One PostgreSQL server serves the whole session (a test
that stops it for an outage starts it again; `sql_database` makes sure of it afterwards). """

from __future__ import annotations

import os
import uuid

import pytest

from sql_fixtures import PASSWORD, PASSWORD_USER, RestartablePostgres
from zato.testing._postgres import PostgresUnavailable


@pytest.fixture(scope="session")
def sql_postgres():
    """ A real PostgreSQL for the session (skipped locally if not installed; required in CI). """
    try:
        server = RestartablePostgres().start()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(str(exc))
    try:
        server.add_password_role(PASSWORD_USER, PASSWORD)
        yield server
    finally:
        server.stop()


@pytest.fixture
def sql_database(sql_postgres):
    """ A new empty database's name; the server is running again after the test. """
    name = f"zato_sql_{uuid.uuid4().hex[:12]}"
    sql_postgres.execute(f'CREATE DATABASE "{name}"')
    yield name
    sql_postgres.ensure_running()
