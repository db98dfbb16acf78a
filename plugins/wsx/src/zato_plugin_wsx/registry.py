""" The WebSocket connections of every process sharing the configuration database, so that the
admin API lists, invokes and disconnects a connection wherever it is open.

* The database is the truth: each process writes a row to `zato_wsx_connection` when a session
  opens and deletes it when it closes (`ConnectionRegistry.run`, one writer per process, in order
  and in batches, in a worker thread); it refreshes `last_seen` of its rows every
  `HEARTBEAT_SECONDS`, so rows of a process that died are no longer listed after
  `STALE_SECONDS`, and deleted. At start, rows of this host's processes that are gone are deleted.
* Invoking, disconnecting or delivering to a connection held by another process: the holder is
  asked, acts and writes the outcome to `zato_wsx_reply`, which the asking process polls until
  the timeout. A holder in this server is asked by a notification (`wsx.invoke`,
  `wsx.disconnect`, `wsx.deliver`) to its workers, which arrives at once; a holder in another
  server sharing the database by a row in `zato_wsx_request` addressed to its process, which
  each process holding connections reads every `REQUEST_POLL_SECONDS` (so a call across servers
  takes up to that much longer). Broadcasts reach the other workers of this server by the
  notification `wsx.broadcast` and each process of another server holding clients of the
  channel by a request row.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

import trio
from sqlalchemy import Column, Float, Index, Integer, MetaData, String, Table, Text, delete, insert, select, update
from sqlalchemy.engine import Engine

from zato.plugin_api import PluginState

logger = logging.getLogger("zato.wsx")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
INVOKE, DISCONNECT, BROADCAST, DELIVER = "wsx.invoke", "wsx.disconnect", "wsx.broadcast", "wsx.deliver"
OUT_CALL = "wsx.outgoing.call"  # a service's invoke or send through an outgoing connection held elsewhere
HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 60.0  # a row not refreshed for this long is of a process that is gone
REPLY_GRACE_SECONDS = 2.0  # beyond an invoke's timeout: the notification's way there and the reply's back
DISCONNECT_TIMEOUT = 5.0
REQUEST_POLL_SECONDS = 0.2  # how often a process holding connections reads requests from other servers
ABANDONED_REPLY_SECONDS = 600.0  # replies nobody read (the asker gave up) are deleted after this

REGISTRY: PluginState["ConnectionRegistry"] = PluginState("wsx.registry", "the WebSocket connections registry")

# ################################################################################################
# The tables (the same as migrations/wsx_0001_connections.py, wsx_0002_requests.py, wsx_0003_server_names.py)

metadata = MetaData()

connection_table = Table(
    "zato_wsx_connection", metadata,
    Column("pub_client_id", String(64), primary_key=True),
    Column("channel_name", String(400), nullable=False),
    Column("ext_client_id", String(400), nullable=True),
    Column("ext_client_name", String(400), nullable=True),
    Column("peer_address", String(200), nullable=False),
    Column("peer_fqdn", String(400), nullable=True),
    Column("forwarded_for", String(400), nullable=True),
    Column("local_address", String(200), nullable=False),
    Column("user", String(400), nullable=True),
    Column("connection_time", String(40), nullable=False),
    Column("pings_missed", Integer, nullable=False, server_default="0"),
    Column("subscriptions", Text, nullable=False, server_default="{}"),
    Column("server_name", String(200), nullable=False),  # the host: with server_pid, whom requests are addressed to
    Column("server_dir", String(1000), nullable=False),  # which server on that host
    Column("server_pid", Integer, nullable=False),
    Column("worker_index", Integer, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("server_config_name", String(200), nullable=True),  # the server's own name ([main] name of server.conf)
    Index("ix_zato_wsx_connection_holder", "server_name", "server_pid"),
)

reply_table = Table(
    "zato_wsx_reply", metadata,
    Column("request_id", String(64), primary_key=True),
    Column("status", Integer, nullable=False),
    Column("body", Text, nullable=False),
    Column("created", Float, nullable=False),
)

request_table = Table(
    "zato_wsx_request", metadata,
    Column("request_id", String(64), primary_key=True),
    Column("action", String(40), nullable=False),
    Column("payload", Text, nullable=False),
    Column("holder_name", String(200), nullable=False),
    Column("holder_pid", Integer, nullable=False),
    Column("created", Float, nullable=False),
    Index("ix_zato_wsx_request_holder", "holder_name", "holder_pid"),
)

outgoing_table = Table(
    "zato_wsx_outgoing", metadata,
    Column("name", String(400), primary_key=True),
    Column("address", String(1000), nullable=False),
    Column("state", String(40), nullable=False),
    Column("since", Float, nullable=False),
    Column("last_error", Text, nullable=False, server_default=""),
    Column("server_name", String(200), nullable=False),
    Column("server_dir", String(1000), nullable=False),
    Column("server_pid", Integer, nullable=False),
    Column("worker_index", Integer, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("server_config_name", String(200), nullable=True),
)

# When each WebSocket client subscribed to each topic (zato_plugin_wsx.pubsub): kept with its
# durable subscription, so that a client reconnecting later, to any server, lists the times
subscription_table = Table(
    "zato_wsx_subscription", metadata,
    Column("endpoint_name", String(400), primary_key=True),  # wsx/<channel>/<client_id>
    Column("topic_name", String(400), primary_key=True),
    Column("subscribed_at", String(40), nullable=False),  # UTC, ISO
)

_LISTED = ("pub_client_id", "channel_name", "ext_client_id", "ext_client_name", "peer_address", "peer_fqdn",
           "forwarded_for", "local_address", "user", "connection_time", "pings_missed", "server_pid",
           "worker_index")


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


# ################################################################################################
# The blocking side (worker threads)


class ConnectionStore:
    """ Reads and writes of both tables; every call blocks. `host`, `pid`: this process. """

    def __init__(self, engine: Engine, *, host: str, server_dir: str, pid: int, worker_index: int,
                 server_name: str | None = None) -> None:
        self.engine = engine
        self.host, self.server_dir, self.pid, self.worker_index = host, server_dir, pid, worker_index
        self.server_name = server_name  # the configured name ([main] name), listed as server_name
        self._written: dict[str, tuple] = {}  # pub_client_id -> the live fields its row has

    def is_mine(self, row: dict[str, Any]) -> bool:
        return row["server_name"] == self.host and row["server_pid"] == self.pid

    def same_server(self, row: dict[str, Any]) -> bool:
        return row["server_name"] == self.host and row["server_dir"] == self.server_dir

    def row_of(self, connection: Any, now: float) -> dict[str, Any]:
        return {**{name: value for name, value in connection.as_dict().items() if name in connection_table.c},
                "subscriptions": json.dumps(connection.subscriptions), "server_name": self.host,
                "server_dir": self.server_dir, "server_config_name": self.server_name, "server_pid": self.pid,
                "worker_index": self.worker_index, "last_seen": now}

    def apply(self, changes: Iterable[tuple[str, Any]]) -> None:
        """ `changes`, in the order they happened: ("open", row) of a connection whose session
        opened (its pub_client_id is new), ("rewrite", row) of one whose row is missing or out of
        date, ("close", pub_client_id), and ("outgoing", status) of outgoing connections. Rows
        of sessions opened one after another are inserted together (thousands of clients
        connecting at once cost one statement per batch). """
        with self.engine.begin() as conn:
            opened: list[dict[str, Any]] = []
            for kind, value in changes:
                if kind == "open":
                    opened.append(value)
                    continue
                if opened:
                    conn.execute(insert(connection_table), opened)
                    opened = []
                if kind == "outgoing":
                    conn.execute(delete(outgoing_table).where(outgoing_table.c.name == value["name"]))
                    if value["state"] != "gone":
                        conn.execute(insert(outgoing_table), [self.outgoing_row(value, time.time())])
                elif kind == "rewrite":
                    conn.execute(delete(connection_table).where(
                        connection_table.c.pub_client_id == value["pub_client_id"]))
                    conn.execute(insert(connection_table), [value])
                else:
                    conn.execute(delete(connection_table).where(connection_table.c.pub_client_id == value))
            if opened:
                conn.execute(insert(connection_table), opened)

    def outgoing_row(self, status: dict[str, Any], now: float) -> dict[str, Any]:
        return {"name": status["name"], "address": status.get("address") or "", "state": status["state"],
                "since": status.get("since") or now, "last_error": status.get("last_error") or "",
                "server_name": self.host, "server_dir": self.server_dir, "server_config_name": self.server_name,
                "server_pid": self.pid, "worker_index": self.worker_index, "last_seen": now}

    def find_outgoing(self, name: str, now: float) -> dict[str, Any] | None:
        """ Where the live outgoing connection `name` is (its holder's row), if anywhere. """
        with self.engine.connect() as conn:
            row = conn.execute(select(outgoing_table).where(
                outgoing_table.c.name == name, outgoing_table.c.last_seen >= now - STALE_SECONDS)).first()
        return dict(row._mapping) if row is not None else None

    def listed_outgoing(self, now: float) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(outgoing_table).where(outgoing_table.c.last_seen >= now - STALE_SECONDS)
                                .order_by(outgoing_table.c.name))
            return [dict(row._mapping) for row in rows]

    def refresh(self, rows: list[dict[str, Any]], now: float) -> None:
        """ The heartbeat. One UPDATE moves `last_seen` of all this process's rows; only rows that
        are missing (a failed write) or whose live fields changed since the last heartbeat
        (`peer_fqdn`, `pings_missed`, `subscriptions`) are written again, and rows of connections
        no longer open are deleted (`rows`: this process's open connections as they are now).
        Rows gone stale, and replies nobody read, are deleted. """
        mine = (connection_table.c.server_name == self.host) & (connection_table.c.server_pid == self.pid)
        wanted = {row["pub_client_id"]: row for row in rows}
        with self.engine.begin() as conn:
            conn.execute(update(connection_table).where(mine).values(last_seen=now))
            conn.execute(update(outgoing_table).where((outgoing_table.c.server_name == self.host)
                                                      & (outgoing_table.c.server_pid == self.pid)).values(last_seen=now))
            present = set(conn.execute(select(connection_table.c.pub_client_id).where(mine)).scalars())
            gone = present - set(wanted)
            if gone:
                conn.execute(delete(connection_table).where(connection_table.c.pub_client_id.in_(gone)))
        self.apply([("rewrite", row) for pub_client_id, row in wanted.items()
                    if pub_client_id not in present or self._written.get(pub_client_id) != _live_fields(row)])
        self._written = {pub_client_id: _live_fields(row) for pub_client_id, row in wanted.items()}
        with self.engine.begin() as conn:
            conn.execute(delete(connection_table).where(connection_table.c.last_seen < now - STALE_SECONDS))
            conn.execute(delete(outgoing_table).where(outgoing_table.c.last_seen < now - STALE_SECONDS))
            conn.execute(delete(reply_table).where(reply_table.c.created < now - ABANDONED_REPLY_SECONDS))
            conn.execute(delete(request_table).where(request_table.c.created < now - ABANDONED_REPLY_SECONDS))

    def clean_at_start(self) -> int:
        """ Deletes the rows of processes of this host that are not running (and this pid's,
        left by an earlier process that had it); returns how many. """
        with self.engine.begin() as conn:
            holders = list(conn.execute(select(connection_table.c.server_pid).where(
                connection_table.c.server_name == self.host).distinct()).scalars().all())
            holders += conn.execute(select(outgoing_table.c.server_pid).where(
                outgoing_table.c.server_name == self.host).distinct()).scalars().all()
            gone = sorted({pid for pid in holders if pid == self.pid or not _is_running(pid)})
            if not gone:
                return 0
            conn.execute(delete(outgoing_table).where(
                outgoing_table.c.server_name == self.host, outgoing_table.c.server_pid.in_(gone)))
            return conn.execute(delete(connection_table).where(
                connection_table.c.server_name == self.host, connection_table.c.server_pid.in_(gone))).rowcount

    def forget_mine(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(connection_table).where(
                connection_table.c.server_name == self.host, connection_table.c.server_pid == self.pid))
            conn.execute(delete(outgoing_table).where(
                outgoing_table.c.server_name == self.host, outgoing_table.c.server_pid == self.pid))

    def listed(self, now: float, *, channel: str | None = None, ext_client_id: str | None = None) -> list[dict]:
        """ The rows not stale, of any process. """
        query = select(connection_table).where(connection_table.c.last_seen >= now - STALE_SECONDS)
        if channel:
            query = query.where(connection_table.c.channel_name == channel)
        if ext_client_id:
            query = query.where(connection_table.c.ext_client_id == ext_client_id)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def find(self, pub_client_id: str, now: float) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(connection_table).where(
                connection_table.c.pub_client_id == pub_client_id,
                connection_table.c.last_seen >= now - STALE_SECONDS)).first()
        return dict(row._mapping) if row is not None else None

    def other_servers_holding(self, channel: str, now: float) -> list[dict[str, Any]]:
        """ The processes of other servers with clients of `channel` (server_name, server_dir, server_pid). """
        query = select(connection_table.c.server_name, connection_table.c.server_dir,
                       connection_table.c.server_pid).where(
            connection_table.c.channel_name == channel, connection_table.c.last_seen >= now - STALE_SECONDS).distinct()
        with self.engine.connect() as conn:
            holders = [dict(row._mapping) for row in conn.execute(query)]
        return [holder for holder in holders if not self.same_server(holder)]

    def request(self, holder: dict[str, Any], action: str, payload: dict[str, Any]) -> None:
        """ Asks the process `holder` (a row naming it) of another server to act. """
        with self.engine.begin() as conn:
            conn.execute(insert(request_table), [{
                "request_id": payload["request_id"], "action": action, "payload": json.dumps(payload),
                "holder_name": holder["server_name"], "holder_pid": holder["server_pid"], "created": time.time()}])

    def take_requests(self) -> list[tuple[str, dict[str, Any]]]:
        """ The requests addressed to this process, deleted as they are read: (action, payload). """
        mine = (request_table.c.holder_name == self.host) & (request_table.c.holder_pid == self.pid)
        with self.engine.begin() as conn:
            rows = conn.execute(select(request_table.c.action, request_table.c.payload).where(mine).order_by(
                request_table.c.created)).all()
            if rows:
                conn.execute(delete(request_table).where(mine))
        return [(row.action, json.loads(row.payload)) for row in rows]

    def reply(self, request_id: str, status: int, body: Any, *, closed: str | None = None) -> None:
        """ Writes an answer for the asking process; `closed`: the row of that connection goes
        in the same transaction, so that the asker lists it no more once it has its answer. """
        with self.engine.begin() as conn:
            if closed is not None:
                conn.execute(delete(connection_table).where(connection_table.c.pub_client_id == closed))
            conn.execute(insert(reply_table), [{"request_id": request_id, "status": status,
                                                "body": json.dumps(body), "created": time.time()}])

    def take_reply(self, request_id: str) -> tuple[int, Any] | None:
        with self.engine.begin() as conn:
            row = conn.execute(select(reply_table.c.status, reply_table.c.body).where(
                reply_table.c.request_id == request_id)).first()
            if row is None:
                return None
            conn.execute(delete(reply_table).where(reply_table.c.request_id == request_id))
        return row.status, json.loads(row.body)


# ################################################################################################
# The trio side


class ConnectionRegistry:
    """ One per worker. `opened`/`closed` (on the trio loop, never blocking) queue a change that
    `run` writes; the rest are awaited by the admin API and the notification handlers. """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.store = ConnectionStore(server.odb.engine, host=socket.gethostname(),
                                     server_dir=str(server.paths.base_dir), pid=os.getpid(),
                                     worker_index=int(server.options.worker_index), server_name=server.name)
        self.limiter = trio.CapacityLimiter(2)
        self._changes: list[tuple[str, Any]] = []
        self._changed = trio.Event()
        self.running = False

    async def in_thread(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """ A blocking call of the store, in a worker thread (two at a time per process). """
        return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self.limiter)

    # Connections opening and closing in this process

    def opened(self, connection: Any) -> None:
        if self.running:
            self._changes.append(("open", self.store.row_of(connection, time.time())))
            self._changed.set()

    def rewrite(self, connection: Any) -> None:
        """ A live field of an open connection changed (its peer's name was looked up). """
        if self.running and connection.token is not None:
            self._changes.append(("rewrite", self.store.row_of(connection, time.time())))
            self._changed.set()

    def closed(self, connection: Any) -> None:
        if self.running:
            self._changes.append(("close", connection.pub_client_id))
            self._changed.set()

    def outgoing_changed(self, status: dict[str, Any]) -> None:
        """ An outgoing connection of this process changed state (or is "gone"). """
        if self.running:
            self._changes.append(("outgoing", status))
            self._changed.set()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """ Writes the changes as they come and the heartbeat; at stop, deletes this process's rows. """
        removed = await self.in_thread(self.store.clean_at_start)
        if removed:
            logger.info("WebSocket connections: %d rows of processes no longer running deleted", removed)
        self.running = True
        task_status.started()
        try:
            next_poll = trio.current_time()
            next_heartbeat = next_poll + HEARTBEAT_SECONDS
            while True:
                holding = self._holds_connections()  # requests come only for connections this process holds
                with trio.move_on_at(min(next_heartbeat, next_poll) if holding else next_heartbeat):
                    await self._changed.wait()
                await self._write_changes()
                if holding and trio.current_time() >= next_poll:
                    await self._take_requests()
                    next_poll = trio.current_time() + REQUEST_POLL_SECONDS
                if trio.current_time() >= next_heartbeat:
                    await self._heartbeat()
                    next_heartbeat = trio.current_time() + HEARTBEAT_SECONDS
        finally:
            self.running = False
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                try:
                    await self.in_thread(self.store.forget_mine)
                except Exception:
                    logger.exception("WebSocket connections: the rows of this process could not be deleted at stop; "
                                     "they stop being listed within %g s", STALE_SECONDS)

    async def _write_changes(self) -> None:
        self._changed = trio.Event()
        changes, self._changes = self._changes, []
        if not changes:
            return
        try:
            await self.in_thread(self.store.apply, changes)
        except Exception:
            logger.exception("WebSocket connections: %d changes could not be written to the database; listings in "
                             "other processes miss them until the next heartbeat", len(changes))

    def _holds_connections(self) -> bool:
        from zato_plugin_wsx import CHANNELS
        from zato_plugin_wsx.outgoing import SESSIONS
        channels, sessions = CHANNELS.get(self.server), SESSIONS.get(self.server)
        return channels is not None and any(channels.connections.values()) or sessions is not None and \
            bool(sessions.sessions)

    async def _take_requests(self) -> None:
        """ Acts on what processes of other servers asked of this one. """
        try:
            requests = await self.in_thread(self.store.take_requests)
        except Exception:
            logger.exception("WebSocket connections: requests of other servers could not be read; retried in %g s",
                             REQUEST_POLL_SECONDS)
            return
        for action, payload in requests:
            handler = HANDLERS.get(action)
            if handler is None:
                logger.warning("WebSocket connections: a request %r of another server is not known here; ignored "
                               "(are the servers of one version?)", action)
                continue
            handler(self.server, payload)

    async def _heartbeat(self) -> None:
        from zato_plugin_wsx import CHANNELS
        channels = CHANNELS.get(self.server)
        now = time.time()
        rows = [self.store.row_of(connection, now) for connection in (channels.all_connections() if channels else [])
                if connection.token is not None and not connection.closed]
        try:
            await self.in_thread(self.store.refresh, rows, now)
        except Exception:
            logger.exception("WebSocket connections: the heartbeat could not be written; retried in %g s",
                             HEARTBEAT_SECONDS)

    # The admin API

    async def listed(self, **filters: Any) -> list[dict[str, Any]]:
        """ Rows of the other processes (this process's connections are read from memory). """
        rows = await self.in_thread(self.store.listed, time.time(), **filters)
        return [_as_listed(row) for row in rows if not self.store.is_mine(row)]

    async def find(self, pub_client_id: str) -> dict[str, Any] | None:
        return await self.in_thread(self.store.find, pub_client_id, time.time())

    async def forget(self, pub_client_id: str) -> None:
        await self.in_thread(self.store.apply, [("close", pub_client_id)])

    async def ask(self, holder: dict[str, Any], action: str, payload: dict[str, Any],
                  timeout: float) -> tuple[int, Any] | None:
        """ Asks the process holding a connection (`holder`: its row) to act; returns its
        (status, body), or None if no answer came within `timeout` seconds. """
        payload = {**payload, "request_id": uuid.uuid4().hex}
        if self.store.same_server(holder):
            await self.server.notify(action, payload)
        else:
            await self.in_thread(self.store.request, holder, action, payload)
        request_id = payload["request_id"]
        delay = 0.005
        with trio.move_on_after(timeout):
            while True:
                await trio.sleep(delay)
                answer = await self.in_thread(self.store.take_reply, request_id)
                if answer is not None:
                    return answer
                delay = min(delay * 2, 0.1)
        return None


    async def broadcast(self, channel: str, data: Any) -> None:
        """ The other workers of this server and each process of another server holding clients of
        `channel` send `data` to theirs. """
        payload = {"channel": channel, "data": data, "origin_pid": os.getpid()}
        await self.server.notify(BROADCAST, payload)
        try:
            for holder in await self.in_thread(self.store.other_servers_holding, channel, time.time()):
                await self.in_thread(self.store.request, holder, BROADCAST, {**payload, "request_id": uuid.uuid4().hex})
        except Exception:
            logger.exception("WebSocket channel %r: a broadcast could not be passed on to the servers sharing the "
                             "database; their clients miss it", channel)


def _live_fields(row: dict[str, Any]) -> tuple:
    """ What changes in a connection's row while it is open. """
    return row.get("peer_fqdn"), row.get("pings_missed"), row.get("subscriptions")


def listed_server(row: dict[str, Any]) -> dict[str, Any]:
    """ server_name (the configured name) and server_host of a holder's row (a row written before
    the configured names were kept has only the host). """
    return {"server_name": row.get("server_config_name") or row["server_name"], "server_host": row["server_name"]}


def holder_of(row: dict[str, Any]) -> str:
    """ "server 'NAME' on HOST" of a holder's row, for messages. """
    names = listed_server(row)
    return f"server {names['server_name']!r} on {names['server_host']}"


def _as_listed(row: dict[str, Any]) -> dict[str, Any]:
    listed = {name: row[name] for name in _LISTED}
    listed["subscriptions"] = json.loads(row["subscriptions"] or "{}")
    listed.update(listed_server(row))
    return listed


# ################################################################################################
# Handlers of the notifications, in every worker: the holder of the connection acts


def _holder(server: Any, payload: Any) -> tuple[Any, Any] | None:
    from zato_plugin_wsx import CHANNELS
    channels, registry = CHANNELS.get(server), REGISTRY.get(server)
    if channels is None or registry is None or not isinstance(payload, dict):
        return None
    connection = channels.find(payload.get("pub_client_id"))
    if connection is None or server.background_nursery is None:
        return None
    return connection, registry


def on_invoke(server: Any, payload: Any) -> None:
    """ `wsx.invoke`: the holder sends the data to its client and writes the answer. """
    found = _holder(server, payload)
    if found is None:
        return
    connection, registry = found

    async def invoke() -> None:
        from zato_plugin_wsx.connection import ClientRequestFailed
        try:
            status, body = 200, await connection.invoke_client(payload["data"], float(payload["timeout"]))
        except ClientRequestFailed as exc:
            status, body = 504, str(exc)
        try:
            await registry.in_thread(registry.store.reply, payload["request_id"], status, body)
        except Exception:
            logger.exception("%s: the answer to an admin API invoke could not be written", connection.describe())
    server.background_nursery.start_soon(invoke)


def on_disconnect(server: Any, payload: Any) -> None:
    """ `wsx.disconnect`: the holder closes the connection, deletes its row and says it did. """
    found = _holder(server, payload)
    if found is None:
        return
    connection, registry = found

    async def disconnect() -> None:
        from zato_plugin_wsx.protocol import CLOSE_DISCONNECTED
        await connection.close(CLOSE_DISCONNECTED, "disconnected through the admin API")
        try:
            await registry.in_thread(registry.store.reply, payload["request_id"], 200, connection.pub_client_id,
                               closed=connection.pub_client_id)
        except Exception:
            logger.exception("%s: the answer to an admin API disconnect could not be written", connection.describe())
    server.background_nursery.start_soon(disconnect)


def on_deliver(server: Any, payload: Any) -> None:
    """ `wsx.deliver`: the holder sends a pub/sub delivery (zato_plugin_wsx.pubsub) to its client
    and says whether it could. """
    found = _holder(server, payload)
    if found is None:
        return
    connection, registry = found

    async def deliver() -> None:
        from zato_plugin_wsx.pubsub import note_delivered
        try:
            await connection.send_text(payload["frame"])
            note_delivered(server, connection, payload.get("topic_name"))
            status, body = 200, "sent"
        except Exception as exc:
            status, body = 410, f"{type(exc).__name__}: {exc}"
        try:
            await registry.in_thread(registry.store.reply, payload["request_id"], status, body)
        except Exception:
            logger.exception("%s: the outcome of a pub/sub delivery could not be written", connection.describe())
    server.background_nursery.start_soon(deliver)


def on_broadcast(server: Any, payload: Any) -> None:
    """ `wsx.broadcast`: every other worker sends the data to its own clients of the channel (the
    worker that broadcast sent to its own already). """
    from zato_plugin_wsx import CHANNELS
    from zato_plugin_wsx.channels import ChannelFacade
    channels = CHANNELS.get(server)
    if channels is None or payload.get("origin_pid") == os.getpid() or payload.get("channel") not in channels.settings \
            or server.background_nursery is None:
        return
    server.background_nursery.start_soon(ChannelFacade(channels, payload["channel"]).send_to_local_clients,
                                         payload.get("data"))


# ################################################################################################
# What the plugin's hookimpls call


def register_migrations(register: Any) -> None:
    register("wsx", MIGRATIONS)


def on_outgoing_call(server: Any, payload: Any) -> None:
    """ `wsx.outgoing.call`: the holder of an outgoing connection invokes (or sends) through it for
    a service of another process and writes the answer. """
    from zato_plugin_wsx.outgoing import SESSIONS
    sessions, registry = SESSIONS.get(server), REGISTRY.get(server)
    session = sessions.sessions.get(payload.get("name")) if sessions is not None and isinstance(payload, dict) \
        else None
    if session is None or registry is None or server.background_nursery is None:
        return

    async def call() -> None:
        try:
            status, body = 200, await session.call(payload["action"], payload.get("data"), float(payload["timeout"]))
        except Exception as exc:
            status, body = 502, str(exc)
        try:
            await registry.in_thread(registry.store.reply, payload["request_id"], status, body)
        except Exception:
            logger.exception("%s: the answer to a call of another process could not be written", session.describe())
    server.background_nursery.start_soon(call)


HANDLERS = {INVOKE: on_invoke, DISCONNECT: on_disconnect, BROADCAST: on_broadcast, DELIVER: on_deliver,
            OUT_CALL: on_outgoing_call}


def register_notification_handlers(register: Any) -> None:
    for action, handler in HANDLERS.items():
        register(action, handler)


def register_tasks(register: Any, server: Any) -> None:
    if getattr(server, "odb", None) is None:
        return
    registry = REGISTRY.set(server, ConnectionRegistry(server))
    register("registry", registry.run)
