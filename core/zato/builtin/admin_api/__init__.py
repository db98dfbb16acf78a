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

The object calls and their checks are in `objects`, the OpenAPI document in `openapi`; this module
has the hooks, the reload and ping calls, and re-exports the public names of both.
"""

from __future__ import annotations

import json
import logging

from zato import hookimpl
from zato.registry import Kind
from zato.server.admin_auth import check_admin
from zato.server.config_objects import CHANGED
from zato.server.http import HTTPError, HTTPRequest, HTTPResponse

from .objects import (
    JSON_TYPES, create_object, delete_object, get_object, list_objects, list_types, patch_object, replace_object,
    set_secret,
)
from .openapi import (
    ERROR_REF, ERROR_SCHEMA, LIST_TYPES_OPENAPI, NO_BODY, OPENAPI_OPENAPI, PING_CONNECTION_OPENAPI, PREFIX,
    RELOAD_OPENAPI, SHARED_RESPONSES, WRITE_METHODS, openapi, openapi_document, with_shared_errors,
)

__all__ = [
    "ERROR_REF", "ERROR_SCHEMA", "JSON_TYPES", "LIST_TYPES_OPENAPI", "NO_BODY", "OPENAPI_OPENAPI",
    "PING_CONNECTION_OPENAPI", "PREFIX", "RELOAD_OPENAPI", "SHARED_RESPONSES", "WRITE_METHODS", "create_object",
    "delete_object", "get_object", "list_objects", "list_types", "openapi", "openapi_document", "patch_object",
    "ping_connection", "register_http_routes", "reload_config", "replace_object", "set_secret", "with_shared_errors",
]

logger = logging.getLogger("zato.admin")


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
