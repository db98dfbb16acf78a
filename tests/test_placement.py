""" Placement (zato.server.placement): a fenced lease in the configuration database, on SQLite and
a real PostgreSQL. Two holders compete and one wins; the loser commits no fenced write; a holder
that stops renewing (as a killed process does) is taken over within its lease; a `one_process`
task and a `one_process` outgoing connection type run in exactly one of two servers sharing a
database and move when that server stops. The `one_process` listener is in tests/test_listeners.py. """

from __future__ import annotations

import importlib
from datetime import datetime, timedelta, timezone

import httpx
import pluggy
import pytest
import trio
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, func, inspect, insert, select

from zato.odb import ODB, sqlite_url
from zato import PROJECT_NAME, hookimpl, hookspecs
from zato.plugins import register_tasks
from zato.registry import RegistrationError
from zato.server.outgoing import ConnectionNotFound
from zato.server.placement import Lease, LeaseLost, Placement, lease_table, placements_of
from zato.testing import admin_auth, create_test_server_dir, run_server

UTC = timezone.utc
T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)

notes = Table("placement_test_note", MetaData(), Column("id", Integer, primary_key=True),
              Column("text", String(100), nullable=False))


def migrated_engine(url: str):
    odb = ODB(url)
    odb.upgrade({})  # the core's chain only: zato_lease is the core's
    odb.close()
    engine = create_engine(url)
    notes.create(engine)
    return engine


def count_notes(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(notes)).scalar_one()


def test_the_table_is_that_of_the_core_migration(database_url):
    engine = migrated_engine(database_url)
    inspector = inspect(engine)
    migrated = {c["name"]: c for c in inspector.get_columns("zato_lease")}
    assert list(migrated) == [c.name for c in lease_table.columns]
    for column in lease_table.columns:
        assert migrated[column.name]["nullable"] == column.nullable, column.name
        assert isinstance(migrated[column.name]["type"], column.type._type_affinity), column.name
    assert inspector.get_pk_constraint("zato_lease")["constrained_columns"] == ["name"]
    engine.dispose()


def test_two_holders_compete_and_one_wins_until_it_releases_or_its_lease_expires(database_url):
    engine = migrated_engine(database_url)
    lease, other = Lease(engine, "task:demo.poller"), Lease(engine, "listener:demo")
    assert lease.acquire("A", 10, T0) == 1
    assert lease.acquire("B", 10, T0 + timedelta(seconds=5)) is None  # A's lease is valid
    assert not lease.renew("B", 1, 10, T0 + timedelta(seconds=5))
    assert other.acquire("B", 10, T0) == 1  # another name is another lease
    assert lease.renew("A", 1, 10, T0 + timedelta(seconds=5))  # now valid until T0 + 15
    assert lease.acquire("B", 10, T0 + timedelta(seconds=12)) is None
    assert lease.acquire("B", 10, T0 + timedelta(seconds=16)) == 2  # expired: B takes over, the epoch grows
    assert not lease.renew("A", 1, 10, T0 + timedelta(seconds=16))  # A's epoch is over
    assert lease.current()["holder"] == "B" and lease.current()["epoch"] == 2
    assert lease.release("B", 2, T0 + timedelta(seconds=17))
    assert lease.acquire("A", 10, T0 + timedelta(seconds=17)) == 3  # released: taken at once
    assert not lease.release("B", 2, T0 + timedelta(seconds=18))  # not B's any more: nothing released
    with pytest.raises(ValueError, match="lease name"):
        Lease(engine, "")
    engine.dispose()


def test_the_loser_cannot_commit_a_fenced_write(database_url):
    engine = migrated_engine(database_url)
    lease = Lease(engine, "task:demo.writer")
    assert lease.acquire("A", 10, T0) == 1
    with lease.fenced("A", 1) as conn:
        conn.execute(insert(notes).values(text="A, holding"))
    assert lease.acquire("B", 10, T0 + timedelta(seconds=11)) == 2  # A stopped renewing: B took over
    with pytest.raises(LeaseLost, match="task:demo.writer"):
        with lease.fenced("A", 1) as conn:
            conn.execute(insert(notes).values(text="A, after losing"))
    with lease.fenced("B", 2) as conn:
        conn.execute(insert(notes).values(text="B"))
    with engine.connect() as conn:
        assert sorted(conn.execute(select(notes.c.text)).scalars()) == ["A, holding", "B"]
    engine.dispose()


async def test_a_holder_that_stops_renewing_is_taken_over_within_its_lease(database_url):
    engine = migrated_engine(database_url)
    held_by: list[str] = []

    def worker(name: str):
        async def work(epoch: int) -> None:
            held_by.append(name)
            await trio.sleep_forever()
        return work

    # `release_when_cancelled=False`: cancelling A is what a killed process does to its lease
    a = Placement(engine, "task:demo.single", lease_seconds=1, holder="A", release_when_cancelled=False)
    b = Placement(engine, "task:demo.single", lease_seconds=1, holder="B")
    async with trio.open_nursery() as nursery:
        kill_a = trio.CancelScope()
        nursery.start_soon(_run_in, kill_a, a, worker("A"))
        with trio.fail_after(5):
            while held_by != ["A"]:
                await trio.sleep(0.01)
        nursery.start_soon(b.run, worker("B"))
        await trio.sleep(1.5)  # B competes meanwhile, A renews: one holder only
        assert held_by == ["A"] and a.holding and not b.holding
        killed_at = trio.current_time()
        kill_a.cancel()
        with trio.fail_after(5):
            while held_by != ["A", "B"]:
                await trio.sleep(0.01)
        # A's lease (1 s) expired, then B's next attempt (every third of it) took it
        assert trio.current_time() - killed_at <= 1 + 1 / 3 + 0.3
        assert Lease(engine, "task:demo.single").current()["holder"] == "B"
        await b.close()  # a clean stop: released at once
        assert Lease(engine, "task:demo.single").acquire("C", 1) is not None
        nursery.cancel_scope.cancel()
    engine.dispose()


async def _run_in(scope: trio.CancelScope, placement: Placement, work) -> None:
    with scope:
        await placement.run(work)


async def test_a_holder_that_lost_its_lease_stops_its_work_and_competes_again(database_url):
    engine = migrated_engine(database_url)
    placement = Placement(engine, "task:demo.lost", lease_seconds=0.6, holder="A")
    lease = Lease(engine, "task:demo.lost")
    events: list[tuple[str, int]] = []

    async def work(epoch: int) -> None:
        events.append(("started", epoch))
        try:
            await trio.sleep_forever()
        finally:
            events.append(("cancelled", epoch))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(placement.run, work)
        with trio.fail_after(5):
            while not events:
                await trio.sleep(0.01)
        # Another process takes it over (as after a pause longer than the lease, e.g. a frozen VM)
        stolen = await trio.to_thread.run_sync(
            lambda: lease.acquire("B", 0.9, datetime.now(UTC) + timedelta(seconds=5)))
        assert stolen == 2
        with trio.fail_after(5):
            while ("cancelled", 1) not in events:
                await trio.sleep(0.01)
        assert not placement.holding
        with pytest.raises(LeaseLost):  # and its epoch fences nothing any more
            with lease.fenced("A", 1) as conn:
                conn.execute(insert(notes).values(text="late"))
        with trio.fail_after(10):  # B's lease runs out: A takes it again, with a new epoch
            while ("started", 3) not in events:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert count_notes(engine) == 0
    assert lease.current()["expires"] < datetime.now(UTC).isoformat()  # cancelled: released
    engine.dispose()


# ################################################################################################
# A one_process task in two servers sharing one database


TASK_PLUGIN = '''
import trio
from zato import hookimpl

RUNNING = []  # the servers the task runs in now
STARTS = []  # every start, in order


@hookimpl
def register_tasks(register, server):
    async def run(*, task_status=trio.TASK_STATUS_IGNORED):
        RUNNING.append(server)
        STARTS.append(server)
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            RUNNING.remove(server)

    register("single", run, placement="one_process")
'''


def fenced_write(placement: Placement) -> None:
    with placement.fenced() as conn:
        conn.execute(lease_table.update().where(lease_table.c.name == "nothing").values(expires=T0))


def shared_server_dir(tmp_path, name: str, url: str):
    return create_test_server_dir(tmp_path / name, main={"graceful_timeout": 1, "placement_lease_seconds": 1,
                                                         "name": name}, odb={"url": url})


async def test_a_one_process_task_runs_in_one_of_two_servers_and_moves_when_it_stops(plugin_site, tmp_path,
                                                                                     database_url):
    module = importlib.import_module(plugin_site.add("single_task", TASK_PLUGIN))
    dir_a, dir_b = (shared_server_dir(tmp_path, name, database_url) for name in ("a", "b"))

    async def serve(base, stop: trio.Event, *, task_status):
        async with run_server(base) as server:
            task_status.started(server)
            await stop.wait()

    async with trio.open_nursery() as nursery:
        stop_a, stop_b = trio.Event(), trio.Event()
        server_a = await nursery.start(serve, dir_a, stop_a)
        with trio.fail_after(5):
            while module.RUNNING != [server_a]:
                await trio.sleep(0.01)
        server_b = await nursery.start(serve, dir_b, stop_b)
        await trio.sleep(1.5)  # more than the lease: B competes, A keeps it
        assert module.RUNNING == [server_a] and module.STARTS == [server_a]
        placement = placements_of(server_b)["task:single_task.single"]  # beside the scheduler's
        assert placement.name == "task:single_task.single" and not placement.holding
        with pytest.raises(LeaseLost, match="does not hold the lease 'task:single_task.single'"):
            await trio.to_thread.run_sync(fenced_write, placement)
        stopped_at = trio.current_time()
        stop_a.set()  # a clean stop releases the lease: B takes over at its next attempt
        with trio.fail_after(5):
            while module.RUNNING != [server_b]:
                await trio.sleep(0.01)
        assert trio.current_time() - stopped_at < 1 + 1  # the graceful stop, then a third of the lease
        assert module.STARTS == [server_a, server_b]
        await trio.to_thread.run_sync(fenced_write, placement)  # B holds it now: its fenced writes commit
        stop_b.set()
    assert module.RUNNING == []


CONNECTOR_PLUGIN = '''
from zato.plugin_api import Connector, Field, ObjectType, OutgoingConnectionType, hookimpl

EVENTS = []  # ("built" | "closed", server name, definition name)


class Subscribed:
    """ A connection that must exist once among all servers (as one subscribed to a remote cluster). """

    def __init__(self, server, definition):
        self.server_name, self.name = server.name, definition["name"]
        EVENTS.append(("built", self.server_name, self.name))

    def ping(self):
        return None

    def close(self):
        EVENTS.append(("closed", self.server_name, self.name))


@hookimpl
def register_connectors(register):
    register(Connector(ObjectType("outgoing_once", (Field("name", required=True),)),
                       OutgoingConnectionType("once", "outgoing_once", "out.once", Subscribed, placement="one_process")))
'''


async def test_a_one_process_connection_type_is_built_in_one_of_two_servers_and_moves_when_it_stops(
        plugin_site, tmp_path, database_url):
    module = importlib.import_module(plugin_site.add("once", CONNECTOR_PLUGIN))
    odb = ODB(database_url)
    odb.upgrade()
    odb.put_object("outgoing_once", "remote", {"name": "remote"})
    odb.close()
    dir_a, dir_b = (shared_server_dir(tmp_path, name, database_url) for name in ("a", "b"))

    async def serve(base, stop: trio.Event, *, task_status):
        async with run_server(base) as server:
            task_status.started(server)
            await stop.wait()

    def built_in() -> list[str]:
        alive: dict[str, int] = {}
        for event, server_name, _ in module.EVENTS:
            alive[server_name] = alive.get(server_name, 0) + (1 if event == "built" else -1)
        return sorted(name for name, count in alive.items() if count > 0)

    async with trio.open_nursery() as nursery:
        stop_a, stop_b = trio.Event(), trio.Event()
        server_a = await nursery.start(serve, dir_a, stop_a)
        with trio.fail_after(5):
            while built_in() != ["a"]:
                await trio.sleep(0.01)
        server_b = await nursery.start(serve, dir_b, stop_b)
        await trio.sleep(1.5)  # more than the lease: B competes, A keeps it
        assert built_in() == ["a"] and server_a.outgoing.map("out.once")["remote"].server_name == "a"
        with pytest.raises(ConnectionNotFound, match=r"'remote' in out.once is not in this process: once connections "
                                                     r"run in one process .* lease 'outgoing:once'"):
            server_b.outgoing.map("out.once")["remote"]
        async with httpx.AsyncClient(base_url=server_b.address, auth=admin_auth()) as client:
            leases = {lease["name"]: lease for lease in (await client.get("/zato/api/placements")).json()["leases"]}
        assert leases["outgoing:once"]["held"] is True and leases["outgoing:once"]["this_process"] is False
        assert leases["outgoing:once"]["holder"] == placements_of(server_a)["outgoing:once"].holder
        stop_a.set()  # a clean stop closes A's connection and releases the lease: B builds it
        with trio.fail_after(5):
            while built_in() != ["b"] or "remote" not in server_b.outgoing.map("out.once"):  # built, then in the map
                await trio.sleep(0.01)
        assert server_b.outgoing.map("out.once")["remote"].server_name == "b"
        assert [e[:2] for e in module.EVENTS] == [("built", "a"), ("closed", "a"), ("built", "b")]
        stop_b.set()
    assert built_in() == []


class BadPlacementPlugin:
    @staticmethod
    @hookimpl
    def register_tasks(register, server):
        async def run(*, task_status):
            task_status.started()
        register("poller", run, placement="everywhere")


def test_a_task_placement_is_checked():
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(BadPlacementPlugin, name="bad_placement")
    with pytest.raises(RegistrationError, match="placement 'everywhere' is not one of every_worker"):
        register_tasks(pm, None)
