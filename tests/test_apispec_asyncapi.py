""" The AsyncAPI 3.0.0 document (zato.builtin.apispec.asyncapi) of a real server: pub/sub topics
created through the admin API, WebSocket channels of the wsx plugin with their security
definitions, services with and without SimpleIO. The document validates against the published
AsyncAPI 3.0.0 JSON Schema (tests/data/asyncapi-3.0.0.json, see tests/data/README.md), every
$ref in it resolves, filters work, and it follows changes without a restart. """

from __future__ import annotations

import json
import os
import re
import textwrap
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import quote, urlsplit

import httpx
import pytest
import trio

from zato.builtin.apispec import model
from zato.builtin.apispec.asyncapi import build_asyncapi, delivery_fields, service_names, service_topic_name
from zato.builtin.apispec.openapi import build_openapi
from zato.common.pubsub import PubSubMessage
from zato.registry import Kind
from zato.testing import admin_auth, create_test_server_dir, run_server

KEY = re.compile(r"^[a-zA-Z0-9.\-_]+$")
SCHEMA_FILE = Path(__file__).parent / "data" / "asyncapi-3.0.0.json"
API = "/zato/api"
USER, PASSWORD, API_KEY = "wsx.user", "wsx-s3cret", "wsx-api-key-123"

SERVICES = '''
from zato.server.service import Int, Service, Text


class ProcessOrder(Service):
    """ Processes a new order.

    Books the stock and tells the warehouse.
    """
    name = "api.orders.process"
    api_tags = ["orders"]

    class SimpleIO:
        input_required = "order_id", Text("customer")
        input_optional = Int("quantity"),

    def handle(self):
        self.server.plugin_state.setdefault("test.apispec.got", []).append(self.request.raw_request.to_dict())


class GetCustomer(Service):
    """ Returns a customer by id. """
    name = "api.customer.get"
    api_tags = ["customers"]
    api_examples = {"request": {"customer_id": 1}, "response": {"customer_id": 1, "name": "Ann"}}

    class SimpleIO:
        input_required = "customer_id",
        output_required = "customer_id", "name"
        output_optional = "is_active",

    def handle(self):
        self.response.payload = {"customer_id": self.request.input.customer_id, "name": "Ann"}


class Audit(Service):
    name = "plain.audit"

    def handle(self):
        pass
'''


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def admin(server: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                             headers={"content-type": "application/json"})


async def create(client: httpx.AsyncClient, object_type: str, **data: Any) -> None:
    reply = await client.post(f"{API}/objects/{object_type}", json=data)
    assert reply.status_code == 201, reply.text


async def wait_for(predicate, timeout: float = 15.0, what: str = "") -> None:
    deadline = trio.current_time() + timeout
    while not predicate():
        if trio.current_time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or predicate}")
        await trio.sleep(0.02)


@asynccontextmanager
async def sample_server(tmp_path: Path) -> AsyncIterator[Any]:
    """ A server with the sample services, two security definitions, two topics (one GD, one
    RAM-only) with a service subscriber on the first, and three WebSocket channels: one with
    Basic Auth and a SimpleIO service, the gateway with an API key, one without security whose
    service has no SimpleIO. """
    base_dir = create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 2})
    (base_dir / "pickup" / "apispec_services.py").write_text(textwrap.dedent(SERVICES))
    async with run_server(base_dir) as server:
        assert "channel_web_socket" in server.registry.items(Kind.OBJECT_TYPES), "the wsx plugin is not loaded"
        port = urlsplit(server.address).port
        async with admin(server) as client:
            for name, definition, secret in (("wsx.basic", {"type": "basic_auth", "username": USER}, PASSWORD),
                                             ("wsx.key", {"type": "apikey"}, API_KEY)):
                await create(client, "security", name=name, **definition)
                reply = await client.put(f"{API}/objects/security/{name}/secrets/password", json={"value": secret})
                assert reply.status_code == 204, reply.text
            await create(client, "pubsub_topic", name="/orders/new", description="New orders")
            await create(client, "pubsub_topic", name="/audit", has_gd=False)
            await create(client, "pubsub_endpoint", name="orders processor", endpoint_type="service",
                         service_name="api.orders.process")
            await create(client, "pubsub_subscription", name="orders sub", endpoint_name="orders processor",
                         topic_list=["/orders/new"], max_attempts=5, retry_seconds=2.0)
            await create(client, "channel_web_socket", name="customers", address=f"ws://0.0.0.0:{port}/ws/customers",
                         service="api.customer.get", security="wsx.basic")
            await create(client, "channel_web_socket", name="gateway", address=f"ws://127.0.0.1:{port}/ws/gateway",
                         service="helpers.web-sockets-gateway", security="wsx.key")
            await create(client, "channel_web_socket", name="audit", address=f"ws://127.0.0.1:{port}/ws/audit",
                         service="plain.audit")
        await wait_for(lambda: len(server.config_objects.get("channel_web_socket", {})) == 3
                       and "orders sub" in server.config_objects.get("pubsub_subscription", {}))
        yield server


# ################################################################################################
# Checking a document


def asyncapi_validator() -> Any:
    """ A draft-07 validator of the published AsyncAPI 3.0.0 schema. The schema file is part of the
    repository: its absence is a failure, never a skip. jsonschema comes with the dev dependencies
    (openapi-spec-validator, schemathesis); without it the check is skipped here and fails on CI. """
    assert SCHEMA_FILE.is_file(), f"{SCHEMA_FILE} is missing: see tests/data/README.md for where it comes from"
    try:
        import jsonschema
    except ImportError:
        if on_ci():
            raise
        pytest.skip("jsonschema is not installed (scripts/install brings it with the dev dependencies)")
    schema = json.loads(SCHEMA_FILE.read_text("utf-8"))
    assert schema["$id"] == "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
    return jsonschema.Draft7Validator(schema)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve (no {part!r})"
        node = node[part]
    return node


def refs_in(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in refs_in(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs_in(value)]
    return []


def check_document(doc: dict[str, Any]) -> None:
    """ Valid against the AsyncAPI 3.0.0 schema, every $ref resolving, and what the schema cannot
    say: operations and replies name messages of their own channel (as the AsyncAPI parser
    requires), channels name defined servers. """
    errors = sorted(asyncapi_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors[:10])
    for ref in refs_in(doc):
        resolve(doc, ref)
    # keys as the specification's text wants them (the schema checks only those it matches)
    keys = [*doc["channels"], *doc["operations"], *doc.get("servers", {})]
    keys += [key for section in doc.get("components", {}).values() for key in section]
    assert all(KEY.match(key) for key in keys), [key for key in keys if not KEY.match(key)]
    for key, operation in doc["operations"].items():
        channel_ref = operation["channel"]["$ref"]
        for message in operation.get("messages", []):
            assert message["$ref"].startswith(channel_ref + "/messages/"), (key, message)
        reply = operation.get("reply")
        if reply:
            for message in reply["messages"]:
                assert message["$ref"].startswith(reply["channel"]["$ref"] + "/messages/"), (key, message)
    for channel in doc["channels"].values():
        for server in channel.get("servers", []):
            resolve(doc, server["$ref"])
    json.dumps(doc)  # plain JSON through and through


def merged(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """ The properties and required names of an object schema, following $ref and allOf (later
    parts refine earlier ones). """
    while "$ref" in schema:
        schema = resolve(doc, schema["$ref"])
    out: dict[str, Any] = {"properties": {}, "required": []}
    for part in schema.get("allOf", []):
        inner = merged(doc, part)
        out["properties"].update(inner["properties"])
        out["required"] += inner["required"]
    out["properties"].update(schema.get("properties", {}))
    out["required"] += schema.get("required", [])
    return out


def message_pointer(doc: dict[str, Any], ref: str) -> str:
    """ Where a message (given by a $ref, followed to its definition) is in the document. """
    while "$ref" in resolve(doc, ref):
        ref = resolve(doc, ref)["$ref"]
    return ref


def conforms(doc: dict[str, Any], message_ref: str, instance: Any) -> None:
    """ `instance` is valid against the payload of a message of the document, $refs resolved in
    the document itself (draft-07 ignores the keys beside a $ref at the root). """
    import jsonschema
    pointer = message_pointer(doc, message_ref) + "/payload"
    errors = list(jsonschema.Draft7Validator({**doc, "$ref": pointer}).iter_errors(instance))
    assert not errors, (pointer, [f"{list(e.absolute_path)}: {e.message[:200]}" for e in errors[:5]], instance)


def payload(doc: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in message:
        message = resolve(doc, message["$ref"])
    return message["payload"]


def channel_by_address(doc: dict[str, Any], address: str) -> tuple[str, dict[str, Any]]:
    found = [(key, channel) for key, channel in doc["channels"].items() if channel["address"] == address]
    assert len(found) == 1, (address, sorted(channel["address"] for channel in doc["channels"].values()))
    return found[0]


def operations_of(doc: dict[str, Any], channel_key: str) -> dict[str, dict[str, Any]]:
    return {key: op for key, op in doc["operations"].items() if op["channel"]["$ref"] == f"#/channels/{channel_key}"}


def openapi_schema(openapi: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """ An OpenAPI schema, its `$ref` to components/schemas followed, without what the document
    adds around model.py's schema. """
    if "$ref" in schema:
        schema = openapi["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return {key: value for key, value in schema.items() if key not in ("title", "description", "examples")}


def sio_component(doc: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """ A component schema without what the document adds around model.py's schema (title,
    description, examples). """
    schema = dict(resolve(doc, ref["$ref"]))
    for key in ("title", "description", "examples"):
        schema.pop(key, None)
    return schema


# ################################################################################################
# Tests


def test_the_schema_file_rejects_what_asyncapi_3_forbids():
    """ The vendored schema is really enforced: an AsyncAPI 2 action, a missing info, an
    address that is not a string, another version. """
    validator = asyncapi_validator()
    good = {"asyncapi": "3.0.0", "info": {"title": "t", "version": "1"},
            "channels": {"c": {"address": "c", "messages": {"m": {"payload": {"type": "object"}}}}},
            "operations": {"o": {"action": "send", "channel": {"$ref": "#/channels/c"},
                                 "messages": [{"$ref": "#/channels/c/messages/m"}]}}}
    assert not list(validator.iter_errors(good))
    assert list(validator.iter_errors({**good, "operations": {"o": {**good["operations"]["o"], "action": "publish"}}}))
    assert list(validator.iter_errors({key: value for key, value in good.items() if key != "info"}))
    assert list(validator.iter_errors({**good, "channels": {"c": {**good["channels"]["c"], "address": 5}}}))
    assert list(validator.iter_errors({**good, "asyncapi": "2.6.0"}))


async def test_topics_and_websocket_channels_are_described_and_the_document_validates(tmp_path):
    async with sample_server(tmp_path) as server:
        doc = build_asyncapi(server)
        check_document(doc)
        names = service_names(server)
        async with admin(server) as client:
            await create(client, "channel_rest", name="customers", service="api.customer.get", url_path="/api/customer")
        await wait_for(lambda: "customers" in server.config_objects.get("channel_rest", {}))
        openapi = build_openapi(server)
        process_cls = server.services.get("api.orders.process").cls
        customer_cls = server.services.get("api.customer.get").cls

    assert names == ["api.customer.get", "api.orders.process", "helpers.web-sockets-gateway", "plain.audit"]
    assert doc["asyncapi"] == "3.0.0" and doc["info"]["version"]
    assert "`receive` operations are what it takes in" in doc["info"]["description"]

    # A topic: its channel, GD as an extension, publish (receive) and one delivery (send) per subscription
    key, orders = channel_by_address(doc, "/orders/new")
    assert orders["x-zato-delivery"] == "guaranteed" and orders["x-zato-topic"]["has_gd"] is True
    assert orders["description"] == "New orders" and orders["tags"] == [{"name": "orders"}]
    operations = operations_of(doc, key)
    publish = [op for op in operations.values() if op["action"] == "receive"]
    deliver = [op for op in operations.values() if op["action"] == "send"]
    assert len(publish) == 1 and len(deliver) == 1
    assert publish[0]["security"] == [{"$ref": "#/components/securitySchemes/zato.admin"}]
    policy = deliver[0]["x-zato-delivery-policy"]
    assert (policy["max_attempts"], policy["retry_seconds"], policy["retry_backoff"], policy["retry_max_seconds"]) \
        == (5, 2.0, 2.0, 60.0)
    assert policy["dead_letter_queue"] == "/zato/api/pubsub/dlq" and policy["semantics"] == "at-least-once"
    assert deliver[0]["x-zato-service"] == "api.orders.process"
    admin_server = resolve(doc, orders["servers"][0]["$ref"])
    assert admin_server["protocol"] == "http" and admin_server["pathname"] == "/zato/api/invoke/zato.pubsub.publish.publish"
    assert admin_server["host"] == urlsplit(server.address).netloc
    assert doc["components"]["securitySchemes"]["zato.admin"] == {
        "type": "http", "scheme": "basic", "description": "The admin credentials of the server (HTTP Basic Auth)"}

    # The message a subscriber gets has the fields of PubSubMessage.to_dict(), its data the
    # subscriber's SimpleIO input; the publication has the options of self.pubsub.publish
    delivered = merged(doc, payload(doc, resolve(doc, deliver[0]["messages"][0]["$ref"])))
    example = PubSubMessage(pub_time=0.0, expiration_time=0.0).to_dict()
    assert set(delivered["properties"]) == set(example) | {"data_base64"} == set(delivery_fields())
    data_ref = delivered["properties"]["data"]
    assert sio_component(doc, data_ref) == model.schema_of_simpleio(process_cls, "input")
    assert resolve(doc, data_ref["$ref"])["description"] == "Processes a new order."
    published = merged(doc, payload(doc, resolve(doc, publish[0]["messages"][0]["$ref"])))
    from zato.builtin.pubsub.message import MESSAGE_OPTIONS
    assert set(published["properties"]) == set(MESSAGE_OPTIONS) | {"topic_name", "data_list"}
    assert published["properties"]["topic_name"] == {"const": "/orders/new"} and "topic_name" in published["required"]
    assert published["properties"]["data"] == data_ref
    assert published["properties"]["priority"]["maximum"] == 9

    # A RAM-only topic without subscribers: publish only, open data
    key, audit = channel_by_address(doc, "/audit")
    assert audit["x-zato-delivery"] == "ram-only"
    assert [op["action"] for op in operations_of(doc, key).values()] == ["receive"]

    # WebSocket channels: the session, invoke, server requests; SimpleIO as data; security; ws bindings
    key, customers = channel_by_address(doc, "/ws/customers")
    assert customers["bindings"] == {"ws": {"method": "GET", "bindingVersion": "0.1.0"}}
    ws_server = resolve(doc, customers["servers"][0]["$ref"])
    assert ws_server["protocol"] == "ws" and ws_server["host"] == urlsplit(server.address).netloc  # not 0.0.0.0
    operations = operations_of(doc, key)
    by_title = {op["title"]: op for op in operations.values()}
    session = by_title["Open a session"]
    assert session["action"] == "receive"
    assert session["security"] == [{"$ref": "#/components/securitySchemes/wsx.wsx.basic"}]
    assert doc["components"]["securitySchemes"]["wsx.wsx.basic"]["type"] == "userPassword"
    opened = payload(doc, resolve(doc, session["reply"]["messages"][0]["$ref"]))
    assert opened["properties"]["meta"]["properties"]["msg_type"]["const"] == "zwsx.rspa"
    create_session = payload(doc, resolve(doc, session["messages"][0]["$ref"]))
    assert create_session["properties"]["meta"]["properties"]["action"]["const"] == "create-session"
    assert {"username", "secret", "client_id"} <= set(create_session["properties"]["meta"]["properties"])
    invoke = by_title["Invoke api.customer.get"]
    assert invoke["action"] == "receive" and invoke["summary"] == "Returns a customer by id."
    assert invoke["tags"] == [{"name": "customers"}]
    request = payload(doc, resolve(doc, invoke["messages"][0]["$ref"]))
    assert request["properties"]["meta"]["properties"]["action"]["const"] == "invoke-service"
    assert sio_component(doc, request["properties"]["data"]) == model.schema_of_simpleio(customer_cls, "input")
    reply_types = [payload(doc, resolve(doc, m["$ref"]))["properties"]["meta"]["properties"]["msg_type"]["const"]
                   for m in invoke["reply"]["messages"]]
    assert reply_types == ["zwsx.rspok", "zwsx.rsperr", "zwsx.merr"]
    response = payload(doc, resolve(doc, invoke["reply"]["messages"][0]["$ref"]))
    assert sio_component(doc, response["properties"]["data"]) == model.schema_of_simpleio(customer_cls, "output")
    assert resolve(doc, response["properties"]["data"]["$ref"])["examples"] == [{"customer_id": 1, "name": "Ann"}]
    asks = by_title["The server asks the client"]
    assert asks["action"] == "send"
    assert payload(doc, resolve(doc, asks["messages"][0]["$ref"]))["properties"]["meta"]["properties"]["msg_type"][
        "const"] == "zwsx.rqc"
    answer = payload(doc, resolve(doc, asks["reply"]["messages"][0]["$ref"]))
    assert answer["properties"]["meta"]["properties"]["action"]["const"] == "client-response"
    assert "Pub/sub messages for the client" not in by_title  # only through the gateway

    # The gateway: an API key, the service named in the request, pub/sub deliveries (zwsx.psrq)
    key, _ = channel_by_address(doc, "/ws/gateway")
    by_title = {op["title"]: op for op in operations_of(doc, key).values()}
    assert doc["components"]["securitySchemes"]["wsx.wsx.key"] == {
        "type": "apiKey", "in": "password",
        "description": "API key of security definition wsx.key: create-session's meta.secret (meta.username is not "
                       "checked)"}
    psrq = by_title["Pub/sub messages for the client"]
    assert psrq["action"] == "send"
    frame = payload(doc, resolve(doc, psrq["messages"][0]["$ref"]))
    assert frame["properties"]["meta"]["properties"]["msg_type"]["const"] == "zwsx.psrq"
    try:
        from zato_plugin_wsx.pubsub import MESSAGE_FIELDS, OPTIONAL_FIELDS
    except ImportError:  # pragma: no cover - the wsx plugin is installed in this repository's .venv
        MESSAGE_FIELDS, OPTIONAL_FIELDS = (), ()
    assert set(frame["properties"]["data"]["properties"]) == set(MESSAGE_FIELDS) | set(OPTIONAL_FIELDS) | {
        "data", "data_base64"}
    assert frame["properties"]["data"]["required"] == list(MESSAGE_FIELDS)
    gateway_request = payload(doc, resolve(doc, by_title["Invoke helpers.web-sockets-gateway"]["messages"][0]["$ref"]))
    assert gateway_request["properties"]["data"]["required"] == ["service"]

    # No security, no SimpleIO: no security on the session, open data with a note
    key, _ = channel_by_address(doc, "/ws/audit")
    by_title = {op["title"]: op for op in operations_of(doc, key).values()}
    assert "security" not in by_title["Open a session"]
    data = payload(doc, resolve(doc, by_title["Invoke plain.audit"]["messages"][0]["$ref"]))["properties"]["data"]
    assert data == {"description": "The service plain.audit declares no SimpleIO: any JSON value is accepted and "
                                   "returned as it is."}

    # The same schemas as the OpenAPI document's for the same service behind a REST channel
    rest = openapi["paths"]["/api/customer"]
    body = next(op["requestBody"]["content"]["application/json"]["schema"] for op in rest.values()
                if isinstance(op, dict) and "requestBody" in op)
    assert openapi_schema(openapi, body) == sio_component(doc, request["properties"]["data"])
    output = rest[next(iter(rest))]["responses"]["200"]["content"]["application/json"]["schema"]["oneOf"][0]
    assert openapi_schema(openapi, output) == sio_component(doc, response["properties"]["data"])

    # The same service behind two interfaces has one schema, referred to from both
    assert sorted(key for key in doc["components"]["schemas"] if key.startswith("service.")) == [
        "service.api.customer.get.input", "service.api.customer.get.output",
        "service.api.orders.process.input"]
    assert sorted(key for key in doc["components"]["schemas"] if not key.startswith("service.")) == [
        "pubsub.delivery", "pubsub.message", "pubsub.publication"]


async def test_filters_by_service_and_topic_patterns_and_by_tags(tmp_path):
    async with sample_server(tmp_path) as server:
        everything = build_asyncapi(server)
        customers = build_asyncapi(server, include=["api.customer.*"])
        orders_by_service = build_asyncapi(server, include=["api.orders.*"])
        by_topic = build_asyncapi(server, include=["/audit"])
        excluded = build_asyncapi(server, exclude=["/orders/*", "helpers.*"])
        no_processor = build_asyncapi(server, exclude=["api.orders.*"])
        tagged = build_asyncapi(server, tags=["orders"])
        nothing = build_asyncapi(server, tags=["no such tag"])
        for doc in (customers, orders_by_service, by_topic, excluded, no_processor, tagged, nothing):
            check_document(doc)

    def addresses(doc):
        return sorted(channel["address"] for channel in doc["channels"].values())

    assert addresses(everything) == ["/audit", "/orders/new", "/ws/audit", "/ws/customers", "/ws/gateway"]
    assert addresses(customers) == ["/ws/customers"]
    assert "Only services or topics matching api.customer.*." in customers["info"]["description"]
    assert addresses(orders_by_service) == ["/orders/new"]  # the topic of a matching subscriber
    assert addresses(by_topic) == ["/audit"]
    assert addresses(excluded) == ["/audit", "/ws/audit", "/ws/customers"]
    # an excluded subscriber leaves its topic in, without its delivery
    assert addresses(no_processor) == ["/audit", "/orders/new", "/ws/audit", "/ws/customers", "/ws/gateway"]
    key, _ = channel_by_address(no_processor, "/orders/new")
    assert [op["action"] for op in operations_of(no_processor, key).values()] == ["receive"]
    assert addresses(tagged) == ["/orders/new"]
    assert nothing["channels"] == {} and nothing["operations"] == {} and "components" not in nothing


async def test_the_document_follows_changes_without_a_restart(tmp_path):
    async with sample_server(tmp_path) as server:
        before = build_asyncapi(server)
        port = urlsplit(server.address).port
        async with admin(server) as client:
            await create(client, "pubsub_topic", name="/invoices/paid")
            await create(client, "channel_web_socket", name="invoices", address=f"ws://127.0.0.1:{port}/ws/invoices",
                         service="api.customer.get")
            reply = await client.delete(f"{API}/objects/pubsub_topic/{quote('/audit', safe='')}")
            assert reply.status_code in (200, 204), reply.text
            # publishing to a service creates its topic: its subscriber is that service
            reply = await client.post(f"{API}/invoke/zato.pubsub.publish.publish",
                                      json={"topic_name": "api.orders.process", "data": {"order_id": 1,
                                                                                         "customer": "Ann"}})
            assert reply.status_code == 200, reply.text
        topic = service_topic_name("api.orders.process")
        await wait_for(lambda: {"/invoices/paid", topic} <= set(server.config_objects.get("pubsub_topic", {}))
                       and "/audit" not in server.config_objects["pubsub_topic"]
                       and "invoices" in server.config_objects.get("channel_web_socket", {}))
        after = build_asyncapi(server)
        check_document(after)
        without_service_topics = build_asyncapi(server, exclude=["/zato/*"])

    assert topic == "/zato/s/to/api_orders_process"
    addresses = sorted(channel["address"] for channel in after["channels"].values())
    assert addresses == sorted(["/invoices/paid", "/orders/new", topic, "/ws/audit", "/ws/customers", "/ws/gateway",
                                "/ws/invoices"])
    assert after != before
    key, _ = channel_by_address(after, topic)
    deliver = [op for op in operations_of(after, key).values() if op["action"] == "send"]
    assert len(deliver) == 1 and deliver[0]["x-zato-service"] == "api.orders.process"
    assert topic not in [channel["address"] for channel in without_service_topics["channels"].values()]


async def test_a_server_without_topics_or_websocket_channels_has_an_empty_valid_document(tmp_path):
    base_dir = create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 2})
    async with run_server(base_dir) as server:
        doc = build_asyncapi(server)
    check_document(doc)
    assert doc["channels"] == {} and doc["operations"] == {}


async def test_the_http_route_serves_the_document(tmp_path):
    async with sample_server(tmp_path) as server:
        async with admin(server) as client:
            reply = await client.get("/zato/apispec/asyncapi.json")
            filtered = await client.get("/zato/apispec/asyncapi.json", params={"include": "api.customer.*"})
        expected = build_asyncapi(server)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    doc = reply.json()
    check_document(doc)
    assert doc == json.loads(json.dumps(expected))
    assert filtered.status_code == 200, filtered.text
    assert sorted(channel["address"] for channel in filtered.json()["channels"].values()) == ["/ws/customers"]


async def test_what_really_goes_over_the_wire_matches_the_document(tmp_path):
    """ A publication, the message its subscriber service gets, and the WSX frames of a session,
    an invoke, a refused session and a pub/sub delivery through the gateway, each valid against
    the payload of the message the document gives for it. """
    from zato_plugin_wsx.testing import WSXClient, WSXClosed
    asyncapi_validator()  # skips (locally) without jsonschema, as conforms needs it
    publication = {"topic_name": "/orders/new", "data": {"order_id": 7, "customer": "Ann", "quantity": 2},
                   "priority": 7, "correl_id": "c-1"}
    async with sample_server(tmp_path) as server:
        doc = build_asyncapi(server)
        with trio.fail_after(30):
            async with await WSXClient.connect(server.address, "/ws/gateway") as subscriber:
                assert (await subscriber.create_session(None, API_KEY, client_id="crm-1"))["meta"]["status"] == 200
                subscribed = await subscriber.invoke({"service": "zato.pubsub.pubapi.subscribe-wsx",
                                                      "request": {"topic_name": "/orders/new"}})
                assert subscribed["meta"]["msg_type"] == "zwsx.rspok", subscribed
                async with admin(server) as client:
                    reply = await client.post(f"{API}/invoke/zato.pubsub.publish.publish", json=publication)
                assert reply.status_code == 200, reply.text
                psrq = await subscriber.next_request()
            await wait_for(lambda: server.plugin_state.get("test.apispec.got"))
            got = server.plugin_state["test.apispec.got"][0]
            async with await WSXClient.connect(server.address, "/ws/customers") as client:
                opened = await client.create_session(USER, PASSWORD, client_id="crm-2", client_name="CRM")
                answered = await client.invoke({"customer_id": 1})
                failed = await client.invoke({})  # customer_id is required: 400
            refused_client = await WSXClient.connect(server.address, "/ws/customers")
            refused = await refused_client.create_session(USER, "wrong")
            with pytest.raises(WSXClosed):
                await refused_client.receive()

    orders_key, _ = channel_by_address(doc, "/orders/new")
    operations = operations_of(doc, orders_key)
    (publish,) = [op for op in operations.values() if op["action"] == "receive"]
    (deliver,) = [op for op in operations.values() if op["action"] == "send"]
    conforms(doc, publish["messages"][0]["$ref"], publication)
    conforms(doc, deliver["messages"][0]["$ref"], json.loads(json.dumps(got)))
    assert got["data"] == publication["data"] and got["priority"] == 7

    by_title = {op["title"]: op for op in operations_of(doc, channel_by_address(doc, "/ws/gateway")[0]).values()}
    assert psrq["meta"]["msg_type"] == "zwsx.psrq"
    conforms(doc, by_title["Pub/sub messages for the client"]["messages"][0]["$ref"], psrq)

    by_title = {op["title"]: op for op in operations_of(doc, channel_by_address(doc, "/ws/customers")[0]).values()}
    session, invoke = by_title["Open a session"], by_title["Invoke api.customer.get"]
    create_session = {"data": {}, "meta": {"action": "create-session", "id": "1", "timestamp": "2024-05-01T10:11:12",
                                           "token": None, "client_id": "crm-2", "client_name": "CRM",
                                           "username": USER, "secret": PASSWORD}}  # as WSXClient sends it
    conforms(doc, session["messages"][0]["$ref"], create_session)
    conforms(doc, session["reply"]["messages"][0]["$ref"], opened)
    conforms(doc, session["reply"]["messages"][1]["$ref"], refused)
    conforms(doc, invoke["messages"][0]["$ref"], {"data": {"customer_id": 1}, "meta": {
        "action": "invoke-service", "id": "2", "timestamp": "2024-05-01T10:11:12", "token": opened["data"]["token"],
        "client_id": "crm-2", "client_name": "CRM"}})
    assert answered["meta"]["msg_type"] == "zwsx.rspok" and failed["meta"]["msg_type"] == "zwsx.rsperr"
    conforms(doc, invoke["reply"]["messages"][0]["$ref"], answered)
    conforms(doc, invoke["reply"]["messages"][1]["$ref"], failed)
