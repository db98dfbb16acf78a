""" The admin API over every object type: CRUD, validation listing every bad field, secrets set
through their own call and never returned, $ENV fields, OpenAPI, and changes applied live. """

from __future__ import annotations

import json
import sys
from urllib.parse import quote

import httpx
import pytest
import trio

import all_hooks_plugin
from zato.cli.quickstart import DEMO_CHANNEL
from zato.odb import ODB
from zato.testing import admin_auth, run_server, set_config_value

API = "/zato/api/objects"


def obj_url(object_type: str, name: str = "") -> str:
    return f"{API}/{object_type}" + (f"/{quote(name, safe='')}" if name else "")


@pytest.fixture
async def api(plugin_site, server_dir, monkeypatch, database_url):
    """ A server with the all-hooks plugin, on SQLite and on PostgreSQL. """
    monkeypatch.setenv("ZATO_TEST_THING_SIZE", "42")
    module = all_hooks_plugin.install(plugin_site)
    if not database_url.startswith("sqlite"):
        set_config_value(server_dir, "odb", "url", database_url)
        odb = ODB(database_url)  # as quickstart does for SQLite
        odb.upgrade()
        odb.put_object("channel_rest", "demo.hello", DEMO_CHANNEL)
        odb.close()
    async with run_server(server_dir) as server:
        # admin writes need Content-Type: application/json, with or without a body
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=10,
                                     headers={"content-type": "application/json"}) as client:
            client.server = server
            client.plugin = sys.modules[module]
            yield client


async def test_every_call_needs_the_admin_credentials(api):
    for method, url in (("GET", API), ("GET", obj_url("channel_rest")), ("POST", obj_url("channel_rest")),
                        ("DELETE", obj_url("channel_rest", "demo.hello")), ("GET", "/zato/api/openapi.json"),
                        ("PUT", obj_url("allhooks_thing", "x") + "/secrets/token")):
        reply = await api.request(method, url, auth=("admin", "wrong"), json={})
        assert reply.status_code == 401, (method, url)


async def test_object_types_and_their_schemas_are_listed(api):
    types = {t["name"]: t for t in (await api.get(API)).json()}
    assert {"channel_rest", "security", "allhooks_thing"} <= set(types)
    fields = {f["name"]: f for f in types["allhooks_thing"]["fields"]}
    assert fields["token"]["secret"] and fields["security"]["references"] == "security"


async def test_a_new_rest_channel_answers_at_once_and_goes_when_deleted(api):
    name = "/api/hello"  # Zato-style names with slashes travel percent-encoded
    reply = await api.post(obj_url("channel_rest"), json={"name": name, "url_path": "/api/hello",
                                                           "service": "demo.hello", "methods": ["GET"]})
    assert reply.status_code == 201, reply.text
    created = reply.json()
    assert created["name"] == name and created["version"] == 1 and created["data_format"] == "json"
    assert (await api.get("/api/hello?name=live")).json() == {"hello": "live"}

    assert (await api.get(obj_url("channel_rest", name))).json()["url_path"] == "/api/hello"
    assert name in [c["name"] for c in (await api.get(obj_url("channel_rest"))).json()]

    reply = await api.delete(obj_url("channel_rest", name))
    assert reply.status_code == 204
    assert (await api.get("/api/hello")).status_code == 404
    assert (await api.get(obj_url("channel_rest", name))).status_code == 404


async def test_edits_apply_live_and_versions_guard_concurrent_edits(api):
    await api.post(obj_url("channel_rest"), json={"name": "edit-me", "url_path": "/v1/x", "service": "demo.hello"})
    reply = await api.put(obj_url("channel_rest", "edit-me"), json={"url_path": "/v2/x", "service": "demo.hello"})
    assert reply.status_code == 200 and reply.json()["version"] == 2
    assert (await api.get("/v1/x")).status_code == 404 and (await api.get("/v2/x")).status_code == 200

    reply = await api.patch(obj_url("channel_rest", "edit-me"), json={"methods": ["POST"]})
    assert reply.json()["url_path"] == "/v2/x" and reply.json()["methods"] == ["POST"]
    assert (await api.get("/v2/x")).status_code == 405

    stale = await api.patch(obj_url("channel_rest", "edit-me"), json={"is_active": False}, headers={"If-Match": "1"})
    assert stale.status_code == 409 and "version 3, not 1" in stale.json()["details"]
    reply = await api.patch(obj_url("channel_rest", "edit-me"), json={"is_active": False}, headers={"If-Match": "3"})
    assert reply.status_code == 200 and (await api.post("/v2/x")).status_code == 404  # inactive: gone

    reply = await api.put(obj_url("channel_rest", "edit-me"), json={"name": "renamed", "url_path": "/x",
                                                                     "service": "s"})
    assert reply.status_code == 400 and "renaming" in reply.json()["details"]


async def test_validation_errors_list_every_bad_field(api):
    reply = await api.post(obj_url("channel_rest"), json={"name": "bad", "servce": "x", "methods": 5,
                                                           "timeout": "soon"})
    assert reply.status_code == 400
    body = reply.json()
    errors = {e["field"]: e["error"] for e in body["errors"]}
    assert set(errors) == {"servce", "methods", "timeout", "url_path", "service"}
    assert "valid fields:" in errors["servce"] and "service" in errors["servce"]
    assert "expected a list" in errors["methods"] and "expected a number" in errors["timeout"]
    assert body["cid"] == reply.headers["x-zato-cid"]

    assert (await api.post(obj_url("no_such_type"), json={"name": "x"})).status_code == 404
    assert (await api.post(obj_url("channel_rest"), content=b"[1, 2]")).status_code == 400
    assert (await api.post(obj_url("channel_rest"), content=b"{nope")).status_code == 400
    dup = {"name": "demo.hello", "url_path": "/other", "service": "demo.hello"}
    assert (await api.post(obj_url("channel_rest"), json=dup)).status_code == 409


async def test_route_clash_is_refused_without_breaking_the_running_routes(api):
    reply = await api.post(obj_url("channel_rest"), json={"name": "clash", "url_path": "/demo/hello",
                                                           "service": "demo.hello", "methods": ["GET"]})
    assert reply.status_code == 409 and "GET /demo/hello is already routed" in reply.json()["details"]
    assert (await api.get(obj_url("channel_rest", "clash"))).status_code == 404  # nothing stored

    # written past the API (straight into the database), it is left out, logged, and nothing else breaks
    odb = ODB(api.server.odb.url)
    odb.put_object("channel_rest", "clash", {"url_path": "/demo/hello", "service": "demo.hello", "methods": ["GET"]})
    odb.close()
    assert (await api.post("/zato/api/config/reload", json={"types": ["channel_rest"]})).status_code == 200
    assert (await api.get("/demo/hello")).json() == {"hello": "world"}
    assert "clash" in api.server.channels["rest"].errors


async def test_secrets_are_set_by_their_own_call_stored_encrypted_and_never_returned(api, server_dir, caplog):
    thing = obj_url("allhooks_thing", "t1")
    reply = await api.post(obj_url("allhooks_thing"), json={"name": "t1", "token": "clear-text-secret"})
    assert reply.status_code == 400 and "its own call" in reply.json()["errors"][0]["error"]
    assert (await api.post(obj_url("allhooks_thing"), json={"name": "t1"})).status_code == 201
    assert (await api.get(thing)).json()["secrets_set"] == []

    assert (await api.put(thing + "/secrets/token", json={"value": "s3cr3t-value"})).status_code == 204
    shown = (await api.get(thing)).json()
    assert shown["secrets_set"] == ["token"] and "token" not in shown and "s3cr3t-value" not in json.dumps(shown)
    assert "s3cr3t-value" not in (await api.get(obj_url("allhooks_thing"))).text

    odb = ODB(api.server.odb.url)
    stored = odb.get_object("allhooks_thing", "t1")["token"]
    odb.close()
    assert stored.startswith("enc:v1:") and "s3cr3t" not in stored
    assert (server_dir / "config" / "secret.key").stat().st_mode & 0o777 == 0o600
    assert api.server.config_objects["allhooks_thing"]["t1"]["token"] == "s3cr3t-value"  # decrypted for runtimes
    assert "s3cr3t-value" not in caplog.text

    # an edit keeps the secret; a null value clears it
    await api.patch(thing, json={"label": "x"})
    assert api.server.config_objects["allhooks_thing"]["t1"]["token"] == "s3cr3t-value"
    assert (await api.put(thing + "/secrets/token", json={"value": None})).status_code == 204
    assert (await api.get(thing)).json()["secrets_set"] == []
    assert (await api.put(thing + "/secrets/label", json={"value": "x"})).status_code == 404
    assert (await api.put(thing + "/secrets/token", json={"secret": "x"})).status_code == 400


async def test_references_must_exist_and_protect_what_they_name(api):
    reply = await api.post(obj_url("allhooks_thing"), json={"name": "t2", "security": "nope"})
    assert reply.status_code == 400 and "security 'nope' does not exist" in reply.json()["errors"][0]["error"]
    assert (await api.post(obj_url("security"), json={"name": "sec1", "type": "basic_auth",
                                                       "username": "u"})).status_code == 201
    assert (await api.post(obj_url("allhooks_thing"), json={"name": "t2", "security": "sec1"})).status_code == 201
    reply = await api.delete(obj_url("security", "sec1"))
    assert reply.status_code == 409 and "allhooks_thing 't2'" in reply.json()["details"]


async def test_env_references_are_read_when_objects_load(api, monkeypatch, caplog):
    reply = await api.post(obj_url("allhooks_thing"), json={"name": "t3", "size": "$ZATO_TEST_THING_SIZE"})
    assert reply.status_code == 201 and reply.json()["size"] == "$ZATO_TEST_THING_SIZE"  # kept as written
    assert api.server.config_objects["allhooks_thing"]["t3"]["size"] == 42

    monkeypatch.delenv("ZATO_TEST_MISSING_VAR", raising=False)
    await api.post(obj_url("allhooks_thing"), json={"name": "t4", "label": "$ZATO_TEST_MISSING_VAR"})
    assert "t4" not in api.server.config_objects["allhooks_thing"]
    error = api.server.config_errors["allhooks_thing:t4"]
    assert "allhooks_thing 't4', field 'label'" in error and "ZATO_TEST_MISSING_VAR is not set" in error
    assert "ZATO_TEST_MISSING_VAR is not set" in caplog.text


async def test_config_objects_changed_hook_runs_after_a_change(api):
    await api.post(obj_url("allhooks_thing"), json={"name": "t5"})
    assert ("config_objects_changed", ("allhooks_thing",)) in api.plugin.EVENTS


async def test_openapi_document_is_valid_and_covers_every_type(api):
    from openapi_spec_validator import validate
    document = (await api.get("/zato/api/openapi.json")).json()
    validate(document)
    assert document["openapi"] == "3.1.0"
    for object_type in ("channel_rest", "security", "allhooks_thing"):
        assert f"/zato/api/objects/{object_type}" in document["paths"]
        assert object_type in document["components"]["schemas"]
    assert "token" not in document["components"]["schemas"]["allhooks_thing"]["properties"]
    assert "/zato/api/objects/allhooks_thing/{name}/secrets/{field}" in document["paths"]


async def test_no_failed_requests_while_a_channel_is_edited_under_load(api):
    await api.post(obj_url("channel_rest"), json={"name": "busy", "url_path": "/busy", "service": "demo.hello"})
    results = {"ok": 0, "failed": []}

    async def load(client: httpx.AsyncClient, stop: trio.Event) -> None:
        while not stop.is_set():
            reply = await client.get("/busy?name=x")
            if reply.status_code == 200:
                results["ok"] += 1
            else:
                results["failed"].append(reply.status_code)

    stop = trio.Event()
    async with httpx.AsyncClient(base_url=api.server.address, timeout=10) as load_client:
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(load, load_client, stop)
            for index in range(15):
                methods = ["GET", "POST"] if index % 2 else ["GET"]
                reply = await api.patch(obj_url("channel_rest", "busy"), json={"methods": methods})
                assert reply.status_code == 200
                await trio.sleep(0.02)
            stop.set()
    assert results["failed"] == [] and results["ok"] > 20


async def test_fields_with_choices_refuse_other_values(api):
    reply = await api.post(obj_url("channel_rest"), json={"name": "c", "url_path": "/c", "service": "s",
                                                           "data_format": "xml"})
    assert reply.status_code == 400
    assert reply.json()["errors"] == [{"field": "data_format", "error": "'xml' is not one of: json, text, form"}]
    schema = (await api.get("/zato/api/openapi.json")).json()["components"]["schemas"]["channel_rest_input"]
    assert schema["properties"]["data_format"]["anyOf"][0] == {"enum": ["json", "text", "form"]}


async def test_a_patch_is_checked_with_the_fields_it_leaves_as_a_put_would_be(api):
    job = {"name": "patched", "job_type": "cron_style", "service": "demo.hello", "cron_definition": "0 9 * * *"}
    assert (await api.post(obj_url("scheduler"), json=job)).status_code == 201
    # Each field of the patch is valid alone; the job it would leave is not (an interval_based job
    # without an interval), and a PUT of that job is refused, so the patch must be too.
    reply = await api.patch(obj_url("scheduler", "patched"), json={"job_type": "interval_based"})
    assert reply.status_code == 400, reply.text
    assert [e["field"] for e in reply.json()["errors"]] == ["seconds"]
    stored = (await api.get(obj_url("scheduler", "patched"))).json()
    assert stored["job_type"] == "cron_style" and stored["version"] == 1  # unchanged
    reply = await api.patch(obj_url("scheduler", "patched"), json={"job_type": "interval_based", "minutes": 5})
    assert reply.status_code == 200 and reply.json()["minutes"] == 5, reply.text
    reply = await api.patch(obj_url("scheduler", "patched"), json={"service": None})  # a required field
    assert reply.status_code == 400 and [e["field"] for e in reply.json()["errors"]] == ["service"], reply.text


async def test_a_listener_definitions_field_problems_are_400_naming_the_field(plugin_site, server_dir):
    import test_listeners  # the module, so that its test classes are not collected here as well
    test_listeners.install(plugin_site)
    source = test_listeners.MemorySource()
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=10,
                                     headers={"content-type": "application/json"}) as client:
            bad = {**source.definition("x", "demo.hello"), "name": "bad broker", "broker": "no such broker"}
            reply = await client.post(obj_url("memory_listener"), json=bad)
            assert reply.status_code == 400, reply.text
            [error] = reply.json()["errors"]
            assert error["field"] == "broker" and "no memory broker named 'no such broker'" in error["error"]
            assert (await client.get(obj_url("memory_listener", "bad broker"))).status_code == 404

            good = {**source.definition("x", "demo.hello"), "name": "good"}
            assert (await client.post(obj_url("memory_listener"), json=good)).status_code == 201, reply.text
            reply = await client.patch(obj_url("memory_listener", "good"), json={"broker": "no such broker"})
            assert reply.status_code == 400 and reply.json()["errors"][0]["field"] == "broker", reply.text
