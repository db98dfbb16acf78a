""" Internal services of the wsx plugin: Zato's gateway for WebSocket clients and the pub/sub
services it lets them reach.

A channel whose service is `helpers.web-sockets-gateway` lets its clients name the service to
run: `invoke({"service": "zato.pubsub.pubapi.subscribe-wsx", "request": {"topic_name": "/orders"}})`
answers `{"sub_key": "zpsk.wsx.…"}`. Only the services in its allowed list run (anything else:
403, as in Zato): pub/sub's services below, what server.conf lists (`[wsx]
gateway_service_allowed = crm.*, billing.get-invoice`, or Zato's `[pubsub]
wsx_gateway_service_allowed`), and a subclass's `services_allowed = [...]` under a name of its own.

The pub/sub services need the WebSocket client (`self.request.wsx`), which the gateway passes on:
* `zato.pubsub.pubapi.subscribe-wsx` - topic_name -> sub_key. Zato's `unsub_on_wsx_close`
  defaults to False here and True is refused: a subscription belongs to the client id and
  outlives its connections (zato_plugin_wsx.pubsub).
* `zato.pubsub.subscription.create-wsx-subscription` - topic_name or topic_name_list -> sub_key
  and sub_data (each topic's topic_name and sub_key), as Zato's (without its current_depth).
* `zato.pubsub.pubapi.unsubscribe` - sub_key (Zato's input) or topic_name.
* `zato.pubsub.resume-wsx-subscription` - sub_key: checks it is the client's. Deliveries resume
  by themselves once the client is back with its client id; Zato's clients call this and get OK.
Publishing is pub/sub's `zato.pubsub.publish.publish`, also under Zato's name
`zato.pubsub.pubapi.publish-message`.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from zato.common.exception import BadRequest, ClientHTTPError, Forbidden
from zato.server.service import Service
from zato_plugin_wsx.protocol import now_iso
from zato_plugin_wsx.pubsub import SubscriptionRefused, subscribe, subscriptions_of, unsubscribe

PUBLISH = "zato.pubsub.publish.publish"
SUBSCRIBE = "zato.pubsub.pubapi.subscribe-wsx"
CREATE_SUBSCRIPTION = "zato.pubsub.subscription.create-wsx-subscription"
UNSUBSCRIBE = "zato.pubsub.pubapi.unsubscribe"
RESUME = "zato.pubsub.resume-wsx-subscription"
PING = "zato.ping"
ZATO_NAMES = {"zato.pubsub.pubapi.publish-message": PUBLISH}  # Zato's name -> ours
NOT_ALLOWED = "You are not allowed to access this resource"


def configured_allowed(server: Any) -> list[str]:
    """ What server.conf lets the gateway run: `[wsx] gateway_service_allowed` and Zato's
    `[pubsub] wsx_gateway_service_allowed`, comma- or line-separated names or patterns. """
    values = ((server.config.get("wsx") or {}).get("gateway_service_allowed") or "",
              (server.config.get("pubsub") or {}).get("wsx_gateway_service_allowed") or "")
    return [name.strip() for value in values for name in str(value).replace("\n", ",").split(",") if name.strip()]


def _request(service: Service) -> dict[str, Any]:
    payload = service.request.payload
    if payload is None:
        return {}
    if not isinstance(payload, dict):
        raise BadRequest(service.cid, f"the request must be a JSON object, not {type(payload).__name__}")
    return payload


class WebSocketsGateway(Service):
    """ Runs the service a WebSocket client names, if it is allowed: input `service` and
    `request` (its input); the answer is that service's response. """
    name = "helpers.web-sockets-gateway"
    services_allowed: list[str] = []  # what a subclass allows besides DEFAULT_ALLOWED
    DEFAULT_ALLOWED = (PUBLISH, *ZATO_NAMES, SUBSCRIBE, CREATE_SUBSCRIPTION, UNSUBSCRIBE, RESUME, PING)

    async def handle(self):
        payload = _request(self)
        service = payload.get("service")
        if not isinstance(service, str) or not service:
            raise BadRequest(self.cid, 'name the service to invoke: {"service": "...", "request": {...}}')
        if service not in self.DEFAULT_ALLOWED and service not in self.services_allowed and \
                not any(fnmatchcase(service, allowed) for allowed in configured_allowed(self.server)):
            self.logger.warning("cid=%s a WebSocket client asked for service %r, which %s does not allow", self.cid,
                                service, self.name)
            raise Forbidden(self.cid, NOT_ALLOWED)
        wsx = self.request.wsx
        response = await self.server.invoke_service(
            ZATO_NAMES.get(service, service), payload.get("request"), cid=self.cid, channel=self.request.channel,
            attributes={"wsx": wsx} if wsx is not None else None)
        self.response.payload = response.payload


class SubscribeWSX(Service):
    """ Subscribes the WebSocket client to one topic: topic_name -> sub_key. """
    name = SUBSCRIBE

    async def handle(self):
        request = _request(self)
        topic_name = request.get("topic_name")
        if not isinstance(topic_name, str) or not topic_name:
            raise BadRequest(self.cid, "topic_name is required")
        if request.get("unsub_on_wsx_close"):
            raise BadRequest(self.cid, "unsub_on_wsx_close=True is not supported: a subscription belongs to the "
                                       "client id and outlives its connections; unsubscribe with "
                                       "zato.pubsub.pubapi.unsubscribe")
        try:
            sub_keys = await subscribe(self.server, self.request.wsx, [topic_name])
        except SubscriptionRefused as exc:
            raise ClientHTTPError(self.cid, str(exc), exc.status) from None
        self.response.payload = {"sub_key": sub_keys[topic_name]}


class CreateWSXSubscription(Service):
    """ Zato's create-wsx-subscription: topic_name or topic_name_list -> sub_key, sub_data. """
    name = CREATE_SUBSCRIPTION

    async def handle(self):
        request = _request(self)
        topic_name, topic_name_list = request.get("topic_name"), request.get("topic_name_list")
        if topic_name and topic_name_list:
            raise BadRequest(self.cid, "Cannot provide both topic_name and topic_name_list on input")
        if not topic_name and not topic_name_list:
            raise BadRequest(self.cid, "Either or topic_name or topic_name_list is required")
        topics = [topic_name] if topic_name else topic_name_list
        if not isinstance(topics, list) or not all(isinstance(t, str) and t for t in topics):
            raise BadRequest(self.cid, "topic_name_list must be a list of topic names")
        try:
            sub_keys = await subscribe(self.server, self.request.wsx, topics)
        except SubscriptionRefused as exc:
            raise ClientHTTPError(self.cid, str(exc), exc.status) from None
        sub_data = [{"topic_name": topic, "sub_key": sub_keys[topic]} for topic in topics]
        self.response.payload = {"sub_key": sub_data[0]["sub_key"], "sub_data": sub_data}


class Unsubscribe(Service):
    """ Ends the client's subscription to a topic, by sub_key or topic_name. """
    name = UNSUBSCRIBE

    async def handle(self):
        request = _request(self)
        sub_key, topic_name = request.get("sub_key"), request.get("topic_name")
        if not sub_key and not topic_name:
            raise BadRequest(self.cid, "give the sub_key (or the topic_name) to unsubscribe from")
        try:
            removed = await unsubscribe(self.server, self.request.wsx, [topic_name] if topic_name else None,
                                        [sub_key] if sub_key else None)
        except SubscriptionRefused as exc:
            raise ClientHTTPError(self.cid, str(exc), exc.status) from None
        self.response.payload = {"unsubscribed": removed}


class ResumeWSXSubscription(Service):
    """ Zato's resume-wsx-subscription: here deliveries resume once the client is back with its
    client id; this checks that the sub_key is the client's. """
    name = RESUME

    async def handle(self):
        sub_key = _request(self).get("sub_key")
        if not isinstance(sub_key, str) or not sub_key:
            raise BadRequest(self.cid, "sub_key is required")
        try:
            mine = subscriptions_of(self.server, self.request.wsx)
        except SubscriptionRefused as exc:
            raise ClientHTTPError(self.cid, str(exc), exc.status) from None
        topic = next((topic for topic, key in mine.items() if key == sub_key), None)
        if topic is None:
            raise ClientHTTPError(self.cid, f"no subscription of this client has the sub_key {sub_key!r}", 404)
        self.request.wsx.connection.subscriptions.setdefault(topic, now_iso())
        self.response.payload = {"sub_key": sub_key, "topic_name": topic}

