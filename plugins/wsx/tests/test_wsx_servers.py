""" WebSocket connections of two servers sharing one configuration database: a client of either
server is listed by the other's admin API, invoked and disconnected through it, reached by a
service of the other (invoke by id, broadcast), and a request the holder does not answer in time
is a 504 that says so. Each server is its own process with its own port. """

from __future__ import annotations

import socket
import textwrap
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from wsx_fixtures import SERVICES
from zato.plugin_api import ServerProcess, admin_auth, create_test_server_dir
from zato_plugin_wsx.registry import REQUEST_POLL_SECONDS
from zato_plugin_wsx.testing import WSXClient, WSXClosed

PATH = "/ws/servers"


def server_dir(tmp_path: Any, name: str, database: str) -> Any:
    base_dir = create_test_server_dir(tmp_path / name, main={"graceful_timeout": 2, "name": name},
                                      odb={"url": database})
    (base_dir / "pickup" / "wsx_services.py").write_text(textwrap.dedent(SERVICES))
    return base_dir


def admin(server: ServerProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                             headers={"content-type": "application/json"})


async def listed(api: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    reply = await api.get("/zato/api/wsx/connections")
    assert reply.status_code == 200, reply.text
    return {row["ext_client_id"]: row for row in reply.json()["connections"]}


async def session(server: ServerProcess, client_id: str) -> WSXClient:
    with trio.fail_after(20):
        while True:
            try:
                client = await WSXClient.connect(server.address, PATH)
                break
            except Exception:  # the server has not served the channel yet
                await trio.sleep(0.05)
    opened = await client.create_session(client_id=client_id)
    assert opened["meta"]["msg_type"] == "zwsx.rspa", opened
    return client


async def answer_once(client: WSXClient, suffix: str) -> None:
    request = await client.next_request()
    await client.respond(request, f"{request['data']} {suffix}")


@pytest.fixture
async def two_servers(tmp_path):
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    first = ServerProcess(server_dir(tmp_path, "first", database))
    second = ServerProcess(server_dir(tmp_path, "second", database))
    await trio.to_thread.run_sync(lambda: first.start(timeout=60))
    try:
        async with admin(first) as api:  # a channel on each server's own port (the address names none)
            reply = await api.post("/zato/api/objects/channel_web_socket", json={
                "name": "wsx.servers", "address": f"ws://127.0.0.1{PATH}", "service": "wsx.echo"})
            assert reply.status_code == 201, reply.text
        # the second server reads the channel at start (changes between servers are the clusters' issue)
        await trio.to_thread.run_sync(lambda: second.start(timeout=60))
        try:
            yield first, second
        finally:
            await trio.to_thread.run_sync(second.stop)
    finally:
        await trio.to_thread.run_sync(first.stop)


async def test_a_client_of_either_server_is_listed_invoked_and_disconnected_through_the_other(two_servers):
    first, second = two_servers
    with trio.fail_after(90):
        async with admin(first) as api_first, admin(second) as api_second:
            clients = {"on-first": await session(first, "on-first"), "on-second": await session(second, "on-second")}
            with trio.fail_after(10):  # each server writes its rows in the background
                while set(await listed(api_first)) != set(clients) or set(await listed(api_second)) != set(clients):
                    await trio.sleep(0.05)
            fqdn = socket.getfqdn("127.0.0.1")
            with trio.fail_after(3):  # the peer's name, looked up after the session opened, reaches the other
                # server at once (the look-up gives up after 2 s), not only at the next heartbeat (10 s)
                while {row["peer_fqdn"] for row in (await listed(api_first)).values()} != {fqdn} or \
                        {row["peer_fqdn"] for row in (await listed(api_second)).values()} != {fqdn}:
                    await trio.sleep(0.05)
            rows = await listed(api_first)
            assert rows == await listed(api_second)  # either server lists the same
            assert rows["on-first"]["server_pid"] == first.process.pid
            assert rows["on-second"]["server_pid"] == second.process.pid
            # each connection names its server (server.conf's [main] name), its host and where it came in
            for client_id, server, name in (("on-first", first, "first"), ("on-second", second, "second")):
                row = rows[client_id]
                assert row["server_name"] == name and row["server_host"] == socket.gethostname(), row
                assert row["local_address"] == f"127.0.0.1:{urlsplit(server.address).port}", row
                assert row["peer_address"].startswith("127.0.0.1:") and row["peer_fqdn"] == fqdn, row
            assert rows["on-first"]["local_address"] != rows["on-second"]["local_address"]

            # a broadcast from a service of one server reaches the clients of both
            reply = await api_first.post("/zato/api/invoke/wsx.broadcast", json={"channel": "wsx.servers",
                                                                                 "news": "to all servers"})
            assert reply.status_code == 200 and reply.json()["sent"] == 1, reply.text
            for client in clients.values():
                assert (await client.next_request())["data"] == {"news": "to all servers"}

            for holder, api, client in (("on-second", api_first, clients["on-second"]),
                                        ("on-first", api_second, clients["on-first"])):
                pub_client_id = rows[holder]["pub_client_id"]
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(answer_once, client, f"from {holder}")
                    started = time.perf_counter()
                    invoked = await api.post(f"/zato/api/wsx/connections/{pub_client_id}/invoke", json={"data": "hi"})
                    invoke_ms = (time.perf_counter() - started) * 1000
                assert invoked.status_code == 200 and invoked.json() == {"response": f"hi from {holder}"}, invoked.text

                async with trio.open_nursery() as nursery:  # a service of the other server asks it too
                    nursery.start_soon(answer_once, client, f"by {holder}")
                    by_service = await api.post("/zato/api/invoke/wsx.invoke-by-id", json={
                        "channel": "wsx.servers", "pub_client_id": pub_client_id, "data": "service asks"})
                assert by_service.status_code == 200, by_service.text
                assert by_service.json() == {"answer": {"response": f"service asks by {holder}"}}

                silent = await api.post(f"/zato/api/wsx/connections/{pub_client_id}/invoke",
                                        json={"data": 1, "timeout": 0.5})
                assert silent.status_code == 504 and "did not answer within 0.5 s" in silent.text, silent.text
                await client.next_request()  # the request it did not answer

                started = time.perf_counter()
                gone = await api.post(f"/zato/api/wsx/connections/{pub_client_id}/disconnect")
                disconnect_ms = (time.perf_counter() - started) * 1000
                assert gone.status_code == 200 and gone.json() == {"disconnected": pub_client_id}, gone.text
                with pytest.raises(WSXClosed) as closed:
                    await client.receive_until(lambda frame: False)
                assert closed.value.code == 4005
                assert holder not in await listed(api)
                again = await api.post(f"/zato/api/wsx/connections/{pub_client_id}/disconnect")
                assert again.status_code == 404, again.text
                print(f"\nacross servers: invoke {invoke_ms:.1f} ms, disconnect {disconnect_ms:.1f} ms "
                      f"(requests read every {REQUEST_POLL_SECONDS} s)")
