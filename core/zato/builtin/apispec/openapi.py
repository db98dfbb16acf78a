""" The OpenAPI 3.1 document of a server's REST channels (the user's, not the admin API's own
routes, which /zato/api/openapi.json describes), built from what the server holds now: its
active `channel_rest` objects, the SimpleIO and docstrings of the services behind them, the
security definitions they name and the rate limits that apply to them.

One operation per channel and method (a channel without methods: every method it accepts), its
operationId `<channel>_<method>` (non-identifier characters as `_`, a numeric suffix where two
channels' names make the same one). Path parameters come from the `{params}` of the url_path
(typed by SimpleIO where the service declares them); for GET, DELETE and OPTIONS the rest of the
SimpleIO input is query parameters, for the other methods the body (a JSON object, a form, or
the text a text channel passes as it is). The response body is the SimpleIO output as the REST
channel returns it: the object itself (or a list of such objects), with no wrapper. Errors are in
Zato's error shape, `{"result": "Error", "cid": ..., "details": ...}`, 400 with `errors`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from typing import Any

from zato import __version__

from .model import (
    has_tags, matches, open_schema, schema_of_simpleio, service_description, simpleio_fields,
)

CHANNEL_TYPE = "channel_rest"
SECURITY_TYPE = "security"
SERVICE_SETTINGS = "service_settings"  # the rate_limit plugin's per-service settings
ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")  # what a channel without methods accepts
QUERY_METHODS = ("GET", "DELETE", "OPTIONS")
PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
COMPONENT_KEY = re.compile(r"[^A-Za-z0-9._-]")
OPERATION_ID = re.compile(r"[^A-Za-z0-9_]+")

NO_SIMPLEIO_NOTE = ("The service declares no SimpleIO, so the body it takes and returns is not described: any "
                    "body is passed to it as it is.")
NOT_DEPLOYED_NOTE = "The service {service!r} is not deployed in this server: nothing is known of its input or output."

ERROR_SCHEMA = {
    "type": "object",
    "description": "Zato's error body. It never holds a traceback: the cid finds it in the server's log.",
    "properties": {
        "result": {"type": "string", "enum": ["Error"]},
        "cid": {"type": "string", "description": "the request's correlation id, also in the X-Zato-CID header"},
        "details": {"type": "string", "description": "what was wrong and what to do"},
        "errors": {"type": "array", "description": "400: every bad SimpleIO element, each with why it is bad",
                   "items": {"type": "object", "properties": {"name": {"type": "string"},
                                                              "error": {"type": "string"}}}}},
    "required": ["result", "cid", "details"]}

_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_CID_HEADER = {"X-Zato-CID": {"description": "the request's correlation id", "schema": {"type": "string"}}}


def _error(description: str, **headers: str) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _ERROR_CONTENT}
    if headers:
        response["headers"] = {name: {"description": text, "schema": {"type": "string"}}
                               for name, text in headers.items()}
    return response


ERROR_RESPONSES: dict[str, tuple[int, dict[str, Any]]] = {
    "BadRequest": (400, _error("Bad input: a body that is not of the channel's data format (not JSON, for a json "
                               "channel), a SimpleIO element missing or of the wrong type (`errors` lists each), or "
                               "the service refused the request")),
    "Unauthorized": (401, _error("No valid credentials for the channel's security definition",
                                 **{"WWW-Authenticate": "the challenge: Basic realm=..., or zato-apikey"})),
    "Forbidden": (403, _error("The caller may not use this channel: its address matches no line of a rate limit "
                              "definition, or the service refused it")),
    "NotFound": (404, _error("The service says that what the request names does not exist")),
    "ContentTooLarge": (413, _error("The body is over [main] max_body_size of server.conf")),
    "TooManyRequests": (429, _error("A rate limit of the channel, its security definition or its service was "
                                    "reached: try again later")),
    "InternalServerError": (500, _error("The service failed, or returned output its SimpleIO does not allow; "
                                        "the cid finds the traceback in the server's log")),
    "ServiceUnavailable": (503, _error("The service is busy (no thread free for it in time) or a rate limit "
                                       "backend is down", **{"Retry-After": "seconds to wait, where waiting helps"})),
    "GatewayTimeout": (504, _error("The service did not finish within the channel's timeout")),
}
_BY_STATUS = {status: name for name, (status, _) in ERROR_RESPONSES.items()}


def _ref(status: int) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{_BY_STATUS[status]}"}


# ################################################################################################
# What the server holds


def service_class(server: Any, name: str) -> type | None:
    """ The class of a deployed service, or None (not deployed, or not imported yet: see
    `load_service_classes`). """
    entry = server.services.entries.get(name)
    return entry.cls if entry is not None else None


def load_service_classes(server: Any, names: list[str]) -> None:
    """ Imports the services of `names` deployed from the start-up cache but not imported yet
    (blocking: run it in a worker thread). """
    for name in names:
        entry = server.services.entries.get(name)
        if entry is not None and entry.cls is None:
            try:
                server.services.get(name)
            except Exception:  # broken since it was cached: described as having no class
                continue


def rest_channels(server: Any) -> list[dict[str, Any]]:
    """ The active REST channels, by name. """
    channels = server.config_objects.get(CHANNEL_TYPE, {})
    return [channels[name] for name in sorted(channels) if channels[name].get("is_active", True)]


def _has_limits(obj: dict[str, Any] | None) -> bool:
    return bool(obj and obj.get("is_rate_limit_active") and str(obj.get("rate_limit_def") or "").strip())


def is_rate_limited(server: Any, channel: dict[str, Any]) -> bool:
    """ Whether a rate limit can refuse a request to `channel`: its own, its security
    definition's or its service's (only while a rate-limiting plugin is active). """
    limits = getattr(server, "rate_limits", None)
    if limits is None or not getattr(limits, "is_active", False):
        return False
    if channel.get("service") in getattr(limits, "service_checks", {}):
        return True
    by_type = getattr(limits, "by_type", None)
    security = channel.get("security")
    if isinstance(by_type, dict):
        return channel.get("name") in by_type.get(CHANNEL_TYPE, {}) or \
            bool(security and security in by_type.get(SECURITY_TYPE, {}))
    settings = server.config_objects.get(SERVICE_SETTINGS, {}).get(channel.get("service"))
    return _has_limits(channel) or _has_limits(server.config_objects.get(SECURITY_TYPE, {}).get(security)) or \
        _has_limits(settings)


def security_scheme(definition: dict[str, Any]) -> dict[str, Any] | None:
    """ The OpenAPI security scheme of a security definition (basic_auth, apikey), or None. """
    from zato.server.credentials import apikey_header
    kind = definition.get("type")
    if kind == "basic_auth":
        return {"type": "http", "scheme": "basic",
                "description": f"HTTP Basic Auth (security definition {definition.get('name')!r})"}
    if kind == "apikey":
        return {"type": "apiKey", "in": "header", "name": apikey_header(definition),
                "description": f"An API key in the {apikey_header(definition)} header (security definition "
                               f"{definition.get('name')!r})"}
    return None


def scheme_key(security_name: str) -> str:
    """ A security definition's name as a key of components/securitySchemes. """
    return COMPONENT_KEY.sub("_", security_name) or "_"


# ################################################################################################
# The document


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """ A parameter's schema: path and query values are never null. """
    schema = dict(schema)
    types = schema.get("type")
    if isinstance(types, list):
        types = [t for t in types if t != "null"]
        schema["type"] = types[0] if len(types) == 1 else types
    schema.pop("x-zato-sio-type", None)
    schema.pop("description", None)
    return schema


def _parameter(name: str, where: str, required: bool, schema: dict[str, Any]) -> dict[str, Any]:
    parameter = {"name": name, "in": where, "required": required, "schema": _without_null(schema)}
    if schema.get("description"):
        parameter["description"] = schema["description"]
    return parameter


def _operation_id(channel_name: str, method: str, taken: set[str]) -> str:
    base = OPERATION_ID.sub("_", f"{channel_name}_{method.lower()}").strip("_") or method.lower()
    candidate, number = base, 2
    while candidate in taken:
        candidate, number = f"{base}_{number}", number + 1
    taken.add(candidate)
    return candidate


def _request_body(data_format: str, schema: dict[str, Any] | None, required: bool) -> dict[str, Any]:
    if data_format == "text":
        return {"required": False, "description": "The body as it is (the channel's data_format is text)",
                "content": {"text/plain": {"schema": {"type": "string"}}}}
    media = "application/x-www-form-urlencoded" if data_format == "form" else "application/json"
    return {"required": required, "content": {media: {"schema": schema if schema is not None else open_schema()}}}


def _operation(server: Any, channel: dict[str, Any], method: str, taken: set[str],
               security_schemes: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    service = channel.get("service") or ""
    cls = service_class(server, service)
    data_format = channel.get("data_format") or "json"
    path_params = PARAM.findall(channel.get("url_path") or "")
    notes: list[str] = []
    described = service_description(cls) if cls is not None else {"summary": "", "description": "", "tags": [],
                                                                   "examples": {}}
    operation: dict[str, Any] = {"operationId": _operation_id(channel["name"], method, taken)}
    if described["tags"]:
        operation["tags"] = list(described["tags"])
    operation["summary"] = described["summary"] or f"{method} {channel.get('url_path')}: service {service}"
    input_fields = simpleio_fields(cls, "input") if cls is not None else None
    if cls is None:
        notes.append(NOT_DEPLOYED_NOTE.format(service=service))
    elif input_fields is None:
        notes.append(NO_SIMPLEIO_NOTE)
    by_name = {name: (required, schema) for name, required, schema in input_fields or ()}

    parameters = []
    for name in path_params:
        _, schema = by_name.get(name, (True, {"type": "string"}))
        parameters.append(_parameter(name, "path", True, schema))
    body_fields = [(name, required, schema) for name, required, schema in input_fields or () if name not in path_params]
    if method in QUERY_METHODS or data_format == "text":
        for name, required, schema in body_fields:  # a text channel's body is no SimpleIO source: the query is
            parameters.append(_parameter(name, "query", required, schema))
    if parameters:
        operation["parameters"] = parameters

    if method not in QUERY_METHODS:
        if input_fields is None:
            operation["requestBody"] = _request_body(data_format, open_schema(NO_SIMPLEIO_NOTE if cls else ""), False)
        elif data_format == "text":
            operation["requestBody"] = _request_body(data_format, None, False)
        else:
            schema = schema_of_simpleio(cls, "input") or {"type": "object"}
            schema = copy.deepcopy(schema)
            for name in path_params:
                schema.get("properties", {}).pop(name, None)
            required = [name for name in schema.get("required", ()) if name not in path_params]
            if required:
                schema["required"] = required
            else:
                schema.pop("required", None)
            if data_format == "form":  # a form's values are text: the server converts them
                for prop in schema.get("properties", {}).values():
                    prop.pop("x-zato-sio-type", None)
            body = _request_body(data_format, schema, bool(required))
            example = described["examples"].get("request")
            if example is not None:
                for media in body["content"].values():
                    media["example"] = example
            operation["requestBody"] = body

    output = schema_of_simpleio(cls, "output") if cls is not None else None
    sio_declared = cls is not None and input_fields is not None
    if output is not None and (output.get("properties") or _declares_output(cls)):
        key = COMPONENT_KEY.sub("_", f"{service}.output")
        schemas[key] = output
        ref = {"$ref": f"#/components/schemas/{key}"}
        content = {"application/json": {"schema": {"oneOf": [ref, {"type": "array", "items": ref}]}}}
        description = "The service's SimpleIO output, as it is (one object, or a list of them)"
    else:
        content = {"*/*": {"schema": {}}}
        description = "What the service returns (it declares no SimpleIO output)" if sio_declared else \
            "What the service returns"
    example = described["examples"].get("response")
    if example is not None:
        for media in content.values():
            media["example"] = example
    responses: dict[str, Any] = {"200": {"description": description, "headers": _CID_HEADER, "content": content}}
    statuses = [400, 404, 413, 500, 503, 504]
    security = channel.get("security")
    definition = server.config_objects.get(SECURITY_TYPE, {}).get(security) if security else None
    if security:
        statuses += [401]
        scheme = security_scheme(definition) if definition else None
        if scheme is not None:
            key = scheme_key(security)
            security_schemes[key] = scheme
            operation["security"] = [{key: []}]
        else:
            notes.append(f"The security definition {security!r} is missing, inactive or of a type this document "
                         f"cannot describe: every request is refused with 401.")
            operation["security"] = []
    else:
        operation["security"] = []
    if is_rate_limited(server, channel):
        statuses += [403, 429]
        operation["x-zato-rate-limited"] = True
    for status in sorted(statuses):
        responses[str(status)] = _ref(status)
    operation["responses"] = responses

    text = described["description"]
    if notes:
        text = "\n\n".join(part for part in (text, *notes) if part)
    if text:
        operation["description"] = text
    operation["x-zato-channel"] = channel["name"]
    operation["x-zato-service"] = service
    if data_format != "json":
        operation["x-zato-data-format"] = data_format
    return operation


def _declares_output(cls: type) -> bool:
    declaration = getattr(cls, "SimpleIO", None)
    return bool(getattr(declaration, "output_required", None) or getattr(declaration, "output_optional", None))


def build_openapi(server: Any, *, include: list[str] | None = None, exclude: list[str] | None = None,
                  tags: list[str] | None = None, base_url: str | None = None) -> dict[str, Any]:
    """ The OpenAPI 3.1 document of the server's active REST channels whose service name passes
    `include`/`exclude` (fnmatch patterns) and whose service has one of `tags` (all when None). """
    paths: dict[str, dict[str, Any]] = {}
    security_schemes: dict[str, Any] = {}
    taken: set[str] = set()
    skipped: list[dict[str, str]] = []
    schemas: dict[str, Any] = {}  # each service's output, by "<service>.output"
    for channel in rest_channels(server):
        service = channel.get("service") or ""
        if not matches(service, include, exclude):
            continue
        cls = service_class(server, service)
        if tags and not has_tags(service_description(cls)["tags"] if cls is not None else (), tags):
            continue
        url_path = channel.get("url_path") or ""
        if not url_path.startswith("/") or url_path.startswith("/zato/"):
            continue
        item = paths.setdefault(url_path, {})
        for method in [m.upper() for m in (channel.get("methods") or ALL_METHODS)]:
            if method.lower() in item:  # the router refuses one of the two: its log says which
                other = item[method.lower()]["x-zato-channel"]
                skipped.append({"channel": channel["name"], "method": method,
                                "why": f"{method} {url_path} is also channel {other!r}"})
                continue
            item[method.lower()] = _operation(server, channel, method, taken, security_schemes, schemas)
    paths = {path: item for path, item in sorted(paths.items()) if item}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": f"REST channels of Zato server {getattr(server, 'name', '')}".strip(),
                 "version": "",
                 "description": "Generated by the server from its REST channels, their services' SimpleIO and "
                                "docstrings, security definitions and rate limits (GET /zato/apispec/openapi.json)."},
        "paths": paths,
        "components": {"schemas": {"Error": ERROR_SCHEMA, **dict(sorted(schemas.items()))},
                       "responses": {name: response for name, (_, response) in ERROR_RESPONSES.items()},
                       "securitySchemes": dict(sorted(security_schemes.items()))},
    }
    if base_url:
        document["servers"] = [{"url": base_url}]
    if skipped:
        document["x-zato-skipped"] = skipped
    digest = hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:12]
    document["info"]["version"] = f"{__version__}+{digest}"
    document["info"]["x-zato-version"] = __version__
    return document
