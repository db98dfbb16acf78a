""" The `core` plugin: server.conf sections of the core, `GET /zato/ping`, the admin invoke
endpoint `POST /zato/api/invoke/{service}` and the core's internal services. It cannot be
switched off.
"""

from __future__ import annotations

import hmac
import logging
import os

import trio
from zato import __version__, hookimpl
from zato.common import ZATO_OK
from zato.server.channel import invoke_from_http
from zato.server.http import HTTPError, HTTPRequest, HTTPResponse
from zato.security import Verifier, parse_basic_auth

logger = logging.getLogger("zato.admin")

_verifier = Verifier()


@hookimpl
def register_server_config(register):
    register("main", {
        "name": "server1", "host": "127.0.0.1", "port": 17010, "workers": 1, "graceful_timeout": 10.0,
        "keep_alive_timeout": 30.0, "max_body_size": 10 * 1024 * 1024, "sync_service_threads": 64,
        "skip_broken_plugins": False, "gc_threshold": 10000,
    }, doc="Where and how the server listens.")
    register("misc", {"startup_callable": []}, doc="User start-up callables.")
    register("plugins", {}, free_form=True, doc="Each plugin by name: True or False.")
    register("component_enabled", {}, free_form=True, doc="Zato-style feature switches readable by callables.")
    register("logging", {"level": "INFO"})
    register("odb", {"url": ""}, doc="Configuration database URL; empty means work/zato.db (SQLite).")
    register("admin", {"username": "admin", "password_hash": ""}, doc="The admin API's credentials (hashed).")
    register("user_config", {}, free_form=True, doc="User config files, name = path.")


@hookimpl
def register_internal_services(register):
    register("zato.builtin.services_core")


@hookimpl
def register_notification_handlers(register):
    from zato.server import config_objects
    register(config_objects.CHANGED, config_objects.on_changed)


@hookimpl
def register_http_routes(register):
    register("/zato/ping", ping, methods=("GET", "POST"))
    register("/zato/api/invoke/{service}", admin_invoke, methods=("POST", "GET", "PUT", "PATCH", "DELETE"))


async def ping(request: HTTPRequest) -> HTTPResponse:
    return HTTPResponse.json({
        "zato_env": {"result": ZATO_OK, "cid": request.cid, "details": ""},
        "zato_ping_response": {"pong": "zato", "version": __version__, "pid": os.getpid()},
    })


CLI_TOKEN_HEADER = "x-zato-cli-token"


async def check_admin(request: HTTPRequest) -> str:
    """ The admin API's HTTP Basic Auth (or the local CLI's token); returns the user name or raises 401. """
    cli_token = request.headers.get(CLI_TOKEN_HEADER)
    if cli_token is not None:
        if request.server.cli_token and hmac.compare_digest(cli_token.encode(), request.server.cli_token.encode()):
            return "zato-cli"
        raise HTTPError(401, headers={"www-authenticate": 'Basic realm="Zato admin API"'})
    admin = request.server.config.admin
    credentials = parse_basic_auth(request.headers.get("authorization"))
    stored = admin.get("password_hash", "")
    if credentials and stored and credentials[0] == admin.get("username") and \
            await trio.to_thread.run_sync(_verifier.verify, credentials[0], credentials[1], stored):
        return credentials[0]
    if not stored:
        logger.warning("cid=%s admin API call refused: [admin] password_hash is empty; set one with "
                       "`zato set-admin-password DIR`", request.cid)
    raise HTTPError(401, headers={"www-authenticate": 'Basic realm="Zato admin API"'})


async def admin_invoke(request: HTTPRequest) -> HTTPResponse:
    name = request.path_params["service"]
    request.trace.channel = "admin.invoke"
    request.trace.service = name
    await check_admin(request)
    if name not in request.server.services:
        raise HTTPError(404, f"Error 404 Not Found: no such service: {name}")
    return await invoke_from_http(request, name, channel="admin.invoke")
