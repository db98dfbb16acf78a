""" Cluster to cluster, as the article shows it: two real servers of ours on one machine, each with
its own database. The remote one has a channel with helpers.web-sockets-gateway; the local one
(two workers) an outgoing connection to it, with hooks. Its services invoke the remote echo from
either worker; each remote pub/sub message reaches the on_message hook once; killed with -9 and
restarted, the remote end is reconnected to (on_close, then on_connect) and invoking works again;
guaranteed-delivery messages published while the local server was down arrive when it is back
(the remote end knows the connection by a client id that stays the same); and when the local
worker holding the connection is killed, the other one takes it over. """

from __future__ import annotations

import json
import os
import signal
import socket
import textwrap
import time
from typing import Any

import httpx
import pytest
import trio

from test_wsx_outgoing import OUTCONN
from wsx_fixtures import PASSWORD, SERVICES, USER
from zato.plugin_api import ServerProcess, admin_auth, create_test_server_dir

TOPIC = "/customer/new"

HOOKS = '''
import json
import os

from zato.server.service import Opaque, Service


class MyService(Service):
    name = 'wsx.my-service'

    def handle(self):
        msg = {'service': 'wsx.echo-input', 'request': {'elem1': 'value1', 'elem2': 'value2'}}
        with self.out.wsx.get('My WSX Outconn').conn.client() as client:
            response = client.invoke(msg)
        self.response.payload = {'response': response, 'pid': os.getpid()}


class EchoInput(Service):
    name = 'wsx.echo-input'

    def handle(self):
        self.response.payload = self.request.payload


class Hook(Service):
    """ Writes each event to hooks.jsonl in the server's directory: type, pid and the messages. """
    name = 'wsx.cluster-hook'

    class SimpleIO:
        input_optional = (Opaque('ctx'),)

    def handle(self):
        ctx = self.request.input.ctx
        event = {'type': ctx.type, 'pid': os.getpid(), 'conn': ctx.conn_name}
        if ctx.type == 'message':
            event['messages'] = ctx.data.data
            event['id'] = ctx.data.id
        with open(os.path.join(str(self.server.paths.base_dir), 'hooks.jsonl'), 'a') as f:
            f.write(json.dumps(event) + '\\n')
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def admin(server: ServerProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                             headers={"content-type": "application/json"})


def events(base_dir: Any) -> list[dict[str, Any]]:
    path = base_dir / "hooks.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"waited {timeout} s for {what}")


async def outgoing_state(server: ServerProcess) -> dict[str, Any]:
    async with admin(server) as api:
        reply = await api.get("/zato/api/wsx/outgoing")
    assert reply.status_code == 200, reply.text
    return {row["name"]: row for row in reply.json()["outgoing"]}[OUTCONN]


async def wait_connected(server: ServerProcess, timeout: float = 30) -> dict[str, Any]:
    with trio.fail_after(timeout):
        while (state := await outgoing_state(server))["state"] != "connected":
            await trio.sleep(0.1)
    return state


async def publish(remote: ServerProcess, data: str) -> str:
    async with admin(remote) as api:
        reply = await api.post("/zato/api/invoke/zato.pubsub.publish.publish", json={"topic_name": TOPIC, "data": data})
    assert reply.status_code == 200, reply.text
    return reply.json()["msg_id"]


async def start(server: ServerProcess) -> ServerProcess:
    await trio.to_thread.run_sync(lambda: server.start(timeout=60))
    return server


@pytest.fixture
async def clusters(tmp_path):
    remote_port = free_port()
    remote_dir = create_test_server_dir(tmp_path / "remote", main={"graceful_timeout": 2, "name": "remote"},
                                        wsx={"gateway_service_allowed": "wsx.echo-input"})
    local_dir = create_test_server_dir(tmp_path / "local", workers=2, main={"graceful_timeout": 2, "name": "local",
                                                                          "placement_lease_seconds": 1})
    for base in (remote_dir, local_dir):
        (base / "pickup" / "wsx_services.py").write_text(textwrap.dedent(SERVICES))
        (base / "pickup" / "wsx_hooks.py").write_text(textwrap.dedent(HOOKS))
    from zato.plugin_api import set_config_value
    set_config_value(remote_dir, "main", "port", remote_port)
    remote, local = await start(ServerProcess(remote_dir)), await start(ServerProcess(local_dir))
    try:
        async with admin(remote) as api:
            for path, body in (
                    ("/zato/api/objects/security", {"name": "cluster.in", "type": "basic_auth", "username": USER}),
                    ("/zato/api/objects/pubsub_topic", {"name": TOPIC})):
                reply = await api.post(path, json=body)
                assert reply.status_code == 201, reply.text
            reply = await api.put("/zato/api/objects/security/cluster.in/secrets/password", json={"value": PASSWORD})
            assert reply.status_code == 204, reply.text
            reply = await api.post("/zato/api/objects/channel_web_socket", json={
                "name": "gateway", "address": f"ws://127.0.0.1:{remote_port}/ws/gateway",
                "service": "helpers.web-sockets-gateway", "security": "cluster.in"})
            assert reply.status_code == 201, reply.text
        async with admin(local) as api:
            reply = await api.post("/zato/api/objects/security", json={
                "name": "cluster.out", "type": "basic_auth", "username": USER, "direction": "outgoing"})
            assert reply.status_code == 201, reply.text
            reply = await api.put("/zato/api/objects/security/cluster.out/secrets/password", json={"value": PASSWORD})
            assert reply.status_code == 204, reply.text
            reply = await api.post("/zato/api/objects/outgoing_wsx", json={
                "name": OUTCONN, "address": f"ws://127.0.0.1:{remote_port}/ws/gateway", "security": "cluster.out",
                "on_connect_service_name": "wsx.cluster-hook", "on_message_service_name": "wsx.cluster-hook",
                "on_close_service_name": "wsx.cluster-hook", "subscription_list": TOPIC, "ping_interval": 1,
                "timeout": 5})
            assert reply.status_code == 201, reply.text
        yield remote, local
    finally:
        for server in (local, remote):
            await trio.to_thread.run_sync(server.stop)


async def test_two_clusters_invoke_publish_survive_a_killed_remote_and_catch_up_after_a_restart(clusters):
    remote, local = clusters
    with trio.fail_after(150):
        state = await wait_connected(local)
        holder = state["server_pid"]

        # the article's service, from both workers of the local server (one holds the connection)
        answered_by = set()
        async with httpx.AsyncClient(base_url=local.address, auth=admin_auth(), timeout=30) as api:
            for _ in range(12):
                async with httpx.AsyncClient(base_url=local.address, auth=admin_auth(), timeout=30) as fresh:
                    reply = await fresh.post("/zato/api/invoke/wsx.my-service", json={})
                assert reply.status_code == 200, reply.text
                assert reply.json()["response"] == {"elem1": "value1", "elem2": "value2"}
                answered_by.add(reply.json()["pid"])
        assert holder in answered_by and len(answered_by) == 2, answered_by  # the other worker went through it

        # each remote pub/sub message reaches the hook once, in the holder
        await wait_for(lambda: any(e["type"] == "connect" for e in events(local.base_dir)), 10, "on_connect")
        published = [await publish(remote, f"customer {n}") for n in range(3)]

        def delivered() -> list[str]:
            return [m["msg_id"] for e in events(local.base_dir) if e["type"] == "message" for m in e["messages"]]
        await wait_for(lambda: set(published) <= set(delivered()), 20, "the three messages")
        await trio.sleep(1)  # a second delivery would come by now
        assert sorted(delivered()) == sorted(published)
        first = [e for e in events(local.base_dir) if e["type"] == "message"][0]
        message = first["messages"][0]
        assert message["topic_name"] == TOPIC and message["data"].startswith("customer ")
        assert {"msg_id", "pub_time_iso", "expiration_time_iso", "priority", "has_gd", "delivery_count", "sub_key",
                "mime_type", "size", "expiration"} <= set(message)
        assert {e["pid"] for e in events(local.base_dir)} == {holder}

        # kill -9 the remote server, restart it on its port: on_close, then on_connect, invoking works again
        os.kill(remote.process.pid, signal.SIGKILL)
        await trio.to_thread.run_sync(remote.process.wait)
        await wait_for(lambda: any(e["type"] == "close" for e in events(local.base_dir)), 15, "on_close")
        down = await outgoing_state(local)
        assert down["state"] in ("disconnected", "connecting") and down["last_error"], down
        async with admin(local) as api:
            failing = await api.post("/zato/api/invoke/wsx.my-service", json={})
        assert failing.status_code == 500 or failing.status_code >= 500, failing.text
        restarted_at = time.monotonic()
        await start(remote)
        await wait_connected(local, timeout=40)
        print(f"\nreconnected {time.monotonic() - restarted_at:.1f} s after the remote server was started again")
        kinds = [e["type"] for e in events(local.base_dir) if e["type"] != "message"]
        assert kinds[-3:] == ["connect", "close", "connect"], kinds
        async with admin(local) as api:
            again = await api.post("/zato/api/invoke/wsx.my-service", json={})
        assert again.status_code == 200 and again.json()["response"] == {"elem1": "value1", "elem2": "value2"}

        # the local server stops; guaranteed-delivery messages published meanwhile arrive once it is back
        await trio.to_thread.run_sync(local.stop)
        while_down = [await publish(remote, f"while down {n}") for n in range(2)]
        await start(local)
        await wait_for(lambda: set(while_down) <= set(delivered()), 30, "the messages published while down")
        assert sorted(delivered()) == sorted(published + while_down)

        # the worker holding the connection dies: the other takes it over within the lease (1 s here)
        holder = (await wait_connected(local))["server_pid"]
        os.kill(holder, signal.SIGKILL)
        killed_at = time.monotonic()
        with trio.fail_after(30):
            while (state := await outgoing_state(local))["state"] != "connected" or state["server_pid"] == holder:
                await trio.sleep(0.1)
        print(f"taken over by process {state['server_pid']} {time.monotonic() - killed_at:.1f} s after "
              f"process {holder} was killed")
        async with admin(local) as api:
            after = await api.post("/zato/api/invoke/wsx.my-service", json={})
        assert after.status_code == 200 and after.json()["response"] == {"elem1": "value1", "elem2": "value2"}
