""" WebSocket connections in the admin API, as Zato's web-admin shows them:

    GET  /zato/api/wsx/connections[?channel=NAME&ext_client_id=ID]    the open connections of every process
    POST /zato/api/wsx/connections/{pub_client_id}/invoke             {"data": ..., "timeout": 5} -> the client's answer
    POST /zato/api/wsx/connections/{pub_client_id}/disconnect         a Close frame (4005), its resources released
    GET  /zato/api/wsx/outgoing                                       outgoing connections: state, last error, holder

Each connection: pub_client_id (new at each connect), channel_name, ext_client_id,
ext_client_name, peer_address, peer_fqdn, forwarded_for, local_address, user, connection_time
(UTC, ISO), pings_missed, subscriptions (topic -> subscription time, which may predate the
connection), server_name (the server's own name, `[main] name` of its server.conf), server_host
(the host it runs on), server_pid, worker_index.

The same from the command line, through the running server (`zato wsx connections|invoke|disconnect
BASE_DIR ...`, `add_commands`).

Every process sharing the configuration database is listed (zato_plugin_wsx.registry); a
connection held by another process, of this server or of another sharing the database, is
invoked and disconnected through it. Live
fields of another process's connections (peer_fqdn, pings_missed, subscriptions) are as of its
last heartbeat.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any
from urllib.parse import quote, urlencode

from zato.plugin_api import HTTPError, HTTPRequest, HTTPResponse, check_admin

PREFIX = "/zato/api/wsx"

_CONNECTION = {"type": "object", "properties": {
    name: {"type": ["string", "null"]} for name in (
        "pub_client_id", "channel_name", "ext_client_id", "ext_client_name", "peer_address", "peer_fqdn",
        "forwarded_for", "local_address", "user", "connection_time", "server_name", "server_host")} | {
    "server_pid": {"type": "integer"}, "worker_index": {"type": "integer"}, "pings_missed": {"type": "integer"},
    "subscriptions": {"type": "object", "additionalProperties": {"type": "string"}}}}

LIST_OPENAPI = {"get": {
    "operationId": "listWebSocketConnections", "tags": ["wsx"],
    "summary": "The WebSocket connections open in every process, optionally of one channel or client",
    "parameters": [{"name": "channel", "in": "query", "schema": {"type": "string"}},
                   {"name": "ext_client_id", "in": "query", "schema": {"type": "string"}}],
    "responses": {"200": {"description": "The connections", "content": {"application/json": {"schema": {
        "type": "object", "required": ["connections"],
        "properties": {"connections": {"type": "array", "items": _CONNECTION}}}}}}}}}
INVOKE_OPENAPI = {"post": {
    "operationId": "invokeWebSocketConnection", "tags": ["wsx"],
    "summary": "Send a request (zwsx.rqc) to one connection and wait for its client-response",
    "parameters": [{"name": "pub_client_id", "in": "path", "required": True, "schema": {"type": "string"}}],
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["data"], "properties": {
            "data": {}, "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 300}}}}}},
    "responses": {"200": {"description": "The client's answer", "content": {"application/json": {"schema": {
        "type": "object", "required": ["response"], "properties": {"response": {}}}}}},
                  "404": {"description": "No such connection"},
                  "502": {"description": "The process holding the connection could not be reached"},
                  "504": {"description": "The client did not answer in time"}}}}
DISCONNECT_OPENAPI = {"post": {
    "operationId": "disconnectWebSocketConnection", "tags": ["wsx"],
    "summary": "Close one connection (close code 4005)",
    "parameters": [{"name": "pub_client_id", "in": "path", "required": True, "schema": {"type": "string"}}],
    "responses": {"200": {"description": "Closed", "content": {"application/json": {"schema": {
        "type": "object", "required": ["disconnected"], "properties": {"disconnected": {"type": "string"}}}}}},
                  "404": {"description": "No such connection"},
                  "502": {"description": "The process holding the connection could not be reached"}}}}


def _channels(request: HTTPRequest) -> Any:
    from zato_plugin_wsx import CHANNELS
    return CHANNELS.require(request.server)


def _registry(request: HTTPRequest) -> Any:
    from zato_plugin_wsx.registry import REGISTRY
    return REGISTRY.get(request.server)


def _not_found(pub_client_id: str) -> HTTPError:
    return HTTPError(404, f"Error 404 Not Found: no WebSocket connection {pub_client_id!r} is open; "
                          f"GET {PREFIX}/connections lists those that are")


def _unreachable(row: dict[str, Any], registry: Any) -> HTTPError:
    from zato_plugin_wsx.registry import holder_of
    where = f"process {row['server_pid']} (worker {row['worker_index']}) of {holder_of(row)}"
    if not registry.store.same_server(row):
        where += f", of the server in {row['server_dir']!r} sharing this database"
    return HTTPError(502, f"Error 502 Bad Gateway: WebSocket connection {row['pub_client_id']!r} is held by {where}, "
                          f"which did not answer; check that it is running and its log")


async def _elsewhere(request: HTTPRequest) -> tuple[dict[str, Any], Any]:
    """ The row of a connection this process does not hold, and the registry; 404 if none. """
    pub_client_id = request.path_params["pub_client_id"]
    registry = _registry(request)
    row = await registry.find(pub_client_id) if registry is not None else None
    if row is None:
        raise _not_found(pub_client_id)
    if registry.store.is_mine(row):  # closed a moment ago, its row not deleted yet
        await registry.forget(pub_client_id)
        raise _not_found(pub_client_id)
    return row, registry


async def list_connections(request: HTTPRequest) -> HTTPResponse:
    await check_admin(request)
    channel, client = request.query.get("channel"), request.query.get("ext_client_id")
    server = {"server_name": request.server.name, "server_host": socket.gethostname(), "server_pid": os.getpid(),
              "worker_index": int(request.server.options.worker_index)}
    listed = []
    for connection in _channels(request).all_connections():
        if channel and connection.channel.name != channel or client and connection.ext_client_id != client:
            continue
        listed.append({**connection.as_dict(), **server})
    registry = _registry(request)
    if registry is not None:
        listed += await registry.listed(channel=channel, ext_client_id=client)
    listed.sort(key=lambda item: item["connection_time"])
    return HTTPResponse.json({"connections": listed})


def _answer(answer: Any) -> HTTPResponse:
    return HTTPResponse.json(answer if isinstance(answer, dict) and "response" in answer else {"response": answer})


async def invoke_connection(request: HTTPRequest) -> HTTPResponse:
    from zato_plugin_wsx.connection import ClientRequestFailed
    from zato_plugin_wsx.registry import INVOKE, REPLY_GRACE_SECONDS
    await check_admin(request)
    body = request.json()
    if not isinstance(body, dict) or "data" not in body:
        raise HTTPError(400, 'Error 400 Bad Request: send {"data": ..., "timeout": 5}')
    timeout = body.get("timeout", 5)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= 300:
        raise HTTPError(400, f"Error 400 Bad Request: timeout {timeout!r} must be seconds, over 0 and at most 300")
    connection = _channels(request).find(request.path_params["pub_client_id"])
    if connection is not None:
        try:
            return _answer(await connection.invoke_client(body["data"], float(timeout)))
        except ClientRequestFailed as exc:
            raise HTTPError(504, f"Error 504 Gateway Timeout: {exc}") from None
    row, registry = await _elsewhere(request)
    answer = await registry.ask(row, INVOKE, {"pub_client_id": row["pub_client_id"], "data": body["data"],
                                         "timeout": float(timeout)}, float(timeout) + REPLY_GRACE_SECONDS)
    if answer is None:
        if await registry.find(row["pub_client_id"]) is None:
            raise _not_found(row["pub_client_id"])
        raise _unreachable(row, registry)
    status, data = answer
    if status == 504:
        raise HTTPError(504, f"Error 504 Gateway Timeout: {data}")
    return _answer(data)


async def disconnect_connection(request: HTTPRequest) -> HTTPResponse:
    from zato_plugin_wsx.protocol import CLOSE_DISCONNECTED
    from zato_plugin_wsx.registry import DISCONNECT, DISCONNECT_TIMEOUT
    await check_admin(request)
    connection = _channels(request).find(request.path_params["pub_client_id"])
    if connection is not None:
        await connection.close(CLOSE_DISCONNECTED, "disconnected through the admin API")
        registry = _registry(request)
        if registry is not None:  # at once, so that another worker lists it no more
            await registry.forget(connection.pub_client_id)
        return HTTPResponse.json({"disconnected": connection.pub_client_id})
    row, registry = await _elsewhere(request)
    answer = await registry.ask(row, DISCONNECT, {"pub_client_id": row["pub_client_id"]}, DISCONNECT_TIMEOUT)
    if answer is None:
        if await registry.find(row["pub_client_id"]) is None:
            raise _not_found(row["pub_client_id"])
        raise _unreachable(row, registry)
    return HTTPResponse.json({"disconnected": row["pub_client_id"]})


OUTGOING_OPENAPI = {"get": {
    "operationId": "listOutgoingWebSocketConnections", "tags": ["wsx"],
    "summary": "The outgoing WebSocket connections (outgoing_wsx): state, last error and which process holds each",
    "responses": {"200": {"description": "The connections", "content": {"application/json": {"schema": {
        "type": "object", "required": ["outgoing"], "properties": {"outgoing": {"type": "array", "items": {
            "type": "object", "properties": {
                "name": {"type": "string"}, "address": {"type": "string"},
                "state": {"type": "string", "enum": ["connecting", "connected", "disconnected", "closed",
                                                     "not open"]},
                "since": {"type": ["string", "null"]}, "last_error": {"type": "string"},
                "server_name": {"type": ["string", "null"]}, "server_host": {"type": ["string", "null"]},
                "server_pid": {"type": ["integer", "null"]}}}}}}}}}}}}


async def list_outgoing(request: HTTPRequest) -> HTTPResponse:
    """ Every active outgoing_wsx definition, with the state its holder last wrote (or "not open"). """
    from datetime import datetime, timezone
    from zato_plugin_wsx.outgoing import OBJECT_TYPE
    from zato_plugin_wsx.registry import listed_server
    await check_admin(request)
    registry = _registry(request)
    rows = {row["name"]: row for row in await registry.in_thread(registry.store.listed_outgoing, time.time())} \
        if registry is not None else {}
    out = []
    for name, definition in sorted(request.server.config_objects.get(OBJECT_TYPE, {}).items()):
        if definition.get("is_active", True) is False:
            continue
        row = rows.get(name) or {}
        since = row.get("since")
        out.append({"name": name, "address": definition.get("address"), "state": row.get("state", "not open"),
                    "since": datetime.fromtimestamp(since, timezone.utc).isoformat() if since else None,
                    "last_error": row.get("last_error", ""),
                    **(listed_server(row) if row else {"server_name": None, "server_host": None}),
                    "server_pid": row.get("server_pid")})
    return HTTPResponse.json({"outgoing": out})


ROUTES = [
    (f"{PREFIX}/outgoing", list_outgoing, ("GET",), OUTGOING_OPENAPI),
    (f"{PREFIX}/connections", list_connections, ("GET",), LIST_OPENAPI),
    (f"{PREFIX}/connections/{{pub_client_id}}/invoke", invoke_connection, ("POST",), INVOKE_OPENAPI),
    (f"{PREFIX}/connections/{{pub_client_id}}/disconnect", disconnect_connection, ("POST",), DISCONNECT_OPENAPI),
]


# ################################################################################################
# The command line: `zato wsx ...` (the register_cli_commands hook)


def add_commands(cli: Any) -> None:
    import click

    @cli.group("wsx")
    def wsx() -> None:
        """ WebSocket connections of a running server: list, invoke, disconnect. """

    @wsx.command("connections")
    @click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
    @click.option("--channel", default="", help="Only this channel's connections")
    @click.option("--client-id", default="", help="Only connections of this external client id")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table")
    def connections(base_dir: str, channel: str, client_id: str, as_json: bool) -> None:
        """ The connections open in every process of the server in BASE_DIR and of the servers
        sharing its database. """
        query = urlencode({key: value for key, value in (("channel", channel), ("ext_client_id", client_id)) if value})
        rows = _call(base_dir, "GET", f"{PREFIX}/connections" + (f"?{query}" if query else ""))["connections"]
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        # Plain columns, never cut or wrapped: ids are copied from here into `zato wsx invoke`
        header = ("PUB_CLIENT_ID", "CHANNEL", "CLIENT_ID", "CLIENT_NAME", "PEER", "CONNECTED_UTC", "SERVER:PID",
                  "HOST", "TOPICS")
        lines = [header] + [(row["pub_client_id"], row["channel_name"], row["ext_client_id"] or "-",
                             row["ext_client_name"] or "-", row["peer_fqdn"] or row["peer_address"],
                             row["connection_time"], f"{row['server_name']}:{row['server_pid']}",
                             row.get("server_host") or "-", ",".join(row["subscriptions"]) or "-") for row in rows]
        widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
        for line in lines:
            click.echo("  ".join(value.ljust(width) for value, width in zip(line, widths)).rstrip())
        click.echo(f"{len(rows)} WebSocket connections")

    @wsx.command("invoke")
    @click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
    @click.argument("pub_client_id")
    @click.option("--data", required=True, help="JSON sent to the client (zwsx.rqc); text that is not JSON is sent "
                                                "as a string")
    @click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for the client's answer")
    def invoke(base_dir: str, pub_client_id: str, data: str, timeout: float) -> None:
        """ Send a request to the connection PUB_CLIENT_ID and print the client's answer. """
        try:
            value = json.loads(data)
        except ValueError:
            value = data
        answer = _call(base_dir, "POST", f"{PREFIX}/connections/{quote(pub_client_id, safe='')}/invoke",
                       {"data": value, "timeout": timeout}, timeout=timeout + 10)
        click.echo(json.dumps(answer["response"]))

    @wsx.command("disconnect")
    @click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
    @click.argument("pub_client_id")
    def disconnect(base_dir: str, pub_client_id: str) -> None:
        """ Close the connection PUB_CLIENT_ID (close code 4005). """
        _call(base_dir, "POST", f"{PREFIX}/connections/{quote(pub_client_id, safe='')}/disconnect", {})
        click.echo(f"disconnected {pub_client_id}")


def _call(base_dir: str, method: str, path: str, body: Any = None, timeout: float = 60.0) -> dict[str, Any]:
    import click
    from zato.plugin_api import admin_request, describe_error, server_paths
    status, _, reply = admin_request(server_paths(base_dir), method, path,
                                     json.dumps(body).encode() if body is not None else None, timeout=timeout)
    if status != 200:
        raise click.ClickException(describe_error(status, reply))
    return json.loads(reply)
