""" The `essentials` plugin (called `core` before): server.conf sections of the core, `GET /zato/ping`, the admin invoke
endpoint `POST /zato/api/invoke/{service}` and the core's internal services. It cannot be
switched off.
"""

from __future__ import annotations

import base64
import binascii
import os
import socket

from zato import __version__, hookimpl
from zato.common import ZATO_OK
from zato.config import STARTUP_SETTINGS
from zato.registry import Setting
from zato.passwords import PREFIX as PASSWORD_HASH_PREFIX
from zato.server.admin_auth import check_admin
from zato.server.http_channel import invoke_from_http
from zato.server.http import HTTPError, HTTPRequest, HTTPResponse


@hookimpl
def register_server_config(register):
    register("main", {
        "name": Setting("server1", non_empty=True, doc="This server's name, in logs and zato.server.get-info"),
        "host": Setting("127.0.0.1", non_empty=True, check=_check_host, allowed="an IP address or a host name "
                        "that resolves", doc="The address to listen on"),
        "port": Setting(17010, minimum=0, maximum=65535, doc="The TCP port; 0 picks a free one (see work/server.json)"),
        "workers": STARTUP_SETTINGS["main"]["workers"],
        "graceful_timeout": Setting(10.0, minimum=0, maximum=3600, doc="Seconds requests in flight get to "
                                                                       "finish when the server stops"),
        "keep_alive_timeout": Setting(30.0, exclusive_minimum=0, maximum=3600, doc="Seconds an idle HTTP "
                                                                                   "connection is kept open"),
        "max_body_size": Setting(10 * 1024 * 1024, minimum=1, maximum=2 ** 40, doc="Largest request body in bytes; "
                                                                                   "larger ones get 413"),
        "sync_service_threads": Setting(64, minimum=1, maximum=10_000, doc="Threads for services whose handle() "
                                                                           "is a plain def"),
        "skip_broken_plugins": STARTUP_SETTINGS["main"]["skip_broken_plugins"],
        "gc_threshold": Setting(10000, minimum=0, maximum=2 ** 31 - 1, doc="Allocations between two collections "
                                "of Python's youngest generation once the server is ready; 0: Python's default"),
        "service_timeout": Setting(60.0, minimum=0, doc="Seconds a service invoked over HTTP may take when its "
                                                        "channel sets no timeout (504 past it); 0: no limit"),
        "max_threads_per_service": Setting(0, minimum=0, doc="Threads of sync_service_threads one plain `def` "
                                                             "service may use at once; 0: half of them"),
        "thread_wait_timeout": Setting(5.0, minimum=0, doc="Seconds a call waits for a thread of its service's "
                                                           "share before it gets 503 with Retry-After"),
        "placement_lease_seconds": Setting(10.0, minimum=0.3, maximum=3600, doc="Seconds a process holds the "
                                           "lease of a one_process task or listener (renewed every third); a "
                                           "successor takes over within this time when its holder dies"),
        "plugin_index": Setting("", allowed="empty, a path, a file:// URL or an http(s):// URL",
                                doc="The plugin index `zato plugins list --available DIR` reads (a JSON file, "
                                    "docs/plugin-index.md); empty: none, give --index"),
    }, doc="Where and how the server listens.")
    register("misc", {"startup_callable": Setting([], doc="Dotted names of functions called in each start-up "
                                                          "phase, in this order")}, doc="User start-up callables.")
    register("plugins", {}, free_form=True, doc="Each plugin by name: True or False.")
    register("component_enabled", {}, free_form=True, doc="Zato-style feature switches readable by callables.")
    register("logging", dict(STARTUP_SETTINGS["logging"]), doc="Logging.")
    register("odb", {"url": Setting("", secret=True, check=_check_database_url,
                                    allowed="empty (work/zato.db), or an SQLAlchemy URL such as "
                                            "postgresql+psycopg://user:password@host/db",
                                    doc="The configuration database")},
             doc="Configuration database URL; empty means work/zato.db (SQLite).")
    register("admin", {
        "username": Setting("admin", non_empty=True, doc="The admin API's user (HTTP Basic Auth)"),
        "password_hash": Setting("", secret=True, check=_check_password_hash,
                                 allowed="empty (the admin API refuses every call) or a hash written by "
                                         "`zato set-admin-password DIR`", doc="The admin password's scrypt hash"),
    }, doc="The admin API's credentials (hashed).")
    register("user_config", {}, free_form=True, doc="User config files, name = path.")


def _check_host(host: str) -> None:
    if host.startswith("[") and host.endswith("]"):  # an IPv6 address as in URLs: [::1]
        host = host[1:-1]
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ValueError(f"cannot be resolved ({exc})") from None


def _check_database_url(url: str) -> None:
    """ Refuses what SQLAlchemy cannot open, before it is tried (the error would name no key). """
    if not url:
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ValueError("not a database URL (dialect+driver://user:password@host/database)") from None
    try:
        parsed.get_dialect().import_dbapi()
    except NoSuchModuleError:
        raise ValueError(f"no SQLAlchemy dialect {parsed.drivername!r}") from None
    except ImportError as exc:
        raise ValueError(f"the driver of {parsed.drivername!r} is not installed ({exc})") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        directory = os.path.dirname(os.path.abspath(parsed.database))
        if not os.path.isdir(directory):
            raise ValueError(f"the directory {directory} does not exist")


def _check_password_hash(stored: str) -> None:
    if not stored:
        return
    parts = stored.split("$")
    try:
        if len(parts) != 6 or parts[0] != PASSWORD_HASH_PREFIX:
            raise ValueError
        for number in parts[1:4]:
            int(number)
        base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("not a password hash") from None


@hookimpl
def register_internal_services(register):
    register("zato.builtin.services_essentials")


@hookimpl
def register_notification_handlers(register):
    from zato.common.broker_client import SERVICE_PUBLISH
    from zato.server import config_objects
    register(config_objects.CHANGED, config_objects.on_changed)
    # Zato's broker messages from services (self.broker_client), carried by the same transport
    register(SERVICE_PUBLISH, _publish_service)


def _publish_service(server, payload):
    from zato.common.broker_client import run_published_service
    run_published_service(server, payload)


def _broker_client(service):
    from zato.common.broker_client import BrokerClient
    return BrokerClient(service.server, service.cid)


@hookimpl
def register_service_attributes(register):
    register("broker_client", _broker_client)


_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_PING_RESPONSE = {"description": "The server answers", "content": {"application/json": {"schema": {
    "type": "object", "required": ["zato_env", "zato_ping_response"], "properties": {
        "zato_env": {"type": "object", "required": ["result", "cid", "details"], "properties": {
            "result": {"type": "string", "enum": [ZATO_OK]}, "cid": {"type": "string"}, "details": {"type": "string"}}},
        "zato_ping_response": {"type": "object", "required": ["pong", "version", "pid"], "properties": {
            "pong": {"type": "string"}, "version": {"type": "string"}, "pid": {"type": "integer"}}}}}}}}
PING_OPENAPI = {method: {
    "operationId": f"ping_{method}", "tags": ["server"], "security": [],
    "summary": "Is the server up? Needs no credentials", "responses": {"200": _PING_RESPONSE}}
    for method in ("get", "post")}


def _invoke_operation(method: str) -> dict:
    operation = {
        "operationId": f"invoke_{method}", "tags": ["services"],
        "summary": "Invoke a deployed service (channel admin.invoke); the query string is its HTTP parameters",
        "parameters": [{"name": "service", "in": "path", "required": True, "description": "the service's name",
                        "schema": {"type": "string", "minLength": 1}, "examples": {"ping": {"value": "zato.ping"}}}],
        "responses": {
            "200": {"description": "What the service answered: its payload (JSON unless it set another content "
                                   "type), its headers", "content": {"*/*": {"schema": {}}}},
            "400": {"description": "The body is not valid JSON, or the service refused its input (SimpleIO; "
                                   "`errors` lists every bad field)", "content": _ERROR},
            "403": {"description": "A rate-limit definition of the service does not allow the caller's address",
                    "content": _ERROR},
            "404": {"description": "No service of that name is deployed", "content": _ERROR},
            "415": {"$ref": "#/components/responses/UnsupportedMediaType"},
            "429": {"$ref": "#/components/responses/TooManyRequests"},
            "500": {"description": "The service raised; the log has the traceback under the cid. An admin caller "
                                   "that sends X-Zato-Error-Details: true also gets `exception` (type, message, "
                                   "where: file:line), as `zato invoke` shows it", "content": _ERROR},
            "503": {"description": "The service's share of threads ([main] max_threads_per_service) is full",
                    "headers": {"Retry-After": {"schema": {"type": "string"}}}, "content": _ERROR},
            "504": {"description": "The service did not finish within [main] service_timeout", "content": _ERROR},
            "default": {"description": "Any other status the service set (self.response.status_code)",
                        "content": {"*/*": {"schema": {}}}},
        }}
    # Every method runs a service, so every method needs Content-Type: application/json (415 otherwise)
    operation["requestBody"] = {"required": False, "description": "the service's input (any JSON value); send "
                                                                  "Content-Type: application/json even without one",
                                "content": {"application/json": {"schema": {}}}}
    return operation


INVOKE_OPENAPI = {method: _invoke_operation(method) for method in ("post", "get", "put", "patch", "delete")}


@hookimpl
def register_http_routes(register):
    register("/zato/ping", ping, methods=("GET", "POST"), openapi=PING_OPENAPI)
    register("/zato/api/invoke/{service}", admin_invoke, methods=("POST", "GET", "PUT", "PATCH", "DELETE"),
             openapi=INVOKE_OPENAPI)


async def ping(request: HTTPRequest) -> HTTPResponse:
    return HTTPResponse.json({
        "zato_env": {"result": ZATO_OK, "cid": request.cid, "details": ""},
        "zato_ping_response": {"pong": "zato", "version": __version__, "pid": os.getpid()},
    })


async def admin_invoke(request: HTTPRequest) -> HTTPResponse:
    name = request.path_params["service"]
    request.trace.channel = "admin.invoke"
    request.trace.service = name
    # it runs services: a GET too; zato.client.APIClient sends no Content-Type
    await check_admin(request, every_method=True, untyped_from_programs=True)
    if name not in request.server.services:
        raise HTTPError(404, f"Error 404 Not Found: no such service: {name}")
    try:
        return await invoke_from_http(request, name, channel="admin.invoke")
    except HTTPError as exc:
        # An administrator who asks (`zato invoke` does) learns what the service raised; anyone
        # else, and every channel caller, gets the cid only: the traceback stays in the log.
        raised = exc.__context__
        if exc.status != 500 or request.single_header(ERROR_DETAILS_HEADER) != "true" or \
                not isinstance(raised, Exception) or isinstance(raised, HTTPError):
            raise
        raise HTTPError(500, f"Error 500: service {name} raised {type(raised).__name__}: {raised}",
                        extra={"exception": _describe_exception(raised)}) from None


# "true": a 500 from admin invoke says what the service raised (`zato invoke` sends it; the same
# name as zato.cli.admin_client.ERROR_DETAILS_HEADER)
ERROR_DETAILS_HEADER = "X-Zato-Error-Details"


def _describe_exception(exc: BaseException) -> dict[str, str]:
    """ Type, message and the innermost file:line of what a service raised. """
    import traceback
    if exc.__cause__ is not None and type(exc).__name__ == "ServiceAborted":  # sys.exit() and the like
        exc = exc.__cause__
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return {"type": type(exc).__name__, "message": str(exc), "where": where}
