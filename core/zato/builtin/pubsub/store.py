""" Where guaranteed-delivery (GD) pub/sub messages live: the tables of the `pubsub` migration branch
(core/zato/builtin/pubsub/migrations) in the configuration database (SQLite or PostgreSQL), and every statement the `pubsub` plugin runs.

Everything here is blocking; the plugin calls it from worker threads. Delivery writes go through
`PubSubStore.submit`: whichever thread finds the database free writes every batch waiting
(publications, acknowledgements, retries, dead letters, claims) in one transaction, so that
concurrent publishers and deliveries share one commit (group commit). On SQLite that
transaction runs on one connection kept for it, with the driver's own cursor.

Durability: a publication is acknowledged only after its transaction committed with
`PRAGMA synchronous=FULL` on SQLite (the WAL is synced to disk at that commit) or a normal
synchronous commit on PostgreSQL. Transactions holding only delivery bookkeeping (acknowledged
deliveries, retries, claims, dead letters) do not wait for the disk (synchronous=NORMAL,
synchronous_commit=off): a process killed at any moment loses none of them (they are in the
operating system's hands), and a power cut can only undo the last few, which makes their
messages be delivered again - never lost. On SQLite, write transactions start with
`BEGIN IMMEDIATE`, so one that reads before it writes never fails half-way with "database is
locked".

Claims: a server takes deliveries with a lease (`claimed_by`, `claimed_until`) in one atomic
statement: a conditional `UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING` on SQLite
(writers are serialised by the database), `SELECT ... FOR UPDATE SKIP LOCKED` inside it on
PostgreSQL. Rows claimed by a server that stopped become claimable again when the lease ends.
"""

from __future__ import annotations

import json
import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from sqlalchemy import (
    BigInteger, Boolean, Column, Float, Integer, MetaData, String, Table, Text, event, func, inspect, select, text,
)
from sqlalchemy.engine import Connection, Engine

from zato.odb import in_chunks, open_engine, set_sqlite_pragmas

logger = logging.getLogger("zato.pubsub")

metadata = MetaData()
BIG_ID = BigInteger().with_variant(Integer(), "sqlite")

message_table = Table(
    "zato_pubsub_message", metadata,
    Column("id", BIG_ID, primary_key=True, autoincrement=True),
    Column("msg_id", String(200), nullable=False),
    Column("topic_name", String(400), nullable=False),
    Column("data", Text, nullable=False),
    Column("data_format", String(20), nullable=False),
    Column("mime_type", String(200), nullable=False),
    Column("size", Integer, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("pub_time", Float, nullable=False),
    Column("expiration", BigInteger, nullable=False),
    Column("expiration_time", Float, nullable=False),
    Column("has_gd", Boolean, nullable=False),
    Column("correl_id", String(400)),
    Column("in_reply_to", String(400)),
    Column("ext_client_id", String(400)),
    Column("published_by", String(400)),
    Column("server_name", String(200)),
    Column("server_pid", Integer),
    Column("zato_ctx", Text),
    Column("user_ctx", Text),
)

delivery_table = Table(
    "zato_pubsub_delivery", metadata,
    Column("id", BIG_ID, primary_key=True, autoincrement=True),
    Column("msg_id", String(200), nullable=False),
    Column("sub_key", String(200), nullable=False),
    Column("topic_name", String(400), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("pub_time", Float, nullable=False),
    Column("expiration_time", Float, nullable=False),
    Column("delivery_count", Integer, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("claimed_by", String(400)),
    Column("claimed_until", Float, nullable=False),
    Column("last_attempt_at", Float),
    Column("last_error", Text),
)

dead_letter_table = Table(
    "zato_pubsub_dead_letter", metadata,
    Column("id", BIG_ID, primary_key=True, autoincrement=True),
    Column("msg_id", String(200), nullable=False),
    Column("sub_key", String(200), nullable=False),
    Column("topic_name", String(400), nullable=False),
    Column("message", Text, nullable=False),
    Column("delivery_count", Integer, nullable=False),
    Column("last_error", Text),
    Column("dead_at", Float, nullable=False),
)

topic_state_table = Table(
    "zato_pubsub_topic_state", metadata,
    Column("topic_name", String(400), primary_key=True),
    Column("last_msg_id", String(200)),
    Column("last_pub_time", Float),
    Column("last_data_prefix", Text),
    Column("last_published_by", String(400)),
    Column("unrouted_count", BigInteger, nullable=False),
    Column("routed_count", BigInteger, nullable=False),
)

TABLES = tuple(table.name for table in metadata.sorted_tables)
MESSAGE_COLUMNS = tuple(column.name for column in message_table.columns if column.name != "id")
DATA_PREFIX_LENGTH = 200


class StoreError(Exception):
    """ The pub/sub tables could not be read or written (the database is down, locked too long...). """


# ################################################################################################
# What one write transaction does, and what it returns


@dataclass
class Publication:
    """ Messages of one `publish` call to one topic, to be stored and queued for `sub_keys`. """
    topic_name: str
    rows: list[dict[str, Any]]
    sub_keys: list[str]
    max_depth: int
    user_msg_ids: list[str] = field(default_factory=list)  # msg_ids given by the publisher: checked for clashes
    record_last: bool = True  # write the topic's last message (publishers do it at most about once a second)
    claimed_sub_keys: list[str] = field(default_factory=list)  # of sub_keys: queued already claimed by this worker


@dataclass
class Settlement:
    """ What happened to a claimed delivery. """
    delivery_id: int
    msg_id: str
    outcome: str  # "delivered", "retry", "dead", "expired", "release"
    next_attempt_at: float = 0.0
    error: str | None = None
    sub_key: str = ""
    topic_name: str = ""
    delivery_count: int = 0
    message: dict[str, Any] | None = None  # for "dead": the message, every field


@dataclass
class WriteBatch:
    now: float
    claimer: str
    lease_until: float
    publications: list[Publication] = field(default_factory=list)
    settlements: list[Settlement] = field(default_factory=list)
    dead_in_ram: list[dict[str, Any]] = field(default_factory=list)  # non-GD messages that ran out of attempts
    claims: dict[str, int] = field(default_factory=dict)  # sub_key -> how many at most
    renew: bool = False
    routes: dict[str, list[str]] = field(default_factory=dict)  # topic -> sub_keys: queue messages waiting in it

    def is_empty(self) -> bool:
        return not (self.publications or self.settlements or self.dead_in_ram or self.claims or self.renew
                    or self.routes)


@dataclass
class WriteResult:
    published: list[Exception | None] = field(default_factory=list)  # per publication: None or why refused
    preclaimed: list[list[tuple[str, str, int]]] = field(default_factory=list)  # per publication: its
    # entries queued already claimed: (sub_key, msg_id, delivery id)
    claimed: list[dict[str, Any]] = field(default_factory=list)  # delivery columns + "message" (its row)
    renewed: int = 0
    routed: int = 0


class DuplicateMessageId(ValueError):
    pass


# ################################################################################################


class PubSubStore:
    """ The pub/sub tables of one configuration database. """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = open_engine(url, synchronous="FULL")
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            _durable_sqlite(self.engine)
        self._writer: Any = None  # SQLite: the driver connection `write` uses (one caller at a time)
        self._writer_synchronous = ""
        self._commit_lock = threading.Lock()  # one `submit` writes at a time...
        self._queue_lock = threading.Lock()  # ... every batch waiting
        self._queue: list[_Job] = []

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.engine.dispose()

    # ############################################################################################
    # Transactions

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[Connection]:
        """ A write transaction (BEGIN IMMEDIATE on SQLite). `durable=False` is for bookkeeping
        whose loss in a power cut (not a process crash) can only make a message be delivered
        again: its commit does not wait for the disk (SQLite synchronous=NORMAL, PostgreSQL
        synchronous_commit=off). """
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn = conn.execution_options(zato_pubsub_synchronous="FULL" if durable else "NORMAL")
            with conn.begin():
                if self.dialect == "postgresql" and not durable:
                    conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                yield conn

    def _read(self) -> Connection:
        conn = self.engine.connect()
        if self.dialect == "sqlite":
            conn = conn.execution_options(zato_pubsub_begin="DEFERRED")
        return conn

    def check_schema(self) -> None:
        """ Raises StoreError naming the missing tables if the database lacks them (the `pubsub` branch was not applied). """
        with self._read() as conn:
            present = set(inspect(conn).get_table_names())
        missing = [name for name in TABLES if name not in present]
        if missing:
            raise StoreError(f"the configuration database {self.safe_url()} lacks the pub/sub tables "
                             f"{', '.join(missing)} (the `pubsub` migration branch, alembic_version_pubsub): its version table says "
                             f"they exist, but they do not. Back the database up, then delete the row of "
                             f"alembic_version_pubsub so that the next start creates them, or start from a new "
                             f"database")

    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    # ############################################################################################
    # The write transaction

    @contextmanager
    def _hot_write(self, *, durable: bool) -> Iterator["_Raw"]:
        """ The write transaction of `write`, on the driver's own connection: on SQLite one kept
        open for it (callers take turns: the plugin runs one `write` at a time per process), on
        PostgreSQL one from the pool. SQLAlchemy's per-statement cost would otherwise be most of
        the time of a small transaction. """
        if self.dialect != "sqlite":
            with self._write(durable=durable) as conn:
                yield _Raw(conn.connection.cursor(), postgresql=True)
            return
        import sqlite3
        if self._writer is None:
            conn = sqlite3.connect(self.engine.url.database, isolation_level=None, check_same_thread=False,
                                   timeout=10.0)
            set_sqlite_pragmas(conn)
            self._writer, self._writer_synchronous = conn, ""
        synchronous = "FULL" if durable else "NORMAL"
        try:
            if synchronous != self._writer_synchronous:
                self._writer.execute(f"PRAGMA synchronous={synchronous}")
                self._writer_synchronous = synchronous
            self._writer.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            self._drop_writer()
            raise
        try:
            yield _Raw(self._writer.cursor())
        except BaseException:
            try:
                self._writer.execute("ROLLBACK")
            except sqlite3.Error:
                self._drop_writer()
            raise
        try:
            self._writer.execute("COMMIT")
        except sqlite3.Error:
            self._drop_writer()
            raise

    def _drop_writer(self) -> None:
        try:
            self._writer.close()
        finally:
            self._writer = None

    def submit(self, batch: WriteBatch, *, wait_for_company: float = 0.0) -> WriteResult:
        """ Writes `batch`, sharing the transaction with the batches other threads submit at the
        same moment (group commit); blocks until it is committed and returns its own result.

        Whoever finds the commit lock free writes every batch waiting, its own included; the
        others find theirs done when they get the lock. `wait_for_company` (seconds): first wait
        that long for another thread to take this batch along (acknowledgements do, so that they
        ride on the next publication's commit instead of making one of their own). """
        job = _Job(batch)
        with self._queue_lock:
            self._queue.append(job)
        if wait_for_company:
            job.done.wait(wait_for_company)
        with self._commit_lock:
            if not job.done.is_set():
                with self._queue_lock:
                    jobs, self._queue = self._queue, []
                self._write_jobs(jobs)
        if job.error is not None:
            raise job.error
        return job.result

    def _write_jobs(self, jobs: list["_Job"]) -> None:
        try:
            merged = _merge([job.batch for job in jobs]) if len(jobs) > 1 else jobs[0].batch
            result = self.write(merged)
        except Exception as exc:
            if len(jobs) == 1:
                jobs[0].error = exc
            else:  # find which: each alone
                for job in jobs:
                    try:
                        job.result = self.write(job.batch)
                    except Exception as alone:
                        job.error = alone
        else:
            start = 0
            for job in jobs:
                count = len(job.batch.publications)
                job.result = WriteResult(
                    published=result.published[start:start + count], preclaimed=result.preclaimed[start:start + count],
                    claimed=[row for row in result.claimed if row["sub_key"] in job.batch.claims],
                    renewed=result.renewed if job.batch.renew else 0, routed=result.routed if job.batch.routes else 0)
                start += count
        for job in jobs:
            job.done.set()

    def write(self, batch: WriteBatch) -> WriteResult:
        """ Everything in `batch`, in one transaction (durable if it holds publications). """
        result = WriteResult()
        with self._hot_write(durable=bool(batch.publications)) as sql:
            depths: dict[str, int] = {}
            for publication in batch.publications:
                preclaimed: list[tuple[str, str, int]] = []
                result.published.append(self._publish(sql, publication, depths, batch, preclaimed))
                result.preclaimed.append(preclaimed)
            self._settle(sql, batch)
            if batch.dead_in_ram:
                sql.executemany(_INSERT_DEAD, [_dead_params(item) for item in batch.dead_in_ram])
            for topic_name, sub_keys in batch.routes.items():
                result.routed += self._route(sql, topic_name, sub_keys, batch.now)
            if batch.renew:
                result.renewed = sql.execute(
                    "UPDATE zato_pubsub_delivery SET claimed_until = ? WHERE claimed_by = ?",
                    (batch.lease_until, batch.claimer))
            if batch.claims:
                result.claimed = self._claim(sql, batch)
        return result

    def _publish(self, sql: "_Raw", publication: Publication, depths: dict[str, int], batch: WriteBatch,
                 preclaimed: list[tuple[str, str, int]]) -> Exception | None:
        topic_name, rows = publication.topic_name, publication.rows
        if publication.max_depth:
            depth = depths.get(topic_name)
            if depth is None:
                depth = sql.query("SELECT COUNT(*) FROM zato_pubsub_message WHERE topic_name = ?", (topic_name,))[0][0]
            if depth + len(rows) > publication.max_depth:
                from zato.builtin.pubsub.message import TopicFull
                depths[topic_name] = depth
                return TopicFull(topic_name, depth, publication.max_depth, len(rows), True)
            depths[topic_name] = depth + len(rows)
        if publication.user_msg_ids:
            taken = [row[0] for row in sql.query(
                f"SELECT msg_id FROM zato_pubsub_message WHERE msg_id IN ({_marks(publication.user_msg_ids)})",
                publication.user_msg_ids)]
            if taken:
                if publication.max_depth:
                    depths[topic_name] -= len(rows)
                return DuplicateMessageId(f"msg_id {', '.join(sorted(taken))} is already in use by a message "
                                          f"waiting for delivery; give each message its own msg_id or leave it out")
        sql.executemany(_INSERT_MESSAGE, [tuple(row[name] for name in MESSAGE_COLUMNS) for row in rows])
        unclaimed = [key for key in publication.sub_keys if key not in publication.claimed_sub_keys]
        if unclaimed:
            sql.executemany(_INSERT_DELIVERY, [
                (row["msg_id"], sub_key, topic_name, row["priority"], row["pub_time"], row["expiration_time"])
                for sub_key in unclaimed for row in rows])
        for sub_key in publication.claimed_sub_keys:  # one by one: each needs its id back
            for row in rows:
                delivery_id = sql.query(_INSERT_CLAIMED_DELIVERY, (
                    row["msg_id"], sub_key, topic_name, row["priority"], row["pub_time"], row["expiration_time"],
                    batch.now, batch.claimer, batch.lease_until))[0][0]
                preclaimed.append((sub_key, row["msg_id"], delivery_id))
        if publication.record_last or not publication.sub_keys:
            last = rows[-1]
            unrouted = 0 if publication.sub_keys else len(rows)
            sql.execute(_RECORD_TOPIC, (topic_name, last["msg_id"], last["pub_time"],
                                        last["data"][:DATA_PREFIX_LENGTH], last["published_by"], unrouted, unrouted))
        return None

    def _settle(self, sql: "_Raw", batch: WriteBatch) -> None:
        """ Acknowledgements, retries, dead letters, expired and released deliveries. """
        done_ids: list[int] = []
        touched: set[str] = set()
        retries, releases = [], []
        for item in batch.settlements:
            if item.outcome in ("delivered", "expired"):
                done_ids.append(item.delivery_id)
                touched.add(item.msg_id)
            elif item.outcome == "retry":
                retries.append((item.next_attempt_at, item.error, item.delivery_id, batch.claimer))
            elif item.outcome == "release":  # claimed and never attempted: the claim does not count
                releases.append((item.delivery_id, batch.claimer))
            elif item.outcome == "dead":
                if sql.execute("DELETE FROM zato_pubsub_delivery WHERE id = ?", (item.delivery_id,)):
                    sql.execute("DELETE FROM zato_pubsub_dead_letter WHERE msg_id = ? AND sub_key = ?",
                                (item.msg_id, item.sub_key))
                    sql.execute(_INSERT_DEAD, _dead_params({
                        "msg_id": item.msg_id, "sub_key": item.sub_key, "topic_name": item.topic_name,
                        "message": json.dumps(item.message), "delivery_count": item.delivery_count,
                        "last_error": item.error, "dead_at": batch.now}))
                    touched.add(item.msg_id)
            else:
                raise ValueError(f"unknown settlement {item.outcome!r}")
        if retries:
            sql.executemany("UPDATE zato_pubsub_delivery SET next_attempt_at = ?, claimed_by = NULL, claimed_until = 0, "
                            "last_error = ? WHERE id = ? AND claimed_by = ?", retries)
        if releases:
            sql.executemany("UPDATE zato_pubsub_delivery SET claimed_by = NULL, claimed_until = 0, "
                            "delivery_count = CASE WHEN delivery_count > 0 THEN delivery_count - 1 ELSE 0 END "
                            "WHERE id = ? AND claimed_by = ?", releases)
        for chunk in in_chunks(done_ids):
            sql.execute(f"DELETE FROM zato_pubsub_delivery WHERE id IN ({_marks(chunk)})", chunk)
        for chunk in in_chunks(sorted(touched)):
            sql.execute(f"DELETE FROM zato_pubsub_message WHERE msg_id IN ({_marks(chunk)}) AND NOT EXISTS "
                        f"(SELECT 1 FROM zato_pubsub_delivery d WHERE d.msg_id = zato_pubsub_message.msg_id)", chunk)

    @staticmethod
    def _delete_finished_messages(conn: Connection, msg_ids: list[str]) -> int:
        """ Messages no queue waits for any more are gone (dead letters keep their own copy). """
        deleted = 0
        waiting = select(delivery_table.c.id).where(delivery_table.c.msg_id == message_table.c.msg_id).exists()
        for chunk in in_chunks(msg_ids):
            deleted += conn.execute(message_table.delete().where(message_table.c.msg_id.in_(chunk), ~waiting)).rowcount
        return deleted

    def _route(self, sql: "_Raw", topic_name: str, sub_keys: list[str], now: float) -> int:
        """ Queues for `sub_keys` the messages waiting in a topic that no queue has: those published
        while the topic had no subscription. """
        routed = 0
        for sub_key in sub_keys:
            routed += max(sql.execute(
                "INSERT INTO zato_pubsub_delivery (msg_id, sub_key, topic_name, priority, pub_time, expiration_time, "
                "delivery_count, next_attempt_at, claimed_by, claimed_until) "
                "SELECT m.msg_id, ?, m.topic_name, m.priority, m.pub_time, m.expiration_time, 0, 0, NULL, 0 "
                "FROM zato_pubsub_message m WHERE m.topic_name = ? AND m.expiration_time > ? "
                "AND NOT EXISTS (SELECT 1 FROM zato_pubsub_delivery d WHERE d.msg_id = m.msg_id) "
                "ON CONFLICT (msg_id, sub_key) DO NOTHING", (sub_key, topic_name, now)), 0)
        return routed

    def _claim(self, sql: "_Raw", batch: WriteBatch) -> list[dict[str, Any]]:
        claim = _CLAIM_SQL.format(lock="FOR UPDATE SKIP LOCKED" if self.dialect == "postgresql" else "")
        claimed: list[dict[str, Any]] = []
        for sub_key, limit in batch.claims.items():
            if limit > 0:
                claimed.extend(sql.query_dicts(claim, (batch.claimer, batch.lease_until, batch.now, sub_key, batch.now,
                                                      batch.now, batch.now, limit)))
        if not claimed:
            return []
        messages: dict[str, dict[str, Any]] = {}
        for chunk in in_chunks(sorted({row["msg_id"] for row in claimed})):
            for row in sql.query_dicts(f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM zato_pubsub_message "
                                       f"WHERE msg_id IN ({_marks(chunk)})", chunk):
                messages[row["msg_id"]] = row
        for row in claimed:
            row["message"] = messages.get(row["msg_id"])
        return claimed

    # ############################################################################################
    # Reads for the delivery loop (no write lock taken)

    def new_deliveries(self, after_id: int | None) -> tuple[int, set[str]]:
        """ The newest queue entry's id, and the queues that got entries after `after_id` (any
        server's publications, replays, routed messages): what other processes poll. """
        with self._read() as conn:
            sql = _Raw(conn.connection.cursor(), postgresql=self.dialect == "postgresql")
            newest = sql.query("SELECT MAX(id) FROM zato_pubsub_delivery")[0][0] or 0
            if after_id is None or newest <= after_id:
                return newest, set()
            return newest, {row[0] for row in sql.query(
                "SELECT DISTINCT sub_key FROM zato_pubsub_delivery WHERE id > ?", (after_id,))}

    def unrouted_topics(self) -> list[str]:
        """ Topics holding messages stored while their publisher knew no subscription, not yet queued. """
        with self._read() as conn:
            return list(conn.execute(select(topic_state_table.c.topic_name).where(
                topic_state_table.c.unrouted_count > topic_state_table.c.routed_count)).scalars())

    def claimable(self, sub_keys: Iterable[str], now: float) -> list[str]:
        """ Which of `sub_keys` have a delivery that could be claimed now. """
        found = []
        with self._read() as conn:
            for sub_key in sub_keys:
                if conn.execute(text(_CLAIMABLE_SQL), {"sub_key": sub_key, "now": now}).first() is not None:
                    found.append(sub_key)
        return found

    def config_fingerprint(self, object_types: Iterable[str]) -> tuple[Any, ...]:
        """ Changes whenever a pub/sub object is created, edited or deleted, by any server. """
        from zato.odb import objects_table
        with self._read() as conn:
            return tuple(conn.execute(select(
                func.count(), func.coalesce(func.sum(objects_table.c.version), 0),
                func.coalesce(func.max(objects_table.c.id), 0)).where(
                objects_table.c.type.in_(list(object_types)))).one())

    # ############################################################################################
    # Maintenance

    def release_claims_of(self, prefix: str, keep: str) -> int:
        """ Releases claims made by earlier processes of this same worker slot (`prefix`), e.g. one
        killed with SIGKILL, so that a restart delivers at once instead of waiting for leases. """
        with self._write() as conn:
            return conn.execute(delivery_table.update().where(
                func.substr(delivery_table.c.claimed_by, 1, len(prefix)) == prefix,
                delivery_table.c.claimed_by != keep).values(claimed_by=None, claimed_until=0.0)).rowcount

    def delete_expired(self, now: float) -> int:
        """ Expired messages are never delivered: their queue entries and the messages go. """
        with self._write() as conn:
            conn.execute(delivery_table.delete().where(delivery_table.c.expiration_time <= now))
            return conn.execute(message_table.delete().where(message_table.c.expiration_time <= now)).rowcount

    def route_waiting(self, subs_by_topic: dict[str, list[str]], now: float) -> int:
        """ Queues messages stored while their publisher knew no subscription of their topic (it
        may have been created a moment before, by another server) for the topic's queues. """
        with self._read() as conn:
            flagged = {row[0]: row[1] for row in conn.execute(
                select(topic_state_table.c.topic_name, topic_state_table.c.unrouted_count).where(
                    topic_state_table.c.unrouted_count > topic_state_table.c.routed_count))}
        flagged = {topic: count for topic, count in flagged.items() if subs_by_topic.get(topic)}
        if not flagged:
            return 0
        routed = 0
        with self._write() as conn:
            sql = _Raw(conn.connection.cursor(), postgresql=self.dialect == "postgresql")
            for topic, count in flagged.items():
                routed += self._route(sql, topic, subs_by_topic[topic], now)
                conn.execute(topic_state_table.update().where(
                    topic_state_table.c.topic_name == topic, topic_state_table.c.routed_count < count).values(
                    routed_count=count))
        return routed

    # ############################################################################################
    # The admin API

    def topic_stats(self, topic_names: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {name: {"depth": 0, "last_message": None} for name in topic_names}
        with self._read() as conn:
            for name, count in conn.execute(select(message_table.c.topic_name, func.count()).where(
                    message_table.c.topic_name.in_(topic_names)).group_by(message_table.c.topic_name)):
                out[name]["depth"] = count
            for row in conn.execute(select(topic_state_table).where(
                    topic_state_table.c.topic_name.in_(topic_names))).mappings():
                stats = out[row["topic_name"]]
                if row["last_msg_id"]:
                    stats["last_message"] = {"msg_id": row["last_msg_id"], "pub_time": row["last_pub_time"],
                                             "data_prefix": row["last_data_prefix"],
                                             "published_by": row["last_published_by"]}
        return out

    def queue_depths(self, sub_keys: list[str], now: float) -> dict[str, dict[str, int]]:
        """ Per queue: messages waiting (`depth`), of which claimed by a server (`in_flight`), and
        dead letters (`dead`). """
        out = {sub_key: {"depth": 0, "in_flight": 0, "dead": 0} for sub_key in sub_keys}
        with self._read() as conn:
            query = select(delivery_table.c.sub_key, func.count()).where(delivery_table.c.sub_key.in_(sub_keys))
            for sub_key, count in conn.execute(query.group_by(delivery_table.c.sub_key)):
                out[sub_key]["depth"] = count
            claimed = query.where(delivery_table.c.claimed_until > now)
            for sub_key, count in conn.execute(claimed.group_by(delivery_table.c.sub_key)):
                out[sub_key]["in_flight"] = count
            for sub_key, count in conn.execute(select(dead_letter_table.c.sub_key, func.count()).where(
                    dead_letter_table.c.sub_key.in_(sub_keys)).group_by(dead_letter_table.c.sub_key)):
                out[sub_key]["dead"] = count
        return out

    def browse_queue(self, sub_key: str, limit: int, offset: int) -> list[dict[str, Any]]:
        """ A subscription's queue in delivery order, with each message. """
        with self._read() as conn:
            rows = conn.execute(
                select(delivery_table, message_table).join(message_table, message_table.c.msg_id ==
                                                           delivery_table.c.msg_id)
                .where(delivery_table.c.sub_key == sub_key)
                .order_by(delivery_table.c.priority.desc(), delivery_table.c.pub_time, delivery_table.c.id)
                .limit(limit).offset(offset)).mappings().all()
        return [_queue_row(row) for row in rows]

    def browse_topic(self, topic_name: str, limit: int, offset: int) -> list[dict[str, Any]]:
        with self._read() as conn:
            return [dict(row) for row in conn.execute(
                select(message_table).where(message_table.c.topic_name == topic_name)
                .order_by(message_table.c.priority.desc(), message_table.c.pub_time, message_table.c.id)
                .limit(limit).offset(offset)).mappings()]

    def get_message(self, msg_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """ The message and the queues it waits in. """
        with self._read() as conn:
            message = conn.execute(select(message_table).where(message_table.c.msg_id == msg_id)).mappings().first()
            queues = conn.execute(select(delivery_table).where(delivery_table.c.msg_id == msg_id)).mappings().all()
        return (dict(message) if message else None), [_queue_row(row) for row in queues]

    def delete_from_queue(self, sub_key: str, msg_ids: list[str] | None) -> int:
        """ Deletes messages from one queue (every one if `msg_ids` is None); returns how many. A
        message being delivered at that moment may still reach its subscriber once. """
        with self._write() as conn:
            conditions = [delivery_table.c.sub_key == sub_key]
            if msg_ids is not None:
                conditions.append(delivery_table.c.msg_id.in_(msg_ids))
            affected = conn.execute(select(delivery_table.c.msg_id).where(*conditions)).scalars().all()
            deleted = conn.execute(delivery_table.delete().where(*conditions)).rowcount
            self._delete_finished_messages(conn, sorted(set(affected)))
        return deleted

    def dead_letters(self, sub_key: str | None, topic_name: str | None, limit: int, offset: int,
                     with_message: bool = False) -> list[dict[str, Any]]:
        with self._read() as conn:
            query = select(dead_letter_table)
            if sub_key:
                query = query.where(dead_letter_table.c.sub_key == sub_key)
            if topic_name:
                query = query.where(dead_letter_table.c.topic_name == topic_name)
            rows = conn.execute(query.order_by(dead_letter_table.c.dead_at, dead_letter_table.c.id)
                                .limit(limit).offset(offset)).mappings().all()
        return [_dead_row(row, with_message) for row in rows]

    def dead_letter(self, sub_key: str, msg_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(select(dead_letter_table).where(dead_letter_table.c.sub_key == sub_key,
                                                               dead_letter_table.c.msg_id == msg_id)).mappings().first()
        return _dead_row(row, True) if row else None

    def _dead_filter(self, query: Any, sub_key: str | None, topic_name: str | None, msg_ids: list[str] | None) -> Any:
        if sub_key:
            query = query.where(dead_letter_table.c.sub_key == sub_key)
        if topic_name:
            query = query.where(dead_letter_table.c.topic_name == topic_name)
        if msg_ids is not None:
            query = query.where(dead_letter_table.c.msg_id.in_(msg_ids))
        return query

    def replay_dead(self, sub_key: str | None, topic_name: str | None, msg_ids: list[str] | None, now: float) -> int:
        """ Puts dead letters back in their queues, as new (delivery_count 0), and removes them
        from the dead-letter queue. """
        replayed = 0
        with self._write() as conn:
            rows = conn.execute(self._dead_filter(select(dead_letter_table), sub_key, topic_name, msg_ids)
                                .order_by(dead_letter_table.c.id)).mappings().all()
            topics: set[str] = set()
            for row in rows:
                message = json.loads(row["message"])
                stored = {name: message.get(name) for name in MESSAGE_COLUMNS}
                stored["has_gd"] = True  # a replayed message is stored, whatever it was published as
                exists = conn.execute(select(message_table.c.id).where(
                    message_table.c.msg_id == row["msg_id"])).first()
                if exists is None:
                    conn.execute(message_table.insert().values(**stored))
                conn.execute(delivery_table.delete().where(delivery_table.c.msg_id == row["msg_id"],
                                                           delivery_table.c.sub_key == row["sub_key"]))
                conn.execute(delivery_table.insert().values(
                    msg_id=row["msg_id"], sub_key=row["sub_key"], topic_name=row["topic_name"],
                    priority=stored["priority"], pub_time=stored["pub_time"], expiration_time=stored["expiration_time"],
                    delivery_count=0, next_attempt_at=0.0, claimed_by=None, claimed_until=0.0))
                conn.execute(dead_letter_table.delete().where(dead_letter_table.c.id == row["id"]))
                topics.add(row["topic_name"])
                replayed += 1
        return replayed

    def purge_dead(self, sub_key: str | None, topic_name: str | None, msg_ids: list[str] | None) -> int:
        with self._write() as conn:
            return conn.execute(self._dead_filter(dead_letter_table.delete(), sub_key, topic_name, msg_ids)).rowcount


# ################################################################################################


# The statements of the write path, with `?` for parameters (`%s` on PostgreSQL, see _Raw).
_CLAIM_SQL = (
    "UPDATE zato_pubsub_delivery SET claimed_by = ?, claimed_until = ?, "
    "delivery_count = delivery_count + 1, last_attempt_at = ? "
    "WHERE id IN (SELECT id FROM zato_pubsub_delivery WHERE sub_key = ? AND claimed_until < ? "
    "AND next_attempt_at <= ? AND expiration_time > ? ORDER BY priority DESC, pub_time, id LIMIT ? {lock}) "
    "RETURNING id, msg_id, sub_key, topic_name, priority, pub_time, expiration_time, delivery_count, claimed_until")

_INSERT_MESSAGE = (f"INSERT INTO zato_pubsub_message ({', '.join(MESSAGE_COLUMNS)}) "
                   f"VALUES ({', '.join('?' for _ in MESSAGE_COLUMNS)})")

_INSERT_DELIVERY = (
    "INSERT INTO zato_pubsub_delivery (msg_id, sub_key, topic_name, priority, pub_time, expiration_time, "
    "delivery_count, next_attempt_at, claimed_by, claimed_until) VALUES (?, ?, ?, ?, ?, ?, 0, 0, NULL, 0)")

_INSERT_CLAIMED_DELIVERY = (
    "INSERT INTO zato_pubsub_delivery (msg_id, sub_key, topic_name, priority, pub_time, expiration_time, "
    "delivery_count, next_attempt_at, last_attempt_at, claimed_by, claimed_until) "
    "VALUES (?, ?, ?, ?, ?, ?, 1, 0, ?, ?, ?) RETURNING id")

_DEAD_COLUMNS = ("msg_id", "sub_key", "topic_name", "message", "delivery_count", "last_error", "dead_at")
_INSERT_DEAD = (f"INSERT INTO zato_pubsub_dead_letter ({', '.join(_DEAD_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in _DEAD_COLUMNS)})")

_RECORD_TOPIC = (
    "INSERT INTO zato_pubsub_topic_state (topic_name, last_msg_id, last_pub_time, last_data_prefix, "
    "last_published_by, unrouted_count, routed_count) VALUES (?, ?, ?, ?, ?, ?, 0) "
    "ON CONFLICT (topic_name) DO UPDATE SET last_msg_id = excluded.last_msg_id, "
    "last_pub_time = excluded.last_pub_time, last_data_prefix = excluded.last_data_prefix, "
    "last_published_by = excluded.last_published_by, "
    "unrouted_count = zato_pubsub_topic_state.unrouted_count + ?")


class _Job:
    """ One batch waiting in `PubSubStore.submit`. """
    __slots__ = ("batch", "done", "result", "error")

    def __init__(self, batch: WriteBatch) -> None:
        self.batch = batch
        self.done = threading.Event()
        self.result: WriteResult | None = None
        self.error: BaseException | None = None


def _merge(batches: list[WriteBatch]) -> WriteBatch:
    """ Several threads' batches as one (they all come from the same worker: one claimer). """
    merged = WriteBatch(now=max(b.now for b in batches), claimer=batches[0].claimer,
                        lease_until=max(b.lease_until for b in batches))
    for batch in batches:
        merged.publications.extend(batch.publications)
        merged.settlements.extend(batch.settlements)
        merged.dead_in_ram.extend(batch.dead_in_ram)
        for sub_key, limit in batch.claims.items():
            merged.claims[sub_key] = max(limit, merged.claims.get(sub_key, 0))
        merged.renew = merged.renew or batch.renew
        for topic, sub_keys in batch.routes.items():
            merged.routes[topic] = sorted(set(merged.routes.get(topic, [])) | set(sub_keys))
    return merged


def _dead_params(item: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(item[name] for name in _DEAD_COLUMNS)


def _marks(items: list[Any]) -> str:
    return ", ".join("?" for _ in items)


class _Raw:
    """ Statements on a driver's cursor. SQL is written with `?`; on PostgreSQL (psycopg) it
    becomes `%s`. """

    def __init__(self, cursor: Any, *, postgresql: bool = False) -> None:
        self.cursor = cursor
        self.postgresql = postgresql

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgresql else sql

    def execute(self, sql: str, params: Any = ()) -> int:
        self.cursor.execute(self._sql(sql), params)
        return self.cursor.rowcount

    def executemany(self, sql: str, params: list[Any]) -> None:
        if params:
            self.cursor.executemany(self._sql(sql), params)

    def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        self.cursor.execute(self._sql(sql), params)
        return self.cursor.fetchall()

    def query_dicts(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        rows = self.query(sql, params)
        names = [column[0] for column in self.cursor.description]
        return [dict(zip(names, row)) for row in rows]


_CLAIMABLE_SQL = (
    "SELECT 1 FROM zato_pubsub_delivery WHERE sub_key = :sub_key AND claimed_until < :now "
    "AND next_attempt_at <= :now AND expiration_time > :now LIMIT 1")


def _queue_row(row: Any) -> dict[str, Any]:
    out = dict(row)
    out.pop("id", None)
    return out


def _dead_row(row: Any, with_message: bool) -> dict[str, Any]:
    out = dict(row)
    out.pop("id", None)
    message = json.loads(out.pop("message"))
    out["message"] = message if with_message else {k: v for k, v in message.items() if k != "data"}
    return out


def _durable_sqlite(engine: Engine) -> None:
    """ This store's SQLite connections (`synchronous=FULL` from `open_engine`: the WAL synced at
    every commit): write transactions that take the write lock when they begin (the database's busy
    timeout then queues them). """

    @event.listens_for(engine, "connect")
    def _driver_transactions(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # transactions are begun below, not by the driver

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        begin = options.get("zato_pubsub_begin", "IMMEDIATE")
        if begin == "IMMEDIATE":  # a write: how it is committed
            conn.exec_driver_sql(f"PRAGMA synchronous={options.get('zato_pubsub_synchronous', 'FULL')}")
        conn.exec_driver_sql(f"BEGIN {begin}")
