""" The `admin_api` plugin: one authenticated API over every configuration object type.

    GET    /zato/api/objects                                  object types and their schemas
    GET    /zato/api/objects/{type}                           list (secrets never returned)
    POST   /zato/api/objects/{type}                           create
    GET    /zato/api/objects/{type}/{name}                    read
    PUT    /zato/api/objects/{type}/{name}                    replace (non-secret fields)
    PATCH  /zato/api/objects/{type}/{name}                    change some fields
    DELETE /zato/api/objects/{type}/{name}                    delete
    PUT    /zato/api/objects/{type}/{name}/secrets/{field}    set a secret: {"value": "..."}
    POST   /zato/api/config/reload                            re-read every object (after enmasse)
    POST   /zato/api/outgoing/{type}/{name}/ping              ping an outgoing connection
    GET    /zato/api/openapi.json                             OpenAPI 3.1, generated from the schemas

Names go in the path percent-encoded (`/api/x` is `%2Fapi%2Fx`). Every change is written to
the configuration database, then every worker reloads the objects of that type and re-applies
what uses them: a new REST channel answers at once, a deleted one is gone, requests in flight
finish on what they started with. `If-Match: <version>` on PUT/PATCH/DELETE refuses a change
to an object that changed since it was read (409).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import trio

from zato import __version__, hookimpl
from zato.objects import (
    IS_ACTIVE, NAME_FIELD, ObjectValidationError, field_schema, public_view, store_secret, validate,
)
from zato.odb import ObjectExists, ObjectNotFound, VersionConflict
from zato.registry import Kind
from zato.server.admin_auth import check_admin
from zato.server.config_objects import CHANGED, secret_box
from zato.server.http import HTTPError, HTTPRequest, HTTPResponse

logger = logging.getLogger("zato.admin")

PREFIX = "/zato/api"


def _object_type(request: HTTPRequest) -> Any:
    name = request.path_params["type"]
    types = request.server.registry.items(Kind.OBJECT_TYPES)
    if name not in types:
        raise HTTPError(404, f"Error 404 Not Found: no object type {name!r}; known: {', '.join(sorted(types))}")
    return types[name]


def _body(request: HTTPRequest) -> dict[str, Any]:
    data = request.json()
    if not isinstance(data, dict):
        raise HTTPError(400, "Error 400 Bad Request: the body must be a JSON object")
    return data


def _validation_error(exc: ObjectValidationError) -> HTTPError:
    return HTTPError(400, f"Error 400 Bad Request: {exc}", extra={"errors": exc.errors})


def _expected_version(request: HTTPRequest) -> int | None:
    value = request.headers.get("if-match")
    if value is None:
        return None
    try:
        return int(value.strip('"'))
    except ValueError:
        raise HTTPError(400, "Error 400 Bad Request: If-Match must be an object version number") from None


async def _check_references(request: HTTPRequest, object_type: Any, data: dict[str, Any]) -> None:
    """ Fields that name other objects must name existing ones. """
    errors = []
    odb = request.server.odb
    for field in object_type.fields:
        target = field.references
        value = data.get(field.name)
        if not target or not value or target == "service" or str(value).startswith("$"):
            continue
        try:
            await trio.to_thread.run_sync(odb.get_object, target, value)
        except ObjectNotFound:
            errors.append({"field": field.name, "error": f"{target} {value!r} does not exist; create it first"})
    if errors:
        raise _validation_error(ObjectValidationError(object_type.name, data.get("name"), errors))


def _check_channels(request: HTTPRequest, object_type: Any, data: dict[str, Any]) -> None:
    """ Channel runtimes may say why a definition cannot work beside the others (a route clash). """
    for channel_type in request.server.registry.values(Kind.CHANNEL_TYPES):
        runtime = request.server.channels.get(channel_type.name)
        if channel_type.object_type == object_type.name and hasattr(runtime, "validate"):
            problems = runtime.validate(data)
            if problems:
                raise HTTPError(409, f"Error 409 Conflict: {'; '.join(problems)}")


async def _changed(request: HTTPRequest, object_type: str) -> None:
    await request.server.notify(CHANGED, {"types": [object_type]})


def _reply(object_type: Any, obj: dict[str, Any], status: int = 200) -> HTTPResponse:
    return HTTPResponse.json(public_view(object_type, obj), status)


# ################################################################################################


async def list_types(request: HTTPRequest) -> HTTPResponse:
    await check_admin(request)
    return HTTPResponse.json([_describe_type(t) for t in request.server.registry.values(Kind.OBJECT_TYPES)])


async def list_objects(request: HTTPRequest) -> HTTPResponse:
    await check_admin(request)
    object_type = _object_type(request)
    objects = await trio.to_thread.run_sync(
        lambda: request.server.odb.list_objects(object_type.name, active_only=False))
    return HTTPResponse.json([public_view(object_type, obj) for obj in objects])


async def create_object(request: HTTPRequest) -> HTTPResponse:
    await check_admin(request)
    object_type = _object_type(request)
    try:
        data = validate(object_type, _body(request))
    except ObjectValidationError as exc:
        raise _validation_error(exc) from None
    await _check_references(request, object_type, data)
    _check_channels(request, object_type, data)
    try:
        obj = await trio.to_thread.run_sync(request.server.odb.create_object, object_type.name, data["name"], data)
    except ObjectExists as exc:
        raise HTTPError(409, f"Error 409 Conflict: {exc}") from None
    logger.info("cid=%s created %s %r", request.cid, object_type.name, data["name"])
    await _changed(request, object_type.name)
    return _reply(object_type, obj, 201)


async def get_object(request: HTTPRequest) -> HTTPResponse:
    await check_admin(request)
    object_type = _object_type(request)
    return _reply(object_type, await _read(request, object_type))


async def _read(request: HTTPRequest, object_type: Any) -> dict[str, Any]:
    name = request.path_params["name"]
    try:
        return await trio.to_thread.run_sync(request.server.odb.get_object, object_type.name, name)
    except ObjectNotFound:
        raise HTTPError(404, f"Error 404 Not Found: no {object_type.name} named {name!r}") from None


async def replace_object(request: HTTPRequest) -> HTTPResponse:
    return await _update(request, partial=False)


async def patch_object(request: HTTPRequest) -> HTTPResponse:
    return await _update(request, partial=True)


async def _update(request: HTTPRequest, *, partial: bool) -> HTTPResponse:
    await check_admin(request)
    object_type = _object_type(request)
    name = request.path_params["name"]
    body = _body(request)
    if "name" in body and body["name"] != name:
        raise HTTPError(400, "Error 400 Bad Request: renaming is not supported here; create the object under "
                             "its new name and delete the old one")
    body["name"] = name
    current = await _read(request, object_type)
    try:
        changes = validate(object_type, body, partial=partial)
    except ObjectValidationError as exc:
        raise _validation_error(exc) from None
    secrets = {f.name: current.get(f.name) for f in object_type.fields if f.secret and current.get(f.name)}
    base = {k: v for k, v in current.items() if not k.startswith("_")} if partial else {}
    data = {**base, **changes, **secrets}
    await _check_references(request, object_type, data)
    _check_channels(request, object_type, data)
    try:
        obj = await trio.to_thread.run_sync(
            lambda: request.server.odb.update_object(object_type.name, name, data,
                                                     expected_version=_expected_version(request)))
    except VersionConflict as exc:
        raise HTTPError(409, f"Error 409 Conflict: {exc}") from None
    except ObjectNotFound:
        raise HTTPError(404, f"Error 404 Not Found: no {object_type.name} named {name!r}") from None
    logger.info("cid=%s updated %s %r", request.cid, object_type.name, name)
    await _changed(request, object_type.name)
    return _reply(object_type, obj)


async def delete_object(request: HTTPRequest) -> HTTPResponse:
    await check_admin(request)
    object_type = _object_type(request)
    name = request.path_params["name"]
    current = await _read(request, object_type)
    expected = _expected_version(request)
    if expected is not None and current["_meta"]["version"] != expected:
        raise HTTPError(409, f"Error 409 Conflict: {object_type.name} {name!r} is at version "
                             f"{current['_meta']['version']}, not {expected}")
    referrers = await trio.to_thread.run_sync(_referrers, request.server, object_type.name, name)
    if referrers:
        raise HTTPError(409, f"Error 409 Conflict: {object_type.name} {name!r} is used by "
                             f"{', '.join(referrers)}; change or delete those first")
    await trio.to_thread.run_sync(request.server.odb.delete_object, object_type.name, name)
    logger.info("cid=%s deleted %s %r", request.cid, object_type.name, name)
    await _changed(request, object_type.name)
    return HTTPResponse(204, b"")


def _referrers(server: Any, object_type: str, name: str) -> list[str]:
    found = []
    for other in server.registry.values(Kind.OBJECT_TYPES):
        fields = [f.name for f in other.fields if f.references == object_type]
        if not fields:
            continue
        for obj in server.odb.list_objects(other.name, active_only=False):
            if any(obj.get(field) == name for field in fields):
                found.append(f"{other.name} {obj['name']!r}")
    return found


async def set_secret(request: HTTPRequest) -> HTTPResponse:
    await check_admin(request)
    object_type = _object_type(request)
    name, field_name = request.path_params["name"], request.path_params["field"]
    field = next((f for f in object_type.fields if f.name == field_name and f.secret), None)
    if field is None:
        secrets = ", ".join(f.name for f in object_type.fields if f.secret) or "none"
        raise HTTPError(404, f"Error 404 Not Found: {object_type.name} has no secret {field_name!r}; "
                             f"its secrets: {secrets}")
    body = _body(request)
    if "value" not in body or not isinstance(body["value"], (str, type(None))):
        raise HTTPError(400, 'Error 400 Bad Request: send {"value": "the secret"} ({"value": null} clears it)')
    current = await _read(request, object_type)
    box = secret_box(request.server)
    stored = await trio.to_thread.run_sync(store_secret, field, body["value"], box, current)
    data = {k: v for k, v in current.items() if not k.startswith("_")}
    data[field.name] = stored
    await trio.to_thread.run_sync(lambda: request.server.odb.update_object(object_type.name, name, data))
    logger.info("cid=%s set secret %s of %s %r", request.cid, field.name, object_type.name, name)  # never the value
    await _changed(request, object_type.name)
    return HTTPResponse(204, b"")


async def reload_config(request: HTTPRequest) -> HTTPResponse:
    await check_admin(request)
    body = request.json() if request.body else {}
    if not isinstance(body, dict):
        raise HTTPError(400, 'Error 400 Bad Request: the body must be a JSON object such as '
                             '{"types": ["channel_rest"]} (or empty to reload every type)')
    types = (body or {}).get("types")
    known = request.server.registry.items(Kind.OBJECT_TYPES)
    if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) and t in known for t in types)):
        raise HTTPError(400, f"Error 400 Bad Request: types must be a list of object type names; known: "
                             f"{', '.join(sorted(known))}", extra={"errors": [{"field": "types", "error": (
                                 "expected a list of object type names, got " + json.dumps(types)[:200])}]})
    types = types or None  # none named: every type
    await request.server.notify(CHANGED, {"types": types})
    return HTTPResponse.json({"reloaded": types or "all"})


async def ping_connection(request: HTTPRequest) -> HTTPResponse:
    """ Pings one outgoing connection: {"ok": true, "took_ms": ...} or {"ok": false, "error": ...}. """
    await check_admin(request)
    from zato.server.outgoing import ConnectionNotFound
    try:
        result = await request.server.outgoing_connections.ping(request.path_params["type"], request.path_params["name"])
    except ConnectionNotFound as exc:
        raise HTTPError(404, f"Error 404 Not Found: {exc}") from None
    return HTTPResponse.json(result)


async def openapi(request: HTTPRequest) -> HTTPResponse:
    await check_admin(request)
    registry = request.server.registry
    return HTTPResponse.json(openapi_document(registry.values(Kind.OBJECT_TYPES), registry.values(Kind.HTTP_ROUTES)))


# ################################################################################################
# Schemas


# The JSON Schema of every field comes from zato.objects.field_schema, next to the validation it
# describes; this maps a field type to its JSON type, for readers of `_describe_type`.
JSON_TYPES = {"str": "string", "text": "string", "datetime": "string", "int": "integer", "float": "number",
              "bool": "boolean", "list": "array", "dict": "object"}


def _describe_type(object_type: Any) -> dict[str, Any]:
    return {"name": object_type.name, "description": object_type.description, "fields": [
        {"name": f.name, "type": f.type, "required": f.required, "default": f.default, "secret": f.secret,
         "references": f.references, "description": f.description, "example": f.example,
         "choices": list(f.choices) if f.choices else None}
        for f in object_type.fields]}


def _json_schema(object_type: Any, *, for_output: bool) -> dict[str, Any]:
    """ An object type's JSON Schema: exactly what `zato.objects.validate` accepts (input), or what
    the admin API returns (output). Keys starting with `_` are ignored by validation, so allowed. """
    properties: dict[str, Any] = {"name": field_schema(NAME_FIELD, for_output=for_output),
                                  "is_active": {**field_schema(IS_ACTIVE, for_output=for_output), "default": True}}
    required = ["name"]
    for field in object_type.fields:
        if field.secret:
            continue
        schema = field_schema(field, for_output=for_output)
        if field.description:
            schema["description"] = field.description
        if field.default is not None:
            schema["default"] = field.default
        if field.example is not None:
            schema["examples"] = [field.example]
        properties[field.name] = {**properties.get(field.name, {}), **schema}
        if field.required and field.name not in required and not for_output:
            required.append(field.name)
    if for_output:
        properties["version"] = {"type": "integer"}
        if any(f.secret for f in object_type.fields):
            properties["secrets_set"] = {"type": "array", "items": {"type": "string"}}
    schema = {"type": "object", "properties": properties, "required": required,
              "additionalProperties": for_output, "description": object_type.description}
    if not for_output:
        schema["patternProperties"] = {"^_": {}}
    return schema


ERROR_SCHEMA = {
    "type": "object", "description": "Zato's error body. It never holds a traceback: the cid finds it in the log.",
    "properties": {
        "result": {"type": "string", "enum": ["Error"]},
        "cid": {"type": "string", "description": "the request's correlation id, also in the X-Zato-Cid header"},
        "details": {"type": "string", "description": "what was wrong and what to do"},
        "errors": {"type": "array", "description": "400: every bad field, each with why it is bad",
                   "items": {"type": "object", "properties": {"field": {"type": "string"},
                                                              "error": {"type": "string"}}}}},
    "required": ["result", "cid", "details"]}

ERROR_REF = "#/components/schemas/Error"
_ERROR_CONTENT = {"application/json": {"schema": {"$ref": ERROR_REF}}}


def _shared(description: str, **headers: str) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _ERROR_CONTENT}
    if headers:
        response["headers"] = {name: {"description": text, "schema": {"type": "string"}}
                               for name, text in headers.items()}
    return response


# The error responses admin calls share, as components/responses/NAME: a route's OpenAPI
# operation may refer to them (`{"$ref": "#/components/responses/NotFound"}`).
SHARED_RESPONSES: dict[str, tuple[int, dict[str, Any]]] = {
    "BadRequest": (400, _shared("Bad input: a body that is not valid JSON or not of the documented shape, or a bad "
                                "path or query value; `errors` lists every bad field where there are fields")),
    "Unauthorized": (401, _shared("No valid admin credentials (HTTP Basic Auth, [admin] in server.conf); failed "
                                  "logins from one client address are answered more and more slowly",
                                  **{"WWW-Authenticate": 'Basic realm="Zato admin API"'})),
    "Forbidden": (403, _shared("The credentials are valid but not allowed here")),
    "NotFound": (404, _shared("What the path names does not exist; `details` says what does")),
    "Conflict": (409, _shared("The change clashes with what is stored (exists already, changed since read, "
                              "still in use)")),
    "ContentTooLarge": (413, _shared("The body is over [main] max_body_size of server.conf")),
    "UnsupportedMediaType": (415, _shared("A write (POST, PUT, PATCH, DELETE) whose Content-Type is not one of "
                                          "those documented for it (application/json unless said otherwise), "
                                          "with or without a body")),
    "TooManyRequests": (429, _shared("A rate limit was reached: try again later",
                                     **{"Retry-After": "seconds to wait"})),
    "ServiceUnavailable": (503, _shared("The plugin behind this call is not running in this server (switched off in "
                                        "[plugins] of server.conf, or not started)",
                                        **{"Retry-After": "seconds to wait, where waiting helps"})),
}
_SHARED_BY_STATUS = {str(status): name for name, (status, _) in SHARED_RESPONSES.items()}
WRITE_METHODS = ("post", "put", "patch", "delete")
# What a write without a body sends all the same: check_admin refuses a write without one of the
# Content-Types it allows (415), so that a web page cannot make a browser send it cross-site.
NO_BODY = {"required": False, "description": "None needed; send Content-Type: application/json all the same (415 "
                                             "otherwise)", "content": {"application/json": {"schema": {}}}}


def _ref(status: int) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{_SHARED_BY_STATUS[str(status)]}"}


def with_shared_errors(method: str, operation: dict[str, Any]) -> dict[str, Any]:
    """ An admin operation with the error responses it shares with every other one: 413 always (the
    body limit applies to every request); 400 (a credential header sent twice, bad input) and 401
    unless it needs no credentials (`security: []`); 415 for a write (POST, PUT, PATCH, DELETE),
    which needs its Content-Type even without a body (such a write gets `NO_BODY` as its optional
    body). A status the operation documents itself is kept as it is. """
    operation = dict(operation)
    responses = dict(operation.get("responses") or {})
    statuses = [413]
    if operation.get("security") != []:
        statuses += [400, 401]
        if method in WRITE_METHODS:
            statuses.append(415)
            operation.setdefault("requestBody", NO_BODY)
    for status in statuses:
        responses.setdefault(str(status), _ref(status))
    operation["responses"] = dict(sorted(responses.items()))
    return operation


# The admin API's own calls (the object calls are generated per object type in openapi_document).

_TYPE_FIELD_SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string"}, "type": {"type": "string", "description": "str, int, float, bool, list, dict..."},
    "required": {"type": "boolean"}, "default": {}, "secret": {"type": "boolean"},
    "references": {"type": ["string", "null"], "description": "the object type this field names an object of"},
    "description": {"type": "string"}, "example": {},
    "choices": {"type": ["array", "null"], "description": "the only values allowed"}},
    "required": ["name", "type", "required", "secret"]}

LIST_TYPES_OPENAPI = {"get": {
    "operationId": "list_object_types", "tags": ["objects"], "summary": "Object types and their fields",
    "responses": {"200": {"description": "Every object type of every enabled plugin", "content": {
        "application/json": {"schema": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "description": {"type": "string"},
            "fields": {"type": "array", "items": _TYPE_FIELD_SCHEMA}}, "required": ["name", "fields"]}}}}}}}}

RELOAD_OPENAPI = {"post": {
    "operationId": "reload_config", "tags": ["config"],
    "summary": "Every worker re-reads objects from the configuration database (after enmasse or a direct edit)",
    "requestBody": {"required": False, "content": {"application/json": {"schema": {
        "type": "object", "properties": {"types": {
            "type": ["array", "null"], "items": {"type": "string", "minLength": 1},
            "description": "object types to reload; all if left out, null or empty"}}}}}},
    "responses": {"200": {"description": "Reloaded", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"reloaded": {"oneOf": [
            {"type": "string", "enum": ["all"]}, {"type": "array", "items": {"type": "string"}}]}},
        "required": ["reloaded"]}}}}}}}

PING_CONNECTION_OPENAPI = {"post": {
    "operationId": "ping_outgoing_connection", "tags": ["outgoing"],
    "summary": "Pings one outgoing connection; a failed ping is a 200 with ok false and the error",
    "parameters": [
        {"name": "type", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
         "description": "outgoing connection type (e.g. outgoing_http)"},
        {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
         "description": "connection name, percent-encoded"}],
    "responses": {
        "200": {"description": "The ping's outcome", "content": {"application/json": {"schema": {
            "type": "object", "properties": {
                "ok": {"type": "boolean"}, "took_ms": {"type": "number"},
                "error": {"type": "string", "description": "why the ping failed (ok is false)"}},
            "required": ["ok", "took_ms"]}}}},
        "404": {"description": "No such connection type or connection; `details` lists those that exist",
                "content": _ERROR_CONTENT}}}}

OPENAPI_OPENAPI = {"get": {
    "operationId": "openapi_document", "tags": ["meta"], "summary": "This document (OpenAPI 3.1)",
    "responses": {"200": {"description": "The OpenAPI document of the admin API of this server's enabled plugins",
                          "content": {"application/json": {"schema": {"type": "object", "required": ["openapi"]}}}}}}}


def openapi_document(object_types: list[Any], routes: list[Any] = ()) -> dict[str, Any]:
    """ The admin API's OpenAPI 3.1 document: the object calls of every object type (from its
    schema), then every HTTP route under /zato/ that a plugin registered with its OpenAPI
    operations, each with the error responses it shares with the others. """
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    error = {"$ref": "#/components/responses/NotFound"}

    def body(ref: str) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": {"$ref": ref}}}}

    def ok(ref: str, description: str = "OK", many: bool = False) -> dict[str, Any]:
        schema: dict[str, Any] = {"$ref": ref}
        if many:
            schema = {"type": "array", "items": schema}
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    conflict = _ref(409)
    name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
                  "description": "object name, percent-encoded"}
    if_match = {"name": "If-Match", "in": "header", "required": False,
                "schema": {"type": "string", "pattern": r'^"?\d+"?$'},
                "description": "the object version this change is based on; 409 if it changed since"}
    for object_type in object_types:
        t = object_type.name
        schemas[f"{t}_input"] = _json_schema(object_type, for_output=False)
        schemas[t] = _json_schema(object_type, for_output=True)
        ref_in, ref_out = f"#/components/schemas/{t}_input", f"#/components/schemas/{t}"
        paths[f"{PREFIX}/objects/{t}"] = {
            "get": {"operationId": f"list_{t}", "tags": [t], "summary": f"Every {t} (active or not)",
                    "responses": {"200": ok(ref_out, many=True)}},
            "post": {"operationId": f"create_{t}", "tags": [t], "summary": f"Create a {t}", "requestBody": body(ref_in),
                     "responses": {"201": ok(ref_out, "Created"), "409": conflict}},
        }
        paths[f"{PREFIX}/objects/{t}/{{name}}"] = {
            "parameters": [name_param],
            "get": {"operationId": f"get_{t}", "tags": [t], "summary": f"One {t}",
                    "responses": {"200": ok(ref_out), "404": error}},
            "put": {"operationId": f"replace_{t}", "tags": [t], "summary": f"Replace a {t}'s fields (not its secrets)",
                    "parameters": [if_match], "requestBody": body(ref_in),
                    "responses": {"200": ok(ref_out), "404": error, "409": conflict}},
            "patch": {"operationId": f"patch_{t}", "tags": [t], "summary": f"Change some fields of a {t}",
                      "parameters": [if_match], "requestBody": {"required": True, "content": {
                          "application/json": {"schema": {"type": "object"}}}},
                      "responses": {"200": ok(ref_out), "404": error, "409": conflict}},
            "delete": {"operationId": f"delete_{t}", "tags": [t], "summary": f"Delete a {t} that nothing uses",
                       "parameters": [if_match],
                       "responses": {"204": {"description": "Deleted"}, "404": error, "409": conflict}},
        }
        secret_fields = [f.name for f in object_type.fields if f.secret]
        if secret_fields:
            paths[f"{PREFIX}/objects/{t}/{{name}}/secrets/{{field}}"] = {"put": {
                "operationId": f"set_secret_{t}", "tags": [t], "summary": f"Set or clear a secret of a {t}",
                "parameters": [name_param, {"name": "field", "in": "path", "required": True,
                                            "schema": {"type": "string", "enum": secret_fields}}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"value": {"type": ["string", "null"]}}, "required": ["value"]}}}},
                "responses": {"204": {"description": "Secret stored (never returned)"}, "404": error}}}
    for route in routes:
        if route.openapi and route.path.startswith("/zato/"):
            item = paths.setdefault(route.path, {})
            for method, operation in route.openapi.items():
                item[method] = operation
    reload_item = paths.get(f"{PREFIX}/config/reload", {})
    if "post" in reload_item:  # only known types can be reloaded
        reload_item["post"] = json.loads(json.dumps(reload_item["post"]))
        reload_item["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["types"]["items"] = {
            "type": "string", "enum": sorted(t.name for t in object_types)}
    for item in paths.values():
        for method in list(item):
            if method != "parameters":
                item[method] = with_shared_errors(method, item[method])
    return {
        "openapi": "3.1.0",
        "info": {"title": "Zato admin API", "version": __version__,
                 "description": "Every admin endpoint of this server's enabled plugins: configuration objects "
                                "(secrets are set separately and never returned), deployment, invocation, pub/sub, "
                                "the scheduler, connection pings, reloads and metrics."},
        "components": {"schemas": schemas,
                       "responses": {name: response for name, (_, response) in SHARED_RESPONSES.items()},
                       "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}}},
        "security": [{"basic": []}],
        "paths": dict(sorted(paths.items())),
    }


# ################################################################################################


@hookimpl
def register_http_routes(register):
    # The object calls (`{type}`) are documented per object type by openapi_document.
    register(f"{PREFIX}/objects", list_types, openapi=LIST_TYPES_OPENAPI)
    register(f"{PREFIX}/objects/{{type}}", list_objects, methods=("GET",))
    register(f"{PREFIX}/objects/{{type}}", create_object, methods=("POST",))
    register(f"{PREFIX}/objects/{{type}}/{{name}}", get_object, methods=("GET",))
    register(f"{PREFIX}/objects/{{type}}/{{name}}", replace_object, methods=("PUT",))
    register(f"{PREFIX}/objects/{{type}}/{{name}}", patch_object, methods=("PATCH",))
    register(f"{PREFIX}/objects/{{type}}/{{name}}", delete_object, methods=("DELETE",))
    register(f"{PREFIX}/objects/{{type}}/{{name}}/secrets/{{field}}", set_secret, methods=("PUT",))
    register(f"{PREFIX}/config/reload", reload_config, methods=("POST",), openapi=RELOAD_OPENAPI)
    register(f"{PREFIX}/outgoing/{{type}}/{{name}}/ping", ping_connection, methods=("POST",),
             openapi=PING_CONNECTION_OPENAPI)
    register(f"{PREFIX}/openapi.json", openapi, openapi=OPENAPI_OPENAPI)
