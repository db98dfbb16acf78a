""" The HTTP face: /zato/ping, X-Zato-CID on every reply, Zato's JSON errors, the admin invoke
endpoint's authentication, REST channel routing. """

from __future__ import annotations

import textwrap

import httpx
import pytest

from zato.server.http import Router
from zato.testing import admin_auth, run_server, set_config_value

FAILING_SERVICE = '''
from zato.server.service import Service

class Fails(Service):
    name = "test.fails"
    def handle(self):
        raise ValueError("secret internal detail")
'''


def is_error_body(reply: httpx.Response, status: int) -> dict:
    assert reply.status_code == status
    body = reply.json()
    assert body["result"] == "Error" and body["cid"] == reply.headers["x-zato-cid"]
    assert len(body["cid"]) == 24
    return body


async def test_ping_answers_json_with_a_cid(server_dir):
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            first, second = await client.get("/zato/ping"), await client.get("/zato/ping")
    assert first.status_code == 200
    assert first.json()["zato_env"] == {"result": "ZATO_OK", "cid": first.headers["x-zato-cid"], "details": ""}
    assert first.json()["zato_ping_response"]["pong"] == "zato"
    assert first.headers["x-zato-cid"] != second.headers["x-zato-cid"]


async def test_listens_on_loopback_by_default(server_dir):
    async with run_server(server_dir) as server:
        assert server.address.startswith("http://127.0.0.1:")


async def test_demo_channel_and_error_replies(server_dir, caplog):
    (server_dir / "pickup" / "fails.py").write_text(textwrap.dedent(FAILING_SERVICE))
    from zato.odb import ODB, sqlite_url
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    odb.put_object("channel_rest", "fails", {"url_path": "/test/fails", "service": "test.fails", "methods": ["GET"]})
    odb.close()
    set_config_value(server_dir, "main", "max_body_size", "1000")
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            reply = await client.get("/demo/hello", params={"name": "Zato"})
            assert reply.json() == {"hello": "Zato"} and "x-zato-cid" in reply.headers

            assert is_error_body(await client.get("/no/such/path"), 404)["details"] == "Error 404 Not Found"
            reply = await client.delete("/demo/hello")
            is_error_body(reply, 405)
            assert reply.headers["allow"] == "GET, POST"
            # demo.hello reads no body: one that is not JSON is never parsed (a service that reads
            # it gets a 400 saying why: tests/test_http_compat.py)
            reply = await client.post("/demo/hello", content=b"{not json")
            assert reply.status_code == 200, reply.text
            is_error_body(await client.post("/demo/hello", content=b"x" * 1001), 413)

            reply = await client.get("/test/fails")
            body = is_error_body(reply, 500)
            assert "secret internal detail" not in reply.text and "Traceback" not in reply.text
    assert f"cid={body['cid']}" in caplog.text and "secret internal detail" in caplog.text  # the log has it


async def test_admin_invoke_requires_the_admin_credentials(server_dir):
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, headers={"content-type": "application/json"}) as client:
            for auth in (None, ("admin", "wrong"), ("other", admin_auth()[1])):
                reply = await client.post("/zato/api/invoke/zato.ping", auth=auth)
                is_error_body(reply, 401)
                assert reply.headers["www-authenticate"].startswith("Basic ")
            reply = await client.post("/zato/api/invoke/zato.ping", auth=admin_auth())
            assert reply.status_code == 200 and reply.json() == {"pong": "zato"}
            is_error_body(await client.post("/zato/api/invoke/no.such.service", auth=admin_auth()), 404)


async def test_admin_password_is_stored_hashed(server_dir):
    text = (server_dir / "config" / "server.conf").read_text()
    assert admin_auth()[1] not in text and "password_hash = scrypt$" in text


# ################################################################################################


async def _handler(request):
    return None


def test_router_static_segments_win_over_parameters():
    router = Router()
    router.add("/api/user/{id}", ("GET",), _handler, "by-id")
    router.add("/api/user/me", ("GET",), _handler, "me")
    router.add("/api/user/{id}/orders/{order}", ("GET",), _handler, "order")
    assert router.match("/api/user/me")[0].name == "me"
    assert router.match("/api/user/42") == (router.match("/api/user/42")[0], {"id": "42"})
    assert router.match("/api/user/42")[0].name == "by-id"
    route, params = router.match("/api/user/7/orders/9")
    assert route.name == "order" and params == {"id": "7", "order": "9"}
    assert router.match("/api/user")[0] is None
    assert router.match("/api/user/7/orders")[0] is None


def test_router_rejects_clashes():
    router = Router()
    router.add("/a/{x}", ("GET",), _handler)
    with pytest.raises(ValueError, match="already routed"):
        router.add("/a/{x}", ("GET",), _handler)
    with pytest.raises(ValueError, match="other parameter names"):
        router.add("/a/{y}", ("POST",), _handler)
    with pytest.raises(ValueError, match="must start with"):
        router.add("a", ("GET",), _handler)


def test_router_replace_swaps_the_whole_table():
    router = Router()
    router.add("/old", ("GET",), _handler)
    router.replace([("/new/{id}", ("GET",), _handler, "new")])
    assert router.match("/old")[0] is None and router.match("/new/1")[0].name == "new"
    with pytest.raises(ValueError):
        router.replace([("/x", ("GET",), _handler, "a"), ("/x", ("GET",), _handler, "b")])
    assert router.match("/new/1")[0].name == "new"  # a failed replace leaves the table as it was


def test_router_with_many_channels_matches_each():
    router = Router()
    for i in range(1000):
        router.add(f"/api/v{i % 7}/resource{i}/{{id}}", ("GET",), _handler, f"r{i}")
    for i in (0, 1, 499, 999):
        route, params = router.match(f"/api/v{i % 7}/resource{i}/abc")
        assert route.name == f"r{i}" and params == {"id": "abc"}


def test_router_parameters_may_hold_an_encoded_slash():
    router = Router()
    router.add("/objects/{type}/{name}", ("GET",), _handler, "object")
    router.add("/objects/{type}/{name}/secrets/{field}", ("PUT",), _handler, "secret")
    route, params = router.match("/objects/channel_rest//api/x", b"/objects/channel_rest/%2Fapi%2Fx")
    assert route.name == "object" and params == {"type": "channel_rest", "name": "/api/x"}
    route, params = router.match("/x", b"/objects/t/a%20b/secrets/password")
    assert route.name == "secret" and params == {"type": "t", "name": "a b", "field": "password"}
