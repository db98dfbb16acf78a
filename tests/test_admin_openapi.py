""" The admin API's OpenAPI document cannot fall behind the server: it is valid OpenAPI 3.1, every
route under /zato/ of every built-in plugin is in it with all its methods, and every status a
handler raises (`HTTPError(4xx` in its source or in what it calls) is documented for its
operations. A plugin's route carries its own OpenAPI operations (`register(..., openapi=...)`). """

from __future__ import annotations

import dis
import inspect
import re
import types

import httpx
import pytest

from zato import hookimpl
from zato.builtin import admin_api
from zato.builtin.admin_api import PREFIX, openapi_document
from zato.server.admin_auth import check_admin
from zato.plugins import DEFAULT_PLUGINS, load_plugins
from zato.registry import Kind, RegistrationError
from zato.testing import admin_auth, run_server

RAISED = re.compile(r"HTTPError\(\s*(\d{3})\b")
OBJECTS = f"{PREFIX}/objects/{{type}}"  # generic routes, documented once per object type
# Not scanned: what they raise is documented by other means. check_admin's 400/401/415 are the
# shared errors (test_every_admin_operation_documents_the_shared_errors); _object_type's 404 (no
# such object type) cannot happen on the document's paths, which name each type.
NOT_SCANNED = {(check_admin.__module__, "check_admin"), (admin_api.objects.__name__, "_object_type")}


@pytest.fixture
async def served(server_dir):
    """ (the server, the OpenAPI document it serves). """
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30) as client:
            reply = await client.get(f"{PREFIX}/openapi.json")
            assert reply.status_code == 200, reply.text
            yield server, reply.json()


def _builtin_admin_routes(server) -> list:
    builtin = set(DEFAULT_PLUGINS)
    registry = server.registry
    return [route for key, route in registry.items(Kind.HTTP_ROUTES).items()
            if route.path.startswith("/zato/") and registry.plugin_of(Kind.HTTP_ROUTES, key) in builtin]


def _documented_paths(server, route) -> list[str]:
    """ The document's paths of a route: its own, or one per object type for the object calls. """
    if not route.path.startswith(OBJECTS):
        return [route.path]
    object_types = server.registry.values(Kind.OBJECT_TYPES)
    if route.path.endswith("/secrets/{field}"):
        object_types = [t for t in object_types if any(f.secret for f in t.fields)]
    return [route.path.replace("{type}", t.name) for t in object_types]


def raised_statuses(function) -> set[int]:
    """ Statuses in `HTTPError(NNN` in a function's source and in the source of the zato functions
    it calls by name (transitively): a source scan, enough to keep the document honest. """
    statuses: set[int] = set()
    seen: set = set()
    stack = [function]
    while stack:
        current = stack.pop()
        if current in seen or (current.__module__, current.__name__) in NOT_SCANNED:
            continue
        seen.add(current)
        try:
            source = inspect.getsource(current)
        except (OSError, TypeError):
            continue
        statuses |= {int(status) for status in RAISED.findall(source)}
        for name in _names(current.__code__):
            called = current.__globals__.get(name)
            if inspect.isfunction(called) and (called.__module__ or "").startswith("zato."):
                stack.append(called)
    return statuses


def _names(code: types.CodeType) -> set[str]:
    """ The global names a function's code (nested functions included) loads: calls by name, not
    attribute names such as `odb.get_object`. """
    names = {op.argval for op in dis.get_instructions(code) if op.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


async def test_the_document_is_valid_openapi(served):
    from openapi_spec_validator import validate
    _, document = served
    validate(document)
    assert document["openapi"] == "3.1.0"


async def test_every_admin_route_of_every_builtin_plugin_is_documented_with_all_its_methods(served):
    server, document = served
    routes = _builtin_admin_routes(server)
    assert len(routes) > 30
    missing = []
    for route in routes:
        for path in _documented_paths(server, route):
            for method in route.methods:
                if method.lower() not in document["paths"].get(path, {}):
                    missing.append(f"{method} {path} (handler {route.handler.__module__}.{route.handler.__name__})")
    assert not missing, "routes missing from the OpenAPI document; give them openapi=... where they are " \
                        "registered:\n  " + "\n  ".join(missing)


async def test_every_status_a_handler_raises_is_documented(served):
    server, document = served
    undocumented = []
    for route in _builtin_admin_routes(server):
        statuses = raised_statuses(route.handler)
        for path in _documented_paths(server, route):
            for method in route.methods:
                operation = document["paths"].get(path, {}).get(method.lower(), {})
                documented = {int(status) for status in operation.get("responses", {}) if status.isdigit()}
                for status in sorted(statuses - documented):
                    undocumented.append(f"{method} {path}: {status} (raised by {route.handler.__module__}."
                                        f"{route.handler.__name__} or what it calls)")
    assert not undocumented, "statuses the handlers raise but the document does not list:\n  " + \
        "\n  ".join(undocumented)


async def test_every_admin_operation_documents_the_shared_errors(served):
    _, document = served
    assert {"Error"} <= set(document["components"]["schemas"])
    problems = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            statuses = set(operation["responses"])
            needed = {"413"} if operation.get("security") == [] else {"400", "401", "413"}
            if method in ("post", "put", "patch", "delete") and operation.get("security") != []:
                needed.add("415")
                if "requestBody" not in operation:
                    problems.append(f"{method.upper()} {path}: no requestBody (a write needs its Content-Type)")
            if needed - statuses:
                problems.append(f"{method.upper()} {path}: {sorted(needed - statuses)} missing")
            if not any(status.startswith("2") for status in statuses):
                problems.append(f"{method.upper()} {path}: no success response")
    assert not problems, "\n".join(problems)
    unauthorized = document["components"]["responses"]["Unauthorized"]
    assert "WWW-Authenticate" in unauthorized["headers"]


async def test_the_scan_finds_what_a_handler_raises():
    from zato.builtin import scheduler
    from zato.builtin.pubsub import admin as pubsub_admin
    assert raised_statuses(pubsub_admin.purge_dead) == {400, 503}  # _dead_filters, _flag, _runtime
    assert raised_statuses(pubsub_admin.get_topic) == {404, 503}
    assert raised_statuses(scheduler.job_history) == {400, 404}
    assert raised_statuses(admin_api.create_object) == {400, 409}  # not odb.get_object's name twin


# ################################################################################################
# The `openapi` argument of register_http_routes


async def _handler(request):
    raise AssertionError("not called")


def _plugin(**register_kwargs):
    class Plugin:
        @hookimpl
        def register_http_routes(self, register):
            register("/zato/api/thing/{name}", _handler, methods=("GET", "POST"), **register_kwargs)
    return Plugin()


def test_a_plugin_route_with_openapi_is_in_the_document_with_the_shared_errors():
    operation = {"summary": "A thing", "parameters": [{"name": "name", "in": "path", "required": True,
                                                       "schema": {"type": "string"}}],
                 "responses": {"200": {"description": "The thing"}}}
    loaded = load_plugins(extra=[("openapi_test", _plugin(openapi={"get": operation}))])
    registry = loaded.registry
    document = openapi_document(registry.values(Kind.OBJECT_TYPES), registry.values(Kind.HTTP_ROUTES))
    documented = document["paths"]["/zato/api/thing/{name}"]["get"]
    assert documented["summary"] == "A thing"
    assert {"200", "400", "401", "413"} <= set(documented["responses"])
    assert "post" not in document["paths"]["/zato/api/thing/{name}"]  # not described: not documented


def test_openapi_for_a_method_the_route_does_not_have_is_refused_naming_the_plugin():
    with pytest.raises(RegistrationError) as info:
        load_plugins(extra=[("openapi_test", _plugin(openapi={"delete": {"responses": {}}}))])
    message = str(info.value)
    assert "openapi_test" in message and "delete" in message and "GET, POST" in message


# ################################################################################################
# Bad values the document refuses are refused by the server too (each was a 500)


async def test_bad_query_and_body_values_answer_400_naming_the_value(served):
    server, _ = served
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), headers=headers, timeout=30) as api:
        job = {"name": "j", "service": "zato.ping", "job_type": "interval_based", "seconds": 60,
               "start_date": "2000-01-01T00:00:00Z"}
        assert (await api.post(f"{PREFIX}/objects/scheduler", json=job)).status_code == 201
        huge = "9" * 30
        cases = [
            ("GET", f"{PREFIX}/scheduler/jobs/j/history?limit={huge}", None, "limit"),
            ("GET", f"{PREFIX}/scheduler/jobs/j/history?limit=0", None, "limit"),
            ("GET", f"{PREFIX}/pubsub/dlq?offset={huge}", None, "offset"),
            ("GET", f"{PREFIX}/pubsub/dlq?data=maybe", None, "data"),
            ("DELETE", f"{PREFIX}/pubsub/dlq?topic=", None, "topic"),
            ("POST", f"{PREFIX}/pubsub/dlq/replay", {"sub_key": {"a": 1}}, "sub_key"),
            ("POST", f"{PREFIX}/pubsub/dlq/replay", {"msg_ids": "zpsm1"}, "msg_ids"),
            ("POST", f"{PREFIX}/pubsub/dlq/replay", {"all": "yes"}, "all"),
            ("POST", f"{PREFIX}/config/reload", {"types": 5}, "types"),
            ("POST", f"{PREFIX}/config/reload", {"types": ["no_such_type"]}, "types"),
        ]
        for method, url, body, name in cases:
            reply = await api.request(method, url, json=body)
            assert reply.status_code == 400 and name in reply.json()["details"], (method, url, body, reply.text)
        assert (await api.post(f"{PREFIX}/config/reload", json={"types": ["channel_rest"]})).json() == {
            "reloaded": ["channel_rest"]}


async def test_a_file_name_of_the_longest_allowed_length_deploys(served):
    server, _ = served
    name = "a" * 252 + ".py"  # 255 bytes: the temporary file next to it must fit the file system too
    async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30) as api:
        reply = await api.post(f"{PREFIX}/deploy/{name}", content=b"x = 1\n", headers={"content-type": "text/x-python"})
        assert reply.status_code == 200, reply.text
