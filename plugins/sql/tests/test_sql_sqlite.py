""" SQL connection pools on a real SQLite file: sessions and connections that commit or roll
back, a query-string option and `extra` options that take effect, the async way in, the guard
against blocking the trio loop, closing. """

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from contextlib import closing

import pytest
import trio
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool, QueuePool

from zato.server.outgoing import OutgoingError
from zato_plugin_sql import SQLConfigError, SQLConnection, TransactionalSession


@pytest.fixture
def db_file(tmp_path):
    path = tmp_path / "app.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL)")
        db.commit()
    return path


def rows(path):
    with closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT id, item FROM orders ORDER BY id").fetchall()


def sqlite_connection(path, **fields):
    return SQLConnection(None, {"name": "orders", "engine": "sqlite", "db_name": str(path), **fields})


def test_a_session_commits_when_the_block_succeeds_and_rolls_back_when_it_raises(db_file):
    conn = sqlite_connection(db_file)
    with conn.session() as session:
        assert isinstance(session, TransactionalSession)
        session.execute(text("INSERT INTO orders (id, item) VALUES (1, 'book')"))
    assert rows(db_file) == [(1, "book")]
    with pytest.raises(ValueError, match="changed my mind"):
        with conn.session() as session:
            session.execute(text("INSERT INTO orders (id, item) VALUES (2, 'pen')"))
            raise ValueError("changed my mind")
    assert rows(db_file) == [(1, "book")]
    assert conn.engine.pool.checkedout() == 0  # both sessions gave their connection back
    conn.close()


def test_zato_style_closing_with_an_explicit_commit_works_too(db_file):
    conn = sqlite_connection(db_file)
    with closing(conn.session()) as session:
        session.execute(text("INSERT INTO orders (id, item) VALUES (1, 'book')"))
        session.commit()
    with closing(conn.session()) as session:  # no commit: nothing is kept
        session.execute(text("INSERT INTO orders (id, item) VALUES (2, 'pen')"))
    assert rows(db_file) == [(1, "book")]
    assert conn.pool.engine is conn.engine is conn.impl  # self.outgoing.sql.get(name).pool.engine, as in Zato
    conn.close()


def test_a_connection_is_a_transaction_too(db_file):
    conn = sqlite_connection(db_file)
    with conn.connection() as connection:
        connection.execute(text("INSERT INTO orders (id, item) VALUES (:id, :item)"), [{"id": 1, "item": "a"},
                                                                                        {"id": 2, "item": "b"}])
    with pytest.raises(RuntimeError):
        with conn.connection() as connection:
            connection.execute(text("DELETE FROM orders"))
            raise RuntimeError("no")
    assert rows(db_file) == [(1, "a"), (2, "b")]
    conn.close()


def test_a_query_string_option_reaches_the_driver(db_file):
    """ ?mode=ro&uri=true: sqlite3 opens the file read-only, so writes fail and reads work. """
    conn = SQLConnection(None, {"name": "ro", "engine": "sqlite", "db_name": f"file:{db_file}?mode=ro&uri=true"})
    with conn.session() as session:
        assert session.execute(text("SELECT count(*) FROM orders")).scalar_one() == 0
    with pytest.raises(OperationalError, match="readonly database"):
        with conn.session() as session:
            session.execute(text("INSERT INTO orders (id, item) VALUES (1, 'x')"))
    conn.close()
    assert rows(db_file) == []


def test_extra_echo_logs_every_statement_to_the_server_log_naming_the_connection(db_file, caplog, capsys):
    conn = sqlite_connection(db_file, extra="echo=True")
    quiet = sqlite_connection(db_file)
    with caplog.at_level(logging.INFO):
        with conn.session() as session:
            session.execute(text("SELECT item FROM orders WHERE id = 12345"))
        with quiet.session() as session:
            session.execute(text("SELECT item FROM orders WHERE id = 67890"))
    echoed = [r for r in caplog.records if r.name == "sqlalchemy.engine.Engine.orders"]
    assert any("WHERE id = 12345" in r.getMessage() for r in echoed), caplog.text
    assert "67890" not in caplog.text  # echo belongs to that connection only
    assert "12345" not in capsys.readouterr().out  # not also printed to stdout by SQLAlchemy's own handler
    conn.close()
    quiet.close()


def test_the_pool_size_field_and_extra_pool_options_reach_the_pool(db_file):
    conn = sqlite_connection(db_file, pool_size=3, extra="max_overflow=2\npool_timeout=7")
    pool = conn.engine.pool
    assert isinstance(pool, QueuePool) and pool.size() == 3 and pool._max_overflow == 2 and pool._timeout == 7
    assert conn.settings.concurrency == 5
    assert isinstance(sqlite_connection(db_file, pool_size=0).engine.pool, NullPool)
    conn.close()


def test_invalid_extra_keys_fail_the_build_with_the_valid_ones_listed(db_file):
    with pytest.raises(SQLConfigError) as info:
        sqlite_connection(db_file, extra="echo=True\nmax_overflw=5")
    assert "extra: 'max_overflw' is not a create_engine argument for sqlite with QueuePool; valid keys: " in \
        str(info.value)
    assert "max_overflow" in str(info.value)


def test_a_value_the_dialect_refuses_names_extra(db_file):
    with pytest.raises(SQLConfigError, match="extra: create_engine refused it: .*must be a mapping"):
        sqlite_connection(db_file, extra="execution_options=5")


def test_ping_and_statistics(db_file, tmp_path):
    conn = sqlite_connection(db_file)
    conn.ping()
    assert conn.statistics()["pool"] == "QueuePool" and conn.statistics()["checkedout"] == 0
    missing = sqlite_connection(tmp_path / "no" / "such" / "dir" / "x.db")
    with pytest.raises(OutgoingError, match=r"outgoing sql 'orders': SELECT 1 on sqlite:///.*x.db failed: "
                                            r"OperationalError: unable to open database file"):
        missing.ping()


def test_a_closed_connection_says_so(db_file):
    conn = sqlite_connection(db_file)
    with conn.session() as session:
        session.execute(text("SELECT 1"))
    assert conn.engine.pool.checkedin() == 1
    conn.close()
    assert conn.engine.pool.checkedin() == 0
    with pytest.raises(OutgoingError, match=r"outgoing sql 'orders' was closed \(replaced by an edit, or deleted\); "
                                            r"get it again with self.outgoing.sql.get\('orders'\)"):
        conn.session()


def test_relative_sqlite_paths_are_in_the_server_directory(tmp_path):
    class FakeServerDir:  # only base_dir is read
        base_dir = str(tmp_path)
    (tmp_path / "work").mkdir()
    conn = SQLConnection(FakeServerDir(), {"name": "rel", "engine": "sqlite", "db_name": "work/rel.db"})
    with conn.session() as session:
        session.execute(text("CREATE TABLE t (x INTEGER)"))
    assert (tmp_path / "work" / "rel.db").exists()
    conn.close()


# ################################################################################################
# Async services


async def test_run_from_the_trio_loop_runs_in_a_worker_thread(db_file):
    conn = sqlite_connection(db_file)
    loop_thread = threading.get_ident()

    def add(session, item):
        session.execute(text("INSERT INTO orders (item) VALUES (:item)"), {"item": item})
        return threading.get_ident()

    assert await conn.run(add, "book") != loop_thread
    with pytest.raises(ZeroDivisionError):
        await conn.run(lambda session: (session.execute(text("INSERT INTO orders (item) VALUES ('x')")), 1 / 0))
    assert rows(db_file) == [(1, "book")]
    assert await trio.to_thread.run_sync(conn.run, lambda session, n: n * 2, 21) == 42  # plain call from a thread
    conn.close()


async def test_blocking_calls_are_refused_on_the_trio_loop(db_file):
    conn = sqlite_connection(db_file)
    for call in (conn.session, conn.connection, conn.ping):
        with pytest.raises(OutgoingError, match=r"blocks, and this is an async def handle on the trio loop; use "
                                                r"`await self.outgoing.sql.get\('orders'\).run\(fn, \*args\)`"):
            call()
    conn.close()


async def test_async_calls_wait_for_a_free_connection_in_trio_not_in_the_pool(db_file):
    """ 12 calls at once on a pool of 2 whose checkout gives up after 1 s, each holding its
    connection for 0.25 s: in the pool most would time out; queued in trio they all succeed,
    never more than 2 at a time. """
    conn = sqlite_connection(db_file, pool_size=2, extra="max_overflow=0\npool_timeout=1")
    lock, in_use, peak = threading.Lock(), [0], [0]

    def hold(session, number):
        session.execute(text("SELECT 1"))
        with lock:
            in_use[0] += 1
            peak[0] = max(peak[0], in_use[0])
        time.sleep(0.25)
        with lock:
            in_use[0] -= 1
        return number

    results = []
    async with trio.open_nursery() as nursery:
        for number in range(12):
            nursery.start_soon(lambda n: _append(results, conn.run(hold, n)), number)
    assert sorted(results) == list(range(12))
    assert peak[0] == 2
    conn.close()


async def _append(results, awaitable):
    results.append(await awaitable)


async def test_services_under_the_service_tester_get_a_real_pool_on_a_sqlite_file(db_file):
    """ How users test their own services without a server (docs/testing-services.md). """
    from zato.server.service import Service
    from zato.testing import ServiceTester

    class AddOrder(Service):
        name = "t.sql.tester-add"

        def handle(self):
            with self.outgoing.sql.get("orders").session() as session:
                session.execute(text("INSERT INTO orders (item) VALUES (:item)"), dict(self.request.payload))

    tester = ServiceTester(AddOrder)
    conn = tester.outgoing("out.sql", "orders", sqlite_connection(db_file))
    await tester.invoke(AddOrder, {"item": "tested"})
    assert rows(db_file) == [(1, "tested")]
    conn.close()
    tester.close()


def test_a_missing_driver_says_what_to_install():
    import importlib.util
    missing = [(engine, module, extra) for engine, module, extra in
               [("mysql", "pymysql", "mysql"), ("oracle", "oracledb", "oracle"), ("mssql", "pymssql", "mssql")]
               if importlib.util.find_spec(module) is None]
    if not missing:
        pytest.skip("every optional driver is installed here")
    engine, module, extra = missing[0]
    with pytest.raises(OutgoingError, match=rf"outgoing sql 'x': the {engine}\+{module} driver is not installed "
                                            rf"\(no module '{module}'\); install it on the server: "
                                            rf"pip install 'zato-plugin-sql\[{extra}\]'"):
        SQLConnection(None, {"name": "x", "engine": engine, "host": "db", "db_name": "d"})
