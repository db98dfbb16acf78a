""" Placement: work that runs in exactly one process among all that share the configuration
database, held by a fenced lease and taken over within seconds when its holder dies.

A lease is one row of `zato_lease` (the core's migration 0006), by name (`task:<plugin>.<name>`,
`listener:<type>`, `scheduler`): who holds it (`holder`), until when (`expires`), and an `epoch`
that grows with every takeover, the fencing token.

* `Lease(engine, name)` - the blocking calls (run them in a worker thread): `acquire` takes the
  lease if it is free, expired or already ours and returns the new epoch; `renew` extends it
  while holder and epoch are still ours; `release` lets a successor take over at once;
  `fenced(holder, epoch)` is a transaction whose first statement writes the lease row where
  holder and epoch are still ours, so it commits only while the lease is held. In SQLite that
  statement takes the database's write lock, in PostgreSQL the row's lock, so a takeover is
  ordered wholly before or after the transaction: a process that lost the lease, even one whose
  clock is wrong, commits nothing (`LeaseLost`).
* `Placement(engine, name)` - the trio side: `run(work)` competes for the lease (every
  `lease_seconds / 3`), runs `await work(epoch)` while this process holds it, renews it every
  `lease_seconds / 3`, cancels `work` when the lease is lost (or `work` raises `LeaseLost`) and
  competes again. `close()`, and `run` cancelled (the server's stop), release the lease so that a
  successor takes over at once; a holder that died is taken over once its lease expired.
  `run_in_one_process` runs a `one_process` task that way (lease `task:<plugin>.<name>`); the
  listener runtime runs a `one_process` listener type's definitions that way (`listener:<type>`).

Expiry compares wall clocks of the processes sharing the database (keep them in sync, NTP); the
fence does not depend on clocks. A lease the holder cannot renew (the database is unreachable) is
given up (its work cancelled) a third of `lease_seconds` before it expires, so that the work has
stopped here before another process may take the lease.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Iterator

import trio
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, bindparam, select, update
from sqlalchemy.engine import Connection, Engine

from zato.odb import InsertIgnoringConflicts
from zato.server.plugin_state import PluginState

logger = logging.getLogger("zato.placement")

UTC = timezone.utc
EVERY_WORKER = "every_worker"
ONE_PROCESS = "one_process"
PLACEMENTS = (EVERY_WORKER, ONE_PROCESS)
DEFAULT_LEASE_SECONDS = 10.0  # [main] placement_lease_seconds
MIN_LEASE_SECONDS = 0.3
PLACEMENTS_STATE = PluginState["dict[str, Placement]"]("placement")  # lease name -> Placement, per server
RELEASE_TIMEOUT = 5.0  # seconds a release at stop may take before it is given up (the lease then expires)

metadata = MetaData()

lease_table = Table(  # the same as the core's migration 0006 (a test compares them)
    "zato_lease", metadata,
    Column("name", String(200), primary_key=True),
    Column("holder", String(400), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("acquired", DateTime(timezone=True), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=False),
)


class LeaseLost(Exception):
    """ This process no longer holds the lease: another one took it over (or it expired). """


def new_holder() -> str:
    """ A holder name unique to one process's one competitor: host/pid/random. """
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def task_lease_name(task_name: str) -> str:
    """ The lease of a `one_process` task (`<plugin>.<name>`). """
    return f"task:{task_name}"


def listener_lease_name(listener_type: str) -> str:
    """ The lease of a `one_process` listener type: all its definitions run in its holder. """
    return f"listener:{listener_type}"


def outgoing_lease_name(connection_type: str) -> str:
    """ The lease of a `one_process` outgoing connection type: all its connections are in its holder. """
    return f"outgoing:{connection_type}"


def lease_seconds_of(server: Any) -> float:
    """ `[main] placement_lease_seconds` of a server's configuration. """
    return max(MIN_LEASE_SECONDS, float(server.config.main.get("placement_lease_seconds", DEFAULT_LEASE_SECONDS)))


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _only_cancelled(exc: BaseException) -> bool:
    """ True if `exc` is trio's cancellation (alone or grouped), not an error. """
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_cancelled(inner) for inner in exc.exceptions)
    return isinstance(exc, trio.Cancelled)


def _now() -> datetime:
    return datetime.now(UTC)


# ################################################################################################
# The database side (blocking)


class Lease:
    """ One named lease in the configuration database. Every method blocks. """

    def __init__(self, engine: Engine, name: str) -> None:
        if not name or len(name) > 200:
            raise ValueError(f"lease name {name!r} must be 1-200 characters, e.g. 'task:myplugin.poller'")
        self.engine = engine
        self.name = name
        self._insert = InsertIgnoringConflicts(engine.dialect, lease_table, (lease_table.c.epoch,))
        self._fence = update(lease_table).where(
            lease_table.c.name == name, lease_table.c.holder == bindparam("f_holder"),
            lease_table.c.epoch == bindparam("f_epoch")).values(holder=lease_table.c.holder)

    def acquire(self, holder: str, seconds: float, now: datetime | None = None) -> int | None:
        """ Takes the lease if it is free, expired or `holder`'s; returns its new epoch, else None. """
        now = now or _now()
        expires = now + timedelta(seconds=seconds)
        with self.engine.begin() as conn:
            taken = conn.execute(update(lease_table).where(
                lease_table.c.name == self.name,
                (lease_table.c.expires < now) | (lease_table.c.holder == holder)).values(
                holder=holder, epoch=lease_table.c.epoch + 1, acquired=now, expires=expires)).rowcount
            if not taken:
                created = self._insert(conn, [{"name": self.name, "holder": holder, "epoch": 1, "acquired": now,
                                               "expires": expires}])
                if not created:
                    return None
            return conn.execute(select(lease_table.c.epoch).where(lease_table.c.name == self.name)).scalar_one()

    def renew(self, holder: str, epoch: int, seconds: float, now: datetime | None = None) -> bool:
        """ Extends the lease by `seconds` from now; False if `holder` no longer holds it at `epoch`. """
        now = now or _now()
        with self.engine.begin() as conn:
            return conn.execute(update(lease_table).where(
                lease_table.c.name == self.name, lease_table.c.holder == holder, lease_table.c.epoch == epoch).values(
                expires=now + timedelta(seconds=seconds))).rowcount == 1

    def release(self, holder: str, epoch: int, now: datetime | None = None) -> bool:
        """ Lets another process take over at once (a clean stop); False if it was not held. """
        now = now or _now()
        with self.engine.begin() as conn:
            return conn.execute(update(lease_table).where(
                lease_table.c.name == self.name, lease_table.c.holder == holder, lease_table.c.epoch == epoch).values(
                expires=now - timedelta(seconds=1))).rowcount == 1

    def current(self) -> dict[str, Any] | None:
        """ The lease as stored: holder, epoch, acquired, expires (ISO 8601, UTC); None if never taken. """
        with self.engine.connect() as conn:
            row = conn.execute(select(lease_table).where(lease_table.c.name == self.name)).mappings().first()
        return None if row is None else _lease_row(row)

    def check(self, conn: Connection, holder: str, epoch: int) -> None:
        """ The fence, as the first statement of a transaction of one's own: raises `LeaseLost`
        unless `holder` still holds the lease at `epoch`. """
        if conn.execute(self._fence, {"f_holder": holder, "f_epoch": epoch}).rowcount != 1:
            raise LeaseLost(f"another process took over the lease {self.name!r} (epoch {epoch} of {holder} is over)")

    @contextmanager
    def fenced(self, holder: str, epoch: int) -> Iterator[Connection]:
        """ A transaction that commits only while `holder` holds the lease at `epoch` (`LeaseLost`
        otherwise, with nothing written). """
        with self.engine.begin() as conn:
            self.check(conn, holder, epoch)
            yield conn


# ################################################################################################
# The trio side


async def _in_thread(fn: Callable[[], Any], limiter: trio.CapacityLimiter | None = None) -> Any:
    return await trio.to_thread.run_sync(fn, limiter=limiter)


class Placement:
    """ Runs work in this process only while it holds the lease `name`. `clock` (an object with
    `now()`, aware UTC) is the wall clock expiry is computed with; `blocking(fn, limiter)` how
    database calls are made (default: a worker thread). `release_when_cancelled`: whether `run`
    cancelled (the server's stop cancels its tasks) releases the lease; False for an owner that
    releases it with `close()` in its own stop and treats a bare cancellation as a crash. """

    def __init__(self, engine: Engine, name: str, *, lease_seconds: float = DEFAULT_LEASE_SECONDS,
                 holder: str | None = None, clock: Any = None,
                 blocking: Callable[..., Awaitable[Any]] | None = None, release_when_cancelled: bool = True) -> None:
        self.lease = Lease(engine, name)
        self.release_when_cancelled = release_when_cancelled
        self.name = name
        self.lease_seconds = max(MIN_LEASE_SECONDS, float(lease_seconds))
        self.renew_every = self.lease_seconds / 3
        self.holder = holder or new_holder()
        self.clock = clock
        self.blocking = blocking or _in_thread
        self.limiter = trio.CapacityLimiter(1)
        self.epoch: int | None = None  # while held
        self.closing = False
        self._held_scope: trio.CancelScope | None = None
        self.counters = {"acquired": 0, "lost": 0, "released": 0, "errors": 0}

    def _now(self) -> datetime:
        return self.clock.now() if self.clock is not None else _now()

    async def _db(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.blocking(lambda: fn(*args), self.limiter)

    @property
    def holding(self) -> bool:
        return self.epoch is not None

    def statistics(self) -> dict[str, Any]:
        return {**self.counters, "name": self.name, "holder": self.holder, "holding": self.holding,
                "epoch": self.epoch}

    @contextmanager
    def fenced(self) -> Iterator[Connection]:
        """ `Lease.fenced` at this placement's holder and current epoch (blocking: call it in a
        worker thread); `LeaseLost` if this process does not hold the lease. """
        epoch = self.epoch
        if epoch is None:
            raise LeaseLost(f"this process does not hold the lease {self.name!r} (holder {self.holder})")
        with self.lease.fenced(self.holder, epoch) as conn:
            yield conn

    async def run(self, work: Callable[[int], Awaitable[Any]], *,
                  task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """ Competes for the lease until cancelled or closed; runs `await work(epoch)` while held.
        Ready at once (another process may hold the lease for long). `work` returning ends `run`
        (the lease is released); `LeaseLost` from `work` counts as a lost lease; other errors
        propagate, after the lease is released. """
        task_status.started()
        failures = 0
        try:
            while not self.closing:
                try:
                    epoch = await self._db(self.lease.acquire, self.holder, self.lease_seconds, self._now())
                    failures = 0
                except Exception as exc:
                    epoch = None
                    failures += 1
                    self.counters["errors"] += 1
                    if failures == 1 or failures % 100 == 0:
                        logger.error("lease %r: cannot reach the configuration database (%s: %s); trying again every "
                                     "%.1f s", self.name, type(exc).__name__, exc, self.renew_every)
                if epoch is None:
                    await trio.sleep(self.renew_every)
                    continue
                if await self._hold(work, epoch):
                    return
        except BaseException as exc:
            if self.closing or self.release_when_cancelled or not _only_cancelled(exc):
                await self._release()
            self.epoch = None
            raise
        if self.closing:
            await self._release()

    async def _hold(self, work: Callable[[int], Awaitable[Any]], epoch: int) -> bool:
        """ Runs `work` while the lease is held at `epoch`; True if it returned (the lease is then
        released), False if the lease was lost or closed. """
        self.epoch = epoch
        self.counters["acquired"] += 1
        logger.info("lease %r taken by this process (holder %s, epoch %d)", self.name, self.holder, epoch)
        returned = False
        try:
            async with trio.open_nursery() as nursery:
                self._held_scope = nursery.cancel_scope
                nursery.start_soon(self._keep, nursery.cancel_scope)
                await work(epoch)
                returned = True
                nursery.cancel_scope.cancel()
        except* LeaseLost as group:  # a fenced write found the lease taken over
            self.counters["lost"] += 1
            logger.warning("lease %r: %s; this process stops and competes again (holder %s)", self.name,
                           group.exceptions[0], self.holder)
        finally:
            self._held_scope = None
        if returned or self.closing:
            await self._release()
        self.epoch = None
        return returned

    async def _keep(self, held: trio.CancelScope) -> None:
        """ Renews the lease every `lease_seconds / 3`; cancels `held` when it is lost. """
        valid_until = trio.current_time() + self.lease_seconds
        while True:
            await trio.sleep(self.renew_every)
            try:
                renewed = await self._db(self.lease.renew, self.holder, self.epoch, self.lease_seconds, self._now())
            except Exception as exc:
                self.counters["errors"] += 1
                logger.error("lease %r: cannot renew it (%s: %s)", self.name, type(exc).__name__, exc)
                if trio.current_time() < valid_until - self.renew_every:
                    continue
                renewed = False
            if not renewed:
                self.counters["lost"] += 1
                logger.warning("lease %r was lost (holder %s); another process takes over", self.name, self.holder)
                self.epoch = None
                held.cancel()
                return
            valid_until = trio.current_time() + self.lease_seconds

    async def _release(self) -> None:
        epoch, self.epoch = self.epoch, None
        if epoch is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(RELEASE_TIMEOUT):
            try:
                await self._db(self.lease.release, self.holder, epoch, self._now())
                self.counters["released"] += 1
                logger.info("lease %r released (holder %s, epoch %d)", self.name, self.holder, epoch)
            except Exception:
                logger.exception("lease %r: could not release it; another process takes over when it expires",
                                 self.name)

    async def close(self) -> None:
        """ Stops competing; cancels the work if it runs and releases the lease, so that another
        process takes over at once. """
        self.closing = True
        if self._held_scope is not None:
            self._held_scope.cancel()
        await self._release()


async def run_in_one_process(server: Any, name: str, run: Callable[..., Awaitable[Any]], *,
                             task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
    """ A `one_process` task: `run(task_status=...)` runs only in the process holding the lease
    `name`, started anew in whichever process takes it over (cancelled here when the lease is
    lost). Ready at once: the task may be running elsewhere. A task that returns keeps the lease
    until the server stops, so that it does not run again elsewhere; the server's stop cancels it
    and releases the lease, so that another process takes over at once. """
    placement = placement_of(server, name)

    async def work(epoch: int) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(run)
        await trio.sleep_forever()

    await placement.run(work, task_status=task_status)


def _lease_row(row: Any) -> dict[str, Any]:
    return {"name": row["name"], "holder": row["holder"], "epoch": row["epoch"],
            "acquired": _utc(row["acquired"]).isoformat(), "expires": _utc(row["expires"]).isoformat()}


def all_leases(engine: Engine, now: datetime | None = None) -> list[dict[str, Any]]:
    """ Every lease of the configuration database, by name, as `Lease.current` gives one, with
    `held`: whether it is unexpired (a released lease expired a second before its release). """
    now = now or _now()
    with engine.connect() as conn:
        rows = conn.execute(select(lease_table).order_by(lease_table.c.name)).mappings().all()
    return [{**_lease_row(row), "held": _utc(row["expires"]) > now} for row in rows]


def placement_of(server: Any, name: str, **options: Any) -> Placement:
    """ A new `Placement` of lease `name` on the server's configuration database (`options` as
    `Placement` takes them; `lease_seconds` from server.conf unless given), kept in
    `placements_of(server)`: the one way a server's tasks, listeners and connections get one. """
    options.setdefault("lease_seconds", lease_seconds_of(server))
    placement = Placement(options.pop("engine", None) or server.odb.engine, name, **options)
    PLACEMENTS_STATE.get_or_create(server, dict)[name] = placement
    return placement


def placements_of(server: Any) -> dict[str, Placement]:
    """ The placements of a server's `one_process` tasks, listeners, outgoing connection types
    and its scheduler, by lease name. """
    return PLACEMENTS_STATE.get(server) or {}
