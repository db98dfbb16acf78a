""" The OpenAPI document of the user's REST channels (the `apispec` plugin), against real servers:
services deployed through the admin API, channels and security definitions created through it.
The document validates with openapi-spec-validator; parameters, required and optional elements
and their types (SimpleIO's and Zato's name-based typing) are as the services declare; security
schemes follow the channels' definitions; 429 is documented where a rate limit applies; a
service without SimpleIO gets an open schema and a note; docstrings, tags and examples appear;
filters and access work; the document follows the server's live state; the server answers as
the document says (every operation called with its example, and schemathesis); the CLI writes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from zato.builtin.apispec.model import matches, schema_of_simpleio, service_description, split_patterns
from zato.testing import ServerProcess, admin_auth, create_test_server_dir, run_server, set_config_value

DOC = "/zato/apispec/openapi.json"
JSON_TYPE = {"Content-Type": "application/json"}
SOURCE_TYPE = {"Content-Type": "text/x-python"}
USER, PASSWORD = "api.user", "secret-password-1"
QUICKSTART_CHANNEL = "demo.hello"  # what `zato quickstart create` makes
API_KEY, KEY_HEADER = "key-1234567890", "X-My-Key"

SERVICES = '''
from zato.server.service import Service, Date, DateTime, Decimal, Dict, Float, Int, List, UUID


class GetUser(Service):
    """ Returns one user by id.

    Looks the user up in the CRM first,
    then in the archive.

    @internal
    Reads table crm_users_v2 directly.
    """
    name = "api.users.get"
    api_tags = ["users"]
    api_examples = {"request": {"user_id": 7},
                    "response": {"user_id": 7, "name": "user 7", "is_active": True, "score": 1.5}}

    class SimpleIO:
        """
        * user_id - The user's id in the CRM
        * limit - How many records to look at
        """
        input_required = "user_id",
        input_optional = "is_active", Int("limit", default=10), "name"
        output_required = "user_id", "name"
        output_optional = "is_active", DateTime("last_seen"), Float("score")

    def handle(self):
        given = self.request.input
        self.response.payload = {"user_id": given.user_id, "name": given.name or f"user {given.user_id}",
                                 "is_active": given.is_active, "score": 1.5}


class CreateOrder(Service):
    """ Creates an order. """
    name = "api.orders.create"
    api_tags = "orders, billing"
    api_examples = {"request": {"customer_id": 5, "amount": "10.50", "lines": [{"sku": "a"}]},
                    "response": {"order_id": 1, "amount": "10.50", "has_priority": None}}

    class SimpleIO:
        input_required = "customer_id", Decimal("amount")
        input_optional = List("lines"), Dict("meta"), Date("due"), UUID("ref"), "has_priority", "item_count"
        output_required = "order_id", Decimal("amount")
        output_optional = "has_priority",

    def handle(self):
        given = self.request.input
        self.response.payload = {"order_id": 1, "amount": given.amount, "has_priority": given.has_priority}


class Echo(Service):
    """ Echoes what it was sent. """
    name = "api.echo"

    def handle(self):
        self.response.payload = {"got": self.request.raw_request}


class Internalish(Service):
    name = "admin.tools.cleanup"

    class SimpleIO:
        input_optional = "dry_run",

    def handle(self):
        self.response.payload = {"ok": True}
'''

NEW_SERVICE = '''
from zato.server.service import Service, Int


class Later(Service):
    """ Deployed while the server runs. """
    name = "api.later"
    api_tags = ["later"]

    class SimpleIO:
        input_required = "order_id", Int("count")
        output_required = "order_id",

    def handle(self):
        self.response.payload = {"order_id": self.request.input.order_id}
'''


async def deploy(client: httpx.AsyncClient, name: str, source: str) -> None:
    reply = await client.post(f"/zato/api/deploy/{name}", content=source, auth=admin_auth(), headers=SOURCE_TYPE)
    assert reply.status_code in (200, 201), reply.text


async def create(client: httpx.AsyncClient, object_type: str, data: dict) -> None:
    reply = await client.post(f"/zato/api/objects/{object_type}", json=data, auth=admin_auth())
    assert reply.status_code == 201, reply.text


async def set_secret(client: httpx.AsyncClient, name: str, value: str) -> None:
    reply = await client.put(f"/zato/api/objects/security/{name}/secrets/password", json={"value": value},
                             auth=admin_auth())
    assert reply.status_code == 204, reply.text


CHANNELS = [
    {"name": "users.get", "url_path": "/api/users/{user_id}", "service": "api.users.get", "methods": ["GET"]},
    {"name": "orders.create", "url_path": "/api/orders", "service": "api.orders.create", "methods": ["POST"]},
    {"name": "echo", "url_path": "/api/echo", "service": "api.echo", "methods": ["POST"]},
    {"name": "users.basic", "url_path": "/api/secure/users/{user_id}", "service": "api.users.get",
     "methods": ["GET"], "security": "api.basic"},
    {"name": "users.key", "url_path": "/api/keyed/users/{user_id}", "service": "api.users.get", "methods": ["GET"],
     "security": "api.key"},
    {"name": "orders.limited", "url_path": "/api/limited/orders", "service": "api.orders.create",
     "methods": ["POST"], "is_rate_limit_active": True, "rate_limit_type": "APPROXIMATE",
     "rate_limit_def": "* = 100000/m"},
    {"name": "cleanup", "url_path": "/admin/cleanup", "service": "admin.tools.cleanup"},
]


async def prepare(client: httpx.AsyncClient) -> None:
    """ The sample server: services, two security definitions, the channels. """
    await deploy(client, "apispec_sample.py", SERVICES)
    await create(client, "security", {"name": "api.basic", "type": "basic_auth", "username": USER})
    await set_secret(client, "api.basic", PASSWORD)
    await create(client, "security", {"name": "api.key", "type": "apikey", "header": KEY_HEADER})
    await set_secret(client, "api.key", API_KEY)
    for channel in CHANNELS:
        await create(client, "channel_rest", channel)


@pytest.fixture
async def sample(server_dir):
    """ (a running server with the sample prepared, an admin client of it). """
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, timeout=30) as client:
            await prepare(client)
            yield server, client


async def document(client: httpx.AsyncClient, query: str = "", **kwargs) -> dict:
    kwargs.setdefault("auth", admin_auth())
    reply = await client.get(DOC + query, **kwargs)
    assert reply.status_code == 200, reply.text
    return reply.json()


def operations(doc: dict) -> dict[str, dict]:
    """ channel name -> its operation (each channel of the sample has one method, but cleanup) """
    found = {}
    for item in doc["paths"].values():
        for method, operation in item.items():
            found.setdefault(operation["x-zato-channel"], {})[method] = operation
    return {name: (ops if len(ops) > 1 else next(iter(ops.values()))) for name, ops in found.items()}


def params(operation: dict) -> dict[str, dict]:
    return {(p["in"], p["name"]): p for p in operation.get("parameters", ())}


def body_schema(operation: dict, media: str = "application/json") -> dict:
    return operation["requestBody"]["content"][media]["schema"]


def ok_schema(operation: dict, doc: dict | None = None) -> dict:
    """ The 200 body's schema; with `doc`, its references resolved (a schema the validator can use). """
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    return resolved(schema, doc) if doc is not None else schema


def resolved(schema, doc: dict):
    if isinstance(schema, dict):
        if "$ref" in schema:
            return resolved(doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]], doc)
        return {key: resolved(value, doc) for key, value in schema.items()}
    if isinstance(schema, list):
        return [resolved(item, doc) for item in schema]
    return schema


# ################################################################################################
# The model, without a server


def test_name_based_typing_and_declared_types():
    from zato.server.service import Service, Date, Decimal

    class S(Service):
        class SimpleIO:
            input_required = "user_id", "id", "is_admin", "name", Date("born")
            input_optional = "has_car", "page_size", "conn_timeout", "retry_count", Decimal("amount"), "should_x"

    schema = schema_of_simpleio(S, "input")
    types = {name: prop["type"] for name, prop in schema["properties"].items()}
    assert types == {"user_id": "integer", "id": "integer", "is_admin": "boolean", "name": "string",
                     "born": "string", "has_car": ["boolean", "null"], "page_size": ["integer", "null"],
                     "conn_timeout": ["integer", "null"], "retry_count": ["integer", "null"],
                     "amount": ["string", "number", "null"], "should_x": ["boolean", "null"]}
    assert schema["properties"]["born"]["format"] == "date"
    assert schema["required"] == ["user_id", "id", "is_admin", "name", "born"]
    assert schema_of_simpleio(Service, "input") is None
    with pytest.raises(ValueError):
        schema_of_simpleio(S, "inputs")


def test_docstrings_tags_and_examples_in_both_spellings():
    from zato.server.service import Service

    class S(Service):
        """ First line
        continued.

        More about it.

        @billing
        Billing notes.

        @confidential
        Not for the document.
        """
        api_tags = "users, crm"
        api_examples = {"request": {"a": 1}, "other": 2}

    described = service_description(S)
    assert described["summary"] == "First line continued."
    assert described["description"] == "More about it.\n\nBilling notes."
    assert described["tags"] == ["users", "crm", "billing"]
    assert described["examples"] == {"request": {"a": 1}}
    assert "Not for the document" not in json.dumps(described)


def test_filters():
    assert matches("api.x", ["api.*"], None) and not matches("crm.x", ["api.*"], None)
    assert not matches("api.x", None, ["api.*"]) and matches("api.x", None, None)
    assert not matches("api.internal.x", ["api.*"], ["api.internal.*"])
    assert split_patterns(["api.*, crm.*", "x"]) == ["api.*", "crm.*", "x"] and split_patterns([]) is None


# ################################################################################################
# The document


async def test_the_document_validates_and_describes_each_channel_and_method(sample):
    _, client = sample
    doc = await document(client)
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    ops = operations(doc)
    assert set(ops) == {channel["name"] for channel in CHANNELS} | {QUICKSTART_CHANNEL}
    quickstart = ops[QUICKSTART_CHANNEL]
    assert all(op["x-zato-service"] == "demo.hello" for op in quickstart.values()), quickstart
    assert not any(path.startswith("/zato/") for path in doc["paths"])  # the admin API has its own document
    # a channel without methods: every method it accepts
    assert set(ops["cleanup"]) == {"get", "post", "put", "patch", "delete", "options"}
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids)) and ops["users.get"]["operationId"] == "users_get_get"
    assert (await document(client))["paths"] == doc["paths"]  # stable


async def test_parameters_required_optional_and_types(sample):
    _, client = sample
    doc = await document(client)
    ops = operations(doc)
    get_user = params(ops["users.get"])
    assert get_user[("path", "user_id")] == {"name": "user_id", "in": "path", "required": True,
                                             "schema": {"type": "integer"},
                                             "description": "The user's id in the CRM"}
    assert get_user[("query", "is_active")]["schema"] == {"type": "boolean"}
    assert get_user[("query", "is_active")]["required"] is False
    assert get_user[("query", "limit")]["schema"] == {"type": "integer", "default": 10}
    assert get_user[("query", "name")]["schema"] == {"type": "string"}
    assert "requestBody" not in ops["users.get"]

    create_order = ops["orders.create"]
    assert "parameters" not in create_order
    body = body_schema(create_order)
    assert create_order["requestBody"]["required"] is True
    assert body["required"] == ["customer_id", "amount"]
    props = body["properties"]
    assert props["customer_id"]["type"] == "integer"  # name-based
    assert props["item_count"]["type"] == ["integer", "null"] and props["has_priority"]["type"] == ["boolean", "null"]
    assert props["lines"]["type"] == ["array", "null"] and props["meta"]["type"] == ["object", "null"]
    assert props["due"]["format"] == "date" and props["ref"]["format"] == "uuid"
    assert props["amount"]["format"] == "decimal"

    ref = {"$ref": "#/components/schemas/api.orders.create.output"}
    assert ok_schema(create_order) == {"oneOf": [ref, {"type": "array", "items": ref}]}
    out = ok_schema(create_order, doc)["oneOf"][0]
    assert out["required"] == ["order_id", "amount"] and out["additionalProperties"] is False
    assert out["properties"]["amount"]["type"] == ["string", "null"]
    user_out = ok_schema(ops["users.get"], doc)["oneOf"][0]["properties"]
    assert user_out["last_seen"]["format"] == "date-time" and user_out["score"]["type"] == ["number", "null"]


async def test_errors_in_zatos_shape_and_security_schemes(sample):
    _, client = sample
    doc = await document(client)
    ops = operations(doc)
    components = doc["components"]
    assert components["schemas"]["Error"]["required"] == ["result", "cid", "details"]
    for name in ("users.get", "orders.create", "echo"):
        statuses = set(ops[name]["responses"])
        assert {"200", "400", "404", "500"} <= statuses and not {"401", "429"} & statuses, (name, statuses)
        assert ops[name]["security"] == []
    assert ops["users.basic"]["security"] == [{"api.basic": []}] and "401" in ops["users.basic"]["responses"]
    assert ops["users.key"]["security"] == [{"api.key": []}]
    schemes = components["securitySchemes"]
    assert schemes["api.basic"]["type"] == "http" and schemes["api.basic"]["scheme"] == "basic"
    assert {k: schemes["api.key"][k] for k in ("type", "in", "name")} == {"type": "apiKey", "in": "header",
                                                                           "name": KEY_HEADER}
    assert components["responses"]["Unauthorized"]["headers"]["WWW-Authenticate"]

    # the errors are what the server answers
    reply = await client.get("/api/users/abc")
    assert reply.status_code == 400
    Draft202012Validator(components["schemas"]["Error"]).validate(reply.json())
    assert reply.json()["errors"][0]["name"] == "user_id"
    reply = await client.get("/api/keyed/users/1")
    assert reply.status_code == 401
    Draft202012Validator(components["schemas"]["Error"]).validate(reply.json())
    assert (await client.get("/api/keyed/users/1", headers={KEY_HEADER: API_KEY})).status_code == 200
    assert (await client.get("/api/secure/users/1", auth=(USER, PASSWORD))).status_code == 200


async def test_a_rate_limited_channel_and_a_rate_limited_service_document_429(sample):
    _, client = sample
    ops = operations(await document(client))
    assert "429" in ops["orders.limited"]["responses"] and ops["orders.limited"]["x-zato-rate-limited"] is True
    assert "429" not in ops["orders.create"]["responses"]
    await create(client, "service_settings", {"name": "api.echo", "is_rate_limit_active": True,
                                              "rate_limit_def": "* = 100000/m"})
    ops = operations(await document(client))
    assert "429" in ops["echo"]["responses"]
    assert ops["echo"]["responses"]["429"] == {"$ref": "#/components/responses/TooManyRequests"}


async def test_a_service_without_simpleio_gets_an_open_schema_and_a_note(sample):
    _, client = sample
    echo = operations(await document(client))["echo"]
    assert body_schema(echo).get("type") is None and "no SimpleIO" in body_schema(echo)["description"]
    assert echo["requestBody"]["required"] is False
    assert "declares no SimpleIO" in echo["description"]
    assert echo["responses"]["200"]["content"] == {"*/*": {"schema": {}}}


async def test_docstrings_examples_and_tags_appear(sample):
    _, client = sample
    ops = operations(await document(client))
    get_user = ops["users.get"]
    assert get_user["summary"] == "Returns one user by id."
    assert get_user["description"] == "Looks the user up in the CRM first,\nthen in the archive."
    assert "crm_users_v2" not in json.dumps(get_user)  # Zato's @internal section
    assert get_user["tags"] == ["users"]
    assert get_user["responses"]["200"]["content"]["application/json"]["example"]["name"] == "user 7"
    create_order = ops["orders.create"]
    assert create_order["tags"] == ["orders", "billing"]
    assert create_order["requestBody"]["content"]["application/json"]["example"]["amount"] == "10.50"


async def test_include_exclude_and_tags_filters(sample):
    _, client = sample
    names = lambda doc: set(operations(doc))  # noqa: E731
    assert names(await document(client, "?include=api.users.*")) == {"users.get", "users.basic", "users.key"}
    assert names(await document(client, "?include=api.users.*,api.echo")) == \
        names(await document(client, "?include=api.users.*&include=api.echo")) == \
        {"users.get", "users.basic", "users.key", "echo"}
    assert names(await document(client, "?include=api.*&exclude=api.orders.*")) == \
        {"users.get", "users.basic", "users.key", "echo"}
    assert names(await document(client, "?tags=billing")) == {"orders.create", "orders.limited"}
    assert names(await document(client, "?tags=billing,users&exclude=api.users.get")) == \
        {"orders.create", "orders.limited"}
    assert names(await document(client, "?tags=public")) == {channel["name"] for channel in CHANNELS} | \
        {QUICKSTART_CHANNEL}  # Zato's implicit tag
    assert (await document(client, "?include=nothing.*"))["paths"] == {}


async def test_the_document_follows_channels_and_hot_deploys_without_a_restart(sample):
    _, client = sample
    before = await document(client)
    await create(client, "channel_rest", {"name": "later", "url_path": "/api/later/{order_id}",
                                          "service": "api.later", "methods": ["PUT"]})
    after_channel = await document(client)
    later = operations(after_channel)["later"]
    assert "not deployed" in later["description"] and "later" not in before["paths"].get("/api/later/{order_id}", {})
    assert after_channel["info"]["version"] != before["info"]["version"]

    await deploy(client, "apispec_later.py", NEW_SERVICE)
    later = operations(await document(client))["later"]
    assert later["tags"] == ["later"] and later["summary"] == "Deployed while the server runs."
    assert params(later)[("path", "order_id")]["schema"] == {"type": "integer"}
    assert body_schema(later)["required"] == ["count"] and "order_id" not in body_schema(later)["properties"]

    # a redeploy with another SimpleIO is described at once, as is a channel's edit
    await deploy(client, "apispec_later.py", NEW_SERVICE.replace('Int("count")', '"is_urgent"'))
    reply = await client.patch("/zato/api/objects/channel_rest/later", json={"methods": ["PUT", "PATCH"]},
                               auth=admin_auth())
    assert reply.status_code == 200, reply.text
    later = operations(await document(client))["later"]
    assert set(later) == {"put", "patch"}
    assert body_schema(later["put"])["required"] == ["is_urgent"]
    assert body_schema(later["put"])["properties"]["is_urgent"]["type"] == "boolean"
    reply = await client.delete("/zato/api/objects/channel_rest/later", auth=admin_auth(), headers=JSON_TYPE)
    assert reply.status_code == 204, reply.text
    assert "later" not in operations(await document(client))


async def test_every_operation_answers_its_example_as_documented(sample):
    """ A client's round trip: each documented operation of the users and orders channels, called
    with its example (credentials where it needs them), answers 200 with a body its schema allows. """
    _, client = sample
    doc = await document(client, "?include=api.users.*,api.orders.*")
    called = 0
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            example = (operation.get("requestBody") or {}).get("content", {}).get("application/json", {}) \
                .get("example")
            if example is None:
                example = operation["responses"]["200"]["content"]["application/json"]["example"]
            url = path
            query = {}
            for parameter in operation.get("parameters", ()):
                if parameter["in"] == "path":
                    url = url.replace("{" + parameter["name"] + "}", str(example[parameter["name"]]))
                elif parameter["name"] in example and parameter["required"]:
                    query[parameter["name"]] = example[parameter["name"]]
            headers, auth = {}, None
            for requirement in operation["security"]:
                scheme = doc["components"]["securitySchemes"][next(iter(requirement))]
                if scheme["type"] == "http":
                    auth = (USER, PASSWORD)
                else:
                    headers[scheme["name"]] = API_KEY
            kwargs = {"json": example} if "requestBody" in operation else {}
            reply = await client.request(method.upper(), url, params=query, headers=headers, auth=auth, **kwargs)
            assert reply.status_code == 200, (method, path, reply.text)
            Draft202012Validator(ok_schema(operation, doc)).validate(reply.json())
            called += 1
    assert called == 5


# ################################################################################################
# Access


async def test_access_admin_by_default_then_public_then_a_security_definition(tmp_path):
    server_dir = create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 3})
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, timeout=30) as client:
            reply = await client.get(DOC)
            assert reply.status_code == 401 and reply.json()["result"] == "Error"
            assert (await client.get(DOC, auth=("admin", "wrong"))).status_code == 401
            assert (await client.get(DOC, auth=admin_auth())).status_code == 200
            await prepare(client)
    set_config_value(server_dir, "apispec", "access", "public")
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, timeout=30) as client:
            assert (await client.get(DOC)).status_code == 200
    set_config_value(server_dir, "apispec", "access", "api.basic")
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, timeout=30) as client:
            # an internal service deployed from the start-up cache is imported for the document
            await create(client, "channel_rest", {"name": "ping", "url_path": "/api/ping", "service": "zato.ping",
                                                  "methods": ["GET"]})
            from_cache = server.services.entries["zato.ping"].cls is None
            assert (await client.get(DOC)).status_code == 401
            assert (await client.get(DOC, auth=admin_auth())).status_code == 401  # the definition's, not the admin's
            reply = await client.get(DOC, auth=(USER, PASSWORD))
            assert reply.status_code == 200, reply.text
            # after a restart (services possibly from the start-up cache, imported on first use)
            create_order = reply.json()["paths"]["/api/orders"]["post"]
            assert body_schema(create_order)["required"] == ["customer_id", "amount"], create_order
            ping = reply.json()["paths"]["/api/ping"]["get"]
            assert ping["summary"] == "Answers with `pong`: a cheap check that invoking services works.", ping
            assert from_cache and server.services.entries["zato.ping"].cls is not None


async def test_the_asyncapi_route_answers_with_the_admin_credentials_only(sample):
    _, client = sample
    reply = await client.get("/zato/apispec/asyncapi.json", auth=admin_auth())
    assert reply.status_code == 200 and reply.json()["asyncapi"].startswith("3.")
    assert (await client.get("/zato/apispec/asyncapi.json")).status_code == 401


async def test_the_admin_document_describes_the_apispec_routes(sample):
    _, client = sample
    admin_doc = (await client.get("/zato/api/openapi.json", auth=admin_auth())).json()
    assert "get" in admin_doc["paths"][DOC] and "get" in admin_doc["paths"]["/zato/apispec/asyncapi.json"]


# ################################################################################################
# Schemathesis and the CLI, against a server process


SCHEMATHESIS_CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
                       "response_schema_conformance", "response_headers_conformance")


def _prepare_process(address: str) -> None:
    import trio

    async def run():
        async with httpx.AsyncClient(base_url=address, timeout=30) as client:
            await prepare(client)
    trio.run(run)


@pytest.fixture(scope="module")
def process(tmp_path_factory):
    server_dir = create_test_server_dir(tmp_path_factory.mktemp("apispec") / "server", main={"graceful_timeout": 3})
    with ServerProcess(server_dir) as server:
        _prepare_process(server.address)
        yield server_dir, server


def test_schemathesis_finds_no_mismatch_between_the_channels_and_their_document(process, tmp_path):
    server_dir, server = process
    reply = httpx.get(f"{server.address}{DOC}?include=api.*", auth=admin_auth(), timeout=30)
    doc = reply.json()
    assert len([op for item in doc["paths"].values() for op in item]) == 6
    schema_path = tmp_path / "openapi.json"
    schema_path.write_text(json.dumps(doc))
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "schemathesis.cli", "run", str(schema_path), "--url", server.address,
               "--auth", f"{USER}:{PASSWORD}", "--header", f"{KEY_HEADER}: {API_KEY}",
               "--checks", ",".join(SCHEMATHESIS_CHECKS),
               "--max-examples", "15", "--max-time", "20", "--seed", "1", "--workers", "1",
               "--request-timeout", "20", "--generation-database", "none", "--no-color",
               "--report", "json", "--report-json-path", str(report)]
    started = time.monotonic()
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NO_COLOR": "1", "COLUMNS": "120"})
    took = time.monotonic() - started
    output = (done.stdout + done.stderr)[-15000:]
    assert report.exists(), output
    data = json.loads(report.read_text())
    failures = [f"{f['code']} {f['title']}: {', '.join(f['operations'])}" for f in data.get("failures", [])]
    errors = [f"{e['title']} ({e['count']})" for e in data.get("errors", [])]
    assert not failures and not errors and done.returncode == 0, "\n".join(failures + errors) + "\n" + output
    assert data["operations"]["tested"] == 6, data["operations"]
    assert data["test_cases"]["generated"] >= 60, data["test_cases"]
    assert took < 45, took  # a short run: --max-time 20
    server_log = (server_dir / "logs" / "server.log").read_text("utf-8", "replace")
    assert "unhandled error" not in server_log


ZATO = [sys.executable, "-c", "import sys; from zato.cli import main; sys.exit(main())"]


def run_zato(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ZATO, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_the_cli_writes_the_document(process, tmp_path):
    server_dir, server = process
    output = tmp_path / "out" / "openapi.json"
    done = run_zato("apispec", server_dir, "--format", "openapi", "--include", "api.*", "--exclude", "api.echo",
                "--output", output)
    assert done.returncode == 0, done.stderr
    written = json.loads(output.read_text())
    validate(written)
    assert {op["x-zato-service"] for item in written["paths"].values() for op in item.values()} == \
        {"api.users.get", "api.orders.create"}

    done = run_zato("apispec", server_dir, "--tags", "billing")  # to stdout
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)["paths"]) == {"/api/orders", "/api/limited/orders"}

    # Zato's spelling: --dir, --with-internal (a note), --tags public
    out_dir = tmp_path / "zato-dir"
    done = run_zato("apispec", server_dir, "--dir", out_dir, "--include", "api.users.*", "--with-internal",
                "--tags", "public")
    assert done.returncode == 0, done.stderr
    assert "note: --with-internal" in done.stderr
    assert set(json.loads((out_dir / "openapi.json").read_text())["paths"]) == \
        {"/api/users/{user_id}", "/api/secure/users/{user_id}", "/api/keyed/users/{user_id}"}

    done = run_zato("apispec", server_dir, "--format", "asyncapi", "--output", tmp_path / "asyncapi.json")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "asyncapi.json").read_text())["asyncapi"].startswith("3.")

    done = run_zato("apispec", tmp_path / "nowhere")
    assert done.returncode != 0
