""" The object calls of the admin API: list, create, read, replace, patch and delete
configuration objects and set their secrets, with the checks every change passes (fields,
references to other objects, what the channel runtimes say of a definition). """

from __future__ import annotations

import logging
from typing import Any

import trio

from zato.objects import ObjectValidationError, public_view, store_secret, validate
from zato.odb import ObjectExists, ObjectNotFound, VersionConflict
from zato.registry import Kind
from zato.server.admin_auth import check_admin
from zato.server.config_objects import CHANGED, secret_box
from zato.server.http import HTTPError, HTTPRequest, HTTPResponse

logger = logging.getLogger("zato.admin")


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


async def _check_channels(request: HTTPRequest, object_type: Any, data: dict[str, Any]) -> None:
    """ What the channel types of this object type say of a definition: a listener type's own
    `validate` finds problems with its fields (400, each naming its field, as schema errors are);
    a channel runtime's `validate` says why it cannot work beside the others, such as a route
    clash (409). The listener type's check may ask its backend, so it runs in a worker thread. """
    for channel_type in request.server.registry.values(Kind.CHANNEL_TYPES):
        if channel_type.object_type != object_type.name:
            continue
        check = getattr(channel_type, "validate", None)
        if check is not None:
            errors = await trio.to_thread.run_sync(_field_problems, channel_type, check, data)
            if errors:
                raise _validation_error(ObjectValidationError(object_type.name, data.get("name"), errors))
        runtime = request.server.channels.get(channel_type.name)
        if hasattr(runtime, "validate"):
            problems = runtime.validate(data)
            if problems:
                raise HTTPError(409, f"Error 409 Conflict: {'; '.join(problems)}")


def _field_problems(channel_type: Any, check: Any, data: dict[str, Any]) -> list[dict[str, str]]:
    try:
        return [{"field": str(problem["field"]), "error": str(problem["error"])} for problem in check(data) or ()]
    except Exception as exc:  # a defect of the plugin, reported rather than answered with a 500
        logger.exception("the validate of channel type %s failed", channel_type.name)
        return [{"field": "(object)", "error": f"the {channel_type.name} validate failed ({type(exc).__name__}: "
                                               f"{exc}); report it to the plugin's authors"}]


async def _changed(request: HTTPRequest, object_type: str) -> None:
    await request.server.notify(CHANGED, {"types": [object_type]})


def _reply(object_type: Any, obj: dict[str, Any], status: int = 200, warnings: list[str] | None = None) -> HTTPResponse:
    view = public_view(object_type, obj)
    if warnings:
        view = {**view, "warnings": warnings}  # only when there are some: replies without stay as they were
    return HTTPResponse.json(view, status)


def _env_warnings(request: HTTPRequest, object_type: Any, name: str, data: dict[str, Any]) -> list[str]:
    """ `$NAME` values whose variable the server's environment lacks: saved all the same (the
    variable may be set before the next start), but said now, in the reply and in the log. """
    from zato.enmasse import missing_env_references
    warnings = missing_env_references(object_type.name, name, data)
    for warning in warnings:
        logger.warning("cid=%s %s", request.cid, warning)
    return warnings



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
    await _check_channels(request, object_type, data)
    try:
        obj = await trio.to_thread.run_sync(request.server.odb.create_object, object_type.name, data["name"], data)
    except ObjectExists as exc:
        raise HTTPError(409, f"Error 409 Conflict: {exc}") from None
    logger.info("cid=%s created %s %r", request.cid, object_type.name, data["name"])
    await _changed(request, object_type.name)
    return _reply(object_type, obj, 201, _env_warnings(request, object_type, data["name"], data))


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
    secrets = {f.name: current.get(f.name) for f in object_type.fields if f.secret and current.get(f.name)}
    if partial:  # the object the patch leaves is checked in full, as a PUT of it would be
        secret_fields = {f.name for f in object_type.fields if f.secret}
        body = {**{k: v for k, v in current.items() if not k.startswith("_") and k not in secret_fields}, **body}
    try:
        changes = validate(object_type, body)
    except ObjectValidationError as exc:
        raise _validation_error(exc) from None
    data = {**changes, **secrets}
    await _check_references(request, object_type, data)
    await _check_channels(request, object_type, data)
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
    return _reply(object_type, obj, warnings=_env_warnings(request, object_type, name, changes))


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


