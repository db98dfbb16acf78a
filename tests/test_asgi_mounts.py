""" ASGI applications that plugins mount (`register_asgi_mounts`): HTTP with `root_path` set, streaming
responses that reach the client chunk by chunk, WebSockets through a mount (a real client over
wsproto and trio sockets), WebSockets under no mount refused, the catch-all, prefixes refused at
start (under `/zato`, twice), and a failing application answered with a 500 while the server goes on. """

from __future__ import annotations

import json
import logging
import sys
from collections import deque
from urllib.parse import urlsplit

import httpx
import pytest
import trio
from wsproto import ConnectionState as WSState, ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection, CloseConnection, Message, Ping, RejectConnection, RejectData, Request, TextMessage,
)

from zato.plugins import load_plugins
from zato.registry import ASGIMount, Kind, RegistrationError
from zato.server.http import ASGIApp, Router
from zato.testing import run_server, set_config_value

DASHBOARD = '''
import json

from zato.plugin_api import hookimpl

STATE = {}  # the test puts a trio.Event under "release"


async def start(send, status=200, content_type=b"text/plain"):
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})


async def dashboard(scope, receive, send):
    page = scope["path"][len(scope["root_path"]):]
    if scope["type"] == "websocket":
        return await websocket(scope, receive, send, page)
    if page == "/info":
        zato = scope["extensions"]["zato"]
        await start(send, content_type=b"application/json")
        await send({"type": "http.response.body", "body": json.dumps({
            "root_path": scope["root_path"], "path": scope["path"], "page": page,
            "query_string": scope["query_string"].decode(), "cid": zato["cid"], "prefix": zato["prefix"],
            "has_server": zato["server"] is not None}).encode()})
    elif page == "/stream":
        await start(send)
        await send({"type": "http.response.body", "body": b"chunk 1\\n", "more_body": True})
        await STATE["release"].wait()  # chunk 1 must be at the client before this returns
        await send({"type": "http.response.body", "body": b"chunk 2\\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"chunk 3\\n", "more_body": False})
    elif page == "/fail":
        raise RuntimeError("the dashboard broke before answering")
    elif page == "/fail-midway":
        await start(send)
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("the dashboard broke while streaming")
    elif page == "/silent":
        return  # answers nothing
    else:
        await start(send, 404)
        await send({"type": "http.response.body", "body": f"dashboard: no page {page}".encode()})


async def websocket(scope, receive, send, page):
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    if page == "/ws/fail":
        raise RuntimeError("the dashboard broke after accepting")
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "bye":
            await send({"type": "websocket.close", "code": 1000})
            return
        await send({"type": "websocket.send", "text": f"echo {message.get('text')} at {scope['root_path']}{page}"})


async def deeper(scope, receive, send):
    await start(send)
    await send({"type": "http.response.body", "body": f"deeper {scope['root_path']}".encode()})


@hookimpl
def register_asgi_mounts(register):
    register("/dash/", dashboard, description="the test dashboard")  # the trailing / is dropped
    register("/dash/deeper", deeper)
'''

CATCH_ALL = '''
import json

from zato.plugin_api import hookimpl


async def catch_all(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": f"catch-all {scope['path']}"})
        await send({"type": "websocket.close", "code": 1000})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body",
                "body": json.dumps({"catch_all": scope["path"], "root_path": scope["root_path"]}).encode()})


@hookimpl
def register_asgi_mounts(register):
    register("/", catch_all)
'''


def mount_source(prefix: str) -> str:
    return f'''
from zato.plugin_api import hookimpl


async def app(scope, receive, send):
    pass


@hookimpl
def register_asgi_mounts(register):
    register({prefix!r}, app)
'''


@pytest.fixture
def dashboard(plugin_site, server_dir):
    """ The dashboard plugin is installed, the catch-all one too but switched off. """
    module = plugin_site.add("asgi_dashboard", DASHBOARD)
    plugin_site.add("asgi_catch_all", CATCH_ALL)
    set_config_value(server_dir, "plugins", "asgi_catch_all", "False")
    return module


# ################################################################################################
# A WebSocket client: wsproto over a trio TCP stream


class WebSocketRefused(Exception):
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        super().__init__(f"refused with {status}: {body!r}")
        self.status, self.headers, self.body = status, headers, body


class WebSocketClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: deque = deque()

    @classmethod
    async def connect(cls, address: str, path: str) -> "WebSocketClient":
        url = urlsplit(address)
        client = cls(await trio.open_tcp_stream(url.hostname, url.port))
        await client.stream.send_all(client.ws.send(Request(host=url.netloc, target=path)))
        event = await client.next_event()
        if isinstance(event, RejectConnection):
            status = event.status_code
            headers = {name.decode(): value.decode() for name, value in event.headers}
            body = b""
            while event.has_body if isinstance(event, RejectConnection) else not event.body_finished:
                event = await client.next_event()
                assert isinstance(event, RejectData), event
                body += event.data
            await client.stream.aclose()
            raise WebSocketRefused(status, headers, body)
        assert isinstance(event, AcceptConnection), event
        return client

    async def next_event(self):
        while not self.events:
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(data or None)
            self.events.extend(self.ws.events())
            if not data and not self.events:
                raise EOFError("the server closed the connection")
        return self.events.popleft()

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(Message(data=text)))

    async def receive(self) -> str | CloseConnection:
        """ The next text message, or the CloseConnection the server sent (answered). """
        text = ""
        while True:
            event = await self.next_event()
            if isinstance(event, Ping):
                await self.stream.send_all(self.ws.send(event.response()))
            elif isinstance(event, TextMessage):
                text += event.data
                if event.message_finished:
                    return text
            elif isinstance(event, CloseConnection):
                if self.ws.state is WSState.REMOTE_CLOSING:  # the server closed first: answer it
                    try:
                        await self.stream.send_all(self.ws.send(event.response()))
                    except trio.BrokenResourceError:
                        pass
                await self.stream.aclose()
                return event

    async def close(self) -> None:
        await self.stream.send_all(self.ws.send(CloseConnection(code=1000)))
        event = await self.receive()
        assert isinstance(event, CloseConnection) and event.code == 1000


async def refusal(address: str, path: str) -> WebSocketRefused:
    with pytest.raises(WebSocketRefused) as info:
        await WebSocketClient.connect(address, path)
    return info.value


# ################################################################################################
# HTTP


async def test_mounted_app_gets_its_prefix_as_root_path_and_the_full_path(dashboard, server_dir):
    async with run_server(server_dir) as server:
        assert server.registry.items(Kind.ASGI_MOUNTS)["/dash"] == ASGIMount("/dash", sys.modules[dashboard].dashboard,
                                                                             "the test dashboard")
        assert server.registry.plugin_of(Kind.ASGI_MOUNTS, "/dash") == "asgi_dashboard"
        async with httpx.AsyncClient(base_url=server.address) as client:
            reply = await client.get("/dash/info", params={"x": "1"})
            bare = await client.get("/dash")
            deeper = await client.get("/dash/deeper/page")
            other = await client.get("/dashboards/info")  # not under /dash: the core's 404
            ping = await client.get("/zato/ping")
    assert reply.status_code == 200
    assert reply.json() == {"root_path": "/dash", "path": "/dash/info", "page": "/info", "query_string": "x=1",
                            "cid": reply.headers["x-zato-cid"], "prefix": "/dash", "has_server": True}
    assert bare.status_code == 404 and bare.text == "dashboard: no page " and "x-zato-cid" in bare.headers
    assert deeper.text == "deeper /dash/deeper"  # the longest prefix wins
    assert other.status_code == 404 and other.json()["result"] == "Error"
    assert ping.status_code == 200 and ping.json()["zato_env"]["result"] == "ZATO_OK"


async def test_streamed_chunks_reach_the_client_as_they_are_sent(dashboard, server_dir):
    async with run_server(server_dir) as server:
        state = sys.modules[dashboard].STATE
        state["release"] = trio.Event()
        async with httpx.AsyncClient(base_url=server.address) as client:
            with trio.fail_after(10):
                async with client.stream("GET", "/dash/stream") as reply:
                    assert reply.status_code == 200 and "x-zato-cid" in reply.headers
                    chunks = reply.aiter_raw()
                    first = await chunks.__anext__()
                    assert first == b"chunk 1\n"
                    assert not state["release"].is_set()  # the app is still waiting: the rest is not sent yet
                    state["release"].set()
                    rest = b"".join([chunk async for chunk in chunks])
    assert rest == b"chunk 2\nchunk 3\n"


async def test_a_failing_app_is_answered_with_500_logged_and_the_server_goes_on(dashboard, server_dir, caplog):
    caplog.set_level(logging.INFO, logger="zato.http")
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            failed = await client.get("/dash/fail")
            silent = await client.get("/dash/silent")
            with pytest.raises(httpx.RemoteProtocolError):  # the body was cut short: the connection is closed
                await client.get("/dash/fail-midway")
            after = await client.get("/dash/info")
            ping = await client.get("/zato/ping")
    cid = failed.headers["x-zato-cid"]
    assert failed.status_code == 500
    assert failed.json() == {"result": "Error", "cid": cid, "details": "Error 500 Internal Server Error"}
    assert "broke" not in failed.text  # no detail of the failure reaches the caller
    assert silent.status_code == 500 and silent.json()["cid"] == silent.headers["x-zato-cid"]
    assert after.status_code == 200 and ping.status_code == 200
    logged = [record for record in caplog.records if record.name == "zato.http" and record.levelno >= logging.ERROR]
    messages = [record.getMessage() for record in logged]
    assert any(f"cid={cid} the ASGI application mounted at /dash by plugin 'asgi_dashboard' failed on GET /dash/fail"
               in message for message in messages), messages
    assert any("failed on GET /dash/fail-midway" in message for message in messages), messages
    assert any("returned without answering GET /dash/silent" in message for message in messages), messages
    assert any(record.exc_info and "the dashboard broke before answering" in str(record.exc_info[1])
               for record in logged)


async def test_catch_all_gets_what_no_route_takes_but_never_paths_under_zato(plugin_site, server_dir):
    plugin_site.add("asgi_catch_all", CATCH_ALL)
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            anything = await client.get("/any/page")
            demo = await client.get("/demo/hello", params={"name": "Zato"})  # a REST channel: still the core's
            admin_404 = await client.get("/zato/no/such/thing")
        ws = await WebSocketClient.connect(server.address, "/live/feed")
        message = await ws.receive()
        closed = await ws.receive()
        admin_ws = await refusal(server.address, "/zato/ws")
    assert anything.json() == {"catch_all": "/any/page", "root_path": ""} and "x-zato-cid" in anything.headers
    assert demo.json() == {"hello": "Zato"}
    assert admin_404.status_code == 404 and admin_404.json()["result"] == "Error"
    assert message == "catch-all /live/feed" and closed.code == 1000
    assert admin_ws.status == 404


# ################################################################################################
# WebSockets


async def test_websocket_echo_through_a_mount(dashboard, server_dir):
    async with run_server(server_dir) as server:
        with trio.fail_after(10):
            ws = await WebSocketClient.connect(server.address, "/dash/ws/echo")
            replies = []
            for text in ("hello", "zato"):
                await ws.send_text(text)
                replies.append(await ws.receive())
            await ws.send_text("bye")
            closed = await ws.receive()
            second = await WebSocketClient.connect(server.address, "/dash/ws/echo")
            await second.send_text("again")
            again = await second.receive()
            await second.close()
    assert replies == ["echo hello at /dash/ws/echo", "echo zato at /dash/ws/echo"]
    assert isinstance(closed, CloseConnection) and closed.code == 1000
    assert again == "echo again at /dash/ws/echo"


async def test_websocket_under_no_mount_is_refused_and_the_server_goes_on(dashboard, server_dir):
    async with run_server(server_dir) as server:
        with trio.fail_after(10):
            refused = await refusal(server.address, "/elsewhere/ws")
            admin = await refusal(server.address, "/zato/ping")
            ws = await WebSocketClient.connect(server.address, "/dash/ws/echo")
            await ws.send_text("still here")
            reply = await ws.receive()
            await ws.close()
        async with httpx.AsyncClient(base_url=server.address) as client:
            ping = await client.get("/zato/ping")
    body = json.loads(refused.body)
    assert refused.status == 404 and body["result"] == "Error" and body["cid"] == refused.headers["x-zato-cid"]
    assert "no WebSocket endpoint at /elsewhere/ws" in body["details"]
    assert admin.status == 404
    assert reply == "echo still here at /dash/ws/echo" and ping.status_code == 200


async def test_a_websocket_app_failing_after_accept_is_closed_with_1011(dashboard, server_dir):
    async with run_server(server_dir) as server:
        with trio.fail_after(10):
            ws = await WebSocketClient.connect(server.address, "/dash/ws/fail")
            closed = await ws.receive()
            ws = await WebSocketClient.connect(server.address, "/dash/ws/echo")
            await ws.send_text("after")
            reply = await ws.receive()
            await ws.close()
    assert isinstance(closed, CloseConnection) and closed.code == 1011
    assert reply == "echo after at /dash/ws/echo"


async def test_without_the_denial_extension_a_websocket_is_closed_with_1008():
    """ A server that cannot send an HTTP denial response gets `websocket.close` 1008. """
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "websocket.connect"}

    app = ASGIApp(Router())
    await app({"type": "websocket", "path": "/ws", "headers": [], "extensions": {}}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]


# ################################################################################################
# Refused registrations


@pytest.mark.parametrize("prefix", ["/zato", "/zato/", "/zato/dashboard"])
async def test_a_mount_under_zato_stops_the_start_naming_the_plugin_and_the_prefix(plugin_site, server_dir, prefix):
    plugin_site.add("sneaky", mount_source(prefix))
    with pytest.raises(RegistrationError) as info:
        async with run_server(server_dir):
            pass
    message = str(info.value)
    assert message.startswith("plugin 'sneaky': bad call to register() in register_asgi_mounts: ")
    assert f"ASGI mount prefix {prefix!r} is under /zato/, which belongs to the core's admin routes" in message


def test_two_plugins_mounting_one_prefix_are_refused_naming_both(plugin_site):
    plugin_site.add("first_dash", mount_source("/dash"))
    plugin_site.add("second_dash", mount_source("/dash/"))  # the same prefix once normalised
    with pytest.raises(RegistrationError) as info:
        load_plugins({})
    message = str(info.value)
    assert "'/dash' is registered by plugin" in message
    assert "'first_dash'" in message and "'second_dash'" in message


@pytest.mark.parametrize("prefix, problem", [
    ("dash", "must be a text starting with '/'"),
    ("/dash/{page}", "has the segment '{page}'"),
    ("/a//b", "has the segment ''"),
    ("/a/../zato", "has the segment '..'"),
])
def test_malformed_prefixes_are_refused(plugin_site, prefix, problem):
    plugin_site.add("odd_mount", mount_source(prefix))
    with pytest.raises(RegistrationError, match="plugin 'odd_mount'") as info:
        load_plugins({})
    assert problem in str(info.value)


def test_an_app_that_is_not_callable_is_refused():
    with pytest.raises(RegistrationError, match="app must be an ASGI application"):
        ASGIMount("/dash", "not an app")


# ################################################################################################
# WebSocket endpoints set while the server runs, and pings


async def ping_pong_app(scope, receive, send):
    """ Accepts, pings the peer with the first message's text, answers with the pong it got back. """
    assert scope["extensions"]["zato"]["websocket_ping"] is True
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    message = await receive()
    await send({"type": "zato.websocket.ping", "bytes": message["text"].encode()})
    with trio.move_on_after(2) as waited:
        while (answer := await receive())["type"] != "zato.websocket.pong":
            pass
    reply = "no pong" if waited.cancelled_caught else f"pong {answer['bytes'].decode()} at {scope['path']}"
    await send({"type": "websocket.send", "text": reply})
    await send({"type": "websocket.close", "code": 1000})


async def test_a_websocket_endpoint_set_at_run_time_pings_its_peer_and_hears_the_pong(server_dir):
    async with run_server(server_dir) as server:
        with trio.fail_after(15):
            assert (await refusal(server.address, "/live/ws")).status == 404
            server.set_websocket_endpoint("/live/ws", ping_pong_app, "test")
            ws = await WebSocketClient.connect(server.address, "/live/ws")
            await ws.send_text("zwsx-1")
            answered = await ws.receive()  # receive() answers the Ping with its Pong
            await ws.receive()  # the close
            # a peer that never answers: the app hears no Pong
            silent = await WebSocketClient.connect(server.address, "/live/ws")
            await silent.send_text("zwsx-2")
            event = await silent.next_event()
            assert isinstance(event, Ping) and event.payload == b"zwsx-2"
            unanswered = ""
            while not unanswered.startswith("no pong"):
                event = await silent.next_event()
                unanswered += event.data if isinstance(event, TextMessage) else ""
            server.set_websocket_endpoint("/live/ws", None, "test")
            assert (await refusal(server.address, "/live/ws")).status == 404
            with pytest.raises(ValueError, match="under /zato/"):
                server.set_websocket_endpoint("/zato/ws", ping_pong_app, "test")
    assert answered == "pong zwsx-1 at /live/ws" and unanswered == "no pong"
