""" WebSocket clients as pub/sub subscribers: the `wsx` endpoint type of the pubsub plugin.

How a client maps onto pub/sub's objects (all ordinary configuration objects, so the admin API,
enmasse and every worker see them):

* The subscriber is the client, not its connection: one `pubsub_endpoint` of endpoint_type
  `wsx` per channel and ext_client_id (the `client_id` of create-session), named
  `wsx/<channel>/<client_id>` (each part percent-encoded, so the name is unambiguous). A client
  that reconnects with the same client id is the same subscriber.
* Its topics are the `topic_list` of one `pubsub_subscription` of the same name; pub/sub gives
  each topic its own queue, whose sub_key (`zpsk.wsx.…`) is stable, so a client that reconnects
  gets what was published while it was away (guaranteed-delivery messages; non-GD ones only
  while this worker runs).
* Endpoints of type `wsx` are found by that name only: one named otherwise gets no deliveries.
* Subscribing creates both objects if missing and adds the topic; unsubscribing removes it and
  deletes the messages still queued for the client on that topic (as Zato does: subscribing
  again starts from new messages); the last topic removed deletes both objects. An endpoint an administrator created beforehand under that name keeps its `sub=`
  patterns: a topic they do not allow is refused.

Subscriptions outlive connections (Zato's `unsub_on_wsx_close=False`): that is the point of
giving a client id. A closed connection does not unsubscribe; `unsubscribe` does.

When the client subscribed to each topic is kept with its subscription, in the plugin's table
`zato_wsx_subscription` (endpoint name, topic, time), written when it subscribes and deleted when
it unsubscribes. A connection whose session opens with the client id of a subscriber lists its
topics with those times (`connection.subscriptions`, which the admin API lists), so they may
predate the connection. A topic an administrator added to the subscription (the admin API,
enmasse) has no time of its own there: it is listed with the time the subscription last changed.

Delivery (`deliver`, pub/sub's target for `wsx`): the subscriber's newest open connection in
this worker gets `zwsx.psrq` with meta.id = the msg_id and the message as data. Without one,
it waits up to `CLIENT_WAIT_SECONDS` for the client to come back (the queue's next messages
wait behind it, not failing), then raises: a failed attempt, retried under the subscription's
failure policy (pub/sub's), while the message stays queued. A client connected to another
process (a worker of this server, or of another server sharing the database) gets it through
that process: the connection registry (zato_plugin_wsx.registry) says which one holds it, and
asks it to send the frame and say it did.
As in Zato there is no acknowledgement: a frame sent is a message delivered. A client-response
to a `zpsm…` id is accepted and ignored.

Subscriptions created here retry every few seconds for as long as messages live: a message
does not go to the dead-letter queue because its client was away (`SUBSCRIPTION_DEFAULTS`;
an administrator may change them on the subscription).
"""

from __future__ import annotations

import base64
import logging
import time
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import quote, unquote

import trio

from zato.common.pubsub import DeliveryError, sub_key
from zato.plugin_api import PUBSUB_QUEUES, Kind
from zato_plugin_wsx import protocol

logger = logging.getLogger("zato.wsx")

ENDPOINT_TYPE = "wsx"
TOPIC, ENDPOINT, SUBSCRIPTION = "pubsub_topic", "pubsub_endpoint", "pubsub_subscription"
CONFIG_CHANGED = "config.objects.changed"  # the notification after which every worker re-reads objects
CLIENT_WAIT_SECONDS = 5.0  # how long a delivery waits for an absent client before it counts as failed
CLIENT_POLL_SECONDS = 0.05  # how often a waiting delivery looks for the client's connection
SUBSCRIPTION_DEFAULTS = {
    "max_attempts": 2 ** 31 - 1,  # as long as the message lives (its expiration), as in Zato
    "retry_seconds": 1.0, "retry_backoff": 2.0, "retry_max_seconds": 5.0,  # a returning client waits 5 s at most
    "delivery_timeout": 0.0,
}
# The fields of each message a client gets (zwsx.psrq data), Zato's names; the optional ones only when set
MESSAGE_FIELDS = ("msg_id", "topic_name", "mime_type", "priority", "expiration", "expiration_time_iso",
                  "pub_time_iso", "has_gd", "delivery_count", "sub_key", "size")
OPTIONAL_FIELDS = ("correl_id", "in_reply_to", "ext_client_id", "user_ctx")


class ClientAway(DeliveryError):
    """ A delivery found no open connection of its client: a failed attempt, retried. """


class SubscriptionRefused(Exception):
    """ A subscribe or unsubscribe that cannot be done: `status` and a message for the client. """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# ################################################################################################
# Names


def endpoint_name(channel_name: str, ext_client_id: str) -> str:
    """ The pub/sub endpoint (and subscription) of one client of one channel. """
    return f"wsx/{quote(channel_name, safe='')}/{quote(ext_client_id, safe='')}"


def subscriber_name(wsx: Any) -> str:
    """ The endpoint name of the client behind `self.request.wsx`, or SubscriptionRefused. """
    if wsx is None:
        raise SubscriptionRefused(400, "subscribing needs a WebSocket client: invoke this service through a "
                                       "WebSocket channel (e.g. with helpers.web-sockets-gateway)")
    if not wsx.ext_client_id:
        raise SubscriptionRefused(400, "open the session with a client_id (meta.client_id of create-session): "
                                       "it names the subscriber, so that a reconnecting client gets its messages")
    return endpoint_name(wsx.channel_name, wsx.ext_client_id)


def sub_key_of(topic_name: str, name: str) -> str:
    """ The queue of subscription `name` for one topic, derived as pub/sub derives it (from the
    subscription's name and the topic: the same on every server and after restarts). """
    return sub_key(ENDPOINT_TYPE, name, topic_name)


# ################################################################################################
# Subscribing

# One change of a client's objects at a time in this process (their data is read, then written)
_writing = trio.Lock()


async def subscribe(server: Any, wsx: Any, topic_names: list[str]) -> dict[str, str]:
    """ Subscribes the client to each topic (those it has already are kept); returns topic -> sub_key. """
    name = subscriber_name(wsx)
    topics = server.config_objects.get(TOPIC, {})
    unknown = [topic for topic in topic_names if topic not in topics]
    if unknown:
        raise SubscriptionRefused(404, f"no topic {', '.join(repr(t) for t in unknown)}: create it first "
                                       f"(pubsub_topic) or check that it is active")
    description = f"WebSocket client {wsx.ext_client_id!r} of channel {wsx.channel_name!r}"
    async with _writing:
        changed, times = await trio.to_thread.run_sync(_add_topics, server, name, description, topic_names)
        if changed:
            await _changed(server)
    for connection in {wsx.connection, *connections_of(server, name)}:  # every connection of the client here
        connection.subscriptions.update(times)
    logger.info("%s subscribed to %s", wsx.connection.describe(), ", ".join(topic_names))
    return {topic: sub_key_of(topic, name) for topic in topic_names}


async def unsubscribe(server: Any, wsx: Any, topic_names: list[str] | None = None,
                      sub_keys: list[str] | None = None) -> list[str]:
    """ Removes topics (named, or by their sub_keys) from the client's subscription; returns the
    topics removed. """
    name = subscriber_name(wsx)
    wanted = set(topic_names or [])
    if sub_keys:
        mine = {key: topic for topic, key in subscriptions_of(server, wsx).items()}
        strangers = [key for key in sub_keys if key not in mine]
        if strangers:
            raise SubscriptionRefused(404, f"no subscription of this client has the sub_key {strangers[0]!r}")
        wanted.update(mine[key] for key in sub_keys)
    async with _writing:
        removed = await trio.to_thread.run_sync(_remove_topics, server, name, sorted(wanted))
        if removed:
            await _changed(server)
    queues = PUBSUB_QUEUES.get(server)
    for topic in removed:  # what was still queued for the client goes with its subscription, as in Zato
        deleted = await queues.clear(sub_key_of(topic, name)) if queues is not None else 0
        if deleted:
            logger.info("%s: %d messages of %s still queued for it deleted", wsx.connection.describe(), deleted, topic)
    for connection in {wsx.connection, *connections_of(server, name)}:
        for topic in removed:
            connection.subscriptions.pop(topic, None)
    if removed:
        logger.info("%s unsubscribed from %s", wsx.connection.describe(), ", ".join(removed))
    return removed


def subscriptions_of(server: Any, wsx: Any) -> dict[str, str]:
    """ topic -> sub_key of the client's subscriptions. """
    name = subscriber_name(wsx)
    subscription = server.config_objects.get(SUBSCRIPTION, {}).get(name) or {}
    return {topic: sub_key_of(topic, name) for topic in subscription.get("topic_list") or []}


async def _changed(server: Any) -> None:
    """ Every worker re-reads the pub/sub objects (as the admin API's changes make them do). """
    await server.notify(CONFIG_CHANGED, {"types": [ENDPOINT, SUBSCRIPTION]})


def _with_defaults(server: Any, object_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """ `data` with the defaults of the object type's other fields. """
    fields = server.registry.items(Kind.OBJECT_TYPES)[object_type].fields
    return {**{f.name: f.default for f in fields if f.default is not None}, **data}


def _read(server: Any, object_type: str, name: str) -> dict[str, Any] | None:
    try:
        return server.odb.get_object(object_type, name)
    except LookupError:
        return None


def _stored_form(obj: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in obj.items() if not key.startswith("_") and key != "is_active"}


def _add_topics(server: Any, name: str, description: str,
                topic_names: list[str]) -> tuple[bool, dict[str, str]]:
    """ Blocking: the endpoint and subscription created if missing, the topics added; (True if
    anything changed, topic -> when the client subscribed to it). """
    changed = _add_to_subscription(server, name, description, topic_names)
    return changed, _record_times(server, name, topic_names)


def _add_to_subscription(server: Any, name: str, description: str, topic_names: list[str]) -> bool:
    changed = False
    endpoint = _read(server, ENDPOINT, name)
    if endpoint is None:
        endpoint = _with_defaults(server, ENDPOINT, {"name": name, "endpoint_type": ENDPOINT_TYPE,
                                                     "description": description})
        server.odb.put_object(ENDPOINT, name, endpoint)
        changed = True
    if endpoint.get("endpoint_type") != ENDPOINT_TYPE:
        raise SubscriptionRefused(409, f"pubsub_endpoint {name!r} exists with endpoint_type "
                                       f"{endpoint.get('endpoint_type')!r}, not {ENDPOINT_TYPE!r}; rename or "
                                       f"delete it")
    if endpoint.get("is_active") is False:
        raise SubscriptionRefused(403, f"pubsub_endpoint {name!r} is inactive: this client may not subscribe")
    allowed = [line.strip()[4:].strip() for line in (endpoint.get("topic_patterns") or "").splitlines()
               if line.strip().startswith("sub=")]
    refused = [t for t in topic_names if allowed and not any(fnmatchcase(t, p) for p in allowed)]
    if refused:
        raise SubscriptionRefused(403, f"this client may not subscribe to {', '.join(refused)} (the sub= patterns "
                                       f"of its endpoint {name!r}: {', '.join(allowed)})")
    current = _read(server, SUBSCRIPTION, name)
    if current is None:
        server.odb.put_object(SUBSCRIPTION, name, _with_defaults(server, SUBSCRIPTION, {
            "name": name, "endpoint_name": name, "endpoint_type": ENDPOINT_TYPE, "topic_list": list(topic_names),
            **SUBSCRIPTION_DEFAULTS}))
        return True
    topics = list(current.get("topic_list") or [])
    added = [t for t in topic_names if t not in topics]
    if added:
        server.odb.put_object(SUBSCRIPTION, name, {**_stored_form(current), "topic_list": topics + added},
                              is_active=bool(current.get("is_active", True)))
        changed = True
    return changed


def _remove_topics(server: Any, name: str, topic_names: list[str]) -> list[str]:
    """ Blocking: the topics taken out of the subscription (it and its endpoint deleted when none is left). """
    current = _read(server, SUBSCRIPTION, name)
    if current is None:
        return []
    topics = list(current.get("topic_list") or [])
    removed = [t for t in topic_names if t in topics]
    left = [t for t in topics if t not in removed]
    if not removed:
        return []
    _forget_times(server, name, removed)
    if left:
        server.odb.put_object(SUBSCRIPTION, name, {**_stored_form(current), "topic_list": left},
                              is_active=bool(current.get("is_active", True)))
        return removed
    for object_type in (SUBSCRIPTION, ENDPOINT):
        try:
            server.odb.delete_object(object_type, name)
        except LookupError:
            pass
    return removed


# ################################################################################################
# Subscription times (zato_wsx_subscription)


def _record_times(server: Any, name: str, topic_names: list[str]) -> dict[str, str]:
    """ Blocking: the time of each topic the client had no time for yet is now; returns topic -> time. """
    from sqlalchemy import insert, select
    from sqlalchemy.exc import IntegrityError
    from zato_plugin_wsx.registry import subscription_table as table
    query = select(table.c.topic_name, table.c.subscribed_at).where(table.c.endpoint_name == name,
                                                                    table.c.topic_name.in_(topic_names))
    for _ in range(3):  # a process of another server may add the same rows meanwhile: read them then
        with server.odb.engine.begin() as conn:
            times = {row.topic_name: row.subscribed_at for row in conn.execute(query)}
            now = protocol.now_iso()
            missing = [{"endpoint_name": name, "topic_name": topic, "subscribed_at": now}
                       for topic in dict.fromkeys(topic_names) if topic not in times]
            try:
                if missing:
                    conn.execute(insert(table), missing)
            except IntegrityError:
                continue
        return {**times, **{row["topic_name"]: row["subscribed_at"] for row in missing}}
    raise RuntimeError(f"the subscription times of {name!r} could not be written")


def _forget_times(server: Any, name: str, topic_names: list[str]) -> None:
    from sqlalchemy import delete
    from zato_plugin_wsx.registry import subscription_table as table
    with server.odb.engine.begin() as conn:
        conn.execute(delete(table).where(table.c.endpoint_name == name, table.c.topic_name.in_(topic_names)))


def _fallback_time(server: Any, name: str) -> str:
    """ The time of a topic of subscription `name` with no time of its own: when the subscription last changed. """
    subscription = (getattr(server, "config_objects", None) or {}).get(SUBSCRIPTION, {}).get(name) or {}
    return (subscription.get("_meta") or {}).get("updated") or protocol.now_iso()


def _times_of(server: Any, name: str, topic_names: list[str]) -> dict[str, str]:
    """ Blocking: topic -> when the client subscribed to it, for each of `topic_names`. """
    from sqlalchemy import select
    from zato_plugin_wsx.registry import subscription_table as table
    with server.odb.engine.connect() as conn:
        times = {row.topic_name: row.subscribed_at for row in conn.execute(
            select(table.c.topic_name, table.c.subscribed_at).where(table.c.endpoint_name == name))}
    return {topic: times.get(topic) or _fallback_time(server, name) for topic in topic_names}


async def subscriptions_at_open(server: Any, connection: Any) -> dict[str, str]:
    """ The topics (and their subscription times) of the client whose session `connection` opened
    with its client id: what it subscribed to before, on any connection. Costs nothing for a client
    that is no subscriber (the subscriptions are in memory; only the times are read). """
    if not connection.ext_client_id or getattr(server, "odb", None) is None:
        return {}
    name = endpoint_name(connection.channel.name, connection.ext_client_id)
    subscription = (getattr(server, "config_objects", None) or {}).get(SUBSCRIPTION, {}).get(name)
    topics = list((subscription or {}).get("topic_list") or [])
    if not topics:
        return {}
    return await trio.to_thread.run_sync(_times_of, server, name, topics)


def note_delivered(server: Any, connection: Any, topic_name: str | None) -> None:
    """ A message of `topic_name` reached the connection: a topic it did not list yet (one an
    administrator added to its subscription meanwhile) is listed from now on. """
    if topic_name and topic_name not in connection.subscriptions and connection.ext_client_id:
        connection.subscriptions[topic_name] = _fallback_time(
            server, endpoint_name(connection.channel.name, connection.ext_client_id))


# ################################################################################################
# Delivering


def message_dict(message: Any) -> dict[str, Any]:
    """ One message as a client gets it (Zato's field names); bytes data as base64 under data_base64. """
    out = {name: getattr(message, name) for name in MESSAGE_FIELDS}
    if isinstance(message.data, (bytes, bytearray)):
        out["data_base64"] = base64.b64encode(bytes(message.data)).decode("ascii")
    else:
        out["data"] = message.data
    out.update({name: getattr(message, name) for name in OPTIONAL_FIELDS if getattr(message, name) is not None})
    return out


def connections_of(server: Any, name: str) -> list[Any]:
    """ The open connections (newest first) of this worker whose client is the endpoint `name`. """
    from zato_plugin_wsx import CHANNELS
    channels = CHANNELS.get(server)
    if channels is None:
        return []
    found = [connection for connection in channels.all_connections()
             if not connection.closed and connection.ext_client_id
             and endpoint_name(connection.channel.name, connection.ext_client_id) == name]
    return sorted(found, key=lambda connection: connection.connection_time, reverse=True)


async def deliver(server: Any, subscription: Any, message: Any, cid: str) -> None:
    """ pub/sub's delivery target for `wsx` endpoints: one message to the client as zwsx.psrq. """
    frame = protocol.pubsub_delivery(message.msg_id, message_dict(message))
    name = subscription.endpoint_name
    deadline = trio.current_time() + CLIENT_WAIT_SECONDS
    if not connections_of(server, name) and await _delivered_by_another_process(server, name, frame, message, cid):
        return
    while True:
        for connection in connections_of(server, name):
            try:
                await connection.send_text(frame)
            except Exception as exc:  # it closed meanwhile: the next one, or wait
                logger.info("cid=%s %s: message %s not sent (%s)", cid, connection.describe(), message.msg_id, exc)
                continue
            note_delivered(server, connection, message.topic_name)
            return
        if trio.current_time() >= deadline or server.stopping:
            raise ClientAway(f"WebSocket client {name!r} has no open connection in this worker (it is away); "
                             f"the message stays queued for when it reconnects with the same client_id")
        await trio.sleep(CLIENT_POLL_SECONDS)


async def _delivered_by_another_process(server: Any, name: str, frame: str, message: Any, cid: str) -> bool:
    """ The client is not connected to this worker: if another process (a worker of this server
    or of another sharing the database) holds its connection (zato_plugin_wsx.registry), that
    process sends the frame. True if it did. """
    from zato_plugin_wsx.registry import DELIVER, REGISTRY
    registry = REGISTRY.get(server)
    if registry is None:
        return False
    _, channel, client_id = (unquote(part) for part in name.split("/", 2))
    rows = [row for row in await registry.in_thread(registry.store.listed, time.time(), channel=channel,
                                                    ext_client_id=client_id)
            if not registry.store.is_mine(row)]
    for row in sorted(rows, key=lambda row: row["connection_time"], reverse=True):
        answer = await registry.ask(row, DELIVER, {"pub_client_id": row["pub_client_id"], "frame": frame,
                                              "topic_name": message.topic_name}, CLIENT_WAIT_SECONDS)
        if answer is not None and answer[0] == 200:
            return True
        logger.info("cid=%s message %s: worker %s did not send it to %s (%s)", cid, message.msg_id,
                    row.get("server_pid"), row["pub_client_id"], answer)
    return False
