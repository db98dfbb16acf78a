""" `from zato.common.pubsub import PubSubMessage`, as service code written for Zato imports it.

The message class is plain data and lives here, in the core; the `pubsub` plugin
(zato.builtin.pubsub) builds, stores and delivers messages. """

from __future__ import annotations

import base64
from hashlib import sha256
from datetime import datetime, timezone
from typing import Any


def iso_utc(epoch_seconds: float) -> str:
    """ `2024-05-01T10:11:12.123456`: UTC without a suffix, as Zato writes pub_time_iso. """
    try:
        return datetime.fromtimestamp(epoch_seconds, timezone.utc).replace(tzinfo=None).isoformat()
    except (OverflowError, OSError, ValueError):
        return datetime.max.isoformat()


SUB_KEY_PREFIX = "zpsk."


def sub_key(kind: str, subscription: str, topic: str) -> str:
    """ The sub_key of subscription `subscription`'s queue for one topic (`zpsk.<kind>.<hex>`):
    derived from the two names, so it is the same on every server and after restarts. `kind`
    is `srv` for services, the endpoint type for others (`wsx`). """
    return f"{SUB_KEY_PREFIX}{kind}." + sha256(f"{subscription}\0{topic}".encode()).hexdigest()[:24]


class DeliveryError(Exception):
    """ A message could not be handed to its subscriber for a reason other than the subscriber
    raising (no target service, a WebSocket client away...): a failed attempt, retried under the
    subscription's policy and logged in one line, without a traceback. Delivery targets of
    plugins (`register_pubsub_delivery_targets`) raise it, or a subclass. """


class PubSubMessage:
    """ One message as a subscriber gets it (`self.request.raw_request`).

    `data` is what was published (a str, bytes, or any JSON value such as a dict). The other
    attributes describe it: `msg_id`, `topic_name`, `pub_time_iso`, `priority`, `expiration`
    (ms), `expiration_time_iso`, `delivery_count` (this attempt's number, 1 for the first),
    `mime_type`, `size` (bytes), `has_gd`, `sub_key`, `correl_id`, `in_reply_to`,
    `ext_client_id`, `published_by` (the publishing service), `server_name`, `server_pid`,
    `zato_ctx`, `user_ctx`.
    """

    __slots__ = ("msg_id", "topic_name", "data", "mime_type", "size", "priority", "pub_time", "expiration",
                 "expiration_time", "has_gd", "delivery_count", "sub_key", "correl_id", "in_reply_to",
                 "ext_client_id", "published_by", "server_name", "server_pid", "zato_ctx", "user_ctx")

    def __init__(self, **fields: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, fields.get(name))

    # Zato's names and derived values ############################################################

    @property
    def pub_time_iso(self) -> str:
        return iso_utc(self.pub_time)

    @property
    def expiration_time_iso(self) -> str:
        return iso_utc(self.expiration_time)

    @property
    def pub_msg_id(self) -> str:
        return self.msg_id

    @property
    def pub_correl_id(self) -> str | None:
        return self.correl_id

    @property
    def correlation_id(self) -> str | None:
        return self.correl_id

    def replace(self, **changes: Any) -> "PubSubMessage":
        """ A copy with some fields changed (each delivery attempt gets its own object). """
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        return PubSubMessage(**fields)

    def to_dict(self, *, with_data: bool = True) -> dict[str, Any]:
        """ Every field, JSON-serialisable (bytes data as base64 under `data_base64`). """
        out = {name: getattr(self, name) for name in self.__slots__ if name != "data"}
        out["pub_time_iso"] = self.pub_time_iso
        out["expiration_time_iso"] = self.expiration_time_iso
        if with_data:
            if isinstance(self.data, (bytes, bytearray)):
                out["data_base64"] = base64.b64encode(self.data).decode("ascii")
            else:
                out["data"] = self.data
        return out

    def __repr__(self) -> str:
        return (f"<PubSubMessage {self.msg_id} topic={self.topic_name!r} priority={self.priority} "
                f"delivery_count={self.delivery_count} size={self.size}>")


__all__ = ["PubSubMessage", "iso_utc"]
