""" WebSocket connections in the admin API, as Zato's web-admin shows them:

    GET  /zato/api/wsx/connections[?channel=NAME&ext_client_id=ID]    the open connections of every process
    POST /zato/api/wsx/connections/{pub_client_id}/invoke             {"data": ..., "timeout": 5} -> the client's answer
    POST /zato/api/wsx/connections/{pub_client_id}/disconnect         a Close frame (4005), its resources released

Each connection: pub_client_id (new at each connect), channel_name, ext_client_id,
ext_client_name, peer_address, peer_fqdn, forwarded_for, local_address, user, connection_time
(UTC, ISO), pings_missed, subscriptions (topic -> subscription time), server_name (the host),
server_pid, worker_index.

Every process sharing the configuration database is listed (zato_plugin_wsx.registry); a
connection held by another process, of this server or of another sharing the database, is
invoked and disconnected through it. Live
fields of another process's connections (peer_fqdn, pings_missed, subscriptions) are as of its
last heartbeat.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from zato.plugin_api import HTTPError, HTTPRequest, HTTPResponse, check_admin

PREFIX = "/zato/api/wsx"

_CONNECTION = {"type": "object", "properties": {
    name: {"type": ["string", "null"]} for name in (
        "pub_client_id", "channel_name", "ext_client_id", "ext_client_name", "peer_address", "peer_fqdn",
        "forwarded_for", "local_address", "user", "connection_time", "server_name")} | {
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
    where = f"process {row['server_pid']} (worker {row['worker_index']}) on {row['server_name']}"
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
    server_name, worker_index = socket.gethostname(), int(request.server.options.worker_index)
    listed = []
    for connection in _channels(request).all_connections():
        if channel and connection.channel.name != channel or client and connection.ext_client_id != client:
            continue
        listed.append({**connection.as_dict(), "server_name": server_name, "server_pid": os.getpid(),
                       "worker_index": worker_index})
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


ROUTES = [
    (f"{PREFIX}/connections", list_connections, ("GET",), LIST_OPENAPI),
    (f"{PREFIX}/connections/{{pub_client_id}}/invoke", invoke_connection, ("POST",), INVOKE_OPENAPI),
    (f"{PREFIX}/connections/{{pub_client_id}}/disconnect", disconnect_connection, ("POST",), DISCONNECT_OPENAPI),
]
