""" Outgoing WebSocket connections (outgoing_wsx) against a real server of ours: the article's
MyService invoking a remote echo through `self.out.wsx.get(name).conn.client()`, hooks, remote
pub/sub messages reaching on_message, and errors that name the connection. """

from __future__ import annotations

import socket
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


SEND = '''
from zato.server.service import Service


class SendAsIs(Service):
    name = 'wsx.send-as-is'

    def handle(self):
        with self.out.wsx.get(self.request.payload['conn']).conn.client() as client:
            self.response.payload = {'returned': client.send(self.request.payload['msg'])}
'''


def websocket_peer(received: list):
    """ A WebSocket server that is not Zato: it keeps what it gets and answers `echo: <text>`. """
    from zato.testing import handle_lifespan

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            return await handle_lifespan(receive, send)
        assert scope["type"] == "websocket"
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            received.append(message.get("text"))
            await send({"type": "websocket.send", "text": f"echo: {message.get('text')}"})
    return app


async def create(api, object_type, body):
    reply = await api.post(f"/zato/api/objects/{object_type}", json=body)
    assert reply.status_code == 201, reply.text


async def test_a_remote_end_that_is_not_zato_gets_messages_as_they_are_over_tls_and_hooks_get_its_answers(tmp_path,
                                                                                                       caplog):
    from zato.plugin_api import make_test_certificates
    from zato.testing import serve_asgi
    certificates = make_test_certificates(tmp_path / "tls")
    received: list = []
    async with wsx_server(tmp_path) as server, serve_asgi(websocket_peer(received), certificates) as peer:
        (server.paths.base_dir / "pickup" / "wsx_hooks.py").write_text(textwrap.dedent(HOOKS))
        (server.paths.base_dir / "pickup" / "wsx_send.py").write_text(textwrap.dedent(SEND))
        port = urlsplit(peer).port
        async with admin(server) as api:
            with trio.fail_after(20):
                while "wsx.send-as-is" not in server.services.entries or "wsx.on-message" not in server.services.entries:
                    await trio.sleep(0.05)
            await create(api, "outgoing_wsx", {
                "name": "plain", "address": f"wss://localhost:{port}/anything", "is_zato": False,
                "tls_ca_file": str(certificates.ca_file), "on_message_service_name": "wsx.on-message"})
            await create(api, "outgoing_wsx", {
                "name": "untrusted", "address": f"wss://localhost:{port}/anything", "is_zato": False,
                "tls_ca_file": str(certificates.other_ca_file)})
            await wait_state(api, "connected", "plain")
            sent = await api.post("/zato/api/invoke/wsx.send-as-is", json={"conn": "plain", "msg": {"hello": "world"}})
            text = await api.post("/zato/api/invoke/wsx.send-as-is", json={"conn": "plain", "msg": "plain text"})
            events = server.plugin_state.setdefault("test.wsx.out", [])
            with trio.fail_after(10):
                while len([e for e in events if e[0] == "message"]) < 2:
                    await trio.sleep(0.05)
            with trio.fail_after(15):
                while not (untrusted := await outgoing_state(api, "untrusted"))["last_error"]:
                    await trio.sleep(0.05)
            refused = await api.post("/zato/api/invoke/wsx.send-as-is", json={"conn": "untrusted", "msg": "x"})
    assert sent.status_code == 200 and sent.json() == {"returned": None}, sent.text
    assert text.status_code == 200, text.text
    assert received == ['{"hello": "world"}', "plain text"]
    assert [e[1] for e in events if e[0] == "message"] == ['echo: {"hello": "world"}', "echo: plain text"]
    assert untrusted["state"] != "connected"
    assert "TLS handshake failed" in untrusted["last_error"] and "certificate" in untrusted["last_error"]
    assert refused.status_code == 500 and refused.json()["cid"] in caplog.text
    assert "outgoing WebSocket connection 'untrusted' (wss://" in caplog.text and "is not connected (" in caplog.text


async def test_errors_say_which_connection_and_why(tmp_path):
    async with wsx_server(tmp_path, wsx={"gateway_service_allowed": "wsx.echo-input"}) as server:
        port = urlsplit(server.address).port
        await create_channel(server, name="gateway", path="/ws/gateway", service="helpers.web-sockets-gateway")
        with socket.socket() as sock:  # a port nothing listens on
            sock.bind(("127.0.0.1", 0))
            closed_port = sock.getsockname()[1]
        async with admin(server) as api:
            await create(api, "security", {"name": "out.wrong", "type": "basic_auth", "username": USER,
                                           "direction": "outgoing"})
            reply = await api.put("/zato/api/objects/security/out.wrong/secrets/password", json={"value": "wrong"})
            assert reply.status_code == 204, reply.text
            await create(api, "outgoing_wsx", {"name": "wrong secret", "address": f"ws://127.0.0.1:{port}/ws/gateway",
                                               "security": "out.wrong"})
            await create(api, "outgoing_wsx", {"name": "nobody home", "address": f"ws://127.0.0.1:{closed_port}/x"})
            await create(api, "outgoing_wsx", {"name": "no such path", "address": f"ws://127.0.0.1:{port}/ws/none"})
            await create(api, "outgoing_wsx", {"name": "inbound secret", "address": f"ws://127.0.0.1:{port}/ws/gateway",
                                               "security": "wsx.basic"})  # a definition for inbound use
            states = {}
            with trio.fail_after(15):
                for name in ("wrong secret", "nobody home", "no such path", "inbound secret"):
                    while not (row := await outgoing_state(api, name)) or not row["last_error"]:
                        await trio.sleep(0.05)
                    states[name] = row
            bad_field = await api.post("/zato/api/objects/outgoing_wsx", json={"name": "bad", "address": "http://x/"})
    assert "refused the session with 403" in states["wrong secret"]["last_error"]
    assert f"cannot connect to 127.0.0.1:{closed_port}" in states["nobody home"]["last_error"]
    assert "refused the WebSocket handshake with HTTP 404" in states["no such path"]["last_error"]
    assert "'wsx.basic' is for inbound use" in states["inbound secret"]["last_error"]
    assert bad_field.status_code == 400 and "ws:// or wss://" in bad_field.text


async def test_zato_enmasse_rows_of_outgoing_wsx_import_unchanged(tmp_path):
    import yaml
    from click.testing import CliRunner
    from zato.cli import cli
    from zato.plugin_api import create_test_server_dir, run_server
    base_dir = create_test_server_dir(tmp_path / "server")
    export = tmp_path / "zato-export.yaml"
    export.write_text(yaml.safe_dump({
        "outgoing_wsx": [{"name": "to-cluster2", "address": "ws://cluster2.example.com:17010/ws/gateway",
                          "data_format": "json", "on_message_service_name": "zato.ping",
                          "subscription_list": "/customer/new\n/customer/updated"}],
        "zato_generic_connection": [{"name": "legacy", "type_": "outconn-wsx", "address": "ws://10.0.0.1:17010/ws",
                                     "is_zato": True, "is_active": True, "has_auto_reconnect": False,
                                     "security_def": "ZATO_NONE", "pool_size": 1, "is_channel": False,
                                     "is_outconn": True, "is_internal": False, "sec_use_rbac": False,
                                     "ping_interval": 45, "pings_missed_threshold": 1, "socket_read_timeout": 60,
                                     "socket_write_timeout": 60}]}))
    result = await trio.to_thread.run_sync(
        lambda: CliRunner().invoke(cli, ["enmasse", "import", str(base_dir), str(export)], catch_exceptions=False))
    assert result.exit_code == 0 and "2 created" in result.output, result.output
    async with run_server(base_dir) as server:
        objects = server.config_objects["outgoing_wsx"]
    assert objects["to-cluster2"]["subscription_list"] == "/customer/new\n/customer/updated"
    assert objects["to-cluster2"]["is_zato"] is True and objects["to-cluster2"]["on_message_service_name"] == "zato.ping"
    assert objects["legacy"]["has_auto_reconnect"] is False and not objects["legacy"].get("security")
    assert objects["legacy"]["ping_interval"] == 45 and objects["legacy"]["pings_missed_threshold"] == 1


# ################################################################################################
# The article's OnMessageHook, hooks answering the remote end and calling it, an invoke timing out

# The article's on_message hook (the cluster-to-cluster article, ../shared/seeds/001_*.txt), as
# the article prints it: no name of its own (it is `article_on_message.on-message-hook`), nothing
# added. (The article's page lost `self.logger.info(` and `ctx.data`, `data.data`, `data.id` in
# extraction; they are what its log output and Zato's documentation of the same example show.)
ARTICLE_ON_MESSAGE = '''\
# -*- coding: utf-8 -*-

from __future__ import absolute_import, division, print_function, unicode_literals

from zato.server.service import Opaque, Service

class OnMessageHook(Service):
    class SimpleIO:
        input_optional = (Opaque('ctx'),)

    def handle(self):

        # Object describing incoming data
        ctx = self.request.input.ctx

        # Message type
        msg_type = ctx.type

        # Data received
        data = ctx.data

        # Log message type
        self.logger.info('Msg type: `%s`', msg_type)

        # Log actual data
        self.logger.info('Data received: `%s`', data.data)

        # Log metadata - ID and timestamp
        self.logger.info('Meta: `%s` `%s`', data.id, data.timestamp)
'''

CALLING = '''
import trio
from zato.server.service import Opaque, Service


class AnsweringHook(Service):
    """ Answers the remote end's requests: what it returns goes back as the client-response; asked
    to, it first invokes the remote end through ctx.conn (while the remote end waits for its answer). """
    name = 'wsx.answering-hook'

    class SimpleIO:
        input_optional = (Opaque('ctx'),)

    def handle(self):
        ctx = self.request.input.ctx
        if ctx.type != 'message' or ctx.data.msg_type != 'zwsx.rqc':
            return
        asked = ctx.data.data
        if asked.get('call_back'):
            self.response.payload = {'through_ctx_conn': ctx.conn.invoke(
                {'service': 'wsx.echo-input', 'request': {'asked': asked['call_back']}})}
        else:
            self.response.payload = {'hook_says': asked}


class EchoInput(Service):
    name = 'wsx.echo-input'

    def handle(self):
        self.response.payload = self.request.payload


class SlowRemote(Service):
    """ Invokes a remote service that answers later than the connection's timeout. """
    name = 'wsx.slow-remote'

    def handle(self):
        with self.out.wsx.get('My WSX Outconn').conn.client() as client:
            try:
                client.invoke({'service': 'wsx.async-echo', 'request': {'sleep': 3}})
            except Exception as exc:
                self.response.payload = {'error': str(exc), 'type': type(exc).__name__}
            else:
                self.response.payload = {'error': None}
'''


async def connected_to_own_gateway(server, api, **outconn):
    """ A gateway channel on the server, and an outgoing connection (OUTCONN) to it, connected. """
    port = urlsplit(server.address).port
    await create_channel(server, name="gateway", path="/ws/gateway", service="helpers.web-sockets-gateway")
    await create(api, "security", {"name": "out.basic", "type": "basic_auth", "username": USER,
                                   "direction": "outgoing"})
    reply = await api.put("/zato/api/objects/security/out.basic/secrets/password", json={"value": PASSWORD})
    assert reply.status_code == 204, reply.text
    await create(api, "outgoing_wsx", {"name": OUTCONN, "address": f"ws://127.0.0.1:{port}/ws/gateway",
                                       "security": "out.basic", **outconn})
    return await wait_state(api, "connected")


async def deployed(server, suffix):
    """ The name of the deployed service whose name ends with `suffix`. """
    with trio.fail_after(20):
        while not (names := [name for name in server.services.entries if name.endswith(suffix)]):
            await trio.sleep(0.05)
    [name] = names
    return name


async def test_the_articles_on_message_hook_runs_unchanged_and_logs_what_the_article_shows(tmp_path, caplog):
    import logging
    import re
    caplog.set_level(logging.INFO)
    async with wsx_server(tmp_path) as server:
        (server.paths.base_dir / "pickup" / "article_on_message.py").write_text(ARTICLE_ON_MESSAGE)
        hook = await deployed(server, ".on-message-hook")
        async with admin(server) as api:
            await create(api, "pubsub_topic", {"name": "/customer/new"})
            await connected_to_own_gateway(server, api, on_message_service_name=hook,
                                           subscription_list="/customer/new")
            with trio.fail_after(10):  # the subscription is made right after the session opens
                while not [c for c in (await api.get("/zato/api/wsx/connections")).json()["connections"]
                           if c["subscriptions"]]:
                    await trio.sleep(0.05)
            published = await api.post("/zato/api/invoke/zato.pubsub.publish.publish", json={
                "topic_name": "/customer/new", "data": "This is a sample message"})
            assert published.status_code == 200, published.text
            msg_id = published.json()["msg_id"]
            with trio.fail_after(10):
                while "Meta: `" not in caplog.text:
                    await trio.sleep(0.05)
    logged = [record.getMessage() for record in caplog.records if record.name.endswith(hook)]
    assert hook == "article_on_message.on-message-hook"
    assert logged[0] == "Msg type: `message`", logged
    assert logged[1].startswith("Data received: `[{") and "'topic_name': '/customer/new'" in logged[1], logged
    assert f"'msg_id': '{msg_id}'" in logged[1] and "'data': 'This is a sample message'" in logged[1], logged
    # the meta line: the frame's id and timestamp, as `6fd296ecf78493a3a0ce7570` `2018-09-03T10:49:00.540024`
    assert re.fullmatch(r"Meta: `\w+` `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?`", logged[2]), logged
    assert not [r for r in caplog.records if "failed" in r.getMessage() and hook in r.getMessage()]


async def test_a_hooks_answer_goes_back_to_the_remote_end_and_a_hook_invokes_it_through_ctx_conn(tmp_path):
    async with wsx_server(tmp_path, wsx={"gateway_service_allowed": "wsx.echo-input"}) as server:
        (server.paths.base_dir / "pickup" / "wsx_calling.py").write_text(textwrap.dedent(CALLING))
        await deployed(server, "wsx.answering-hook")
        async with admin(server) as api:
            await connected_to_own_gateway(server, api, on_message_service_name="wsx.answering-hook")
            [outconn] = (await api.get("/zato/api/wsx/connections",
                                       params={"ext_client_id": f"zato.outconn-wsx.{OUTCONN}"})).json()["connections"]
            with trio.fail_after(20):  # a service of the remote end (here the same server) asks the connection
                answered = await api.post("/zato/api/invoke/wsx.invoke-by-id", json={
                    "channel": "gateway", "pub_client_id": outconn["pub_client_id"], "data": {"question": 1}})
                called_back = await api.post("/zato/api/invoke/wsx.invoke-by-id", json={
                    "channel": "gateway", "pub_client_id": outconn["pub_client_id"], "data": {"call_back": "hi"}})
    assert answered.status_code == 200, answered.text
    assert answered.json() == {"answer": {"response": {"hook_says": {"question": 1}}}}
    assert called_back.status_code == 200, called_back.text
    assert called_back.json() == {"answer": {"response": {"through_ctx_conn": {"asked": "hi"}}}}


async def test_an_invoke_the_remote_end_answers_past_the_timeout_fails_naming_the_connection(tmp_path):
    async with wsx_server(tmp_path, wsx={"gateway_service_allowed": "wsx.async-echo"}) as server:
        (server.paths.base_dir / "pickup" / "wsx_calling.py").write_text(textwrap.dedent(CALLING))
        await deployed(server, "wsx.slow-remote")
        async with admin(server) as api:
            await connected_to_own_gateway(server, api, timeout=0.5)
            with trio.fail_after(20):
                started = trio.current_time()
                reply = await api.post("/zato/api/invoke/wsx.slow-remote", json={})
                took = trio.current_time() - started
    assert reply.status_code == 200, reply.text
    error = reply.json()["error"]
    assert reply.json()["type"] == "OutgoingError", reply.json()
    assert f"outgoing WebSocket connection {OUTCONN!r}" in error and "did not answer within 0.5 s" in error, error
    assert 0.5 <= took < 2.5, took
