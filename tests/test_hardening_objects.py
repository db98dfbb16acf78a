""" No stored object can stop the server (issue 11): validation strict enough to refuse bad values
with a 400 listing every bad field (never a 500), a published JSON Schema that agrees with it, an
object in the database that cannot be applied left out and logged at start and on every reload
(for every object type), and enmasse refusing a YAML alias bomb before building anything. """

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time
import tracemalloc
import urllib.request
from pathlib import Path
from urllib.parse import quote

import httpx
import jsonschema
import pytest
import trio
from hypothesis import HealthCheck, given, settings, strategies as st

from zato.enmasse import EnmasseError, ServerConfigStore, apply_plan, plan_import
from zato import objects
from zato.objects import ObjectValidationError, validate
from zato.odb import ODB
from zato.registry import Field, Kind, ObjectType
from zato.testing import admin_auth, create_test_server_dir, run_server

API = "/zato/api/objects"
JSON = {"content-type": "application/json"}
ZATO = [sys.executable, "-c", "import sys; from zato.cli import main; sys.exit(main())"]

# A valid object of every object type of a quickstart server with every built-in plugin (a test
# below checks that this covers the registry), and what it needs beside it.
GOOD = {
    "channel_rest": {"url_path": "/good", "service": "demo.hello", "methods": ["GET"]},
    "security": {"type": "basic_auth", "username": "good.user"},
    "outgoing_rest": {"address": "http://127.0.0.1:9", "timeout": 1.0},
    "email_smtp": {"host": "127.0.0.1", "port": 2525, "tls_mode": "none"},
    "outgoing_sql": {"engine": "sqlite", "db_name": "good.db"},
    "outgoing_redis": {"host": "127.0.0.1", "port": 6379},
    "pubsub_topic": {"max_depth_gd": 10},
    "pubsub_endpoint": {"endpoint_type": "service", "service_name": "demo.hello"},
    "pubsub_subscription": {"endpoint_name": "good", "topic_list": ["good"]},
    "scheduler": {"job_type": "interval_based", "service": "demo.hello", "hours": 1},
    "service_settings": {"is_rate_limit_active": False},
    "outgoing_ftp": {"host": "127.0.0.1", "port": 21},
    "cloud_dropbox": {"user_agent": "Good-Agent/1.0"},
    "channel_web_socket": {"address": "ws://127.0.0.1:17010/good/ws", "service": "demo.hello"},
    "outgoing_wsx": {"address": "ws://127.0.0.1:9/good/ws"},
    "bst_definition": {"text": "Good\n----\nObjects: Good thing\nNew: Done\n"},
}
NEEDS = {"pubsub_subscription": [("pubsub_endpoint", "good", GOOD["pubsub_endpoint"]),
                                 ("pubsub_topic", "good", GOOD["pubsub_topic"])]}


def obj_url(object_type: str, name: str = "") -> str:
    return f"{API}/{object_type}" + (f"/{quote(name, safe='')}" if name else "")


def put_objects(server_dir: Path, *objects: tuple[str, str, dict]) -> None:
    """ Written straight into the configuration database, past every check (as an older version,
    another tool or a hand edit would). """
    odb = ODB(f"sqlite:///{server_dir / 'work' / 'zato.db'}")
    try:
        for object_type, name, data in objects:
            odb.put_object(object_type, name, data)
    finally:
        odb.close()


def wrong_value(field: Field):
    return ["not", "an", "object"] if field.type == "dict" else {"wrong": "type"}


@pytest.fixture
async def api(tmp_path):
    async with run_server(create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 1})) as server:
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), headers=JSON, timeout=20) as client:
            client.server = server
            yield client


# ################################################################################################
# Validation: every bad value is a 400 listing the bad fields


@pytest.mark.parametrize(("body", "fields"), [
    ({"methods": [["GET"]]}, {"methods"}),
    ({"methods": [{"GET": 1}]}, {"methods"}),
    ({"methods": ["GET", "FETCH"]}, {"methods"}),
    ({"methods": ["GET", "GET"]}, {"methods"}),
    ({"url_path": None}, {"url_path"}),
    ({"service": None, "url_path": None}, {"service", "url_path"}),
    ({"service": ""}, {"service"}),
    ({"is_active": {}}, {"is_active"}),
    ({"is_active": "$ACTIVE"}, {"is_active"}),
    ({"timeout": -1}, {"timeout"}),
    ({"timeout": "-1"}, {"timeout"}),
    ({"timeout": [1]}, {"timeout"}),
    ({"data_format": {"x": 1}, "security": ["a"]}, {"data_format", "security"}),
    ({"name": ""}, {"name"}),
    ({"name": "   "}, {"name"}),
    ({"name": "x" * 401}, {"name"}),
    ({"name": "nul\x00"}, {"name"}),
    ({"name": 5}, {"name"}),
])
async def test_bad_values_of_a_rest_channel_are_400_listing_every_bad_field(api, body, fields):
    data = {"name": "bad", "url_path": "/bad", "service": "demo.hello", **body}
    reply = await api.post(obj_url("channel_rest"), json=data)
    assert reply.status_code == 400, reply.text
    assert {e["field"] for e in reply.json()["errors"]} == fields, reply.json()
    assert (await api.get(obj_url("channel_rest", "bad"))).status_code == 404  # nothing stored


async def test_is_active_of_any_type_that_is_not_boolean_like_is_a_field_error(api):
    for object_type in sorted(api.server.registry.items(Kind.OBJECT_TYPES)):
        reply = await api.post(obj_url(object_type), json={"name": "x", **GOOD[object_type], "is_active": {}})
        assert reply.status_code == 400, (object_type, reply.text)
        assert "is_active" in {e["field"] for e in reply.json()["errors"]}, (object_type, reply.json())
    reply = await api.post(obj_url("pubsub_topic"), json={"name": "off", "is_active": "off"})
    assert reply.status_code == 201 and reply.json()["is_active"] is False


async def test_a_required_field_set_to_null_by_put_is_refused_and_the_channel_keeps_working(api):
    reply = await api.put(obj_url("channel_rest", "demo.hello"), json={"url_path": "/demo/hello", "service": None})
    assert reply.status_code == 400, reply.text
    assert reply.json()["errors"] == [{"field": "service", "error": "must not be null (it is required)"}]
    assert (await api.get("/demo/hello?name=x")).json() == {"hello": "x"}


async def test_ranges_of_built_in_and_plugin_types_are_checked(api):
    cases = [("email_smtp", {"host": "h", "port": 0}, "port"), ("email_smtp", {"host": "h", "port": "70000"}, "port"),
             ("outgoing_sql", {"engine": "sqlite", "port": 65536}, "port"),
             ("outgoing_rest", {"address": "http://x", "pool_size": 0}, "pool_size"),
             ("outgoing_rest", {"address": "http://x", "timeout": -0.5}, "timeout"),
             ("scheduler", {"job_type": "interval_based", "service": "s", "seconds": -5}, "seconds"),
             ("outgoing_redis", {"host": "h", "socket_timeout": -1}, "socket_timeout")]
    for object_type, data, field in cases:
        reply = await api.post(obj_url(object_type), json={"name": "r", **data})
        assert reply.status_code == 400, (object_type, reply.text)
        assert field in {e["field"] for e in reply.json()["errors"]}, (object_type, reply.json())
    # today's conversions still hold: digits in text, boolean words, $NAME anywhere, null = the default
    reply = await api.post(obj_url("email_smtp"), json={"name": "ok", "host": "$SMTP_HOST", "port": " 587 ",
                                                        "tls_verify": "off", "timeout": None})
    assert reply.status_code == 201, reply.text
    created = reply.json()
    assert (created["host"], created["port"], created["tls_verify"]) == ("$SMTP_HOST", 587, False)
    assert created["timeout"] == api.server.registry.get(Kind.OBJECT_TYPES, "email_smtp").field("timeout").default


def test_the_name_rules_are_in_the_openapi_schema_and_null_is_the_default():
    schema = objects.field_schema(objects.NAME_FIELD)
    assert schema["minLength"] == 1 and schema["maxLength"] == 400
    methods = Field("methods", "list", default=["GET"], item_type="str", item_choices=("GET", "POST"), unique_items=True)
    assert objects.field_value(methods, None) == ["GET"]
    assert objects.field_schema(methods)["anyOf"][0] == {"type": "array", "items": {"enum": ["GET", "POST"]},
                                                 "uniqueItems": True}


async def test_the_openapi_document_publishes_the_constraints(api):
    document = (await api.get("/zato/api/openapi.json")).json()
    schemas = document["components"]["schemas"]
    channel = schemas["channel_rest_input"]["properties"]
    assert channel["name"]["minLength"] == 1
    assert {"enum": list(("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))} == \
        channel["methods"]["anyOf"][0]["items"]
    assert channel["timeout"]["anyOf"][0] == {"type": "number", "minimum": 0}
    assert schemas["email_smtp_input"]["properties"]["port"]["anyOf"][0] == \
        {"type": "integer", "minimum": 1, "maximum": 65535}
    assert {"type": "null"} not in channel["service"].get("anyOf", [channel["service"]])  # required: no null


# ################################################################################################
# The JSON Schema says exactly what validate accepts


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 6, 10 ** 6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=6)
TRICKY_TEXT = st.sampled_from([
    "", " ", "0", "1", "-1", "+1", "007", " 42 ", "65535", "65536", "-0", "1.5", ".5", "5.", "1e3", "-2.5", "0.0",
    "true", "False", " yes ", "OFF", "y", "t", "maybe", "$NAME", "$1X", "$A_B", "GET", "get", "GET,POST",
    "GET, GET", "a,b", ",", " , ", "a\nb", "json", "xml", "\u0663", "\u00b2", "1_000", "nan", "inf", "x" * 401,
    "12\n", "$ENV\n"])
VALUES = JSON_VALUES | TRICKY_TEXT | st.lists(TRICKY_TEXT, max_size=3)


def all_fields():
    tmp = Path(__import__("tempfile").mkdtemp())
    with ServerConfigStore(create_test_server_dir(tmp / "server")) as store:
        types = dict(store.object_types)
    fields = [objects.NAME_FIELD, objects.IS_ACTIVE]
    for object_type in types.values():
        fields += [f for f in object_type.fields if not f.secret and f.name not in ("name", "is_active")]
    return fields


def accepted_by_validate(field: Field, value) -> bool:
    if field.name == "name":
        one = ObjectType("t", (objects.NAME_FIELD,))
        try:
            validate(one, {"name": value})
        except ObjectValidationError:
            return False
        return True
    try:
        objects.field_value(field, value)
    except ValueError:
        return False
    return True


def test_the_schema_of_every_field_agrees_with_validation():
    """ A schema fuzzer in miniature: for every field of every object type, generated values are
    valid per the published JSON Schema exactly when `validate` takes them. """
    checks = [(field, jsonschema.Draft202012Validator(objects.field_schema(field))) for field in all_fields()]

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(VALUES)
    def agree(value):
        for field, checker in checks:
            assert checker.is_valid(value) == accepted_by_validate(field, value), (field.name, field.type, value)

    agree()


def test_integer_ranges_as_regular_expressions_are_exact():
    import re
    for lo, hi in ((0, None), (1, 65535), (1, None), (10, 999), (5, 5)):
        pattern = re.compile(f"^(?:{objects.integer_range_pattern(lo, hi)})$")
        for number in range(0, 70001 if hi is None or hi > 1000 else 2000):
            assert bool(pattern.match(str(number))) == (number >= lo and (hi is None or number <= hi)), (lo, hi, number)


# ################################################################################################
# A stored object that cannot be applied is left out and logged, for every object type


async def test_the_good_objects_cover_every_registered_object_type(api):
    assert set(GOOD) == set(api.server.registry.items(Kind.OBJECT_TYPES))


@pytest.mark.parametrize("object_type", sorted(GOOD))
async def test_wrong_typed_fields_in_the_database_never_stop_the_server(tmp_path, object_type, caplog):
    """ One object per field, each with that field of the wrong type, beside a good object of the
    same type: the server starts, each bad one is left out and logged with its field, the good
    one is used - at start and again on a reload. """
    caplog.set_level(logging.INFO)
    server_dir = create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 1})
    with ServerConfigStore(server_dir) as store:
        schema = store.object_types[object_type]
    bad = {}
    for index, field in enumerate(f for f in schema.fields if not f.secret and f.name not in ("name", "is_active")):
        data = {**GOOD[object_type], field.name: wrong_value(field)}
        if object_type == "channel_rest" and field.name != "url_path":
            data["url_path"] = f"/bad/{index}"
        bad[f"bad.{field.name}"] = (field.name, data)
    put_objects(server_dir, *NEEDS.get(object_type, []), (object_type, "good", GOOD[object_type]),
                *((object_type, name, data) for name, (_, data) in bad.items()))

    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), headers=JSON, timeout=20) as client:
            for when in ("start", "reload"):
                assert "good" in server.config_objects[object_type], when
                for name, (field, _) in bad.items():
                    assert name not in server.config_objects.get(object_type, {}), (when, name)
                    error = server.config_errors[f"{object_type}:{name}"]
                    assert f"{object_type} {name!r}" in error and f"{field}: " in error, error
                    assert error in caplog.text
                if object_type == "channel_rest":
                    assert (await client.get("/good?name=ok")).json() == {"hello": "ok"}
                    assert (await client.get("/demo/hello?name=ok")).json() == {"hello": "ok"}
                caplog.clear()
                reply = await client.post("/zato/api/config/reload", json={})
                assert reply.status_code == 200, reply.text
                await trio.sleep(0.2)


async def test_a_channel_runtime_that_fails_to_apply_does_not_stop_the_others_or_the_api(api, caplog):
    """ Past validation (a plugin with its own bugs, a definition no check foresaw): the REST
    channels still route every other definition, and an admin write answers its success code. """
    runtime = api.server.channels["rest"]
    routes = runtime._route

    def failing(definition):
        if definition["name"] == "explodes":
            raise KeyError("something no check foresaw")
        return routes(definition)

    runtime._route = failing
    reply = await api.post(obj_url("channel_rest"), json={"name": "fine", "url_path": "/fine", "service": "demo.hello"})
    assert reply.status_code == 201
    put_objects(Path(api.server.paths.base_dir), ("channel_rest", "explodes", {"url_path": "/explodes",
                                                                              "service": "demo.hello"}))
    reply = await api.post("/zato/api/config/reload", json={"types": ["channel_rest"]})
    assert reply.status_code == 200
    assert "explodes" in runtime.errors and "something no check foresaw" in runtime.errors["explodes"]
    assert (await api.get("/fine?name=a")).json() == {"hello": "a"}

    def broken_apply(objects):
        raise RuntimeError("the whole runtime is broken")

    runtime.apply = broken_apply
    reply = await api.post(obj_url("channel_rest"), json={"name": "later", "url_path": "/later", "service": "demo.hello"})
    assert reply.status_code == 201, reply.text  # stored, and said so
    assert "the whole runtime is broken" in caplog.text and "could not apply" in caplog.text
    assert (await api.get("/fine?name=b")).json() == {"hello": "b"}  # the previous routes stay


def test_zato_start_succeeds_with_a_stored_channel_whose_methods_are_a_list_of_lists(tmp_path):
    server_dir = create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 1})
    put_objects(server_dir, ("channel_rest", "nested", {"url_path": "/nested", "service": "demo.hello",
                                                        "methods": [["GET"]]}))
    run = lambda *args: subprocess.run([*ZATO, *args, str(server_dir)], capture_output=True, text=True, timeout=90)
    started = run("start")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        address = json.loads((server_dir / "work" / "server.json").read_text())["address"]
        with urllib.request.urlopen(f"{address}/demo/hello?name=p") as reply:
            assert json.loads(reply.read()) == {"hello": "p"}
    finally:
        run("stop")
    log = (server_dir / "logs" / "server.log").read_text()
    assert "channel_rest 'nested' in the configuration database is not used: methods: item 1: expected text" in log


# ################################################################################################
# enmasse


def alias_bomb(levels: int = 9) -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    previous = "a"
    for name in "bcdefghijklmnop"[:levels - 1]:
        lines.append(f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]")
        previous = name
    lines.append(f"channel_rest:\n  - name: boom\n    url_path: /boom\n    service: demo.hello\n    methods: *{previous}")
    return "\n".join(lines) + "\n"


def test_enmasse_refuses_a_channel_whose_methods_are_a_list_of_lists(tmp_path):
    server_dir = create_test_server_dir(tmp_path / "server")
    path = tmp_path / "nested.yaml"
    path.write_text("channel_rest:\n  - name: nested\n    url_path: /nested\n    service: demo.hello\n"
                    "    methods: [[GET]]\n")
    with ServerConfigStore(server_dir) as store, pytest.raises(EnmasseError) as info:
        plan_import(store, path)
    assert f"{path}:5: channel_rest 'nested': methods: item 1: expected text, got a list" in str(info.value)


def test_an_alias_bomb_is_refused_quickly_in_a_dry_run(tmp_path):
    server_dir = create_test_server_dir(tmp_path / "server")
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert len(path.read_bytes()) < 700
    with ServerConfigStore(server_dir) as store:
        tracemalloc.start()
        started = time.perf_counter()
        try:
            with pytest.raises(EnmasseError) as info:
                plan_import(store, path)
            took = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert took < 0.5 and peak < 20_000_000, (took, peak)
    assert f"{path}:7: YAML: this list expands, with its aliases (*name), to more than 1,000,000 values" in str(info.value)


def test_an_alias_bomb_is_refused_by_a_real_import_and_nothing_changes(tmp_path):
    server_dir = create_test_server_dir(tmp_path / "server")
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    started = time.perf_counter()
    result = subprocess.run([*ZATO, "enmasse", "import", str(server_dir), str(path)], capture_output=True, text=True,
                            timeout=60, preexec_fn=_limit_memory)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{path}:7: YAML: this list expands" in result.stderr and "alias bomb" in result.stderr
    assert time.perf_counter() - started < 30
    odb = ODB(f"sqlite:///{server_dir / 'work' / 'zato.db'}")
    try:
        assert [obj["name"] for _, obj in odb.list_all()] == ["demo.hello"]
    finally:
        odb.close()


def _limit_memory() -> None:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (1_000_000_000, 1_000_000_000))  # the bomb wanted 3.1 GB


def test_anchors_and_merge_keys_of_normal_size_still_import(tmp_path):
    server_dir = create_test_server_dir(tmp_path / "server")
    path = tmp_path / "anchors.yaml"
    path.write_text(textwrap.dedent("""\
        channel_rest:
          - &first
            name: one
            url_path: /one
            service: demo.hello
            methods: &methods [GET, POST]
          - <<: *first
            name: two
            url_path: /two
          - name: three
            url_path: /three
            service: demo.hello
            methods: *methods
        """))
    with ServerConfigStore(server_dir) as store:
        plan = plan_import(store, path)
        assert sorted(s.name for s in plan.steps if s.action == "create") == ["one", "three", "two"]
        apply_plan(store, plan)
    odb = ODB(f"sqlite:///{server_dir / 'work' / 'zato.db'}")
    try:
        two, three = odb.get_object("channel_rest", "two"), odb.get_object("channel_rest", "three")
        assert (two["service"], two["url_path"], two["methods"]) == ("demo.hello", "/two", ["GET", "POST"])
        assert three["methods"] == ["GET", "POST"]
    finally:
        odb.close()


def test_a_recursive_alias_is_refused_naming_the_line(tmp_path):
    server_dir = create_test_server_dir(tmp_path / "server")
    path = tmp_path / "loop.yaml"
    path.write_text("channel_rest:\n  - &row\n    name: loop\n    url_path: /loop\n    service: demo.hello\n"
                    "    methods: [*row]\n")
    with ServerConfigStore(server_dir) as store, pytest.raises(EnmasseError) as info:
        plan_import(store, path)
    assert "an alias refers to a collection it is part of" in str(info.value) and f"{path}:" in str(info.value)
