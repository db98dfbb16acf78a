""" WebSocket connections in a server of two worker processes: a client connected to either worker
is listed, invoked and disconnected through the admin API of the other, and its row in the
database is gone once it is disconnected. """

from __future__ import annotations

import os
import socket
import sqlite3
import textwrap
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from wsx_fixtures import SERVICES
from zato.plugin_api import ServerProcess, admin_auth, create_test_server_dir
from zato_plugin_wsx.registry import STALE_SECONDS, ConnectionStore, connection_table, metadata
from zato_plugin_wsx.testing import WSXClient, WSXClosed, WSXRefused

PATH = "/ws/workers"


def pinned_admin(address: str) -> httpx.AsyncClient:
    """ An admin API client on one keep-alive connection, so one worker answers all its calls. """
    return httpx.AsyncClient(base_url=address, auth=admin_auth(), timeout=30,
                             limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                             headers={"content-type": "application/json"})


async def worker_pid(api: httpx.AsyncClient) -> int:
    reply = await api.post("/zato/api/invoke/zato.server.get-info", json={})
    assert reply.status_code == 200, reply.text
    info = reply.json()
    return int(info.get("response", info)["pid"])


async def admin_on_each_worker(address: str, workers: int = 2) -> dict[int, httpx.AsyncClient]:
    """ pid -> an admin client whose connection that worker holds. """
    found: dict[int, httpx.AsyncClient] = {}
    for _ in range(60):
        api = pinned_admin(address)
        pid = await worker_pid(api)
        if pid in found:
            await api.aclose()
        else:
            found[pid] = api
        if len(found) == workers:
            return found
    raise AssertionError(f"60 admin connections all reached the workers {sorted(found)}")


async def listed(api: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    reply = await api.get("/zato/api/wsx/connections", params=params)
    assert reply.status_code == 200, reply.text
    return reply.json()["connections"]


async def wait_listed(api: httpx.AsyncClient, client_id: str) -> dict[str, Any]:
    """ The listing of `client_id`, once its row is written (in the background, after its session opened). """
    with trio.fail_after(10):
        while not (rows := await listed(api, ext_client_id=client_id)):
            await trio.sleep(0.02)
    assert len(rows) == 1, rows
    return rows[0]


async def clients_on_each_worker(address: str, api: httpx.AsyncClient) -> dict[int, tuple[WSXClient, dict]]:
    """ pid -> (a client with a session on that worker, its listing); connects until both workers
    have one (the kernel picks the worker of each connection). """
    found: dict[int, tuple[WSXClient, dict]] = {}
    for attempt in range(60):
        try:
            client = await WSXClient.connect(address, PATH)
            opened = await client.create_session(client_id=f"client-{attempt}")
        except (WSXRefused, WSXClosed):  # that worker has not applied the new channel yet
            await trio.sleep(0.05)
            continue
        assert opened["meta"]["msg_type"] == "zwsx.rspa", opened
        row = await wait_listed(api, f"client-{attempt}")
        if row["server_pid"] in found:
            await client.aclose()
        else:
            found[row["server_pid"]] = (client, row)
        if len(found) == 2:
            return found
    raise AssertionError(f"60 WebSocket connections all reached the workers {sorted(found)}")


def rows_in_database(base_dir: Any) -> list[tuple]:
    with sqlite3.connect(base_dir / "work" / "zato.db") as db:
        return db.execute("SELECT pub_client_id, server_pid FROM zato_wsx_connection").fetchall()


def columns_in_database(base_dir: Any, table: str) -> list[str]:
    with sqlite3.connect(base_dir / "work" / "zato.db") as db:
        return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


@pytest.fixture
async def two_workers(tmp_path):
    base_dir = create_test_server_dir(tmp_path / "server", workers=2, main={"graceful_timeout": 2})
    (base_dir / "pickup" / "wsx_services.py").write_text(textwrap.dedent(SERVICES))
    server = ServerProcess(base_dir)
    await trio.to_thread.run_sync(lambda: server.start(timeout=60))
    try:
        yield server
    finally:
        await trio.to_thread.run_sync(server.stop)
    assert rows_in_database(base_dir) == []  # a worker that stops deletes the rows of its connections


async def test_a_client_on_either_worker_is_listed_invoked_and_disconnected_from_the_other(two_workers):
    server = two_workers
    port = urlsplit(server.address).port
    with trio.fail_after(90):
        admins = await admin_on_each_worker(server.address)
        try:
            any_admin = next(iter(admins.values()))
            reply = await any_admin.post("/zato/api/objects/channel_web_socket", json={
                "name": "wsx.workers", "address": f"ws://127.0.0.1:{port}{PATH}", "service": "wsx.echo"})
            assert reply.status_code == 201, reply.text
            clients = await clients_on_each_worker(server.address, any_admin)
            assert set(clients) == set(admins)
            still_open = {row["pub_client_id"] for _, row in clients.values()}
            with trio.fail_after(5):  # each worker writes its rows in the background
                while {pid for _, pid in rows_in_database(server.base_dir)} != set(admins):
                    await trio.sleep(0.02)

            # a broadcast from a service of one worker reaches the clients of both
            reply = await any_admin.post("/zato/api/invoke/wsx.broadcast", json={"channel": "wsx.workers",
                                                                                "news": "to everyone"})
            assert reply.status_code == 200 and reply.json()["sent"] == 1, reply.text  # its own worker's client
            for client, _ in clients.values():
                assert (await client.next_request())["data"] == {"news": "to everyone"}

            for holder, (client, row) in clients.items():
                other = next(pid for pid in admins if pid != holder)
                api = admins[other]
                pub_client_id = row["pub_client_id"]
                assert await worker_pid(api) == other  # the other worker answers what follows

                seen = {c["pub_client_id"]: c for c in await listed(api)}
                assert still_open <= set(seen), seen
                assert seen[pub_client_id]["server_pid"] == holder and seen[pub_client_id]["channel_name"] == \
                    "wsx.workers" and seen[pub_client_id]["peer_address"].startswith("127.0.0.1:")

                async with trio.open_nursery() as nursery:
                    async def answer() -> None:
                        request = await client.next_request()
                        await client.respond(request, f"pong to {request['data']} from {holder}")
                    nursery.start_soon(answer)
                    started = time.perf_counter()
                    invoked = await api.post(f"/zato/api/wsx/connections/{pub_client_id}/invoke",
                                             json={"data": "ping?"})
                    invoke_ms = (time.perf_counter() - started) * 1000
                assert invoked.status_code == 200, invoked.text
                assert invoked.json() == {"response": f"pong to ping? from {holder}"}

                async with trio.open_nursery() as nursery:  # a service of the other worker asks it too
                    async def answer_the_service() -> None:
                        request = await client.next_request()
                        await client.respond(request, f"{request['data']} from {holder}")
                    nursery.start_soon(answer_the_service)
                    by_service = await api.post("/zato/api/invoke/wsx.invoke-by-id", json={
                        "channel": "wsx.workers", "pub_client_id": pub_client_id, "data": "service asks"})
                assert by_service.status_code == 200, by_service.text
                assert by_service.json() == {"answer": {"response": f"service asks from {holder}"}}

                silent = await api.post(f"/zato/api/wsx/connections/{pub_client_id}/invoke",
                                        json={"data": 1, "timeout": 0.3})
                assert silent.status_code == 504 and "did not answer within 0.3 s" in silent.text, silent.text

                started = time.perf_counter()
                gone = await api.post(f"/zato/api/wsx/connections/{pub_client_id}/disconnect")
                print(f"\nthrough the other worker: invoke {invoke_ms:.1f} ms, disconnect "
                      f"{(time.perf_counter() - started) * 1000:.1f} ms")
                assert gone.status_code == 200 and gone.json() == {"disconnected": pub_client_id}, gone.text
                with pytest.raises(WSXClosed) as closed:
                    await client.receive_until(lambda frame: False)
                assert closed.value.code == 4005
                still_open.discard(pub_client_id)
                assert pub_client_id not in {c["pub_client_id"] for c in await listed(api)}
                assert pub_client_id not in {c for c, _ in rows_in_database(server.base_dir)}
                with trio.fail_after(5):  # the holder lists from memory, once the connection has ended
                    while pub_client_id in {c["pub_client_id"] for c in await listed(admins[holder])}:
                        await trio.sleep(0.02)
                again = await api.post(f"/zato/api/wsx/connections/{pub_client_id}/disconnect")
                assert again.status_code == 404, again.text

            left_open = await WSXClient.connect(server.address, PATH)  # the stop deletes its row
            await left_open.create_session(client_id="left-open")
            await wait_listed(any_admin, "left-open")
            for table in metadata.tables.values():  # the migration made the tables registry.py defines
                assert columns_in_database(server.base_dir, table.name) == list(table.c.keys())
        finally:
            for api in admins.values():
                await api.aclose()


def test_rows_of_processes_that_are_gone_are_not_listed_and_deleted_at_start(tmp_path):
    from sqlalchemy import create_engine, insert
    engine = create_engine(f"sqlite:///{tmp_path / 'wsx.db'}")
    metadata.create_all(engine)
    host, now = socket.gethostname(), time.time()
    dead_pid = 2 ** 22 + 12345  # above Linux's pid_max: no process has it

    def row(pub_client_id: str, server_name: str, pid: int, last_seen: float) -> dict[str, Any]:
        return {"pub_client_id": pub_client_id, "channel_name": "ch", "peer_address": "127.0.0.1:1",
                "local_address": "127.0.0.1:2", "connection_time": "2026-01-01T00:00:00+00:00",
                "server_name": server_name, "server_dir": "/srv/zato", "server_pid": pid, "worker_index": 0,
                "last_seen": last_seen}
    with engine.begin() as conn:
        conn.execute(insert(connection_table), [
            row("ws.dead", host, dead_pid, now), row("ws.alive", host, os.getppid(), now),
            row("ws.elsewhere", "another-host", dead_pid, now),
            row("ws.stale", "another-host", 7, now - STALE_SECONDS - 1)])
    store = ConnectionStore(engine, host=host, server_dir="/srv/zato", pid=os.getpid(), worker_index=0)
    assert store.clean_at_start() == 1
    assert {r["pub_client_id"] for r in store.listed(now)} == {"ws.alive", "ws.elsewhere"}
    store.refresh([], now)
    assert {r["pub_client_id"] for r in store.listed(now - 2 * STALE_SECONDS)} == {"ws.alive", "ws.elsewhere"}
    engine.dispose()


async def test_pubsub_messages_reach_clients_of_either_worker_at_the_first_attempt(two_workers):
    # Whichever worker pub/sub delivers from, a client connected to the other gets each message
    # through the worker holding its connection, at the first attempt (delivery_count 1).
    server = two_workers
    port = urlsplit(server.address).port
    with trio.fail_after(90):
        admins = await admin_on_each_worker(server.address)
        try:
            api = next(iter(admins.values()))
            for path, definition in (("/zato/api/objects/channel_web_socket", {
                    "name": "wsx.workers", "address": f"ws://127.0.0.1:{port}{PATH}",
                    "service": "helpers.web-sockets-gateway"}), ("/zato/api/objects/pubsub_topic", {"name": "/news"})):
                reply = await api.post(path, json=definition)
                assert reply.status_code == 201, reply.text
            clients = await clients_on_each_worker(server.address, api)
            for client, _ in clients.values():
                reply = await client.invoke({"service": "zato.pubsub.pubapi.subscribe-wsx",
                                             "request": {"topic_name": "/news"}})
                assert reply["meta"]["msg_type"] == "zwsx.rspok", reply
            for admin_client in admins.values():  # each worker routes what it publishes to both subscriptions
                while len([sub for sub in (await admin_client.get("/zato/api/pubsub/subscriptions")).json()
                           if sub["sub_key"].startswith("zpsk.wsx.")]) < 2:
                    await trio.sleep(0.05)
            for number in range(6):
                publisher = admins[list(admins)[number % 2]]
                reply = await publisher.post("/zato/api/invoke/zato.pubsub.publish.publish",
                                             json={"topic_name": "/news", "data": {"n": number}})
                assert reply.status_code == 200, reply.text
            received = {}
            for holder, (client, _) in clients.items():
                frames = [await client.receive_until(lambda f: f["meta"]["msg_type"] == "zwsx.psrq")
                          for _ in range(6)]
                received[holder] = sorted((f["data"]["data"]["n"], f["data"]["delivery_count"]) for f in frames)
                await client.aclose()
        finally:
            for admin_client in admins.values():
                await admin_client.aclose()
    assert all(messages == [(n, 1) for n in range(6)] for messages in received.values()), received
