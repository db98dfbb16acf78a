""" The `rate_limit` plugin's counters: `ApproximateLimiter` (this process's memory) and
`DatabaseLimiter` (the configuration database's `zato_rate_limit_counter` table, made by this
plugin's `migrations`), the two backends `register_rate_limiter_backends` registers. """

from __future__ import annotations

import time
from typing import Any, Callable

import trio
from sqlalchemy import (
    BigInteger, Column, Index, Integer, MetaData, String, Table, bindparam, case, delete, or_, update,
)

from zato.odb import InsertIgnoringConflicts, open_engine

EXACT_DB_THREADS = 8  # concurrent counter updates per worker (each holds one of the pool's connections)


class ApproximateLimiter:
    """ The `approximate` backend: a fixed-window counter per key in this process's memory.

    Exact within one process; a server with N workers (or N servers) counts in each of them, so
    up to N x the limit may pass in one window. As with every fixed window, a burst straddling
    a window's end may see up to twice the limit within one window's length. """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._counters: dict[str, list[float]] = {}  # key -> [window start, window end, hits]

    async def hit(self, key: str, limit: int, window_seconds: int) -> bool:
        return self.hit_nowait(key, limit, window_seconds)

    def hit_nowait(self, key: str, limit: int, window_seconds: int) -> bool:
        """ `hit` without a coroutine: it never waits for anything. """
        now = self.clock()
        counter = self._counters.get(key)
        if counter is not None and counter[0] <= now < counter[1]:
            if counter[2] >= limit:
                return False
            counter[2] += 1
            return True
        if limit < 1:
            return False
        start = now - now % window_seconds
        self._counters[key] = [start, start + window_seconds, 1]
        return True

    async def prune(self) -> int:
        """ Forgets counters whose window is over; returns how many. """
        now = self.clock()
        stale = [key for key, counter in self._counters.items() if counter[1] <= now]
        for key in stale:
            del self._counters[key]
        return len(stale)

    def statistics(self) -> dict[str, int]:
        return {"counters": len(self._counters)}


counters_metadata = MetaData()

# Created by the `rate_limit` migration branch (zato/builtin/rate_limit/migrations).
counters_table = Table(
    "zato_rate_limit_counter", counters_metadata,
    Column("key", String(1000), primary_key=True),  # object type, name, definition digest, line
    Column("window_start", BigInteger, nullable=False),  # epoch seconds
    Column("hits", Integer, nullable=False),
    Column("expires_at", BigInteger, nullable=False),  # window_start + window length: pruned after that
    Index("ix_zato_rate_limit_counter_expires_at", "expires_at"),
)


class DatabaseLimiter:
    """ The `exact` backend: one row per key in the configuration database (SQLite or
    PostgreSQL), shared by every worker and every server using that database.

    One hit is one transaction: `UPDATE ... SET hits = hits + 1 (or 1 in a new window) WHERE
    key = :key AND (window_start <> :start OR hits < :limit)`. The database serialises updates of
    a row (SQLite: one writer at a time; PostgreSQL: a row lock, and the WHERE re-checked on the
    row's newest version), so the limit is never exceeded, not by one request. A key without a
    row yet is inserted (`ON CONFLICT DO NOTHING`), then updated if someone else inserted it
    first. Calls are blocking: they run in worker threads, at most `EXACT_DB_THREADS` at once.

    On SQLite the counters' connections use `synchronous = NORMAL` (WAL): a commit is not
    flushed to disk each time, which loses no counter when the process dies, only when the
    machine does. """

    def __init__(self, url: str, clock: Callable[[], float] = time.time, threads: int = EXACT_DB_THREADS) -> None:
        self.url = url
        self.clock = clock
        self.engine = open_engine(url, synchronous="NORMAL")
        self.threads = trio.CapacityLimiter(threads)
        self._count_one = _count_one_statement(self.engine.dialect.update_returning)
        self._insert_new = InsertIgnoringConflicts(self.engine.dialect, counters_table, (counters_table.c.key,),
                                                   conflict_on=("key",))

    async def hit(self, key: str, limit: int, window_seconds: int) -> bool:
        return await trio.to_thread.run_sync(self.hit_blocking, key, limit, window_seconds, limiter=self.threads)

    def hit_blocking(self, key: str, limit: int, window_seconds: int) -> bool:
        if limit < 1:
            return False
        now = self.clock()
        start = int(now // window_seconds) * window_seconds
        end = start + window_seconds
        counted = {"counter": key, "start": start, "end": end, "limit": limit}
        with self.engine.begin() as conn:
            if self._count_one(conn, counted):
                return True
            if self._insert_new(conn, [{"key": key, "window_start": start, "hits": 1, "expires_at": end}]):
                return True
            # someone inserted the row between our update and insert: count against it
            return self._count_one(conn, counted)

    async def prune(self) -> int:
        """ Deletes counters whose window is over; returns how many. """
        return await trio.to_thread.run_sync(self.prune_blocking, limiter=self.threads)

    def prune_blocking(self) -> int:
        with self.engine.begin() as conn:
            return conn.execute(delete(counters_table).where(counters_table.c.expires_at <= self.clock())).rowcount

    def close(self) -> None:
        self.engine.dispose()


def _count_one_statement(returning: bool) -> Callable[[Any, dict[str, Any]], bool]:
    """ count(conn, {counter, start, end, limit}) -> True if one request was counted: +1 in the
    current window while under the limit, or 1 in a new window. Built once, so it is compiled once
    and reused with new values. """
    table = counters_table
    statement = update(table).where(
        table.c.key == bindparam("counter"),
        or_(table.c.window_start != bindparam("start"), table.c.hits < bindparam("limit")),
    ).values(hits=case((table.c.window_start == bindparam("start"), table.c.hits + 1), else_=1),
             window_start=bindparam("start"), expires_at=bindparam("end"))
    if returning:  # psycopg does not always set rowcount: RETURNING says for sure
        statement = statement.returning(table.c.hits)

        def count_returning(conn: Any, values: dict[str, Any]) -> bool:
            return conn.execute(statement, values).first() is not None
        return count_returning

    def count_rowcount(conn: Any, values: dict[str, Any]) -> bool:
        return conn.execute(statement, values).rowcount == 1
    return count_rowcount


def create_approximate(server: Any) -> ApproximateLimiter:
    return ApproximateLimiter()


def create_exact(server: Any) -> DatabaseLimiter:
    return DatabaseLimiter(server.odb.url)
