""" transition_to in services of a real server (in-process, SQLite): the article's service, refusals
before the block, a failing block, force and force-stop states, history, concurrency (threads, on
SQLite and on PostgreSQL), the plugin switched off, .bst files deployed with `zato deploy` and the admin
API. """

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone

import pytest
import trio

from bst_fixtures import ORDERS, admin, bst_server, invoke

from zato.odb import ODB, sqlite_url
from zato_plugin_bst import MIGRATIONS
from zato_plugin_bst.store import StateChanged, Store


def ran(server):
    return server.plugin_state.get("test.bst.ran", [])


async def move(server, object_id, state_new, object_type="Order", **extra):
    return await invoke(server, "bst.test.move", {"object_type": object_type, "object_id": object_id,
                                                  "state_new": state_new, **extra})


async def history(server, object_type, object_id):
    reply = await invoke(server, "zato.bst.get-history", {"object_type": object_type, "object_id": object_id})
    assert reply.status_code == 200, reply.text
    return reply.json()


async def state(server, object_type, object_id):
    reply = await invoke(server, "zato.bst.get-current-state-info", {"object_type": object_type,
                                                                      "object_id": object_id})
    assert reply.status_code == 200, reply.text
    return reply.json()["state"]


async def test_the_articles_service(tmp_path):
    async with bst_server(tmp_path) as server:
        # Not yet: order 123 has no state, and 'ready' is not a root
        reply = await invoke(server, "bst.test.my-service")
        assert reply.status_code == 400, reply.text
        assert "may not move from no state (a new object) to 'Ready'" in reply.json()["details"]
        assert "it may only go to a root state: New" in reply.json()["details"]
        assert ran(server) == []

        for step in ("New", "Submitted"):
            reply = await move(server, 123, step)
            assert reply.status_code == 200, reply.text
        reply = await invoke(server, "bst.test.my-service")
        assert reply.status_code == 200, reply.text
        assert [name for name, _ in ran(server)] == ["New", "Submitted", "my-service"]
        assert await state(server, "Order", 123) == "Ready"  # the definition's spelling of 'ready'
        assert [(h["state_old"], h["state_new"]) for h in await history(server, "Order", "123")] == [
            (None, "New"), ("New", "Submitted"), ("Submitted", "Ready")]

        # Ready -> Ready is not a transition of the definition: refused before the block
        reply = await invoke(server, "bst.test.my-service")
        assert reply.status_code == 400
        assert "may not move from 'Ready' to 'Ready'" in reply.json()["details"]
        assert len(ran(server)) == 3


async def test_refused_before_the_block_with_the_message(tmp_path):
    async with bst_server(tmp_path) as server:
        assert (await move(server, "A-1", "new")).status_code == 200
        reply = await move(server, "A-1", "Sent")
        assert reply.status_code == 400
        details = reply.json()["details"]
        assert details == ("Error 400: Order 'A-1' may not move from 'New' to 'Sent' (definition 'Orders', version 1): "
                           "Order cannot go from New to Sent; from New it may go to: Submitted (or a force-stop "
                           "state: Canceled, Timed out)")
        assert [name for name, _ in ran(server)] == ["new"]  # the block did not run
        assert await state(server, "Order", "A-1") == "New"

        # A state the definition does not have
        reply = await move(server, "A-1", "Lost")
        assert reply.status_code == 400
        assert "definition 'Orders' has no such state" in reply.json()["details"]

        # An object type no definition covers
        reply = await move(server, 1, "New", object_type="Invoice")
        assert reply.status_code == 400
        assert "no active BST definition applies to object type 'Invoice'" in reply.json()["details"]
        assert len(ran(server)) == 1


async def test_a_block_that_raises_leaves_the_state(tmp_path):
    async with bst_server(tmp_path) as server:
        assert (await move(server, 7, "New")).status_code == 200
        reply = await move(server, 7, "Submitted", fail=True)
        assert reply.status_code == 500
        assert [name for name, _ in ran(server)] == ["New", "Submitted"]  # the block ran, then raised
        assert await state(server, "Order", 7) == "New"
        assert len(await history(server, "Order", 7)) == 1
        # and the same move works once the block succeeds
        assert (await move(server, 7, "Submitted")).status_code == 200
        assert await state(server, "Order", 7) == "Submitted"


async def test_async_with_in_an_async_service(tmp_path):
    async with bst_server(tmp_path) as server:
        reply = await invoke(server, "bst.test.async-move", {"object_type": "Priority order", "object_id": 5,
                                                             "state_new": "NEW"})
        assert reply.status_code == 200, reply.text
        assert reply.json()["state_old"] is None and reply.json()["state_new"] == "New"
        reply = await invoke(server, "bst.test.async-move", {"object_type": "priority ORDER", "object_id": "5",
                                                             "state_new": "submitted", "fail": True})
        assert reply.status_code == 500
        assert await state(server, "Priority order", 5) == "New"
        reply = await invoke(server, "bst.test.async-move", {"object_type": "Priority order", "object_id": 5,
                                                             "state_new": "Ready"})
        assert reply.status_code == 400
        assert "from New it may go to: Submitted" in reply.json()["details"]
        assert [name for name, _ in ran(server)] == ["NEW", "submitted"]

        reply = await invoke(server, "bst.test.plain-with-in-async")
        assert reply.status_code == 500  # a TypeError, logged: a plain with would block the loop


async def test_force_and_force_stop(tmp_path):
    async with bst_server(tmp_path) as server:
        # force: to any state, from none too
        reply = await move(server, 9, "Sent", force=True, user_ctx={"why": "imported"})
        assert reply.status_code == 200, reply.text
        assert await state(server, "Order", 9) == "Sent"
        # a force-stop state is reached from any state without force
        assert (await move(server, 9, "canceled")).status_code == 200
        assert await state(server, "Order", 9) == "Canceled"
        # and from it nothing goes on without force
        reply = await move(server, 9, "Ready")
        assert reply.status_code == 400
        assert "Canceled is a final state" in reply.json()["details"]
        assert (await move(server, 9, "Ready", force=True)).status_code == 200
        rows = await history(server, "Order", 9)
        assert [(r["state_old"], r["state_new"], r["forced"]) for r in rows] == [
            (None, "Sent", True), ("Sent", "Canceled", False), ("Canceled", "Ready", True)]
        assert rows[0]["user_ctx"] == {"why": "imported"}


async def test_history_has_every_field(tmp_path):
    async with bst_server(tmp_path) as server:
        before = datetime.now(timezone.utc)
        first = (await move(server, 42, "New", user_ctx={"user": "anna", "n": 1})).json()
        second = (await move(server, "42", "Submitted")).json()
        after = datetime.now(timezone.utc)
        rows = await history(server, "ORDER", 42)
        assert len(rows) == 2
        for row, reply in zip(rows, (first, second)):
            assert set(row) == {"object_type", "object_id", "def_name", "def_version", "state_old", "state_new",
                                "forced", "time", "user_ctx", "cid", "server_name", "server_pid"}
            assert row["object_type"] == "order" and row["object_id"] == "42"
            assert row["def_name"] == "Orders" and row["def_version"] == 1
            assert row["cid"] == reply["cid"] and row["cid"]
            assert row["server_pid"] == os.getpid() and row["server_name"] == server.name
            moment = datetime.fromisoformat(row["time"])
            assert moment.utcoffset().total_seconds() == 0 and before <= moment <= after
        assert rows[0]["user_ctx"] == {"user": "anna", "n": 1} and rows[1]["user_ctx"] is None
        assert rows[0]["time"] <= rows[1]["time"]

        # A new version of the definition: the next move records it
        async with admin(server) as client:
            reply = await client.patch("/zato/api/objects/bst_definition/Orders",
                                       json={"text": ORDERS + "# edited\n"})
            assert reply.status_code in (200, 204), reply.text
        await trio.sleep(0.2)
        assert (await move(server, 42, "Ready")).status_code == 200
        rows = await history(server, "Order", 42)
        assert rows[-1]["def_version"] == 2
        info = (await invoke(server, "zato.bst.get-current-state-info", {"object_type": "Order",
                                                                         "object_id": 42})).json()
        assert info["def_version"] == 2 and info["time"] == rows[-1]["time"]


async def test_two_concurrent_transitions_never_both_succeed(tmp_path):
    async with bst_server(tmp_path, main={"graceful_timeout": 2, "sync_service_threads": 16}) as server:
        assert (await move(server, 500, "New")).status_code == 200
        results = []

        async def one(n):
            results.append(await move(server, 500, "Submitted", barrier=4, barrier_name="b500",
                                      user_ctx={"n": n}))

        async with trio.open_nursery() as nursery:
            for n in range(4):
                nursery.start_soon(one, n)
        # all four read 'New' and ran their blocks together; one move was committed
        assert sorted(r.status_code for r in results) == [200, 409, 409, 409], [r.text for r in results]
        lost = [r.json()["details"] for r in results if r.status_code == 409]
        assert all("changed state while moving from 'New' to 'Submitted'" in d and "is now in 'Submitted'" in d
                   for d in lost), lost
        rows = await history(server, "Order", 500)
        assert [(r["state_old"], r["state_new"]) for r in rows] == [(None, "New"), ("New", "Submitted")]

        # a new object: the INSERT of each but one fails on the primary key
        results.clear()
        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(lambda n=n: _append(results, move(server, 501, "New", barrier=3,
                                                                     barrier_name="b501")))
        assert sorted(r.status_code for r in results) == [200, 409, 409], [r.text for r in results]
        assert len(await history(server, "Order", 501)) == 1


async def _append(results, call):
    results.append(await call)


def _race(store, threads=16, rounds=20):
    """ `threads` threads each try to move each object from the state all of them read. """
    wins = []
    for round_ in range(rounds):
        object_id = f"race-{round_}"
        store.move("Order", object_id, seen=None, def_name="Orders", def_version=1, state_old=None, state_new="New")
        seen = store.current("Order", object_id).version
        barrier = threading.Barrier(threads)
        outcome = []

        def attempt(n):
            barrier.wait(timeout=20)
            try:
                store.move("Order", object_id, seen=seen, def_name="Orders", def_version=1, state_old="New",
                           state_new=f"S{n}", cid=f"c{n}")
                outcome.append(n)
            except StateChanged:
                pass

        workers = [threading.Thread(target=attempt, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert len(outcome) == 1, outcome
        now = store.current("Order", object_id)
        assert now.state == f"S{outcome[0]}" and now.version == seen + 1
        rows = store.history("Order", object_id)
        assert [r["state_new"] for r in rows] == ["New", f"S{outcome[0]}"]
        wins.append(outcome[0])

        # and a new object raced by every thread: one INSERT wins
        new_id, created = f"new-{round_}", []
        barrier = threading.Barrier(threads)

        def create(n):
            barrier.wait(timeout=20)
            try:
                store.move("Order", new_id, seen=None, def_name="Orders", def_version=1, state_old=None,
                           state_new="New", cid=f"c{n}")
                created.append(n)
            except StateChanged:
                pass

        workers = [threading.Thread(target=create, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert len(created) == 1 and len(store.history("Order", new_id)) == 1
    return wins


def test_store_compare_and_set_on_sqlite(tmp_path):
    odb = ODB(sqlite_url(tmp_path / "bst.db"))
    odb.upgrade({"bst": MIGRATIONS})
    _race(Store(odb.engine, server_name="t", pid=1))
    odb.close()


@pytest.fixture(scope="module")
def postgres():
    from zato.testing._postgres import PostgresServer, PostgresUnavailable
    try:
        server = PostgresServer().start()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(str(exc))
    yield server
    server.stop()


def test_store_compare_and_set_on_postgresql(postgres):
    odb = ODB(postgres.create_database())
    odb.upgrade({"bst": MIGRATIONS})
    store = Store(odb.engine, server_name="t", pid=1)
    _race(store)
    # user_ctx survives the round trip as JSON, time is UTC
    row = store.move("Customer", 2, seen=None, def_name="Customer consent", def_version=3, state_old=None,
                     state_new="Consent given", user_ctx={"a": [1, 2]})
    assert store.history("customer", "2")[0]["user_ctx"] == {"a": [1, 2]} == row["user_ctx"]
    assert store.history("customer", "2")[0]["time"].endswith("+00:00")
    odb.close()


async def test_switched_off(tmp_path):
    async with bst_server(tmp_path, definitions=False, plugins={"bst": False}) as server:
        reply = await move(server, 1, "New")
        assert reply.status_code == 500  # the service raised; the log has why
        from zato_bst import BSTNotEnabled, transition_to

        class Fake:
            pass

        fake = Fake()
        fake.server, fake.cid = server, "cid-1"
        with pytest.raises(BSTNotEnabled) as caught:
            await transition_to(fake, "Order", 1, "New").__aenter__()
        assert "the bst plugin (zato-plugin-bst) is not enabled; set `zato_plugin_bst = True` under " \
               "[deploy_internal]" in str(caught.value)
        # nor are the REST API's services there
        reply = await invoke(server, "zato.bst.transition", {"object_type": "Order", "object_id": 1,
                                                             "state_new": "New"})
        assert reply.status_code == 404, reply.text
        assert "bst" not in server.plugins.enabled_names()
        assert json.loads(json.dumps(ran(server))) == []


async def test_a_bst_file_in_pickup_deploys_its_definitions(tmp_path):
    from bst_fixtures import CUSTOMERS
    async with bst_server(tmp_path, definitions=False, services="") as server:
        (server.test_base_dir / "pickup" / "flows.bst").write_text(ORDERS + "\n" + CUSTOMERS)
        with trio.fail_after(20):
            while True:
                reply = await invoke(server, "zato.bst.get-definition-list")
                if reply.status_code == 200 and len(reply.json()) == 2:
                    break
                await trio.sleep(0.1)
        assert [d["name"] for d in reply.json()] == ["Customer consent", "Orders"]
        reply = await invoke(server, "zato.bst.transition", {"object_type": "Customer", "object_id": 2,
                                                             "state_new": "Consent given"})
        assert reply.json() == {"can_transition": True, "state_old": None, "state_new": "Consent given",
                                "reason": ""}


BAD_BST = "Refunds\n-------\nObjects: Refund\nRequested: Approved\nApproved Paid\n"  # line 5 has no ':'


def test_zato_deploy_and_the_admin_api_upload_of_bst_files(tmp_path):
    """ A real server process: `zato deploy DIR file.bst` and POST /zato/api/deploy/file.bst, a good
    file and a bad one (file:line, and what was deployed stays). """
    import subprocess
    import sys

    import httpx

    from bst_fixtures import CUSTOMERS, OTHER_PLUGINS_OFF
    from zato.plugin_api import ServerProcess, admin_auth, create_test_server_dir

    zato = [sys.executable, "-c", "import sys; from zato.cli import main; sys.exit(main())"]
    base = create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 2}, plugins=OTHER_PLUGINS_OFF)
    good, bad = tmp_path / "good" / "flows.bst", tmp_path / "bad" / "flows.bst"
    good.parent.mkdir()
    bad.parent.mkdir()
    good.write_text(ORDERS + "\n" + CUSTOMERS)
    bad.write_text(BAD_BST)

    def names(client):
        reply = client.post("/zato/api/invoke/zato.bst.get-definition-list", json={})
        assert reply.status_code == 200, reply.text
        return sorted(d["name"] for d in reply.json())

    with ServerProcess(base) as server, httpx.Client(base_url=server.address, auth=admin_auth(), timeout=30) as client:
        done = subprocess.run([*zato, "deploy", str(base), str(good)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "deployed flows.bst" in done.stdout and "Orders, Customer consent" in done.stdout
        assert (base / "pickup" / "flows.bst").read_text() == good.read_text()
        assert names(client) == ["Customer consent", "Orders"]

        done = subprocess.run([*zato, "deploy", str(base), str(bad)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "flows.bst:5: 'Approved Paid' has no ':'" in done.stderr, done.stderr
        assert names(client) == ["Customer consent", "Orders"]  # what was deployed stays
        assert (base / "pickup" / "flows.bst").read_text() == good.read_text()

        headers = {"content-type": "application/octet-stream"}
        reply = client.post("/zato/api/deploy/refunds.bst", content=BAD_BST.encode(), headers=headers)
        assert reply.status_code == 400, reply.text
        assert "refunds.bst:5: 'Approved Paid' has no ':'" in reply.json()["details"]
        assert reply.json()["file"] == "refunds.bst" and reply.json()["line"] == 5
        assert not (base / "pickup" / "refunds.bst").exists()

        fixed = BAD_BST.replace("Approved Paid", "Approved: Paid")
        reply = client.post("/zato/api/deploy/refunds.bst", content=fixed.encode(), headers=headers)
        assert reply.status_code == 200, reply.text
        assert reply.json()["file"] == "refunds.bst" and reply.json()["services"] == ["Refunds"]
        assert (base / "pickup" / "refunds.bst").read_text() == fixed
        assert names(client) == ["Customer consent", "Orders", "Refunds"]
        reply = client.post("/zato/api/invoke/zato.bst.transition",
                            json={"object_type": "Refund", "object_id": 1, "state_new": "requested"})
        assert reply.json()["can_transition"] is True, reply.text
    log = (base / "logs" / "server.log").read_text()
    assert "flows.bst: BST definition 'Orders': final states" in log
    assert "refunds.bst: BST definition 'Refunds': final states (a typo of a state's name makes a new one): Paid" in log
