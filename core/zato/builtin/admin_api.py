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
from zato.builtin.core import check_admin
from zato.objects import ObjectValidationError, public_view, store_secret, validate
from zato.odb import ObjectExists, ObjectNotFound, VersionConflict
from zato.server.config_objects import CHANGED, secret_box
from zato.server.http import HTTPError, HTTPRequest, HTTPResponse

logger = logging.getLogger("zato.admin")

PREFIX = "/zato/api"


def _object_type(request: HTTPRequest) -> Any:
    name = request.path_params["type"]
    types = request.server.registry.items("object_types")
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
    for channel_type in request.server.registry.values("channel_types"):
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
    return HTTPResponse.json([_describe_type(t) for t in request.server.registry.values("object_types")])


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
    for other in server.registry.values("object_types"):
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
    types = body.get("types") if isinstance(body, dict) else None
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
    return HTTPResponse.json(openapi_document(request.server.registry.values("object_types")))


# ################################################################################################
# Schemas


JSON_TYPES = {"str": {"type": "string"}, "int": {"type": "integer"}, "float": {"type": "number"},
              "bool": {"type": "boolean"}, "list": {"type": "array"}, "dict": {"type": "object"},
              "datetime": {"type": "string", "format": "date-time"}, "text": {"type": "string"}}


def _describe_type(object_type: Any) -> dict[str, Any]:
    return {"name": object_type.name, "description": object_type.description, "fields": [
        {"name": f.name, "type": f.type, "required": f.required, "default": f.default, "secret": f.secret,
         "references": f.references, "description": f.description, "example": f.example,
         "choices": list(f.choices) if f.choices else None}
        for f in object_type.fields]}


def _json_schema(object_type: Any, *, for_output: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {"name": {"type": "string"}, "is_active": {"type": "boolean", "default": True}}
    required = ["name"]
    for field in object_type.fields:
        if field.secret:
            continue
        schema = dict(JSON_TYPES.get(field.type, {}))
        if field.type in ("str", "int", "float", "bool"):
            schema = {"anyOf": [schema, {"type": "string", "pattern": r"^\$[A-Za-z_][A-Za-z0-9_]*$",
                                         "description": "an environment variable reference"}]}
        if field.choices:
            schema = {"anyOf": [{"enum": list(field.choices)}, schema["anyOf"][1]]} if "anyOf" in schema \
                else {**schema, "enum": list(field.choices)}
        if field.description:
            schema["description"] = field.description
        if field.default is not None:
            schema["default"] = field.default
        if field.example is not None:
            schema["examples"] = [field.example]
        properties[field.name] = schema
        if field.required and field.name not in required and not for_output:
            required.append(field.name)
    if for_output:
        properties["version"] = {"type": "integer"}
        if any(f.secret for f in object_type.fields):
            properties["secrets_set"] = {"type": "array", "items": {"type": "string"}}
    return {"type": "object", "properties": properties, "required": required,
            "additionalProperties": for_output, "description": object_type.description}


ERROR_SCHEMA = {"type": "object", "properties": {
    "result": {"type": "string"}, "cid": {"type": "string"}, "details": {"type": "string"},
    "errors": {"type": "array", "items": {"type": "object"}}}, "required": ["result", "cid", "details"]}


def openapi_document(object_types: list[Any]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    error = {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

    def body(ref: str) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": {"$ref": ref}}}}

    def ok(ref: str, description: str = "OK", many: bool = False) -> dict[str, Any]:
        schema: dict[str, Any] = {"$ref": ref}
        if many:
            schema = {"type": "array", "items": schema}
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
                  "description": "object name, percent-encoded"}
    for object_type in object_types:
        t = object_type.name
        schemas[f"{t}_input"] = _json_schema(object_type, for_output=False)
        schemas[t] = _json_schema(object_type, for_output=True)
        ref_in, ref_out = f"#/components/schemas/{t}_input", f"#/components/schemas/{t}"
        paths[f"{PREFIX}/objects/{t}"] = {
            "get": {"operationId": f"list_{t}", "tags": [t], "responses": {"200": ok(ref_out, many=True), "401": error}},
            "post": {"operationId": f"create_{t}", "tags": [t], "requestBody": body(ref_in),
                     "responses": {"201": ok(ref_out, "Created"), "400": error, "401": error, "409": error}},
        }
        paths[f"{PREFIX}/objects/{t}/{{name}}"] = {
            "parameters": [name_param],
            "get": {"operationId": f"get_{t}", "tags": [t], "responses": {"200": ok(ref_out), "404": error}},
            "put": {"operationId": f"replace_{t}", "tags": [t], "requestBody": body(ref_in),
                    "responses": {"200": ok(ref_out), "400": error, "404": error, "409": error}},
            "patch": {"operationId": f"patch_{t}", "tags": [t], "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"type": "object"}}}},
                      "responses": {"200": ok(ref_out), "400": error, "404": error, "409": error}},
            "delete": {"operationId": f"delete_{t}", "tags": [t],
                       "responses": {"204": {"description": "Deleted"}, "404": error, "409": error}},
        }
        secret_fields = [f.name for f in object_type.fields if f.secret]
        if secret_fields:
            paths[f"{PREFIX}/objects/{t}/{{name}}/secrets/{{field}}"] = {"put": {
                "operationId": f"set_secret_{t}", "tags": [t],
                "parameters": [name_param, {"name": "field", "in": "path", "required": True,
                                            "schema": {"type": "string", "enum": secret_fields}}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"value": {"type": ["string", "null"]}}, "required": ["value"]}}}},
                "responses": {"204": {"description": "Secret stored (never returned)"}, "404": error}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Zato admin API", "version": __version__,
                 "description": "Configuration objects of every installed plugin; secrets are set separately "
                                "and never returned."},
        "components": {"schemas": schemas, "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}}},
        "security": [{"basic": []}],
        "paths": paths,
    }


# ################################################################################################


@hookimpl
def register_http_routes(register):
    register(f"{PREFIX}/objects", list_types)
    register(f"{PREFIX}/objects/{{type}}", list_objects, methods=("GET",))
    register(f"{PREFIX}/objects/{{type}}", create_object, methods=("POST",))
    register(f"{PREFIX}/objects/{{type}}/{{name}}", get_object, methods=("GET",))
    register(f"{PREFIX}/objects/{{type}}/{{name}}", replace_object, methods=("PUT",))
    register(f"{PREFIX}/objects/{{type}}/{{name}}", patch_object, methods=("PATCH",))
    register(f"{PREFIX}/objects/{{type}}/{{name}}", delete_object, methods=("DELETE",))
    register(f"{PREFIX}/objects/{{type}}/{{name}}/secrets/{{field}}", set_secret, methods=("PUT",))
    register(f"{PREFIX}/config/reload", reload_config, methods=("POST",))
    register(f"{PREFIX}/outgoing/{{type}}/{{name}}/ping", ping_connection, methods=("POST",))
    register(f"{PREFIX}/openapi.json", openapi)
