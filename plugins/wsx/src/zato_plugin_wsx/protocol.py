""" Zato's WSX protocol: the JSON text frames clients and the server exchange (as zato-websocket-client
1.6.1 and Zato 3.2 speak them).

Client frames: `{"meta": {"action", "id", "timestamp", "token", "client_id", "client_name", ...},
"data": {...}}` with the actions `create-session` (plus `username` and `secret`),
`invoke-service` and `client-response` (plus `in_reply_to`; the answer in `data.response`).

Server frames: `{"meta": {"id", "timestamp", "msg_type", ["status"], ["in_reply_to"],
["error_message"]}, "data": ...}` with the types below.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

# What clients send
CREATE_SESSION = "create-session"
INVOKE_SERVICE = "invoke-service"
CLIENT_RESPONSE = "client-response"
ACTIONS = (CREATE_SESSION, INVOKE_SERVICE, CLIENT_RESPONSE)

# What the server sends
AUTH_RESPONSE = "zwsx.rspa"          # a session opened: data.token
OK_RESPONSE = "zwsx.rspok"           # a service's response, in reply to invoke-service
ERROR_RESPONSE = "zwsx.rsperr"       # a request that failed: status, error_message, data.cid
FORBIDDEN = "zwsx.merr"              # no session, bad credentials or token: then the connection is closed
SERVER_REQUEST = "zwsx.rqc"          # the server asks the client; it answers with client-response
PUBSUB_DELIVERY = "zwsx.psrq"        # pub/sub messages for the client

TOKEN_PREFIX = "zwsxt."
NOT_AUTHORIZED = "You are not authorized to access this resource"

# Close codes (the 4xxx ones as Zato uses them)
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008                  # no session in time, bad credentials, a bad or expired token
CLOSE_TOO_BIG = 1009
CLOSE_PINGS_MISSED = 4002
CLOSE_DISCONNECTED = 4005            # disconnected through the admin API or a service
CLOSE_SERVER_STOPPING = 1001


def new_id() -> str:
    return secrets.token_hex(12)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_hex(16)


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat()


@dataclass
class ClientFrame:
    """ One frame from a client, checked. """
    action: str
    id: str
    token: str | None
    meta: dict[str, Any]
    data: Any


class BadFrame(Exception):
    """ A frame that is not Zato's protocol; `msg_id` is the frame's id where it had one. """

    def __init__(self, message: str, status: int = 400, msg_id: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.msg_id = msg_id


def parse_client_frame(text: str) -> ClientFrame:
    """ The frame in `text`, or BadFrame saying what is wrong with it. """
    try:
        frame = json.loads(text)
    except ValueError as exc:
        raise BadFrame(f"the message is not JSON ({exc}); send Zato's WSX frames: "
                       f'{{"meta": {{"action": ..., "id": ..., "timestamp": ...}}, "data": {{...}}}}') from None
    if not isinstance(frame, dict):
        raise BadFrame(f"the message is a JSON {type(frame).__name__}, not an object with meta and data")
    meta = frame.get("meta")
    if not isinstance(meta, dict):
        raise BadFrame("the message has no meta object (meta.action, meta.id, meta.timestamp)")
    msg_id = meta.get("id")
    if not isinstance(msg_id, str) or not msg_id:
        raise BadFrame("meta.id is missing: every request needs an id its response can refer to")
    action = meta.get("action") or CLIENT_RESPONSE  # as in Zato: no action is a response
    if action not in ACTIONS:
        raise BadFrame(f"meta.action {action!r} is not one of {', '.join(ACTIONS)}", msg_id=msg_id)
    token = meta.get("token")
    return ClientFrame(action, msg_id, token if isinstance(token, str) else None, meta, frame.get("data"))


def _frame(msg_type: str, data: Any = None, *, msg_id: str | None = None, **meta: Any) -> str:
    header: dict[str, Any] = {"id": msg_id or new_id(), "timestamp": now_iso(), "msg_type": msg_type}
    header.update({key: value for key, value in meta.items() if value is not None})
    frame: dict[str, Any] = {"meta": header}
    if data is not None:
        frame["data"] = data
    return json.dumps(frame, default=str)


def auth_response(in_reply_to: str, token: str) -> str:
    return _frame(AUTH_RESPONSE, {"token": token}, status=200, in_reply_to=in_reply_to)


def ok_response(in_reply_to: str, data: Any, cid: str) -> str:
    if isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("utf-8", "replace")
    return _frame(OK_RESPONSE, data, msg_id=cid, status=200, in_reply_to=in_reply_to)


def error_response(in_reply_to: str | None, status: int, message: str, cid: str) -> str:
    return _frame(ERROR_RESPONSE, {"cid": cid}, msg_id=cid, status=status, in_reply_to=in_reply_to,
                  error_message=message)


def forbidden(cid: str, status: int = 403, message: str = NOT_AUTHORIZED) -> str:
    return _frame(FORBIDDEN, message, msg_id=cid, status=status)


def server_request(msg_id: str, data: Any) -> str:
    return _frame(SERVER_REQUEST, data, msg_id=msg_id)


def pubsub_delivery(msg_id: str, data: Any) -> str:
    return _frame(PUBSUB_DELIVERY, data, msg_id=msg_id)


def ping_payload(msg_id: str) -> bytes:
    """ What a WebSocket Ping carries (as Zato's: a zwsx.rqc meta, under 125 bytes). """
    return json.dumps({"meta": {"id": msg_id, "timestamp": now_iso(), "msg_type": SERVER_REQUEST}},
                      separators=(",", ":")).encode()
