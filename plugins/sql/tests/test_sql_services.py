""" Services using SQL connection pools in a running server, on a SQLite file and on a real
PostgreSQL: a plain service with `with self.outgoing.sql.get(name).session() as session:`,
an async service through `await ....run(fn, *args)`, and the error an async service gets if it
calls a blocking method on the trio loop. """

from __future__ import annotations

import sqlite3
import textwrap
from contextlib import closing

import pytest
import trio

from sql_fixtures import pg_definition
from zato.odb import ODB, sqlite_url
from zato.server.outgoing import OutgoingError
from zato.testing import create_test_server_dir, run_server

SERVICES = '''
from sqlalchemy import text
from zato.server.service import Service


class AddOrder(Service):
    name = "t.sql.add-order"

    def handle(self):
        order = self.request.payload
        with self.outgoing.sql.get("orders").session() as session:
            session.execute(text("INSERT INTO orders (id, item) VALUES (:id, :item)"),
                            {"id": order["id"], "item": order["item"]})
            if order.get("fail"):
                raise ValueError("refused after the insert")
        with self.out.sql["orders"].connection() as connection:
            count = connection.execute(text("SELECT count(*) FROM orders")).scalar_one()
        self.response.payload = {"count": count}


class CountOrders(Service):
    name = "t.sql.count-orders"

    async def handle(self):
        def count(session, item):
            return session.execute(text("SELECT count(*) FROM orders WHERE item = :item"), {"item": item}).scalar_one()
        orders = self.outgoing.sql.get("orders")
        self.response.payload = {"count": await orders.run(count, self.request.payload["item"])}


class BlockingInAsync(Service):
    name = "t.sql.blocking-in-async"

    async def handle(self):
        with self.outgoing.sql.get("orders").session() as session:
            session.execute(text("SELECT 1"))
'''


@pytest.fixture(params=["sqlite", "postgresql"])
def orders_database(request, tmp_path):
    """ An `orders` table and the outgoing_sql definition that reaches it, with a function
    reading its rows directly. """
    if request.param == "sqlite":
        path = tmp_path / "orders.db"
        with closing(sqlite3.connect(path)) as db:
            db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL)")
            db.commit()

        def read():
            with closing(sqlite3.connect(path)) as db:
                return db.execute("SELECT id, item FROM orders ORDER BY id").fetchall()
        return {"engine": "sqlite", "db_name": str(path)}, read
    postgres = request.getfixturevalue("sql_postgres")
    database = request.getfixturevalue("sql_database")
    postgres.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL)", database)
    return pg_definition(postgres, database, pool_size=2), \
        lambda: postgres.execute("SELECT id, item FROM orders ORDER BY id", database)


@pytest.fixture
async def server(tmp_path, orders_database):
    definition, _ = orders_database
    base_dir = create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 1})
    (base_dir / "pickup" / "sql_services.py").write_text(textwrap.dedent(SERVICES))
    odb = ODB(sqlite_url(base_dir / "work" / "zato.db"))
    odb.put_object("outgoing_sql", "orders", definition)
    odb.close()
    async with run_server(base_dir) as server:
        yield server


async def test_a_plain_service_commits_its_session_or_rolls_it_back(server, orders_database):
    _, read = orders_database
    assert await server.invoke("t.sql.add-order", {"id": 1, "item": "book"}) == {"count": 1}
    with pytest.raises(ValueError, match="refused after the insert"):
        await server.invoke("t.sql.add-order", {"id": 2, "item": "pen", "fail": True})
    assert await server.invoke("t.sql.add-order", {"id": 3, "item": "book"}) == {"count": 2}
    assert read() == [(1, "book"), (3, "book")]


async def test_an_async_service_runs_its_queries_in_worker_threads(server, orders_database):
    for number in range(1, 4):
        await server.invoke("t.sql.add-order", {"id": number, "item": "ink" if number < 3 else "pen"})
    results = {}

    async def count(key, item):
        results[key] = await server.invoke("t.sql.count-orders", {"item": item})

    async with trio.open_nursery() as nursery:  # more at once than the pool has connections
        for key in range(8):
            nursery.start_soon(count, key, "ink" if key % 2 else "pen")
    assert results == {key: {"count": 2 if key % 2 else 1} for key in range(8)}


async def test_an_async_service_calling_a_blocking_method_is_told_the_way(server):
    with pytest.raises(OutgoingError, match=r"session\(\) blocks, and this is an async def handle on the trio loop; "
                                            r"use `await self.outgoing.sql.get\('orders'\).run\(fn, \*args\)`"):
        await server.invoke("t.sql.blocking-in-async", {})
