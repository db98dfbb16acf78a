""" Pub/sub messages: what a subscriber gets as `self.request.raw_request` (`PubSubMessage`, plain
data kept in the core as `zato.common.pubsub.PubSubMessage`), and turning what a publisher passes
to `self.pubsub.publish` into a checked, storable message.

Field names and conventions are Zato's (shared/reference/zato-facts.md): `msg_id` starts with
`zpsm`, `sub_key` with `zpsk.`, `priority` is 1-9 (5 by default, higher first), `expiration` is
in milliseconds (Zato's unit) and `pub_time_iso` / `expiration_time_iso` are UTC without a zone
suffix, as Zato writes them.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import string
from typing import Any, Mapping

from zato.common.pubsub import PubSubMessage, iso_utc  # noqa: F401 (iso_utc: imported from here by admin.py)

MSG_ID_PREFIX = "zpsm"

PRIORITY_MIN, PRIORITY_DEFAULT, PRIORITY_MAX = 1, 5, 9
EXPIRATION_DEFAULT = 2147483647 * 1000  # milliseconds: about 68 years, Zato's "never"

MIME_TEXT = "text/plain"
MIME_JSON = "application/json"
MIME_BYTES = "application/octet-stream"

DATA_JSON = "json"
DATA_BYTES = "bytes"

# Zato's topic for messages published straight to a service, and the endpoint delivering them
SERVICE_TOPIC_PREFIX = "/zato/s/to/"
SERVICE_ENDPOINT = "zato.pubsub.service.endpoint"

_FS_UNSAFE = re.compile("[" + re.escape(string.punctuation + string.whitespace) + "]")


class PublishError(ValueError):
    """ A publication was refused before anything was stored (bad option, unknown target). """


class TopicFull(PublishError):
    """ The topic holds as many messages as its `max_depth_gd` / `max_depth_non_gd` allows. """

    def __init__(self, topic_name: str, depth: int, max_depth: int, count: int, has_gd: bool) -> None:
        kind = "max_depth_gd" if has_gd else "max_depth_non_gd"
        super().__init__(
            f"cannot publish {count} message{'s' if count != 1 else ''} to topic {topic_name!r}: it holds {depth} "
            f"undelivered {'GD' if has_gd else 'non-GD'} messages and its {kind} is {max_depth}; nothing was "
            f"published. Let its subscribers catch up, delete messages (admin API), or raise {kind}")
        self.topic_name = topic_name
        self.depth = depth
        self.max_depth = max_depth


def new_msg_id() -> str:
    return MSG_ID_PREFIX + secrets.token_hex(12)


def service_topic_name(service_name: str) -> str:
    """ Zato's topic for a service: `/zato/s/to/` plus the name with punctuation made `_`. """
    return SERVICE_TOPIC_PREFIX + _FS_UNSAFE.sub("_", service_name)


# ################################################################################################
# Storage form


def encode_data(data: Any) -> tuple[str, str, int, str]:
    """ (stored text, data_format, size in bytes, default mime type). """
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        return base64.b64encode(raw).decode("ascii"), DATA_BYTES, len(raw), MIME_BYTES
    if isinstance(data, str):
        return json.dumps(data), DATA_JSON, len(data.encode("utf-8")), MIME_TEXT
    try:
        text = json.dumps(data)
    except (TypeError, ValueError) as exc:
        raise PublishError(f"data must be str, bytes or a JSON-serialisable value (dict, list, number...); "
                           f"{type(data).__name__} is not: {exc}") from None
    return text, DATA_JSON, len(text.encode("utf-8")), MIME_JSON


def decode_data(text: str, data_format: str) -> Any:
    if data_format == DATA_BYTES:
        return base64.b64decode(text)
    return json.loads(text)


def message_from_row(row: Mapping[str, Any], *, sub_key: str | None = None, delivery_count: int = 0) -> PubSubMessage:
    """ A message from its `zato_pubsub_message` row (or the same fields in a dict). """
    return PubSubMessage(
        msg_id=row["msg_id"], topic_name=row["topic_name"], data=decode_data(row["data"], row["data_format"]),
        mime_type=row["mime_type"], size=row["size"], priority=row["priority"], pub_time=row["pub_time"],
        expiration=row["expiration"], expiration_time=row["expiration_time"], has_gd=bool(row["has_gd"]),
        delivery_count=delivery_count, sub_key=sub_key, correl_id=row.get("correl_id"),
        in_reply_to=row.get("in_reply_to"), ext_client_id=row.get("ext_client_id"),
        published_by=row.get("published_by"), server_name=row.get("server_name"), server_pid=row.get("server_pid"),
        zato_ctx=_json_or_none(row.get("zato_ctx")), user_ctx=_json_or_none(row.get("user_ctx")))


def _json_or_none(text: str | None) -> Any:
    return json.loads(text) if text else None


# ################################################################################################
# Checking what publishers pass

# Options of one message, by name; Zato's aliases map to ours.
MESSAGE_OPTIONS = ("data", "msg_id", "priority", "expiration", "has_gd", "mime_type", "correl_id", "in_reply_to",
                   "ext_client_id", "user_ctx")
ALIASES = {"correlation_id": "correl_id", "cid": "correl_id"}
# Accepted for compatibility with Zato code and not used here.
ZATO_IGNORED = ("ext_pub_time", "reply_to_sk", "deliver_to_sk", "endpoint_id", "service", "security_id",
                "ws_channel_id", "pub_pattern_matched", "group_id", "position_in_group", "zato_ctx")


def normalise_options(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """ Maps Zato's aliases to our names; unknown options are an error naming the known ones. """
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key in ZATO_IGNORED:
            continue
        name = ALIASES.get(key, key)
        if name not in MESSAGE_OPTIONS:
            known = ", ".join(sorted(set(MESSAGE_OPTIONS) | set(ALIASES)))
            raise PublishError(f"{where}: unknown option {key!r}; known: {known}")
        if value is not None:
            out[name] = value
    return out


def check_priority(value: Any, where: str) -> int:
    if value is None:
        return PRIORITY_DEFAULT
    if isinstance(value, bool) or not isinstance(value, int) or not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise PublishError(f"{where}: priority must be an int from {PRIORITY_MIN} to {PRIORITY_MAX} (higher is "
                           f"delivered first; default {PRIORITY_DEFAULT}), not {value!r}")
    return value


def check_expiration(value: Any, where: str) -> int:
    if value is None:
        return EXPIRATION_DEFAULT
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PublishError(f"{where}: expiration must be a number of milliseconds greater than 0 (as in Zato), "
                           f"not {value!r}")
    return min(value, EXPIRATION_DEFAULT)


def _optional_text(value: Any, name: str, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise PublishError(f"{where}: {name} must be a string, not {type(value).__name__}")
    return value


def build_row(options: Mapping[str, Any], *, topic_name: str, default_has_gd: bool, now: float,
              published_by: str | None, server_name: str, server_pid: int, zato_ctx: dict | None,
              where: str) -> dict[str, Any]:
    """ One checked message as a `zato_pubsub_message` row (also kept in RAM for non-GD ones). """
    if "data" not in options:
        raise PublishError(f"{where}: a message needs data (data=...)")
    text, data_format, size, default_mime = encode_data(options["data"])
    has_gd = options.get("has_gd", default_has_gd)
    if not isinstance(has_gd, bool):
        raise PublishError(f"{where}: has_gd must be True or False, not {has_gd!r}")
    msg_id = options.get("msg_id") or new_msg_id()
    if not isinstance(msg_id, str) or len(msg_id) > 200:
        raise PublishError(f"{where}: msg_id must be a string of at most 200 characters, not {msg_id!r}")
    expiration = check_expiration(options.get("expiration"), where)
    user_ctx = options.get("user_ctx")
    return {
        "msg_id": msg_id,
        "topic_name": topic_name,
        "data": text,
        "data_format": data_format,
        "mime_type": _optional_text(options.get("mime_type"), "mime_type", where) or default_mime,
        "size": size,
        "priority": check_priority(options.get("priority"), where),
        "pub_time": now,
        "expiration": expiration,
        "expiration_time": now + expiration / 1000.0,
        "has_gd": has_gd,
        "correl_id": _optional_text(options.get("correl_id"), "correl_id", where),
        "in_reply_to": _optional_text(options.get("in_reply_to"), "in_reply_to", where),
        "ext_client_id": _optional_text(options.get("ext_client_id"), "ext_client_id", where),
        "published_by": published_by,
        "server_name": server_name,
        "server_pid": server_pid,
        "zato_ctx": json.dumps(zato_ctx) if zato_ctx else None,
        "user_ctx": json.dumps(user_ctx) if user_ctx is not None else None,
    }
