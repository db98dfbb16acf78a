""" zato.server.http_transport: hypercorn's trio worker made cheaper per request (issue 20), with
HTTP behaving as before. Each behaviour over raw trio sockets against a real server on port 0:
keep-alive, pipelining, chunked request bodies, 100-continue, HEAD, 204/304 without bodies, a
body trickled byte by byte, idle keep-alive timeouts, a graceful stop with a request in flight,
the max body size, WebSocket upgrades; and that the subclasses are the ones serving, with one
write on the socket per small response. """

from __future__ import annotations

import hashlib
import json
import time

import pytest
import trio

from zato.odb import ODB, sqlite_url
from zato.server import http_transport
from zato.testing import create_test_server_dir, run_server

KEEP_ALIVE = 1.0  # [main] keep_alive_timeout of the test server, in seconds
MAX_BODY = 2000  # [main] max_body_size

APP = '''
import asyncio, hashlib, json

import trio

from zato.plugin_api import hookimpl

STATE = {}


async def read_body(receive):
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def app(scope, receive, send):
    page = scope["path"][len(scope["root_path"]):]
    if scope["type"] == "websocket":
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": "echo " + message["text"]})
    if page == "/echo":
        body = await read_body(receive)
        reply = json.dumps({"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(reply)).encode())]})
        await send({"type": "http.response.body", "body": reply})
    elif page in ("/204", "/304"):
        await send({"type": "http.response.start", "status": int(page[1:]), "headers": []})
        await send({"type": "http.response.body", "body": b"never sent"})
    elif page == "/slow":
        await trio.sleep(float(scope["query_string"] or 1))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"slow"})
    elif page == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index in range(3):
            await send({"type": "http.response.body", "body": b"part %d;" % index, "more_body": True})
            await trio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"hello"})


@hookimpl
def register_asgi_mounts(register):
    register("/t", app)
'''

SERVICE = '''
from zato.server.service import Service


class Size(Service):
    name = "transport.size"

    def handle(self):
        self.response.payload = {"size": len(self.request.raw_request)}
'''


@pytest.fixture
def transport_dir(plugin_site, tmp_path):
    plugin_site.add("transport_test_app", APP)
    server_dir = create_test_server_dir(tmp_path / "server", main={
        "graceful_timeout": 3, "keep_alive_timeout": KEEP_ALIVE, "max_body_size": MAX_BODY})
    (server_dir / "pickup" / "transport.py").write_text(SERVICE, "utf-8")
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    try:
        odb.put_object("channel_rest", "channel.transport.size", {"url_path": "/size", "service": "transport.size"})
    finally:
        odb.close()
    return server_dir


# ################################################################################################
# A raw HTTP/1.1 client


class RawClient:
    """ Bytes in, responses out: parses as many responses as arrive (pipelining), Content-Length,
    chunked, or none (HEAD, 1xx, 204, 304). """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def connect(cls, address: str) -> "RawClient":
        host, port = address.removeprefix("http://").rsplit(":", 1)
        return cls(await trio.open_tcp_stream(host, int(port)))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError(f"the server closed the connection; unparsed: {self.buffer!r}")
        self.buffer += data

    async def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            await self._fill()
        found, _, self.buffer = self.buffer.partition(marker)
        return found

    async def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._fill()
        found, self.buffer = self.buffer[:size], self.buffer[size:]
        return found

    async def response(self, *, head: bool = False) -> tuple[int, dict[str, str], bytes]:
        """ (status, headers with lower-case names, body) of the next response. """
        with trio.fail_after(10):
            status_line, *lines = (await self._until(b"\r\n\r\n")).split(b"\r\n")
            status = int(status_line.split()[1])
            headers = {}
            for line in lines:
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if head or status < 200 or status in (204, 304):
                return status, headers, b""
            if headers.get("transfer-encoding") == "chunked":
                body = b""
                while size := int(await self._until(b"\r\n"), 16):
                    body += await self._exactly(size)
                    assert await self._exactly(2) == b"\r\n"
                assert await self._until(b"\r\n") == b""  # no trailers
                return status, headers, body
            return status, headers, await self._exactly(int(headers.get("content-length", 0)))

    async def closed_by_server(self, within: float) -> bool:
        """ True if the server closes the connection within `within` seconds, with nothing unread. """
        with trio.move_on_after(within):
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return True
            assert data == b"", data
            return True
        return False

    async def aclose(self) -> None:
        await self.stream.aclose()


def get(path: str, *headers: bytes, method: bytes = b"GET") -> bytes:
    return method + b" " + path.encode() + b" HTTP/1.1\r\nhost: localhost\r\n" + b"".join(headers) + b"\r\n"


def post(path: str, body: bytes) -> bytes:
    return get(path, b"content-length: %d\r\n" % len(body), method=b"POST") + body


def digest(body: bytes) -> dict:
    return {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


# ################################################################################################
# The subclasses are what serves, and a small response is one write


class CountingStream:
    """ The server side of a connection, counting its writes (everything else passes through;
    no `do_handshake`, as a plain TCP stream has none). """

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self.writes: list[bytes] = []

    async def send_all(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        await self._stream.send_all(data)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@pytest.fixture
def counted_connections(monkeypatch):
    """ The TCP servers of the connections accepted from now on, their streams counting writes. """
    http_transport.install()
    servers = []
    original_init = http_transport.ZatoTCPServer.__init__

    def counting_init(self, app, config, context, state, stream):
        original_init(self, app, config, context, state, CountingStream(stream))
        servers.append(self)
    monkeypatch.setattr(http_transport.ZatoTCPServer, "__init__", counting_init)
    return servers


async def test_the_subclasses_serve_and_each_small_response_is_one_write(transport_dir, counted_connections):
    import hypercorn.protocol
    import hypercorn.protocol.h11
    import hypercorn.trio.run

    async with run_server(transport_dir) as server:
        assert hypercorn.trio.run.TCPServer is http_transport.ZatoTCPServer
        assert hypercorn.protocol.H11Protocol is http_transport.ZatoH11Protocol
        assert hypercorn.protocol.h11.WSStream.__name__ == "PingingWSStream"  # websocket_pings still installed
        client = await RawClient.connect(server.address)
        try:
            requests = [get("/t/hello"), post("/t/echo", b"abc"), get("/t/204"), get("/size"),
                        post("/size", b"x" * 100), get("/t/hello", method=b"HEAD")]
            for request in requests:
                await client.send(request)
                status, headers, body = await client.response(head=request.startswith(b"HEAD"))
                assert status in (200, 204), (request, status, body)
            assert headers["content-length"] == "5"
            connection = counted_connections[-1]
            assert type(connection.protocol.protocol) is http_transport.ZatoH11Protocol
            assert type(connection._task_group) is http_transport.ZatoTaskGroup
            assert type(connection.send_lock) is http_transport.SendLock
            assert len(connection.stream.writes) == len(requests), connection.stream.writes  # head and body in one write
            assert all(write.startswith(b"HTTP/1.1 ") for write in connection.stream.writes), connection.stream.writes
            assert connection.stream.writes[0].endswith(b"\r\n\r\nhello")
            assert connection.stream.writes[3].startswith(b"HTTP/1.1 200 OK\r\n")  # a REST channel, reason phrase kept
            assert b"server: zato" in connection.stream.writes[3].lower()  # our Server header kept
        finally:
            await client.aclose()


async def test_a_streamed_response_is_chunked_and_each_part_written_as_it_is_sent(transport_dir, counted_connections):
    async with run_server(transport_dir) as server:
        client = await RawClient.connect(server.address)
        try:
            await client.send(get("/t/stream"))
            status, headers, body = await client.response()
            assert status == 200 and headers["transfer-encoding"] == "chunked" and body == b"part 0;part 1;part 2;"
            writes = counted_connections[-1].stream.writes
            assert len(writes) == 4, writes  # head with part 0, part 1, part 2, the last chunk
            assert writes[0].endswith(b"\r\n\r\n7\r\npart 0;\r\n") and writes[-1] == b"0\r\n\r\n"
        finally:
            await client.aclose()


# ################################################################################################
# HTTP as before


async def test_keep_alive_and_pipelined_requests_are_answered_in_order(transport_dir):
    async with run_server(transport_dir) as server:
        client = await RawClient.connect(server.address)
        try:
            bodies = [b"one", b"", b"three" * 50]
            await client.send(get("/t/hello") + b"".join(post("/t/echo", body) for body in bodies) + get("/t/hello"))
            status, _, reply = await client.response()
            assert (status, reply) == (200, b"hello")
            for body in bodies:
                status, _, reply = await client.response()
                assert status == 200 and json.loads(reply) == digest(body)
            status, headers, reply = await client.response()
            assert (status, reply) == (200, b"hello") and "connection" not in headers
            for _ in range(20):  # the same connection goes on
                await client.send(get("/t/hello"))
                assert (await client.response())[2] == b"hello"
        finally:
            await client.aclose()


async def test_a_chunked_request_body_trickled_byte_by_byte_arrives_whole(transport_dir):
    body = bytes(range(200))
    async with run_server(transport_dir) as server:
        client = await RawClient.connect(server.address)
        try:
            # chunked, one chunk per few bytes, each chunk sent alone
            await client.send(get("/t/echo", b"transfer-encoding: chunked\r\n", method=b"POST"))
            for start in range(0, len(body), 7):
                chunk = body[start:start + 7]
                await client.send(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                await trio.sleep(0.001)
            await client.send(b"0\r\n\r\n")
            status, _, reply = await client.response()
            assert status == 200 and json.loads(reply) == digest(body)
            # a slow client: the whole request, head included, one byte at a time
            for byte in post("/t/echo", body[:40]):
                await client.send(bytes([byte]))
                await trio.sleep(0.002)
            status, _, reply = await client.response()
            assert status == 200 and json.loads(reply) == digest(body[:40])
        finally:
            await client.aclose()


async def test_100_continue_comes_before_the_body_is_sent(transport_dir):
    async with run_server(transport_dir) as server:
        client = await RawClient.connect(server.address)
        try:
            await client.send(get("/t/echo", b"content-length: 5\r\n", b"expect: 100-continue\r\n", method=b"POST"))
            status, _, _ = await client.response()
            assert status == 100
            await client.send(b"12345")
            status, _, reply = await client.response()
            assert status == 200 and json.loads(reply) == digest(b"12345")
        finally:
            await client.aclose()


async def test_head_204_and_304_have_no_body_and_the_connection_goes_on(transport_dir):
    async with run_server(transport_dir) as server:
        client = await RawClient.connect(server.address)
        try:
            await client.send(get("/t/hello", method=b"HEAD"))
            status, headers, _ = await client.response(head=True)
            assert status == 200 and headers["content-length"] == "5"
            for path, expected in (("/t/204", 204), ("/t/304", 304)):
                await client.send(get(path))
                status, headers, _ = await client.response()
                assert status == expected and "transfer-encoding" not in headers
            # nothing stray came after any of them: the next response parses from its first byte
            await client.send(get("/t/hello"))
            status, _, reply = await client.response()
            assert (status, reply) == (200, b"hello") and client.buffer == b""
        finally:
            await client.aclose()


async def test_an_idle_connection_is_closed_at_keep_alive_timeout_and_a_busy_one_is_not(transport_dir):
    async with run_server(transport_dir) as server:
        client = await RawClient.connect(server.address)
        try:
            # a request longer than the keep-alive time is not cut off
            await client.send(get("/t/slow?1.5"))
            started = time.monotonic()
            status, _, body = await client.response()
            assert (status, body) == (200, b"slow") and time.monotonic() - started >= 1.4
            # idle again: each request moves the deadline on
            for _ in range(3):
                await trio.sleep(KEEP_ALIVE / 2)
                await client.send(get("/t/hello"))
                assert (await client.response())[2] == b"hello"
            idle_since = time.monotonic()
            assert await client.closed_by_server(within=KEEP_ALIVE + 3)
            assert time.monotonic() - idle_since >= KEEP_ALIVE * 0.9
        finally:
            await client.aclose()
        # a connection that never sends anything is closed too
        silent = await RawClient.connect(server.address)
        try:
            assert await silent.closed_by_server(within=KEEP_ALIVE + 3)
        finally:
            await silent.aclose()


async def test_a_graceful_stop_finishes_the_request_in_flight_and_closes_idle_connections(transport_dir):
    async with run_server(transport_dir) as server:
        busy = await RawClient.connect(server.address)
        idle = await RawClient.connect(server.address)
        try:
            await idle.send(get("/t/hello"))
            assert (await idle.response())[2] == b"hello"
            await busy.send(get("/t/slow?1"))
            await trio.sleep(0.3)  # the request is in the application
            stop_asked = time.monotonic()
            server.request_shutdown()
            assert await idle.closed_by_server(within=1)  # idle: closed at once, not at keep-alive time
            status, headers, body = await busy.response()
            assert (status, body) == (200, b"slow"), body
            assert time.monotonic() - stop_asked < 3
            assert await busy.closed_by_server(within=2)  # and then closed, not kept alive
        finally:
            await busy.aclose()
            await idle.aclose()


async def test_a_body_over_max_body_size_is_refused_with_413(transport_dir):
    async with run_server(transport_dir) as server:
        client = await RawClient.connect(server.address)
        try:
            await client.send(post("/size", b"x" * (MAX_BODY - 1)))
            status, _, reply = await client.response()
            assert status == 200 and json.loads(reply) == {"size": MAX_BODY - 1}
            await client.send(post("/size", b"x" * (MAX_BODY + 1)))
            status, _, reply = await client.response()
            assert status == 413 and b"over 2000 bytes" in reply, reply
        finally:
            await client.aclose()
        client = await RawClient.connect(server.address)  # chunked: no length declared up front
        try:
            # sent in one write, so that the server has read it all when it answers and closes
            chunks = (b"%x\r\n" % 1000 + b"y" * 1000 + b"\r\n") * 3 + b"0\r\n\r\n"
            await client.send(get("/size", b"transfer-encoding: chunked\r\n", method=b"POST") + chunks)
            status, _, reply = await client.response()
            assert status == 413, reply
        finally:
            await client.aclose()


async def test_a_websocket_upgrade_and_echo_through_the_transport(transport_dir):
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Message, Request, TextMessage

    async with run_server(transport_dir) as server:
        client = await RawClient.connect(server.address)
        ws = WSConnection(ConnectionType.CLIENT)

        async def events():
            while True:
                for event in ws.events():
                    return event
                ws.receive_data(await client.stream.receive_some(65536))
        try:
            await client.send(ws.send(Request(host="localhost", target="/t/ws")))
            assert isinstance(await events(), AcceptConnection)
            for text in ("one", "two" * 1000):
                await client.send(ws.send(Message(data=text)))
                event = await events()
                assert isinstance(event, TextMessage) and event.data == "echo " + text
            await client.send(ws.send(CloseConnection(code=1000)))
            assert isinstance(await events(), CloseConnection)
        finally:
            await client.aclose()


# ################################################################################################
# The pieces


def test_another_hypercorn_version_is_refused_saying_what_to_install():
    from zato.server.startup_callable import StartupError

    http_transport.check_hypercorn_version("0.18.0")
    http_transport.check_hypercorn_version("0.18.7")
    for version in ("0.19.0", "0.17.3", "1.0.0"):
        with pytest.raises(http_transport.UnsupportedHypercornError) as info:
            http_transport.check_hypercorn_version(version)
        assert f"hypercorn {version} is installed" in str(info.value)
        assert "hypercorn>=0.18,<0.19" in str(info.value)
        assert isinstance(info.value, StartupError)  # the server stops saying so, without a traceback


def test_install_is_idempotent():
    http_transport.install()
    classes = (http_transport.ZatoTCPServer, http_transport.ZatoH11Protocol)
    http_transport.install()
    assert (http_transport.ZatoTCPServer, http_transport.ZatoH11Protocol) == classes and http_transport.installed()


async def test_app_events_wake_the_receiver_hold_back_a_full_queue_and_survive_cancellation():
    events = http_transport.AppEvents(max_size=2)
    received = []

    async def receive_three():
        for _ in range(3):
            received.append(await events.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_three)
        await trio.testing.wait_all_tasks_blocked()
        await events.put(1)  # wakes the waiting receiver
        await trio.testing.wait_all_tasks_blocked()
        assert received == [1]
        await events.put(2)
        await events.put(3)
    assert received == [1, 2, 3]

    # full: a put waits until the application takes one
    await events.put("a")
    await events.put("b")
    with trio.move_on_after(0.05) as scope:
        await events.put("c")
    assert scope.cancelled_caught and events.statistics()["events"] == 2
    async with trio.open_nursery() as nursery:
        nursery.start_soon(events.put, "c")
        await trio.testing.wait_all_tasks_blocked()
        assert events.statistics()["putters_waiting"] == 1
        assert await events.receive() == "a"
    assert [await events.receive(), await events.receive()] == ["b", "c"]

    # a receiver cancelled while waiting leaves no trace: the next one gets the event
    with trio.move_on_after(0.01):
        await events.receive()
    assert not events.statistics()["receiver_waiting"]
    await events.put("d")
    assert await events.receive() == "d"


async def test_the_send_lock_takes_no_step_when_free_and_passes_on_in_order():
    lock = http_transport.SendLock()
    order = []

    async def writer(name):
        async with lock:
            order.append(name)
            await trio.sleep(0.01)

    async with lock:  # free: taken without a checkpoint, so cancellation cannot hit here
        with trio.CancelScope() as scope:
            scope.cancel()
            async with lock.__class__():  # another free lock, inside a cancelled scope: no Cancelled
                pass
        assert lock.locked()
    assert not lock.locked()
    async with trio.open_nursery() as nursery:
        for name in "abc":
            nursery.start_soon(writer, name)
            await trio.testing.wait_all_tasks_blocked()
    assert order == ["a", "b", "c"] and not lock.locked()
