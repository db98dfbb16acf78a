""" Helpers of the SQL plugin's tests (the fixtures using them are in conftest.py; this module's
name is unique in the repository so it never clashes with another plugin's): a real PostgreSQL
server that a test can stop and start again on the same port, a role that must log in with a
password, and a `Peer` for the core's conformance suite. """

from __future__ import annotations

import time
import uuid
from typing import Any

import trio

from zato.testing._postgres import PostgresServer

PASSWORD_USER = "zato_pw"
# Characters that break a URL pasted together by hand: the plugin must build it from parts.
PASSWORD = "p@ss:w/rd?#&=%"


class RestartablePostgres(PostgresServer):
    """ The test kit's PostgreSQL, plus: stop and start again on the same data directory and
    port (an outage), SQL as the superuser, and a role that authenticates with a password
    (`scram-sha-256` for it over TCP; every other role stays trusted). """

    running = False

    def start(self) -> "RestartablePostgres":
        super().start()
        self.running = True
        return self

    def _options(self) -> str:
        # The same options as PostgresServer.start, so the server comes back exactly as it was.
        return f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"

    def _pg_ctl(self, *args: str) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), *args)

    def stop_for_an_outage(self) -> None:
        """ Stops the server (every connection to it is dropped), keeping its data. """
        self._pg_ctl("-m", "fast", "-w", "-t", "60", "stop")
        self.running = False

    def start_again(self) -> None:
        self._pg_ctl("-o", self._options(), "-l", str(self.dir / "log"), "-w", "-t", "60", "start")
        self.running = True

    def ensure_running(self) -> None:
        if not self.running:
            self.start_again()

    def execute(self, sql: str, database: str = "postgres") -> list[tuple]:
        """ Runs one statement as the superuser (autocommit) on a connection of its own. """
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool
        engine = create_engine(self.url(database), isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with engine.connect() as connection:
                result = connection.execute(text(sql))
                return [tuple(row) for row in result] if result.returns_rows else []
        finally:
            engine.dispose()

    def add_password_role(self, user: str, password: str) -> None:
        quoted = password.replace("'", "''")
        self.execute(f"CREATE ROLE {user} LOGIN SUPERUSER PASSWORD '{quoted}'")
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"host all {user} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        self._pg_ctl("reload")
        # The reload is asynchronous: wait until a wrong password is refused (under trust it is not).
        from sqlalchemy import create_engine
        from sqlalchemy.exc import OperationalError
        from sqlalchemy.pool import NullPool
        engine = create_engine(f"postgresql+psycopg://{user}:wrong@127.0.0.1:{self.port}/postgres", poolclass=NullPool)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    engine.connect().close()
                except OperationalError as exc:
                    if "password authentication failed" in str(exc):
                        return
                    raise
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the pg_hba.conf rule for {user} is not in force 10 s after pg_ctl reload")
                time.sleep(0.05)
        finally:
            engine.dispose()

    def backends(self, application_name: str) -> int:
        """ How many connections with this application_name the server has now. """
        sql = f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{application_name}'"
        return self.execute(sql)[0][0]

    def wait_for_no_backends(self, application_name: str, timeout: float = 10) -> None:
        """ A client's socket is closed before its backend leaves pg_stat_activity: wait a little. """
        deadline = time.monotonic() + timeout
        while (count := self.backends(application_name)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert count == 0, f"{count} connection(s) with application_name {application_name!r} still open"


def pg_definition(server: RestartablePostgres, database: str, **fields: Any) -> dict[str, Any]:
    """ An outgoing_sql definition (no password) for the trusted superuser. """
    return {"engine": "postgresql", "host": "127.0.0.1", "port": server.port, "db_name": database,
            "username": "zato", **fields}


class PostgresPeer:
    """ The conformance suite's `Peer`: the session's PostgreSQL, reached as the role that needs
    its password, each connection tagged with an application_name of its own. """

    def __init__(self, server: RestartablePostgres, database: str) -> None:
        self.server = server
        self.database = database
        self.tag = f"zato-conformance-{uuid.uuid4().hex[:8]}"

    def definition(self, name: str) -> dict[str, Any]:
        return {"engine": "postgresql", "host": "127.0.0.1", "port": self.server.port, "username": PASSWORD_USER,
                "db_name": f"{self.database}?application_name={self.tag}", "pool_size": 2, "extra": "max_overflow=1"}

    def secrets(self) -> dict[str, str]:
        return {"password": PASSWORD}

    def use(self, connection: Any) -> None:
        from sqlalchemy import text
        with connection.session() as session:
            assert session.execute(text("SELECT current_user")).scalar_one() == PASSWORD_USER

    def edited(self, definition: dict[str, Any]) -> dict[str, Any]:
        return {**definition, "db_name": f"{self.database}?application_name={self.tag}-edited", "pool_size": 3}

    def check_edit(self, connection: Any) -> None:
        from sqlalchemy import text
        with connection.session() as session:
            assert session.execute(text("SELECT current_setting('application_name')")).scalar_one() == \
                f"{self.tag}-edited"
        assert connection.engine.pool.size() == 3

    def assert_closed(self, connection: Any) -> None:
        assert connection.closed
        assert connection.engine.pool.checkedin() == 0
        self.server.wait_for_no_backends(connection.settings.url.query["application_name"])

    def bad_definitions(self) -> list[tuple[dict[str, Any], str]]:
        good = self.definition("bad")
        return [({k: v for k, v in good.items() if k != "engine"}, "engine"),
                ({**good, "pool_size": "big"}, "pool_size"),
                ({**good, "port": "fifty"}, "port"),
                ({**good, "password": PASSWORD}, "password"),  # secrets have their own call
                ({**good, "extra": "echo=True\nmax_overflw=5"}, "extra"),  # with the valid keys listed
                ({**good, "databse": "x"}, "databse")]

    async def stop(self) -> None:
        await trio.to_thread.run_sync(self.server.stop_for_an_outage)

    async def start(self) -> None:
        await trio.to_thread.run_sync(self.server.start_again)
