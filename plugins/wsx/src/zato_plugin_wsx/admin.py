""" WebSocket connections in the admin API, as Zato's web-admin shows them:

    GET  /zato/api/wsx/connections[?channel=NAME&ext_client_id=ID]    the open connections of this process
    POST /zato/api/wsx/connections/{pub_client_id}/invoke             {"data": ..., "timeout": 5} -> the client's answer
    POST /zato/api/wsx/connections/{pub_client_id}/disconnect         a Close frame (4005), its resources released

Each connection: pub_client_id (new at each connect), channel_name, ext_client_id,
ext_client_name, peer_address, peer_fqdn, forwarded_for, local_address, user, connection_time
(UTC, ISO), pings_missed, subscriptions (topic -> subscription time), server_name, server_pid.
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
    "server_pid": {"type": "integer"}, "pings_missed": {"type": "integer"},
    "subscriptions": {"type": "object", "additionalProperties": {"type": "string"}}}}

LIST_OPENAPI = {"get": {
    "operationId": "listWebSocketConnections", "tags": ["wsx"],
    "summary": "The WebSocket connections open in this process, optionally of one channel or client",
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
                  "404": {"description": "No such connection in this process"},
                  "504": {"description": "The client did not answer in time"}}}}
DISCONNECT_OPENAPI = {"post": {
    "operationId": "disconnectWebSocketConnection", "tags": ["wsx"],
    "summary": "Close one connection (close code 4005)",
    "parameters": [{"name": "pub_client_id", "in": "path", "required": True, "schema": {"type": "string"}}],
    "responses": {"200": {"description": "Closed", "content": {"application/json": {"schema": {
        "type": "object", "required": ["disconnected"], "properties": {"disconnected": {"type": "string"}}}}}},
                  "404": {"description": "No such connection in this process"}}}}


def _channels(request: HTTPRequest) -> Any:
    from zato_plugin_wsx import CHANNELS
    return CHANNELS.require(request.server)


def _connection(request: HTTPRequest) -> Any:
    pub_client_id = request.path_params["pub_client_id"]
    connection = _channels(request).find(pub_client_id)
    if connection is None:
        raise HTTPError(404, f"Error 404 Not Found: no WebSocket connection {pub_client_id!r} is open in this "
                             f"process; GET {PREFIX}/connections lists those that are")
    return connection


async def list_connections(request: HTTPRequest) -> HTTPResponse:
    await check_admin(request)
    channel, client = request.query.get("channel"), request.query.get("ext_client_id")
    server_name = socket.gethostname()
    listed = []
    for connection in _channels(request).all_connections():
        if channel and connection.channel.name != channel or client and connection.ext_client_id != client:
            continue
        listed.append({**connection.as_dict(), "server_name": server_name, "server_pid": os.getpid()})
    listed.sort(key=lambda item: item["connection_time"])
    return HTTPResponse.json({"connections": listed})


async def invoke_connection(request: HTTPRequest) -> HTTPResponse:
    from zato_plugin_wsx.connection import ClientRequestFailed
    await check_admin(request)
    body = request.json()
    if not isinstance(body, dict) or "data" not in body:
        raise HTTPError(400, 'Error 400 Bad Request: send {"data": ..., "timeout": 5}')
    timeout = body.get("timeout", 5)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= 300:
        raise HTTPError(400, f"Error 400 Bad Request: timeout {timeout!r} must be seconds, over 0 and at most 300")
    connection = _connection(request)
    try:
        answer = await connection.invoke_client(body["data"], float(timeout))
    except ClientRequestFailed as exc:
        raise HTTPError(504, f"Error 504 Gateway Timeout: {exc}") from None
    return HTTPResponse.json(answer if isinstance(answer, dict) and "response" in answer else {"response": answer})


async def disconnect_connection(request: HTTPRequest) -> HTTPResponse:
    from zato_plugin_wsx.protocol import CLOSE_DISCONNECTED
    await check_admin(request)
    connection = _connection(request)
    await connection.close(CLOSE_DISCONNECTED, "disconnected through the admin API")
    return HTTPResponse.json({"disconnected": connection.pub_client_id})


ROUTES = [
    (f"{PREFIX}/connections", list_connections, ("GET",), LIST_OPENAPI),
    (f"{PREFIX}/connections/{{pub_client_id}}/invoke", invoke_connection, ("POST",), INVOKE_OPENAPI),
    (f"{PREFIX}/connections/{{pub_client_id}}/disconnect", disconnect_connection, ("POST",), DISCONNECT_OPENAPI),
]
