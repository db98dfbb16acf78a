""" Outgoing WebSocket connections (outgoing_wsx) against a real server of ours: the article's
MyService invoking a remote echo through `self.out.wsx.get(name).conn.client()`, hooks, remote
pub/sub messages reaching on_message, and errors that name the connection. """

from __future__ import annotations

import textwrap
from urllib.parse import urlsplit

import trio

from wsx_fixtures import PASSWORD, USER, admin, create_channel, wsx_server

OUTCONN = "My WSX Outconn"

HOOKS = '''
from zato.server.service import Opaque, Service


class MyService(Service):
    """ The article's, unchanged but for the echo service's name. """
    name = 'wsx.my-service'

    def handle(self):
        msg = {
             'service': 'wsx.echo-input',
             'request': {
                 'elem1': 'value1',
                 'elem2': 'value2',
             }
        }
        conn_name = 'My WSX Outconn'
        with self.out.wsx.get(conn_name).conn.client() as client:
            response = client.send(msg)
            response = client.invoke(msg)
            self.logger.info('Response is `%s`', response)
        self.response.payload = response


class EchoInput(Service):
    name = 'wsx.echo-input'

    def handle(self):
        self.response.payload = self.request.payload


class OnMessageHook(Service):
    name = 'wsx.on-message'

    class SimpleIO:
        input_optional = (Opaque('ctx'),)

    def handle(self):
        ctx = self.request.input.ctx
        msg_type = ctx.type
        data = ctx.data
        self.logger.info('Msg type: `%s`', msg_type)
        self.logger.info('Data received: `%s`', data.data)
        self.logger.info('Meta: `%s` `%s`', data.id, data.timestamp)
        events = self.server.plugin_state.setdefault('test.wsx.out', [])
        events.append((msg_type, data.data if msg_type == 'message' else data))


class OnConnectOrClose(Service):
    name = 'wsx.on-connect-or-close'

    class SimpleIO:
        input_optional = (Opaque('ctx'),)

    def handle(self):
        ctx = self.request.input.ctx
        self.server.plugin_state.setdefault('test.wsx.out', []).append((ctx.type, ctx.conn_name))
'''


async def outgoing_state(api, name=OUTCONN):
    reply = await api.get("/zato/api/wsx/outgoing")
    assert reply.status_code == 200, reply.text
    return {row["name"]: row for row in reply.json()["outgoing"]}.get(name)


async def wait_state(api, state, name=OUTCONN):
    with trio.fail_after(15):
        while (row := await outgoing_state(api, name)) is None or row["state"] != state:
            await trio.sleep(0.05)
    return row


async def test_the_articles_service_invokes_a_remote_service_and_hooks_hear_connect_and_messages(tmp_path):
    async with wsx_server(tmp_path, wsx={"gateway_service_allowed": "wsx.echo-input"}) as server:
        (server.paths.base_dir / "pickup" / "wsx_hooks.py").write_text(textwrap.dedent(HOOKS))
        port = urlsplit(server.address).port
        await create_channel(server, name="gateway", path="/ws/gateway", service="helpers.web-sockets-gateway")
        async with admin(server) as api:
            with trio.fail_after(20):
                while "wsx.my-service" not in server.services.entries:
                    await trio.sleep(0.05)
            for path, body in (
                    ("/zato/api/objects/security", {"name": "out.basic", "type": "basic_auth", "username": USER,
                                                    "direction": "outgoing"}),
                    ("/zato/api/objects/pubsub_topic", {"name": "/customer/new"})):
                reply = await api.post(path, json=body)
                assert reply.status_code == 201, reply.text
            reply = await api.put("/zato/api/objects/security/out.basic/secrets/password", json={"value": PASSWORD})
            assert reply.status_code == 204, reply.text
            reply = await api.post("/zato/api/objects/outgoing_wsx", json={
                "name": OUTCONN, "address": f"ws://127.0.0.1:{port}/ws/gateway", "security": "out.basic",
                "on_connect_service_name": "wsx.on-connect-or-close", "on_message_service_name": "wsx.on-message",
                "on_close_service_name": "wsx.on-connect-or-close", "subscription_list": "/customer/new\n"})
            assert reply.status_code == 201, reply.text
            row = await wait_state(api, "connected")
            invoked = await api.post("/zato/api/invoke/wsx.my-service", json={})
            assert invoked.status_code == 200, invoked.text
            with trio.fail_after(10):  # the subscription is made right after the session opens
                while not [c for c in (await api.get("/zato/api/wsx/connections")).json()["connections"]
                           if c["subscriptions"]]:
                    await trio.sleep(0.05)
            published = await api.post("/zato/api/invoke/zato.pubsub.publish.publish", json={
                "topic_name": "/customer/new", "data": "This is a sample message"})
            assert published.status_code == 200, published.text
            events = server.plugin_state.setdefault("test.wsx.out", [])
            with trio.fail_after(10):
                while not [e for e in events if e[0] == "message"]:
                    await trio.sleep(0.05)
    assert row["server_pid"] and row["last_error"] == ""
    assert invoked.json() == {"elem1": "value1", "elem2": "value2"}
    assert events[0] == ("connect", OUTCONN)
    [(_, messages)] = [e for e in events if e[0] == "message"]
    [message] = messages
    assert message["data"] == "This is a sample message" and message["topic_name"] == "/customer/new"
    assert {"msg_id", "pub_time_iso", "expiration_time_iso", "priority", "has_gd", "delivery_count", "sub_key",
            "mime_type", "size", "expiration"} <= set(message)
