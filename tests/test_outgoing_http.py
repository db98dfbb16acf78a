""" Plain HTTP outgoing connections against a real local HTTP server: calls, path and query
parameters, data formats, auth from outgoing security definitions, timeouts, a server that goes
away, sync and async services, and the shared conformance suite. """

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import textwrap

import httpx
import pytest
import trio

from core_test_helpers import handle_lifespan
from zato.odb import ODB, sqlite_url
from zato.server.outgoing import OutgoingError
from zato.testing import ServerProcess, admin_auth, create_test_server_dir, run_server
from zato.testing.conformance import OutgoingConnectionConformance


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def echo_app(scope, receive, send):
    """ Answers with what it got: method, path, query, headers, body; /slow sleeps first. """
    if scope["type"] == "lifespan":
        return await handle_lifespan(receive, send)
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"].startswith("/slow"):
        await trio.sleep(2)
    reply = json.dumps({"method": scope["method"], "path": scope["path"],
                        "query": scope["query_string"].decode(), "body": body.decode("latin-1"),
                        "headers": {k.decode(): v.decode() for k, v in scope["headers"]}}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": reply})


class HTTPPeer:
    """ A hypercorn server on a fixed port that can be stopped and started again. """

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.port = free_port()
        self.stopped: trio.Event | None = None
        self.done: trio.Event | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        from hypercorn.config import Config
        from hypercorn.trio import serve
        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.accesslog = None
        config.graceful_timeout = 0.1
        self.stopped, self.done = trio.Event(), trio.Event()

        async def run(task_status=trio.TASK_STATUS_IGNORED):
            try:
                await serve(echo_app, config, shutdown_trigger=self.stopped.wait, task_status=task_status)
            finally:
                self.done.set()
        await self.nursery.start(run)

    async def stop(self) -> None:
        self.stopped.set()
        await self.done.wait()

    # the conformance suite's Peer

    def definition(self, name: str) -> dict:
        return {"address": self.address, "url_path": "/v1/items/{item_id}", "timeout": 5}

    def secrets(self) -> dict:
        return {}

    def use(self, connection) -> None:
        reply = connection.conn.get("cid-1", {"item_id": 7, "q": "x"})
        assert reply.status_code == 200 and reply.data["path"].endswith("/items/7") and reply.data["query"] == "q=x"

    def edited(self, definition: dict) -> dict:
        return {**definition, "url_path": "/v2/items/{item_id}"}

    def check_edit(self, connection) -> None:
        assert connection.conn.get("cid-2", {"item_id": 1}).data["path"] == "/v2/items/1"

    def assert_closed(self, connection) -> None:
        assert connection._sync is None or connection._sync.is_closed
        assert connection._async is None or connection._async.is_closed

    def bad_definitions(self) -> list:
        return [({"url_path": "/x"}, "address"), ({"address": self.address, "timeout": "soon"}, "timeout"),
                ({"address": self.address, "tls_verify": "perhaps"}, "tls_verify"),
                ({"address": self.address, "security": "no-such-definition"}, "security")]


@pytest.fixture
async def peer(nursery):
    peer = HTTPPeer(nursery)
    await peer.start()
    yield peer
    if not peer.stopped.is_set():
        await peer.stop()


class TestPlainHTTPConformance(OutgoingConnectionConformance):
    connection_type = "plain_http"
    object_type = "outgoing_rest"


# ################################################################################################

SERVICES = '''
from zato.server.service import Service


class SyncCaller(Service):
    name = "t.http.sync"

    def handle(self):
        conn = self.out.plain_http["Peer"].conn
        params = self.request.payload
        got = conn.get(self.cid, {"item_id": params["item_id"], "q": "1"})
        posted = conn.post(self.cid, {"a": 1}, {"item_id": 2})
        text = self.outgoing.plain_http.get("Peer").conn.put(self.cid, "plain text", {"item_id": 3})
        self.response.payload = {"got": got.data, "posted": posted.data, "text": text.data,
                                 "status": got.status_code, "type": got.headers["content-type"]}


class AsyncCaller(Service):
    name = "t.http.async"

    async def handle(self):
        reply = await self.out.plain_http["Peer"].conn.delete(self.cid, {"item_id": 9})
        self.response.payload = reply.data


class Unknown(Service):
    name = "t.http.unknown"

    def handle(self):
        self.out.plain_http["No Such Connection"]
'''


def put_objects(server_dir, *objects):
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    for object_type, name, data in objects:
        odb.put_object(object_type, name, data)
    odb.close()


@pytest.fixture
async def calling_server(server_dir, peer):
    (server_dir / "pickup" / "callers.py").write_text(textwrap.dedent(SERVICES))
    put_objects(server_dir, ("outgoing_rest", "Peer", {"address": peer.address, "url_path": "/items/{item_id}",
                                                       "timeout": 1}))
    async with run_server(server_dir) as server:
        yield server


async def test_sync_service_calls_with_path_and_query_params_and_json_text_bodies(calling_server):
    result = await calling_server.invoke("t.http.sync", {"item_id": "a b"})
    assert result["got"]["path"] == "/items/a b" and result["got"]["query"] == "q=1"
    assert result["got"]["headers"]["x-zato-cid"]  # the caller's cid travels along
    assert result["posted"]["method"] == "POST" and json.loads(result["posted"]["body"]) == {"a": 1}
    assert result["posted"]["headers"]["content-type"] == "application/json"
    assert result["text"]["method"] == "PUT" and result["text"]["body"] == "plain text"
    assert result["status"] == 200 and result["type"] == "application/json"


async def test_async_service_awaits_the_same_connection(calling_server):
    result = await calling_server.invoke("t.http.async", {})
    assert result["method"] == "DELETE" and result["path"] == "/items/9"


async def test_unknown_connection_names_the_ones_that_exist(calling_server):
    with pytest.raises(LookupError, match=r"no outgoing connection 'No Such Connection' in out.plain_http; known: 'Peer'"):
        await calling_server.invoke("t.http.unknown", {})


async def test_timeout_and_a_server_that_went_away(calling_server, peer):
    conn = calling_server.outgoing.map("out.plain_http")["Peer"].conn
    with pytest.raises(OutgoingError, match=r"outgoing plain_http 'Peer': GET http://127.0.0.1:\d+/slow timed out after 1.0 s"):
        await trio.to_thread.run_sync(_get_slow, conn)
    await peer.stop()
    with pytest.raises(OutgoingError, match="cannot connect .* is the server at http://127.0.0.1:\\d+ running"):
        await trio.to_thread.run_sync(conn.get, "cid", {"item_id": 1})
    with pytest.raises(OutgoingError, match="cannot connect"):
        await conn.get("cid", {"item_id": 1})  # async: the same error
    with pytest.raises(OutgoingError, match="needs item_id in params"):
        await trio.to_thread.run_sync(conn.get, "cid", {})


def _get_slow(conn):
    conn.url_path = "/slow"
    try:
        return conn.get("cid")
    finally:
        conn.url_path = "/items/{item_id}"


async def test_auth_from_outgoing_security_definitions_and_env_address(server_dir, peer, monkeypatch):
    from zato.builtin.security import store_definition
    from zato.objects import SecretBox
    monkeypatch.setenv("ZATO_TEST_PEER", peer.address)
    box = SecretBox(server_dir / "config" / "secret.key")
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    store_definition(odb, "out.basic", box=box, type="basic_auth", username="me", password="pw", direction="outgoing")
    store_definition(odb, "out.key", box=box, type="apikey", header="X-Key", password="k-123", direction="outgoing")
    store_definition(odb, "in.only", type="basic_auth", username="u", password="p")
    odb.put_object("outgoing_rest", "basic", {"address": "$ZATO_TEST_PEER", "security": "out.basic"})
    odb.put_object("outgoing_rest", "key", {"address": "$ZATO_TEST_PEER", "security": "out.key"})
    odb.put_object("outgoing_rest", "wrong", {"address": "$ZATO_TEST_PEER", "security": "in.only"})
    odb.close()
    async with run_server(server_dir) as server:
        conns = server.outgoing.map("out.plain_http")
        headers = (await conns["basic"].conn.get("cid")).data["headers"]
        assert headers["authorization"] == "Basic " + base64.b64encode(b"me:pw").decode()
        headers = (await conns["key"].conn.get("cid")).data["headers"]
        assert headers["x-key"] == "k-123" and "authorization" not in headers
        assert "wrong" not in conns
        assert "inbound use" in server.outgoing_connections.errors[("plain_http", "wrong")]


def test_ping_connection_cli(tmp_path):
    base = create_test_server_dir(tmp_path / "server")
    port = free_port()
    put_objects(base, ("outgoing_rest", "nobody home", {"address": f"http://127.0.0.1:{port}"}))
    zato = [sys.executable, "-c", "import sys; from zato.cli import main; sys.exit(main())"]
    with ServerProcess(base):
        result = subprocess.run([*zato, "ping-connection", str(base), "plain_http", "nobody home"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and "did not answer" in result.stdout and "cannot connect" in result.stdout
        result = subprocess.run([*zato, "ping-connection", str(base), "plain_http", "nope"], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 1 and "no outgoing plain_http connection 'nope'" in result.stderr
        with socket.socket() as listener:  # something answers now (any HTTP status means reachable)
            listener.bind(("127.0.0.1", port))
            listener.listen()
            def answer():
                conn, _ = listener.accept()
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                conn.close()
            import threading
            threading.Thread(target=answer, daemon=True).start()
            result = subprocess.run([*zato, "ping-connection", str(base), "plain_http", "nobody home"],
                                    capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "answered in" in result.stdout
