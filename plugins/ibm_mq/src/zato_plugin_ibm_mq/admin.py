""" Testing connectivity from the server itself, as Zato's dashboard does ("Send a message" on an
outgoing connection's page): two admin API calls and the `zato ibm-mq` commands that use them.

    POST /zato/api/ibm-mq/outgoing/{name}/send    {"queue": ..., "data": ..., "correlation_id", "reply_to",
                                                   "priority", "expiration", "delivery_mode"} -> {"msg_id": hex}
    POST /zato/api/ibm-mq/definitions/{name}/ping -> {"ok": true, "took_ms": ..., "queue_manager": ...}

    zato ibm-mq send DIR CONNECTION QUEUE --data TEXT [--correlation-id ID] [--reply-to QUEUE]
    zato ibm-mq ping DIR DEFINITION
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

from zato.plugin_api import ConnectionNotFound, check_admin, HTTPError, HTTPRequest, HTTPResponse

from zato_plugin_ibm_mq.objects import DEFINITION

PREFIX = "/zato/api/ibm-mq"
_SEND_FIELDS = ("correlation_id", "msg_id", "reply_to", "expiration", "priority", "delivery_mode")

SEND_OPENAPI = {"post": {
    "operationId": "sendIBMMQMessage", "tags": ["ibm_mq"],
    "summary": "Put a test message on a queue through an outgoing IBM MQ connection, from the server",
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["queue", "data"], "properties": {
            "queue": {"type": "string"}, "data": {"type": "string"},
            "correlation_id": {"type": "string"}, "msg_id": {"type": "string"}, "reply_to": {"type": "string"},
            "expiration": {"type": "integer", "minimum": 1, "description": "milliseconds"},
            "priority": {"type": "integer", "minimum": 0, "maximum": 9},
            "delivery_mode": {"type": "integer", "enum": [1, 2]}}}}}},
    "responses": {"200": {"description": "The message is on the queue", "content": {"application/json": {"schema": {
        "type": "object", "required": ["msg_id"], "properties": {"msg_id": {"type": "string",
                                                                            "description": "MsgId, hex"}}}}}},
                  "404": {"description": "No such outgoing connection"},
                  "502": {"description": "The queue manager refused it, or could not be reached"}}}}
PING_OPENAPI = {"post": {
    "operationId": "pingIBMMQDefinition", "tags": ["ibm_mq"],
    "summary": "Connect to a definition's queue manager from the server and ask its name",
    "responses": {"200": {"description": "Whether it answered", "content": {"application/json": {"schema": {
        "type": "object", "required": ["ok", "took_ms"], "properties": {
            "ok": {"type": "boolean"}, "took_ms": {"type": "number"}, "queue_manager": {"type": "string"},
            "error": {"type": "string"}}}}}},
                  "404": {"description": "No such definition"}}}}


async def send_message(request: HTTPRequest) -> HTTPResponse:
    from zato_plugin_ibm_mq.client import MQError, MQUnavailable
    await check_admin(request)
    body = request.json()
    if not isinstance(body, dict) or not isinstance(body.get("queue"), str) or "data" not in body:
        raise HTTPError(400, 'Error 400 Bad Request: send {"queue": "DEV.QUEUE.1", "data": "..."}')
    name = request.path_params["name"]
    try:
        connection = request.server.outgoing.map("out.ibm_mq")[name]
    except ConnectionNotFound as exc:
        raise HTTPError(404, f"Error 404 Not Found: {exc}") from None
    options = [body.get(field) for field in _SEND_FIELDS]
    try:
        msg_id = await connection.send(body["queue"], body["data"], *[o if o is not None else d for o, d in
                                                                      zip(options, ("", "", "", None, None, None))])
    except (MQError, MQUnavailable) as exc:
        raise HTTPError(502, f"Error 502 Bad Gateway: {exc}") from None
    return HTTPResponse.json({"msg_id": msg_id.hex()})


async def ping_definition(request: HTTPRequest) -> HTTPResponse:
    import trio
    from zato_plugin_ibm_mq.client import Endpoint, MQError, MQUnavailable, QueueManagerConnection, mq_library
    await check_admin(request)
    name = request.path_params["name"]
    definition = request.server.config_objects.get(DEFINITION, {}).get(name)
    if definition is None:
        known = ", ".join(repr(n) for n in sorted(request.server.config_objects.get(DEFINITION, {}))) or "none"
        raise HTTPError(404, f"Error 404 Not Found: no {DEFINITION} {name!r}; known: {known} (create it with POST "
                             f"/zato/api/objects/{DEFINITION}, or name one of these)")
    started = time.perf_counter()
    conn = None
    try:
        mq = mq_library()
        conn = QueueManagerConnection(Endpoint.of(definition), f"{DEFINITION} {name!r} (ping)")
        answer = await conn.call(lambda qmgr: qmgr.inquire(mq.CMQC.MQCA_Q_MGR_NAME), what="ping")
    except (MQError, MQUnavailable) as exc:
        return HTTPResponse.json({"ok": False, "error": str(exc), "took_ms": _ms(started)})
    finally:
        if conn is not None:
            conn.close()
            await trio.to_thread.run_sync(conn.join, 5)
    queue_manager = answer.decode("latin-1") if isinstance(answer, bytes) else str(answer)
    return HTTPResponse.json({"ok": True, "took_ms": _ms(started), "queue_manager": queue_manager.strip(" \x00")})


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


ROUTES = [
    (f"{PREFIX}/outgoing/{{name}}/send", send_message, SEND_OPENAPI),
    (f"{PREFIX}/definitions/{{name}}/ping", ping_definition, PING_OPENAPI),
]


# ################################################################################################
# zato ibm-mq


def add_commands(cli: Any) -> None:
    import click

    @cli.group("ibm-mq")
    def ibm_mq() -> None:
        """ IBM MQ: test a server's connections (the server does the MQ calls). """

    @ibm_mq.command("send")
    @click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
    @click.argument("connection")
    @click.argument("queue")
    @click.option("--data", required=True, help="The message's data (text)")
    @click.option("--correlation-id", default="", help="CorrelId (at most 24 bytes)")
    @click.option("--reply-to", default="", help="ReplyToQ")
    def send(base_dir: str, connection: str, queue: str, data: str, correlation_id: str, reply_to: str) -> None:
        """ Put a message on QUEUE through the outgoing connection CONNECTION of the server in BASE_DIR. """
        body = {"queue": queue, "data": data, "correlation_id": correlation_id, "reply_to": reply_to}
        result = _call(base_dir, f"{PREFIX}/outgoing/{quote(connection, safe='')}/send", body)
        click.echo(f"sent to {queue} through {connection!r}: MsgId {result['msg_id']}")

    @ibm_mq.command("ping")
    @click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
    @click.argument("definition")
    def ping(base_dir: str, definition: str) -> None:
        """ Connect to the queue manager of DEFINITION from the server in BASE_DIR. Exit code 0 if it
        answers, 1 if not. """
        result = _call(base_dir, f"{PREFIX}/definitions/{quote(definition, safe='')}/ping", {})
        if result["ok"]:
            click.echo(f"✓ {definition!r}: queue manager {result['queue_manager']} answered in {result['took_ms']} ms")
            return
        click.echo(f"✗ {definition!r} did not answer: {result['error']}")
        raise SystemExit(1)


def _call(base_dir: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    import click
    from zato.plugin_api import admin_request, describe_error, server_paths
    status, _, reply = admin_request(server_paths(base_dir), "POST", path, json.dumps(body).encode())
    if status != 200:
        raise click.ClickException(describe_error(status, reply))
    return json.loads(reply)
