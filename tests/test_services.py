""" Services through REST channels: sync and async handle, handle_<METHOD>, before/after_handle,
the request and response API, SimpleIO over HTTP, invoking other services, timeouts. """

from __future__ import annotations

import textwrap
import time

import httpx
import pytest
import trio

from zato.odb import ODB, sqlite_url
from zato.testing import admin_auth, run_server

SERVICES = '''
import time
import trio
from zato.server.service import Int, Service, Text


class SyncEcho(Service):
    name = "t.sync-echo"

    def handle(self):
        self.response.payload = {
            "payload": self.request.payload, "raw": self.request.raw_request, "method": self.request.http.method,
            "params": dict(self.request.http.params), "header": self.request.http.headers.get("x-test"),
            "cid": self.cid, "logger": self.logger.name, "config": dict(self.config),
            "channel": [self.channel.type, self.channel.name],
        }


class AsyncEcho(Service):
    name = "t.async-echo"

    async def handle(self):
        self.response.payload = {"payload": self.request.payload, "method": self.request.http.method,
                                 "params": dict(self.request.http.params), "cid": self.cid}


class Verbs(Service):
    name = "t.verbs"

    def handle_GET(self):
        self.response.payload = {"via": "handle_GET"}

    async def handle_POST(self):
        self.response.payload = {"via": "handle_POST"}

    def handle(self):
        self.response.payload = {"via": "handle"}


class Hooks(Service):
    name = "t.hooks"

    def before_handle(self):
        self.steps = ["before"]

    def handle(self):
        self.steps.append("handle")

    def after_handle(self):
        self.steps.append("after")
        self.response.payload = self.steps


class AsyncHooks(Service):
    name = "t.async-hooks"

    async def before_handle(self):
        self.steps = ["before"]

    async def handle(self):
        self.steps.append("handle")

    def after_handle(self):
        self.steps.append("after")
        self.response.payload = self.steps


class Shapes(Service):
    name = "t.shapes"

    def handle(self):
        kind = self.request.http.params.get("kind")
        if kind == "list":
            self.response.payload = [1, 2]
        elif kind == "text":
            self.response.payload = "plain text"
        elif kind == "bytes":
            self.response.payload = b"\\x00\\x01"
        else:
            self.response.payload = {"k": "v"}
            self.response.status_code = 201
            self.response.headers["X-Custom"] = "yes"
            self.response.content_type = "application/vnd.test+json"


class Typed(Service):
    name = "t.typed"

    class SimpleIO:
        input_required = "user_id", Text("name")
        input_optional = Int("limit", default=10),
        output_required = "user_id", "name", Int("limit")

    def handle(self):
        self.response.payload.user_id = self.request.input.user_id
        self.response.payload.name = self.request.input.name
        self.response.payload.limit = self.request.input.limit
        self.response.payload.secret = "filtered out"


class BadOutput(Service):
    name = "t.bad-output"

    class SimpleIO:
        output_required = ("needed",)

    def handle(self):
        self.response.payload = {"other": 1}


class CallsOthersSync(Service):
    name = "t.calls-sync"

    def handle(self):
        first = self.invoke("t.async-echo", {"from": "sync"})
        second = self.invoke("t.sync-echo", {"from": "sync"})
        try:
            self.invoke("t.raises", {})
        except ValueError as exc:
            error = str(exc)
        self.response.payload = {"async": first["payload"], "sync": second["payload"], "error": error,
                                 "same_cid": first["cid"] == self.cid, "channel": second["channel"][0]}


class CallsOthersAsync(Service):
    name = "t.calls-async"

    async def handle(self):
        first = await self.invoke("t.sync-echo", {"from": "async"})
        try:
            await self.invoke("t.raises", {})
        except ValueError as exc:
            error = str(exc)
        self.response.payload = {"sync": first["payload"], "error": error}


class Raises(Service):
    name = "t.raises"

    def handle(self):
        raise ValueError("raised on purpose")


class SlowAsync(Service):
    name = "t.slow-async"

    async def handle(self):
        await trio.sleep(5)


class SlowSync(Service):
    name = "t.slow-sync"

    def handle(self):
        time.sleep(1)
        self.response.payload = {"slept": 1}


class RaisesBadRequest(Service):
    name = "t.bad-request"

    def handle(self):
        from zato.common.exception import BadRequest
        raise BadRequest(self.cid, "customer_id is unknown")


class OwnCid(Service):
    name = "t.own-cid"

    def handle(self):
        self.response.payload = {"cid": self.invoke("t.async-echo", {}, cid="my-own-cid")["cid"]}


class DerivedName(Service):
    def handle(self):
        self.response.payload = {"name": self.name}
'''

CHANNELS = {
    "sync-echo": {"url_path": "/t/sync/{item}", "service": "t.sync-echo"},
    "async-echo": {"url_path": "/t/async/{item}", "service": "t.async-echo"},
    "text-echo": {"url_path": "/t/text", "service": "t.sync-echo", "data_format": "text"},
    "form-echo": {"url_path": "/t/form", "service": "t.sync-echo", "data_format": "form"},
    "verbs": {"url_path": "/t/verbs", "service": "t.verbs"},
    "hooks": {"url_path": "/t/hooks", "service": "t.hooks"},
    "async-hooks": {"url_path": "/t/async-hooks", "service": "t.async-hooks"},
    "shapes": {"url_path": "/t/shapes", "service": "t.shapes"},
    "typed": {"url_path": "/t/typed/{user_id}", "service": "t.typed"},
    "bad-output": {"url_path": "/t/bad-output", "service": "t.bad-output"},
    "calls-sync": {"url_path": "/t/calls-sync", "service": "t.calls-sync"},
    "calls-async": {"url_path": "/t/calls-async", "service": "t.calls-async"},
    "slow-async": {"url_path": "/t/slow-async", "service": "t.slow-async", "timeout": 0.3},
    "slow-sync": {"url_path": "/t/slow-sync", "service": "t.slow-sync"},
    "derived": {"url_path": "/t/derived", "service": "t_services.derived-name"},
    "post-only": {"url_path": "/t/post-only", "service": "t.sync-echo", "methods": ["POST"]},
    "bad-request": {"url_path": "/t/bad-request", "service": "t.bad-request"},
    "own-cid": {"url_path": "/t/own-cid", "service": "t.own-cid"},
}


@pytest.fixture
async def server(server_dir):
    (server_dir / "pickup" / "t_services.py").write_text(textwrap.dedent(SERVICES))
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    for name, channel in CHANNELS.items():
        odb.put_object("channel_rest", name, channel)
    odb.close()
    async with run_server(server_dir) as server:
        yield server


@pytest.fixture
async def client(server):
    async with httpx.AsyncClient(base_url=server.address, timeout=10) as client:
        yield client


async def test_sync_service_sees_the_whole_request(client):
    reply = await client.post("/t/sync/42?q=1", json={"a": 1}, headers={"X-Test": "yes"})
    data = reply.json()
    assert data["payload"] == {"a": 1} and data["raw"] == '{"a":1}' or data["raw"] == '{"a": 1}'
    assert data["method"] == "POST" and data["params"] == {"q": "1", "item": "42"} and data["header"] == "yes"
    assert data["cid"] == reply.headers["x-zato-cid"]
    assert data["logger"] == "zato.service.t.sync-echo" and data["config"]["user"]["demo"] == {"greeting": "Hello"}
    assert data["channel"] == ["http-soap", "sync-echo"]  # Zato's self.channel: a REST channel is http-soap


async def test_async_service(client):
    reply = await client.put("/t/async/7", json=[1, 2])
    assert reply.json() == {"payload": [1, 2], "method": "PUT", "params": {"item": "7"},
                            "cid": reply.headers["x-zato-cid"]}


async def test_text_and_form_data_formats(client):
    data = (await client.post("/t/text", content="not json at all")).json()
    assert data["payload"] == data["raw"] == "not json at all"
    data = (await client.post("/t/form", data={"a": "1", "b": "x y"})).json()
    assert data["payload"] == {"a": "1", "b": "x y"}


async def test_handle_per_method(client):
    assert (await client.get("/t/verbs")).json() == {"via": "handle_GET"}
    assert (await client.post("/t/verbs")).json() == {"via": "handle_POST"}
    assert (await client.put("/t/verbs")).json() == {"via": "handle"}


async def test_before_and_after_handle_sync_and_async(client):
    assert (await client.get("/t/hooks")).json() == ["before", "handle", "after"]
    assert (await client.get("/t/async-hooks")).json() == ["before", "handle", "after"]


async def test_response_shapes_status_headers_content_type(client):
    reply = await client.get("/t/shapes")
    assert reply.status_code == 201 and reply.headers["x-custom"] == "yes"
    assert reply.headers["content-type"] == "application/vnd.test+json" and reply.json() == {"k": "v"}
    assert (await client.get("/t/shapes?kind=list")).json() == [1, 2]
    reply = await client.get("/t/shapes?kind=text")
    assert reply.text == "plain text" and reply.headers["content-type"].startswith("text/plain")
    reply = await client.get("/t/shapes?kind=bytes")
    assert reply.content == b"\x00\x01" and reply.headers["content-type"] == "application/octet-stream"


async def test_simpleio_over_http(client):
    reply = await client.post("/t/typed/5", json={"name": "Ann"})
    assert reply.json() == {"user_id": 5, "name": "Ann", "limit": 10}
    reply = await client.get("/t/typed/5?name=Bob&limit=2")
    assert reply.json() == {"user_id": 5, "name": "Bob", "limit": 2}

    reply = await client.post("/t/typed/abc", json={"limit": "many"})
    assert reply.status_code == 400
    body = reply.json()
    assert body["result"] == "Error" and body["cid"] == reply.headers["x-zato-cid"]
    assert {e["name"] for e in body["errors"]} == {"user_id", "name", "limit"}
    assert "user_id: expected an integer" in body["details"]


async def test_output_not_matching_simpleio_is_a_500_and_logged(client, caplog):
    reply = await client.get("/t/bad-output")
    assert reply.status_code == 500 and "needed" not in reply.text
    assert "does not match its SimpleIO" in caplog.text and "needed: missing" in caplog.text


async def test_invoking_other_services_from_sync_and_async(client):
    data = (await client.get("/t/calls-sync")).json()
    assert data == {"async": {"from": "sync"}, "sync": {"from": "sync"}, "error": "raised on purpose", "same_cid": True,
                    "channel": "invoke"}  # self.channel.type of a service another service invoked
    data = (await client.get("/t/calls-async")).json()
    assert data == {"sync": {"from": "async"}, "error": "raised on purpose"}


async def test_channel_timeout_gives_504(client, caplog):
    started = time.monotonic()
    reply = await client.get("/t/slow-async")
    assert reply.status_code == 504 and time.monotonic() - started < 3
    assert "did not finish within 0.3 s" in caplog.text


async def test_sync_services_do_not_block_the_loop(client):
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.get, "/t/slow-sync")
        await trio.sleep(0.2)
        started = time.monotonic()
        assert (await client.get("/zato/ping")).status_code == 200
        assert time.monotonic() - started < 0.5


async def test_service_name_derived_from_module_and_class(client):
    assert (await client.get("/t/derived")).json() == {"name": "t_services.derived-name"}


async def test_zato_client_errors_reach_the_caller_with_their_status(client):
    reply = await client.get("/t/bad-request")
    assert reply.status_code == 400 and reply.json()["details"] == "Error 400: customer_id is unknown"


async def test_invoke_may_pass_its_own_cid(client):
    assert (await client.get("/t/own-cid")).json() == {"cid": "my-own-cid"}


async def test_method_not_allowed_on_the_channel(client):
    reply = await client.get("/t/post-only")
    assert reply.status_code == 405 and reply.headers["allow"] == "POST"


async def test_admin_invoke_maps_simpleio_errors_too(client):
    reply = await client.post("/zato/api/invoke/t.typed", json={"user_id": "x"}, auth=admin_auth())
    assert reply.status_code == 400 and {e["name"] for e in reply.json()["errors"]} == {"user_id", "name"}


async def test_server_invoke_with_a_timeout(server):
    with pytest.raises(trio.TooSlowError):
        await server.invoke("t.slow-async", {}, timeout=0.1)


async def test_duplicate_service_names_are_an_error_naming_both_files(server_dir, caplog):
    duplicate = "from zato.server.service import Service\nclass Other(Service):\n    name = 't.dup'\n"
    (server_dir / "pickup" / "a_first.py").write_text(duplicate)
    (server_dir / "pickup" / "b_second.py").write_text(duplicate)
    async with run_server(server_dir) as server:
        assert "t.dup" in server.services
    assert "service name 't.dup' is used twice" in caplog.text
    assert "a_first.py" in caplog.text and "b_second.py" in caplog.text


async def test_broken_user_module_at_start_is_logged_with_file_and_line(server_dir, caplog):
    (server_dir / "pickup" / "broken.py").write_text("x = 1\ndef nope(:\n")
    async with run_server(server_dir) as server:
        assert "demo.hello" in server.services
    assert "broken.py:2: syntax error" in caplog.text


WHO_AM_I = '''
from zato.server.service import Service

class WhoAmI(Service):
    name = "t.who-am-i"

    def handle(self):
        sec_def = self.wsgi_environ["zato.sec_def"]
        self.response.payload = {"user": self.request.http.user, "sec_def": sec_def.name, "type": sec_def.type,
                                 "method": self.wsgi_environ["REQUEST_METHOD"]}
'''


async def test_the_authenticated_caller_is_visible_to_the_service(server_dir):
    from zato.builtin.security import store_definition
    (server_dir / "pickup" / "who.py").write_text(WHO_AM_I)
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    store_definition(odb, "partner.sec", type="basic_auth", username="partner", password="pw-1")
    odb.put_object("channel_rest", "who", {"url_path": "/who", "service": "t.who-am-i", "security": "partner.sec"})
    odb.close()
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            reply = await client.get("/who", auth=("partner", "pw-1"))
    assert reply.json() == {"user": "partner", "sec_def": "partner.sec", "type": "basic_auth", "method": "GET"}
