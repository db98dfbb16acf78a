""" The admin API's OpenAPI 3.1 document, generated from the object types' schemas and from
the OpenAPI operations each plugin registers with its routes under /zato/. """

from __future__ import annotations

import json
from typing import Any

from zato import __version__
from zato.objects import IS_ACTIVE, NAME_FIELD, field_schema
from zato.registry import Kind
from zato.server.admin_auth import check_admin
from zato.server.http import HTTPRequest, HTTPResponse

PREFIX = "/zato/api"


async def openapi(request: HTTPRequest) -> HTTPResponse:
    await check_admin(request)
    registry = request.server.registry
    return HTTPResponse.json(openapi_document(registry.values(Kind.OBJECT_TYPES), registry.values(Kind.HTTP_ROUTES)))



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
                                        "[deploy_internal] of server.conf, or not started)",
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
