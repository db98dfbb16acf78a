""" HTTP as a Zato user meets it (issue 18): a REST channel's body is parsed as JSON only when
the service reads it (the Dropbox article's `curl --data-binary` to a service that reads
`self.request.raw_request`), a body that is not JSON gets a 400 saying where and why, status
lines carry reason phrases, replies carry a configurable `Server` header, a WebSocket upgrade
to a path with no WebSocket channel is refused with a reason and logged, and a wrong admin
password is logged and slowed down. Real servers on port 0; raw sockets where the bytes of the
status line matter. """

from __future__ import annotations

import hashlib
import json
import logging
import time

import httpx
import pytest
import trio

from zato.config import ConfigError
from zato.odb import ODB, sqlite_url
from zato.testing import admin_auth, create_test_server_dir, run_server, set_config_value

SERVICES = '''
import hashlib
from zato.server.service import Int, Service


class RawUpload(Service):
    """ As the Dropbox article's REST channel service: reads only the raw request. """
    name = "compat.raw-upload"

    def handle(self):
        raw = self.request.raw_request
        data = raw if isinstance(raw, bytes) else raw.encode("utf-8")
        self.response.payload = {"type": type(raw).__name__, "size": len(data),
                                 "sha256": hashlib.sha256(data).hexdigest(),
                                 "file_name": self.request.http.params.get("file_name")}


class ReadsPayload(Service):
    name = "compat.reads-payload"

    def handle(self):
        self.response.payload = {"got": self.request.payload}


class ReadsInput(Service):
    name = "compat.reads-input"

    async def handle(self):
        self.response.payload = {"got": dict(self.request.input)}


class WithSimpleIO(Service):
    name = "compat.simpleio"

    class SimpleIO:
        input_required = (Int("count"),)

    def handle(self):
        self.response.payload = {"count": self.request.input.count}


class OutputOnly(Service):
    """ SimpleIO with output only: nothing to read from the body, so it is not parsed. """
    name = "compat.output-only"

    class SimpleIO:
        output_required = (Int("size"),)

    def handle(self):
        self.response.payload = {"size": len(self.request.raw_request)}
'''

CHANNELS = {  # url_path: (service, data_format); json is the default data format
    "/upload": ("compat.raw-upload", None),
    "/payload": ("compat.reads-payload", None),
    "/input": ("compat.reads-input", None),
    "/sio": ("compat.simpleio", None),
    "/output-only": ("compat.output-only", None),
}


def prepare(server_dir) -> None:
    (server_dir / "pickup" / "compat.py").write_text(SERVICES, "utf-8")
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    try:
        for path, (service, data_format) in CHANNELS.items():
            definition = {"url_path": path, "service": service}
            if data_format:
                definition["data_format"] = data_format
            odb.put_object("channel_rest", "channel" + path.replace("/", "."), definition)
    finally:
        odb.close()


@pytest.fixture
def compat_dir(server_dir):
    prepare(server_dir)
    return server_dir


async def raw_exchange(address: str, request: bytes) -> bytes:
    """ Sends `request` byte for byte and returns all the server answers until it closes the
    connection (or 5 s pass, for an answer that keeps it open). """
    host, port = address.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        received = b""
        with trio.move_on_after(5):
            while chunk := await stream.receive_some():
                received += chunk
                if b"\r\n\r\n" in received and _complete(received):
                    break
    return received


def _complete(received: bytes) -> bool:
    head, _, body = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def parse_reply(received: bytes) -> tuple[bytes, list[tuple[str, str]], bytes]:
    """ (status line, headers as (lower-case name, value), body) """
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = []
    for line in lines:
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return status_line, headers, body


def get(path: str, *extra: bytes) -> bytes:
    """ A GET; with `extra` headers instead of `connection: close` (a WebSocket upgrade). """
    return b"GET " + path.encode() + b" HTTP/1.1\r\nhost: localhost\r\n" + b"".join(extra or (b"connection: close\r\n",)) + b"\r\n"


WEBSOCKET_UPGRADE = (b"connection: Upgrade\r\n", b"upgrade: websocket\r\n", b"sec-websocket-version: 13\r\n",
                     b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n")


# ################################################################################################
# The body is parsed when the service asks for it


BINARY = bytes(range(256)) * 16 + b"\xff\xfe\x00"  # not UTF-8, not JSON


async def test_a_json_channel_gives_any_body_to_a_service_that_reads_only_raw_request(compat_dir):
    async with run_server(compat_dir) as server, httpx.AsyncClient(base_url=server.address, timeout=30) as client:
        # what `curl -XPOST --data-binary @file` sends: its own form content type, the file's bytes
        for body, kind in ((BINARY, "bytes"), ("Zażółć, not JSON {".encode("utf-8"), "str"), (b"", "str")):
            reply = await client.post("/upload?file_name=my-file.bin", content=body,
                                      headers={"content-type": "application/x-www-form-urlencoded"})
            assert reply.status_code == 200, reply.text
            assert reply.json() == {"type": kind, "size": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                                    "file_name": "my-file.bin"}
        # SimpleIO with no input reads nothing from the body either
        reply = await client.post("/output-only", content=b"{not json")
        assert reply.status_code == 200 and reply.json() == {"size": 9}, reply.text


@pytest.mark.parametrize("path", ["/payload", "/input", "/sio"])
async def test_a_body_that_is_not_json_is_a_400_saying_where_and_the_data_format(compat_dir, path):
    async with run_server(compat_dir) as server, httpx.AsyncClient(base_url=server.address, timeout=30) as client:
        reply = await client.post(path, content=b'{"count": 3,\n "name": oops}')
        assert reply.status_code == 400, reply.text
        body = reply.json()
        assert body["result"] == "Error" and body["cid"] == reply.headers["x-zato-cid"]
        details = body["details"]
        assert "not valid JSON" in details and "line 2 column 10" in details, details
        assert "channel" + path.replace("/", ".") in details and "data_format json" in details, details
        assert "data_format to text" in details, details  # what to do

        reply = await client.post(path, content=BINARY)
        assert reply.status_code == 400 and "not valid JSON" in reply.json()["details"], reply.text

        # JSON is still read as before
        reply = await client.post(path, json={"count": 3})
        assert reply.status_code == 200, reply.text
        assert reply.json() == ({"count": 3} if path == "/sio" else {"got": {"count": 3}})


async def test_the_payload_is_parsed_once_and_can_be_replaced_by_the_service():
    from zato.server.http import HTTPError
    from zato.server.service import DeferredPayload, Request

    calls = []

    def parse(body, channel):
        calls.append(channel)
        return json.loads(body)

    request = Request(DeferredPayload(b'{"a": 1}', parse, "ch"), b'{"a": 1}')
    assert calls == [] and request.raw_request == b'{"a": 1}'
    assert request.input == {"a": 1} and request.payload == {"a": 1} and request.payload is request.payload
    assert calls == ["ch"]
    request.payload = "replaced"
    assert request.payload == "replaced"

    def refuse(body, channel):
        calls.append(channel)
        raise HTTPError(400, "not JSON")

    request = Request(DeferredPayload(b"x", refuse, "other"))
    assert request.raw_request == b"x"  # the body, when the channel gives no raw request of its own
    for _ in range(2):
        with pytest.raises(HTTPError):
            request.payload
    assert calls == ["ch", "other"]  # the error is kept, not parsed again


# ################################################################################################
# Status lines and the Server header


async def test_status_lines_carry_reason_phrases_and_replies_the_zato_server_header(compat_dir):
    async with run_server(compat_dir) as server:
        for request, status_line in (
                (get("/zato/ping"), b"HTTP/1.1 200 OK"),
                (get("/no/such/path"), b"HTTP/1.1 404 Not Found"),
                (b"DELETE /zato/ping HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", b"HTTP/1.1 405 Method Not Allowed"),
                (b"POST /payload HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\n{x}",
                 b"HTTP/1.1 400 Bad Request"),
                (get("/zato/api/objects"), b"HTTP/1.1 401 Unauthorized"),
                # not HTTP at all: hypercorn's own answer, with our reason phrase and header too
                (b"NOT HTTP\r\n\r\n", b"HTTP/1.1 400 Bad Request")):
            status, headers, _ = parse_reply(await raw_exchange(server.address, request))
            assert status == status_line, (request, status)
            assert [value for name, value in headers if name == "server"] == ["Zato"], (request, headers)

        # a mounted-at-run-time WebSocket refusal goes through the same protocol
        status, headers, _ = parse_reply(await raw_exchange(server.address, get("/ws", *WEBSOCKET_UPGRADE)))
        assert status == b"HTTP/1.1 404 Not Found" and ("server", "Zato") in headers


@pytest.mark.parametrize("value, expected", [("ACME ESB/1.0 (Zato compatible)", ["ACME ESB/1.0 (Zato compatible)"]),
                                             ('""', [])])
async def test_the_server_header_is_set_in_server_conf(server_dir, value, expected):
    set_config_value(server_dir, "http", "server_header", value)
    async with run_server(server_dir) as server:
        status, headers, _ = parse_reply(await raw_exchange(server.address, get("/zato/ping")))
        assert status == b"HTTP/1.1 200 OK"
        assert [value for name, value in headers if name == "server"] == expected, headers


async def test_a_server_header_that_cannot_be_sent_stops_the_start_naming_the_key(server_dir):
    set_config_value(server_dir, "http", "server_header", "Zażółć")
    with pytest.raises(ConfigError) as info:
        async with run_server(server_dir):
            pass
    message = str(info.value)
    assert "server.conf" in message and "[http]" in message and "server_header" in message, message
    assert "printable ASCII" in message, message


# ################################################################################################
# WebSocket upgrades that no channel takes


async def test_a_websocket_upgrade_to_a_path_with_no_websocket_channel_is_refused_and_logged(compat_dir, caplog):
    caplog.set_level(logging.INFO)
    async with run_server(compat_dir) as server:
        for path in ("/no-such-channel", "/payload"):  # nothing there; a REST channel's path
            status, headers, body = parse_reply(await raw_exchange(server.address, get(path, *WEBSOCKET_UPGRADE)))
            assert status == b"HTTP/1.1 404 Not Found", status
            reply = json.loads(body)
            cid = dict(headers)["x-zato-cid"]
            assert reply["cid"] == cid and f"no WebSocket endpoint at {path}: no WebSocket channel" in reply["details"]
            lines = [r.getMessage() for r in caplog.records if f"cid={cid}" in r.getMessage()]
            assert len(lines) == 1 and path in lines[0] and "refused" in lines[0], lines


async def test_without_the_websocket_plugin_the_refusal_names_the_plugin_to_install(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    server_dir = create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 3}, plugins={"wsx": False})
    async with run_server(server_dir) as server:
        assert not any(info.name == "wsx" and info.loaded for info in server.plugins.plugins)
        status, headers, body = parse_reply(await raw_exchange(server.address, get("/chat", *WEBSOCKET_UPGRADE)))
    assert status == b"HTTP/1.1 404 Not Found", status
    details = json.loads(body)["details"]
    assert "no WebSocket endpoint at /chat: no WebSocket channel" in details, details
    assert "zato-plugin-wsx" in details and "[deploy_internal] zato_plugin_wsx = True" in details, details
    cid = dict(headers)["x-zato-cid"]
    lines = [r for r in caplog.records if f"cid={cid}" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING and "/chat" in lines[0].getMessage()
    assert "zato-plugin-wsx" in lines[0].getMessage()


# ################################################################################################
# Wrong admin passwords


async def test_a_wrong_admin_password_is_logged_with_user_address_and_cid_and_repeats_are_slowed(server_dir, caplog):
    from zato.passwords import LoginThrottle
    caplog.set_level(logging.INFO)
    throttle = LoginThrottle()  # the server's settings
    user = admin_auth()[0]
    async with run_server(server_dir) as server:
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.9")
        async with httpx.AsyncClient(base_url=server.address, transport=transport, timeout=30) as client:
            took, cids = [], []
            for attempt in range(throttle.free_failures + 2):
                started = time.perf_counter()
                reply = await client.get("/zato/api/objects", auth=(user, f"wrong-{attempt}"))
                took.append(time.perf_counter() - started)
                assert reply.status_code == 401
                cids.append(reply.json()["cid"])
            reply = await client.get("/zato/api/objects", auth=("no-such-admin", "x"))
            assert reply.status_code == 401
            unknown_cid = reply.json()["cid"]
    for cid in cids:
        lines = [r.getMessage() for r in caplog.records if f"cid={cid}" in r.getMessage() and "refused" in
                 r.getMessage()]
        assert len(lines) == 1, (cid, lines)
        assert f"wrong password for user {user!r} from 127.0.0.9" in lines[0], lines[0]
        assert "wrong-" not in lines[0]  # never the password
    lines = [r.getMessage() for r in caplog.records if f"cid={unknown_cid}" in r.getMessage()]
    assert any("unknown user 'no-such-admin' from 127.0.0.9" in line for line in lines), lines
    # the attempts after the free ones waited first
    assert took[throttle.free_failures] >= throttle.delay_after(throttle.free_failures) * 0.9, took
    assert took[throttle.free_failures + 1] >= throttle.delay_after(throttle.free_failures + 1) * 0.9, took
