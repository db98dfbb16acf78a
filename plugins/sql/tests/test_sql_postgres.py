""" SQL connection pools against a real PostgreSQL server (started by the tests: initdb + pg_ctl
on 127.0.0.1, a free port): driver options from the query string and `extra` options that take
effect, the password set through the admin API (sent, stored encrypted, never shown), the
shared conformance suite (outage and reconnect included), and the checks a definition gets
when it is created through the admin API. """

from __future__ import annotations

import logging

import httpx
import pytest
import trio
from sqlalchemy import text

from sql_fixtures import PASSWORD, PASSWORD_USER, PostgresPeer, pg_definition
from zato.server.outgoing import OutgoingError
from zato.testing import admin_auth, create_test_server_dir, run_server
from zato.testing.conformance import OutgoingConnectionConformance
from zato_plugin_sql import SQLConnection


def connect(server, database, **fields):
    return SQLConnection(None, {"name": "pg", **pg_definition(server, database, **fields)})


def one(conn, sql):
    with conn.session() as session:
        return session.execute(text(sql)).scalar_one()


def test_query_string_options_reach_the_driver(sql_postgres, sql_database):
    conn = connect(sql_postgres, f"{sql_database}?application_name=zato-test&options=-c%20search_path%3Dcrm,public")
    assert one(conn, "SELECT current_setting('application_name')") == "zato-test"
    assert one(conn, "SHOW search_path") == "crm,public"
    assert one(conn, "SELECT current_database()") == sql_database
    plain = connect(sql_postgres, sql_database)
    assert one(plain, "SHOW search_path") == '"$user", public'  # the server's default, for comparison
    conn.close()
    plain.close()


def test_extra_options_take_effect(sql_postgres, sql_database):
    extra = "isolation_level=SERIALIZABLE\nmax_overflow=1\nconnect_args={'options': '-c statement_timeout=1234'}"
    conn = connect(sql_postgres, sql_database, pool_size=2, extra=extra)
    assert one(conn, "SHOW transaction_isolation") == "serializable"
    assert one(conn, "SHOW statement_timeout") == "1234ms"
    assert conn.engine.pool.size() == 2 and conn.settings.concurrency == 3
    default = connect(sql_postgres, sql_database)
    assert one(default, "SHOW transaction_isolation") == "read committed"
    conn.close()
    default.close()


def test_sessions_commit_or_roll_back_on_postgresql(sql_postgres, sql_database):
    sql_postgres.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)", sql_database)
    conn = connect(sql_postgres, sql_database)
    with conn.session() as session:
        session.execute(text("INSERT INTO orders VALUES (1, 'book')"))
    with pytest.raises(KeyError):
        with conn.session() as session:
            session.execute(text("INSERT INTO orders VALUES (2, 'pen')"))
            raise KeyError("no")
    with conn.connection() as connection:
        connection.execute(text("INSERT INTO orders VALUES (3, 'ink')"))
    assert sql_postgres.execute("SELECT id FROM orders ORDER BY id", sql_database) == [(1,), (3,)]
    conn.close()


def test_a_wrong_password_is_refused_and_never_shown(sql_postgres, sql_database, caplog):
    wrong = connect(sql_postgres, sql_database, username=PASSWORD_USER, password="wrong-secret-123")
    with caplog.at_level(logging.DEBUG), pytest.raises(OutgoingError) as info:
        wrong.ping()
    assert f'password authentication failed for user "{PASSWORD_USER}"' in str(info.value)
    assert f"postgresql+psycopg://{PASSWORD_USER}:***@127.0.0.1:{sql_postgres.port}/{sql_database}" in str(info.value)
    assert "wrong-secret-123" not in str(info.value) + caplog.text + repr(wrong)
    right = connect(sql_postgres, sql_database, username=PASSWORD_USER, password=PASSWORD)
    assert one(right, "SELECT current_user") == PASSWORD_USER
    wrong.close()
    right.close()


async def test_an_outage_fails_calls_and_the_pool_reconnects_after_it(sql_postgres, sql_database):
    conn = connect(sql_postgres, sql_database, pool_size=2)
    await trio.to_thread.run_sync(one, conn, "SELECT 1")
    pid_before = await trio.to_thread.run_sync(one, conn, "SELECT pg_backend_pid()")
    await trio.to_thread.run_sync(sql_postgres.stop_for_an_outage)
    with pytest.raises(OutgoingError, match="SELECT 1 on .* failed: OperationalError: connection failed"):
        await trio.to_thread.run_sync(conn.ping)
    await trio.to_thread.run_sync(sql_postgres.start_again)
    # pool_pre_ping finds the pooled connection dead and replaces it: the first call works
    assert await trio.to_thread.run_sync(one, conn, "SELECT 1") == 1
    assert await trio.to_thread.run_sync(one, conn, "SELECT pg_backend_pid()") != pid_before
    conn.close()


# ################################################################################################
# The shared conformance suite


class TestSQLConformance(OutgoingConnectionConformance):
    connection_type = "sql"
    object_type = "outgoing_sql"

    @pytest.fixture
    def peer(self, sql_postgres, sql_database):
        return PostgresPeer(sql_postgres, sql_database)


# ################################################################################################
# Through the admin API


@pytest.fixture
async def admin(tmp_path):
    base_dir = create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 0.3})
    async with run_server(base_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                                     headers={"content-type": "application/json"}) as client:  # admin writes need it
            client.server = server
            yield client


async def test_the_password_is_set_separately_stored_encrypted_and_never_returned(admin, sql_postgres, sql_database):
    definition = {"name": "crm", **pg_definition(sql_postgres, sql_database, username=PASSWORD_USER)}
    assert (await admin.post("/zato/api/objects/outgoing_sql", json=definition)).status_code == 201
    ping = (await admin.post("/zato/api/outgoing/sql/crm/ping")).json()
    assert not ping["ok"] and "no password supplied" in ping["error"]
    reply = await admin.put("/zato/api/objects/outgoing_sql/crm/secrets/password", json={"value": PASSWORD})
    assert reply.status_code == 204, reply.text
    assert (await admin.post("/zato/api/outgoing/sql/crm/ping")).json()["ok"]
    shown = (await admin.get("/zato/api/objects/outgoing_sql/crm")).json()
    assert shown["secrets_set"] == ["password"] and "password" not in shown
    stored = admin.server.odb.get_object("outgoing_sql", "crm")["password"]
    assert stored.startswith("enc:v1:") and PASSWORD not in stored
    connection = admin.server.outgoing.map("out.sql")["crm"]
    assert connection.engine.url.password == PASSWORD  # decrypted for the driver only


async def test_the_admin_api_refuses_an_invalid_extra_key_naming_the_field_and_the_valid_keys(admin, tmp_path):
    definition = {"name": "typo", "engine": "sqlite", "db_name": str(tmp_path / "typo.db"),
                  "extra": "echo=True\nmax_overflw=5\npool_size=2\nnot a pair"}
    reply = await admin.post("/zato/api/objects/outgoing_sql", json=definition)
    assert reply.status_code == 400, reply.text
    errors = [e["error"] for e in reply.json()["errors"] if e["field"] == "extra"]
    assert errors[0] == "line 4: 'not a pair' is not key=value (e.g. echo=True)"
    assert errors[1].startswith("'max_overflw' is not a create_engine argument for sqlite with QueuePool; valid keys: ")
    assert "max_overflow" in errors[1].split("valid keys: ")[1].split(", ")
    assert errors[2] == "pool_size is a field of its own; set it there, not in extra"
    reply = await admin.post("/zato/api/objects/outgoing_sql", json={
        "name": "bad", "engine": "postgresql", "port": 70000, "db_name": "crm?charset", "extra": "echo=True"})
    assert reply.status_code == 400 and {e["field"] for e in reply.json()["errors"]} == {"port", "db_name"}
    reply = await admin.post("/zato/api/objects/outgoing_sql", json={"name": "bad", "engine": "db2000"})
    assert reply.status_code == 400 and "unknown engine 'db2000'" in reply.json()["errors"][0]["error"]
    assert (await admin.get("/zato/api/objects/outgoing_sql")).json() == []  # nothing was stored

    # A partial change without the engine can only have its lines read: the build checks the keys
    assert (await admin.post("/zato/api/objects/outgoing_sql", json={**definition, "extra": "echo=True"})).status_code \
        == 201
    reply = await admin.patch("/zato/api/objects/outgoing_sql/typo", json={"extra": "oops"})
    assert reply.status_code == 400 and "'oops' is not key=value" in reply.text


async def test_an_extra_from_the_environment_is_checked_when_the_pool_is_built(admin, tmp_path, caplog, monkeypatch):
    """ `extra: $NAME` is read when the object loads, so the build checks it: the connection is
    not built, and the log, the ping reply and server.outgoing_connections.errors say why, with
    the valid keys; with the variable fixed, a reload builds it. """
    server = admin.server
    monkeypatch.setenv("ZATO_TEST_SQL_EXTRA", "echo=True\nmax_overflw=5")
    definition = {"name": "typo", "engine": "sqlite", "db_name": str(tmp_path / "typo.db"),
                  "extra": "$ZATO_TEST_SQL_EXTRA"}
    with caplog.at_level(logging.ERROR, logger="zato.outgoing"):
        assert (await admin.post("/zato/api/objects/outgoing_sql", json=definition)).status_code == 201
    error = server.outgoing_connections.errors[("sql", "typo")]
    assert "extra: 'max_overflw' is not a create_engine argument for sqlite with QueuePool; valid keys: " in error
    assert "max_overflow" in error.split("valid keys: ")[1].split(", ")
    assert "outgoing sql 'typo' could not be built" in caplog.text and "max_overflw" in caplog.text
    assert "typo" not in server.outgoing.map("out.sql")
    reply = await admin.post("/zato/api/outgoing/sql/typo/ping")
    assert reply.status_code == 404 and "could not be built: SQLConfigError" in reply.text

    monkeypatch.setenv("ZATO_TEST_SQL_EXTRA", "echo=True\nmax_overflow=5")
    assert (await admin.post("/zato/api/config/reload", json={"types": ["outgoing_sql"]})).status_code == 200
    assert ("sql", "typo") not in server.outgoing_connections.errors
    assert (await admin.post("/zato/api/outgoing/sql/typo/ping")).json()["ok"]
    assert server.outgoing.map("out.sql")["typo"].engine.pool._max_overflow == 5


# ################################################################################################
# Configuration as code


ENMASSE_FILE = """\
outgoing_sql:
  - name: CRM
    engine: postgresql
    host: 127.0.0.1
    port: {port}
    db_name: {database}?application_name=crm-from-yaml
    username: {user}
    password: $CRM_DB_PASSWORD
    pool_size: 3
    extra: |
      isolation_level=REPEATABLE READ
      max_overflow=2
"""


async def test_an_enmasse_file_in_zatos_shape_gives_a_working_pool(sql_postgres, sql_database, tmp_path, monkeypatch):
    from click.testing import CliRunner
    from zato.cli import cli
    base_dir = create_test_server_dir(tmp_path / "server")
    config = tmp_path / "config.yaml"
    config.write_text(ENMASSE_FILE.format(port=sql_postgres.port, database=sql_database, user=PASSWORD_USER)
                      .replace("max_overflow", "max_overflw"))
    result = CliRunner().invoke(cli, ["enmasse", "import", str(base_dir), str(config)], catch_exceptions=False)
    assert result.exit_code == 1 and f"{config.name}:10: outgoing_sql 'CRM': extra: 'max_overflw' is not a " \
                                     f"create_engine argument" in result.output, result.output
    config.write_text(ENMASSE_FILE.format(port=sql_postgres.port, database=sql_database, user=PASSWORD_USER))
    result = CliRunner().invoke(cli, ["enmasse", "import", str(base_dir), str(config)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("CRM_DB_PASSWORD", PASSWORD)
    async with run_server(base_dir) as server:
        conn = server.outgoing.map("out.sql")["CRM"]
        check = "SELECT current_user, current_setting('application_name'), current_setting('transaction_isolation')"

        def read():
            with conn.session() as session:
                return tuple(session.execute(text(check)).one())
        assert await trio.to_thread.run_sync(read) == (PASSWORD_USER, "crm-from-yaml", "repeatable read")
        assert conn.engine.pool.size() == 3 and conn.settings.concurrency == 5
