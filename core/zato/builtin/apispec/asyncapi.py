""" The AsyncAPI 3.0.0 document of a running server: its pub/sub topics and its WebSocket channels.

`build_asyncapi(server, include=..., exclude=..., tags=...)` reads what the server holds at the
moment it is called (`server.config_objects`, kept current in every worker by the admin API,
enmasse and hot deployment, and `server.services`), so the document follows every change
without a restart. Nothing here imports the pubsub built-in or the wsx plugin: their objects are
read by type name (`pubsub_topic`, `pubsub_endpoint`, `pubsub_subscription`,
`channel_web_socket`), and the WSX part is there only when that type is registered.

The application the document describes is the Zato server, so, in AsyncAPI 3 terms:

* `receive` operations are what the server takes in: publications to a topic, and the frames a
  WebSocket client sends (create-session, invoke-service, client-response);
* `send` operations are what it sends out: deliveries to a topic's subscribers, and the frames
  a WebSocket client gets (server requests `zwsx.rqc`, pub/sub deliveries `zwsx.psrq`).

A reply (the session token, a service's response, an error) is the `reply` of the operation it
answers. Services behind a topic or a channel that declare SimpleIO have their input and output
as `components/schemas/service.<name>.input` / `.output` (zato.builtin.apispec.model, the same
schemas the OpenAPI document uses); services without SimpleIO get an open schema and a note.

Filters: `include` / `exclude` are fnmatch patterns. A WebSocket channel is described when its
service matches; a topic when its name matches an `include` pattern (all topics when there is
no `include`) or one of its subscriber services does, and never when its name matches an
`exclude` pattern. A subscription whose service matches an `exclude` pattern is left out of its
topic. `tags` keep what one of its services is tagged with (`api_tags`, Zato's docstring tags).
"""

from __future__ import annotations

import re
import string
from fnmatch import fnmatchcase
from typing import Any, Iterable
from urllib.parse import urlsplit

from zato import __version__
from zato.builtin.apispec.model import has_tags, matches, open_schema, schema_of_simpleio, service_description
from zato.common.pubsub import SUB_KEY_PREFIX

ASYNCAPI_VERSION = "3.0.0"

# The object types read, by name (the pubsub built-in's and the wsx plugin's)
TOPIC, ENDPOINT, SUBSCRIPTION = "pubsub_topic", "pubsub_endpoint", "pubsub_subscription"
WSX_CHANNEL = "channel_web_socket"
SECURITY = "security"

# What the pubsub built-in does, as its docs/pubsub.md states it
SERVICE_TOPIC_PREFIX = "/zato/s/to/"  # a service's own topic: this plus its name, punctuation made "_"
PUBLISH_SERVICE = "zato.pubsub.publish.publish"  # what clients of the admin invoke API publish through
ADMIN_INVOKE = "/zato/api/invoke/"
SUBSCRIPTION_DEFAULTS = {"max_attempts": 10, "retry_seconds": 1.0, "retry_backoff": 2.0, "retry_max_seconds": 60.0,
                         "delivery_timeout": 0.0, "delivery_method": "notify"}
WSX_GATEWAY = "helpers.web-sockets-gateway"

# The WSX protocol (Zato 3.2's frames, as the wsx plugin speaks them)
CREATE_SESSION, INVOKE_SERVICE, CLIENT_RESPONSE = "create-session", "invoke-service", "client-response"
AUTH_RESPONSE, OK_RESPONSE, ERROR_RESPONSE = "zwsx.rspa", "zwsx.rspok", "zwsx.rsperr"
FORBIDDEN, SERVER_REQUEST, PUBSUB_DELIVERY = "zwsx.merr", "zwsx.rqc", "zwsx.psrq"
WS_BINDING_VERSION = "0.1.0"

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_FS_UNSAFE = re.compile("[" + re.escape(string.punctuation + string.whitespace) + "]")

NO_SIO = "The service {name} declares no SimpleIO: any JSON value is accepted and returned as it is."


# ################################################################################################
# The message fields


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [schema["type"], "null"]}


_STRING = {"type": "string"}
_ISO = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?$"}

# What a subscriber gets (zato.common.pubsub.PubSubMessage.to_dict(): every field but `data`,
# given apart, and `data_base64` for bytes), each with its schema
DELIVERY_FIELDS: dict[str, dict[str, Any]] = {
    "msg_id": {**_STRING, "description": "The message's id: zpsm and 24 hex digits, unless the publisher gave "
                                         "its own; also pub_msg_id"},
    "topic_name": {**_STRING, "description": "The topic it was published to"},
    "mime_type": {**_STRING, "description": "As published; default text/plain for text, application/json for "
                                            "JSON values, application/octet-stream for bytes"},
    "size": {"type": "integer", "minimum": 0, "description": "Bytes of data (UTF-8 for text, the JSON text for "
                                                             "JSON values)"},
    "priority": {"type": "integer", "minimum": 1, "maximum": 9, "description": "1-9, higher delivered first"},
    "pub_time": {"type": "number", "description": "When it was published: seconds since the epoch"},
    "pub_time_iso": {**_ISO, "description": "When it was published, UTC without a suffix (as Zato writes it)"},
    "expiration": {"type": "integer", "minimum": 1, "description": "Milliseconds it may wait for delivery"},
    "expiration_time": {"type": "number", "description": "When it expires: seconds since the epoch"},
    "expiration_time_iso": {**_ISO, "description": "When it expires, UTC without a suffix"},
    "has_gd": {"type": "boolean", "description": "Guaranteed delivery: stored in the database before publish "
                                                 "returned (False: kept in the RAM of one worker)"},
    "delivery_count": {"type": "integer", "minimum": 1, "description": "This attempt's number: 1 the first time, "
                                                                       "2 on the first retry..."},
    "sub_key": {**_STRING, "pattern": "^" + re.escape(SUB_KEY_PREFIX),
                "description": "The queue it came from (one per subscription and topic)"},
    "correl_id": {**_nullable(_STRING), "description": "A correlation id, as published; also correlation_id and "
                                                       "pub_correl_id"},
    "in_reply_to": {**_nullable(_STRING), "description": "The id of the message this one answers, as published"},
    "ext_client_id": {**_nullable(_STRING), "description": "As published"},
    "published_by": {**_nullable(_STRING), "description": "The publishing service"},
    "server_name": {**_nullable(_STRING), "description": "The server the publisher ran in"},
    "server_pid": {**_nullable({"type": "integer"}), "description": "The process the publisher ran in"},
    "zato_ctx": {**_nullable({"type": "object"}), "description": "{\"target_service_name\": ...} for messages "
                                                                 "published to a service"},
    "user_ctx": {"description": "Any JSON value, as published"},
}
DATA_BASE64 = {"type": "string", "contentEncoding": "base64",
               "description": "The data of a message published as bytes, base64-encoded (instead of data)"}

# What a client of the WSX gateway gets as zwsx.psrq data (the wsx plugin's MESSAGE_FIELDS, then
# its OPTIONAL_FIELDS when they are set)
WSX_DELIVERY_FIELDS = ("msg_id", "topic_name", "mime_type", "priority", "expiration", "expiration_time_iso",
                       "pub_time_iso", "has_gd", "delivery_count", "sub_key", "size")
WSX_DELIVERY_OPTIONAL = ("correl_id", "in_reply_to", "ext_client_id", "user_ctx")

# What a publisher passes (the options of self.pubsub.publish and of zato.pubsub.publish.publish)
PUBLICATION_OPTIONS: dict[str, dict[str, Any]] = {
    "priority": {"type": "integer", "minimum": 1, "maximum": 9, "default": 5,
                 "description": "1-9, higher delivered first"},
    "expiration": {"type": "integer", "minimum": 1, "description": "Milliseconds the message may wait for "
                                                                   "delivery; default: about 68 years"},
    "has_gd": {"type": "boolean", "description": "Guaranteed delivery: True stores the message in the database "
                                                 "before publish returns, False keeps it in one worker's RAM; "
                                                 "default: the topic's has_gd"},
    "mime_type": {**_STRING, "description": "Default text/plain for text, application/json for other JSON values"},
    "correl_id": {**_STRING, "description": "A correlation id, passed on (also correlation_id, cid)"},
    "in_reply_to": {**_STRING, "description": "The id of the message this one answers, passed on"},
    "msg_id": {**_STRING, "maxLength": 200, "description": "Your own id instead of a generated one"},
    "ext_client_id": {**_STRING, "description": "Passed on as it is"},
    "user_ctx": {"description": "Any JSON value, passed on as it is"},
}


def delivery_fields() -> tuple[str, ...]:
    """ The names of the fields a service subscriber's message has (`PubSubMessage.to_dict()`). """
    return (*DELIVERY_FIELDS, "data", "data_base64")


# ################################################################################################
# Names


def _key(text: str) -> str:
    """ A component, channel or operation key (AsyncAPI allows `[A-Za-z0-9._-]`). """
    key = _KEY_UNSAFE.sub("_", re.sub(r"[/.]+", ".", text)).strip("_.")
    return key or "_"


def service_topic_name(service_name: str) -> str:
    """ The topic the pubsub built-in creates for messages published to a service. """
    return SERVICE_TOPIC_PREFIX + _FS_UNSAFE.sub("_", service_name)


class _Keys:
    """ Unique keys within one map of the document. """

    def __init__(self) -> None:
        self.used: set[str] = set()

    def new(self, text: str) -> str:
        base = key = _key(text)
        n = 2
        while key in self.used:
            key, n = f"{base}_{n}", n + 1
        self.used.add(key)
        return key


# ################################################################################################
# The document


class _Builder:

    def __init__(self, server: Any, include: list[str] | None, exclude: list[str] | None,
                 tags: list[str] | None) -> None:
        self.server = server
        self.include = list(include) if include else None
        self.exclude = list(exclude) if exclude else None
        self.tags = list(tags) if tags else None
        self.objects: dict[str, dict[str, dict[str, Any]]] = getattr(server, "config_objects", None) or {}
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}
        self.servers: dict[str, Any] = {}
        self.schemas: dict[str, Any] = {}
        self.messages: dict[str, Any] = {}
        self.security_schemes: dict[str, Any] = {}
        self.channel_keys = _Keys()
        self.operation_keys = _Keys()
        self._service_keys: dict[str, str] = {}
        self._schema_keys = _Keys()
        self._descriptions: dict[str, dict[str, Any]] = {}

    # Services ###################################################################################

    def service_class(self, name: str) -> type | None:
        """ The class of a deployed service, or None: not deployed, or deployed from the start-up
        cache and not imported yet (never imported here, on the loop: `service_names` tells the
        caller what to import first, in a thread). """
        entries = getattr(getattr(self.server, "services", None), "entries", None) or {}
        entry = entries.get(name) if name else None
        return entry.cls if entry is not None else None

    def is_deployed(self, name: str) -> bool:
        entries = getattr(getattr(self.server, "services", None), "entries", None) or {}
        return bool(name) and name in entries

    def description_of(self, name: str) -> dict[str, Any]:
        if name not in self._descriptions:
            cls = self.service_class(name)
            self._descriptions[name] = service_description(cls) if cls is not None else \
                {"summary": "", "description": "", "tags": [], "examples": {}}
        return self._descriptions[name]

    def service_tags(self, name: str) -> list[str]:
        return list(self.description_of(name)["tags"])

    def sio_ref(self, name: str, direction: str) -> dict[str, Any]:
        """ A $ref to the service's SimpleIO `direction` as a component schema, or an open schema
        with a note when it declares none (or is not deployed). """
        cls = self.service_class(name)
        schema = schema_of_simpleio(cls, direction) if cls is not None else None
        if schema is None:
            note = NO_SIO.format(name=name) if cls is not None else \
                f"The service {name} is {'not imported yet' if self.is_deployed(name) else 'not deployed'}: " \
                f"its {direction} is not known."
            return open_schema(note)
        if name not in self._service_keys:
            self._service_keys[name] = self._schema_keys.new(f"service.{name}")
        key = f"{self._service_keys[name]}.{direction}"
        if key not in self.schemas:
            described = self.description_of(name)
            title = f"{name} {direction}"
            self.schemas[key] = {"title": title, **schema}
            if described["summary"]:
                self.schemas[key].setdefault("description", described["summary"])
            example = described["examples"].get("request" if direction == "input" else "response")
            if example is not None:
                self.schemas[key]["examples"] = [example]
        return {"$ref": f"#/components/schemas/{key}"}

    def passes_tags(self, service_names: Iterable[str]) -> bool:
        if not self.tags:
            return True
        return any(has_tags(self.service_tags(name), self.tags) for name in service_names if name)

    def _tag_objects(self, service_names: Iterable[str]) -> list[dict[str, str]]:
        seen: list[str] = []
        for name in service_names:
            for tag in self.service_tags(name):
                if tag not in seen:
                    seen.append(tag)
        return [{"name": tag} for tag in seen]

    # The document ###############################################################################

    def build(self) -> dict[str, Any]:
        self.add_pubsub()
        self.add_wsx()
        doc: dict[str, Any] = {
            "asyncapi": ASYNCAPI_VERSION,
            "info": self.info(),
            "defaultContentType": "application/json",
        }
        if self.servers:
            doc["servers"] = self.servers
        doc["channels"] = self.channels
        doc["operations"] = self.operations
        components: dict[str, Any] = {}
        for name, value in (("schemas", self.schemas), ("messages", self.messages),
                            ("securitySchemes", self.security_schemes)):
            if value:
                components[name] = dict(sorted(value.items()))
        if components:
            doc["components"] = components
        return doc

    def info(self) -> dict[str, Any]:
        name = getattr(self.server, "name", "") or "server"
        filters = []
        if self.include:
            filters.append(f"services or topics matching {', '.join(self.include)}")
        if self.exclude:
            filters.append(f"none matching {', '.join(self.exclude)}")
        if self.tags:
            filters.append(f"tagged {', '.join(self.tags)}")
        return {
            "title": f"{name}: pub/sub topics and WebSocket channels",
            "version": __version__,
            "description": (
                "The messaging interfaces of Zato server " + name + ", generated from what it runs now. The "
                "application described is the server: `receive` operations are what it takes in (publications "
                "to topics, frames WebSocket clients send), `send` operations what it sends out (deliveries to "
                "subscribers, frames WebSocket clients get). Replies are the `reply` of the operation they "
                "answer." + (f" Only {'; '.join(filters)}." if filters else "")),
        }

    # Servers ####################################################################################

    def _own_host(self) -> tuple[str, str]:
        """ (scheme, host:port) of the server's own HTTP listener. """
        address = getattr(self.server, "address", "") or ""
        parts = urlsplit(address)
        if parts.hostname:
            host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
            return parts.scheme or "http", f"{host}:{parts.port}" if parts.port else host
        main = getattr(getattr(self.server, "config", None), "main", None) or {}
        return "http", f"localhost:{main.get('port', 17010) if hasattr(main, 'get') else 17010}"

    def admin_server(self) -> str:
        """ The admin invoke API, through which clients publish (its Basic Auth, the admin's). """
        if "zato.admin" not in self.servers:
            scheme, host = self._own_host()
            self.security_schemes["zato.admin"] = {
                "type": "http", "scheme": "basic",
                "description": "The admin credentials of the server (HTTP Basic Auth)"}
            self.servers["zato.admin"] = {
                "host": host, "protocol": scheme, "pathname": ADMIN_INVOKE + PUBLISH_SERVICE,
                "title": "Publishing over HTTP",
                "description": (
                    f"Clients publish with POST {ADMIN_INVOKE}{PUBLISH_SERVICE} and a JSON body "
                    "{\"topic_name\": ..., \"data\": ...} (or \"data_list\": [...]), answered with {\"msg_id\": ...} "
                    "(or {\"msg_id_list\": [...]}); services publish with self.pubsub.publish(topic, data=...), and "
                    f"WebSocket clients through {WSX_GATEWAY} (zato.pubsub.pubapi.publish-message). Subscribers "
                    "are services (invoked with the message's data as their input) and WebSocket clients "
                    "(zwsx.psrq frames)."),
                "security": [{"$ref": "#/components/securitySchemes/zato.admin"}],
            }
        return "zato.admin"

    def wsx_server(self, address: str) -> str:
        parts = urlsplit(address)
        own = self._own_host()[1]
        host = parts.netloc
        if parts.hostname in ("0.0.0.0", "::", "") or parts.port is None:
            # a bind address, or the server's own port: what clients reach is the server's address
            own_port = urlsplit(f"//{own}").port
            if parts.port in (None, own_port):
                host = own
            else:
                host = f"{urlsplit('//' + own).hostname}:{parts.port}"
        key = _key(f"wsx.{host}")
        if key not in self.servers:
            self.servers[key] = {
                "host": host, "protocol": parts.scheme or "ws",
                "title": "WebSocket channels",
                "description": "WebSocket clients speaking Zato's WSX protocol (JSON text frames: meta and data).",
            }
        return key

    # Pub/sub ####################################################################################

    def add_pubsub(self) -> None:
        topics = self.objects.get(TOPIC) or {}
        if not topics:
            return
        endpoints = self.objects.get(ENDPOINT) or {}
        subscriptions = self.objects.get(SUBSCRIPTION) or {}
        services = getattr(self.server, "services", None)
        service_topics = {service_topic_name(name): name for name in (services.names() if services is not None else [])}
        by_topic: dict[str, list[tuple[str, dict[str, Any], dict[str, Any]]]] = {}
        for sub_name, sub in sorted(subscriptions.items()):
            endpoint = endpoints.get(sub.get("endpoint_name") or "")
            if endpoint is None:
                continue
            allowed = _sub_patterns(endpoint.get("topic_patterns") or "")
            for topic_name in sub.get("topic_list") or []:
                if allowed and not any(fnmatchcase(topic_name, pattern) for pattern in allowed):
                    continue  # refused by pub/sub too (its endpoint's sub= lines): nothing is delivered
                by_topic.setdefault(topic_name, []).append((sub_name, sub, endpoint))
        for topic_name, topic in sorted(topics.items()):
            subs = []
            for sub_name, sub, endpoint in by_topic.get(topic_name, []):
                service = self._subscriber_service(endpoint, topic_name, service_topics)
                if service and self.exclude and not matches(service, None, self.exclude):
                    continue
                subs.append((sub_name, sub, endpoint, service))
            sub_services = [service for *_, service in subs if service]
            if not self._topic_included(topic_name, sub_services):
                continue
            self.add_topic(topic_name, topic, subs)

    def _subscriber_service(self, endpoint: dict[str, Any], topic_name: str, service_topics: dict[str, str]) -> str:
        if (endpoint.get("endpoint_type") or "service") != "service":
            return ""
        return endpoint.get("service_name") or service_topics.get(topic_name, "")

    def _topic_included(self, topic_name: str, services: list[str]) -> bool:
        if not matches(topic_name, None, self.exclude):
            return False
        if self.include and not matches(topic_name, self.include, None) and \
                not any(matches(name, self.include, self.exclude) for name in services):
            return False
        return self.passes_tags(services)

    def add_topic(self, topic_name: str, topic: dict[str, Any], subs: list[tuple[str, dict, dict, str]]) -> None:
        channel_key = self.channel_keys.new(f"pubsub.{topic_name}")
        server = self.admin_server()
        has_gd = bool(topic.get("has_gd", True))
        sio_services = []
        for *_, service in subs:
            if service and service not in sio_services and self.service_class(service) is not None and \
                    schema_of_simpleio(self.service_class(service), "input") is not None:
                sio_services.append(service)
        data_schema = self._publication_data(sio_services)
        messages: dict[str, Any] = {
            "publication": {
                "name": "publication", "title": f"A publication to {topic_name}",
                "summary": f"What a publisher sends: POST {ADMIN_INVOKE}{PUBLISH_SERVICE}, or "
                           f"self.pubsub.publish({topic_name!r}, data=...) in a service",
                "contentType": "application/json",
                "payload": self._publication_schema(topic_name, data_schema),
            },
            "delivery": {
                "name": "delivery", "title": f"A message of {topic_name} as a subscriber gets it",
                "summary": "What a subscriber gets: a service, the message as self.request.raw_request (a "
                           "PubSubMessage) and its data as self.request.payload",
                "contentType": "application/json",
                "payload": self._delivery_schema(None),
            },
        }
        for service in sio_services:
            messages[_key(f"delivery.{service}")] = {
                "name": _key(f"delivery.{service}"), "title": f"A message of {topic_name} as {service} gets it",
                "summary": f"The data is {service}'s SimpleIO input",
                "contentType": "application/json",
                "payload": self._delivery_schema(self.sio_ref(service, "input")),
            }
        description = topic.get("description") or ""
        channel: dict[str, Any] = {
            "address": topic_name,
            "title": f"Topic {topic_name}",
            "messages": messages,
            "servers": [{"$ref": f"#/servers/{server}"}],
            "x-zato-object-type": TOPIC,
            "x-zato-delivery": "guaranteed" if has_gd else "ram-only",
            "x-zato-topic": {"has_gd": has_gd, "max_depth_gd": topic.get("max_depth_gd", 10000),
                             "max_depth_non_gd": topic.get("max_depth_non_gd", 1000)},
        }
        if description:
            channel["description"] = description
        tags = self._tag_objects(service for *_, service in subs if service)
        if tags:
            channel["tags"] = tags
        self.channels[channel_key] = channel
        self.operations[self.operation_keys.new(f"publish.{topic_name}")] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel_key}"},
            "title": f"Publish to {topic_name}",
            "summary": f"The server receives a message published to {topic_name}, stores it "
                       f"({'in the database before answering' if has_gd else 'in RAM'} unless the publisher sets "
                       f"has_gd) and answers with its msg_id",
            "messages": [{"$ref": f"#/channels/{channel_key}/messages/publication"}],
            "security": [{"$ref": "#/components/securitySchemes/zato.admin"}],
            "x-zato-delivery": "guaranteed" if has_gd else "ram-only",
        }
        for sub_name, sub, endpoint, service in subs:
            self.add_delivery(channel_key, topic_name, sub_name, sub, endpoint, service,
                              service in sio_services)

    def _publication_data(self, services: list[str]) -> dict[str, Any] | None:
        """ The schema of what publishers of a topic send as data: what its subscriber services
        take (all of them, as every subscriber gets every message), or None: any value. """
        if not services:
            return None
        refs = [self.sio_ref(service, "input") for service in services]
        if len(refs) == 1:
            return {**refs[0]}
        return {"allOf": refs, "description": "What every subscriber service takes: " + ", ".join(services)}

    def _shared_pubsub_schemas(self) -> None:
        if "pubsub.publication" in self.schemas:
            return
        self.schemas["pubsub.message"] = {
            "title": "One message to publish", "type": "object", "required": ["data"],
            "properties": {"data": {"description": "Text or any JSON value: what subscribers get"},
                           **PUBLICATION_OPTIONS}}
        self.schemas["pubsub.publication"] = {
            "title": "A publication", "type": "object", "required": ["topic_name"],
            "description": f"The input of {PUBLISH_SERVICE}: one message (data and its options) or several "
                           "(data_list); options given beside data_list are defaults for every element",
            "properties": {
                "topic_name": {"type": "string", "description": "The topic, or a service's name"},
                "data": {"description": "Text or any JSON value: what subscribers get"},
                "data_list": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/pubsub.message"},
                              "description": "Several messages in one call, stored in this order"},
                **PUBLICATION_OPTIONS,
            },
            "oneOf": [{"required": ["data"]}, {"required": ["data_list"]}],
        }
        required = [name for name in DELIVERY_FIELDS if name != "user_ctx"]
        self.schemas["pubsub.delivery"] = {
            "title": "A message as a subscriber gets it",
            "description": "PubSubMessage.to_dict(): a service gets it as self.request.raw_request, its data as "
                           "self.request.payload (and as its SimpleIO input)",
            "type": "object", "required": required,
            "properties": {**DELIVERY_FIELDS, "data": {"description": "As published"}, "data_base64": DATA_BASE64},
        }

    def _publication_schema(self, topic_name: str, data: dict[str, Any] | None) -> dict[str, Any]:
        self._shared_pubsub_schemas()
        own: dict[str, Any] = {"properties": {"topic_name": {"const": topic_name}}}
        if data is not None:
            own["properties"]["data"] = data
            own["properties"]["data_list"] = {"items": {"properties": {"data": data}}}
        return {"allOf": [{"$ref": "#/components/schemas/pubsub.publication"}, own]}

    def _delivery_schema(self, data: dict[str, Any] | None) -> dict[str, Any]:
        self._shared_pubsub_schemas()
        if data is None:
            return {"$ref": "#/components/schemas/pubsub.delivery"}
        return {"allOf": [{"$ref": "#/components/schemas/pubsub.delivery"}, {"properties": {"data": data}}]}

    def add_delivery(self, channel_key: str, topic_name: str, sub_name: str, sub: dict[str, Any],
                     endpoint: dict[str, Any], service: str, has_sio: bool) -> None:
        endpoint_type = endpoint.get("endpoint_type") or "service"
        policy = {name: sub.get(name, default) for name, default in SUBSCRIPTION_DEFAULTS.items()}
        message = _key(f"delivery.{service}") if has_sio else "delivery"
        if endpoint_type == "service":
            to = f"service {service}" if service else "the service each message was published to"
            how = f"{to} is invoked with the message's data as its input"
        elif endpoint_type == "wsx":
            how = "a WebSocket client gets it as a zwsx.psrq frame"
        else:
            how = f"the {endpoint_type} delivery target of a plugin gets it"
        attempts = policy["max_attempts"]
        operation: dict[str, Any] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_key}"},
            "title": f"Deliver {topic_name} to {sub_name}",
            "summary": f"Subscription {sub_name} (endpoint {endpoint.get('name')}): {how}",
            "description": (
                "Delivered asynchronously, one message at a time per queue, highest priority first, then in order "
                "of publication; at least once. A failed attempt is retried after the back-off "
                f"(retry_seconds {policy['retry_seconds']}, times retry_backoff {policy['retry_backoff']} each time, "
                f"at most retry_max_seconds {policy['retry_max_seconds']}); after {attempts} attempts the message "
                "goes to the dead-letter queue (GET /zato/api/pubsub/dlq, replayed with POST "
                "/zato/api/pubsub/dlq/replay). Expired messages are never delivered."),
            "messages": [{"$ref": f"#/channels/{channel_key}/messages/{message}"}],
            "x-zato-delivery-policy": {
                **policy, "semantics": "at-least-once", "dead_letter_queue": "/zato/api/pubsub/dlq",
                "endpoint": endpoint.get("name"), "endpoint_type": endpoint_type,
            },
        }
        if service:
            operation["x-zato-service"] = service
            tags = self._tag_objects([service])
            if tags:
                operation["tags"] = tags
        self.operations[self.operation_keys.new(f"deliver.{topic_name}.{sub_name}")] = operation

    # WebSocket channels #########################################################################

    def add_wsx(self) -> None:
        channels = self.objects.get(WSX_CHANNEL)
        if not channels:
            return
        for name, channel in sorted(channels.items()):
            service = channel.get("service") or ""
            if not matches(service, self.include, self.exclude) or not self.passes_tags([service]):
                continue
            self.add_wsx_channel(name, channel, service)

    def _is_gateway(self, service: str) -> bool:
        cls = self.service_class(service)
        return service == WSX_GATEWAY or (cls is not None and any(
            klass.__dict__.get("name") == WSX_GATEWAY for klass in cls.__mro__))

    def wsx_security(self, security_name: str) -> str | None:
        definition = (self.objects.get(SECURITY) or {}).get(security_name)
        if definition is None:
            return None
        key = _key(f"wsx.{security_name}")
        if key not in self.security_schemes:
            if definition.get("type") == "apikey":
                self.security_schemes[key] = {
                    "type": "apiKey", "in": "password",
                    "description": f"API key of security definition {security_name}: create-session's "
                                   f"meta.secret (meta.username is not checked)"}
            else:
                self.security_schemes[key] = {
                    "type": "userPassword",
                    "description": f"Basic Auth security definition {security_name}: create-session's "
                                   f"meta.username and meta.secret"}
        return key

    def add_wsx_channel(self, name: str, channel: dict[str, Any], service: str) -> None:
        self._wsx_common_messages()
        address = channel.get("address") or ""
        server = self.wsx_server(address)
        channel_key = self.channel_keys.new(f"wsx.{name}")
        gateway = self._is_gateway(service)
        described = self.description_of(service)
        if gateway:
            request_data: dict[str, Any] = {
                "type": "object", "required": ["service"],
                "properties": {"service": {"type": "string", "description": "The service to run (one the "
                                                                            "gateway allows)"},
                               "request": {"description": "That service's input"}}}
            response_data: dict[str, Any] = {"description": "The response of the service named in the request"}
        else:
            request_data = self.sio_ref(service, "input")
            response_data = self.sio_ref(service, "output")
        ref = f"#/channels/{channel_key}/messages"
        messages = {
            "create-session": {"$ref": "#/components/messages/wsx.create-session"},
            "session-opened": {"$ref": "#/components/messages/wsx.session-opened"},
            "forbidden": {"$ref": "#/components/messages/wsx.forbidden"},
            "invoke-service": {
                "name": "invoke-service", "title": f"invoke-service: run {service}",
                "summary": described["summary"] or f"Runs {service} with data as its input",
                "contentType": "application/json",
                "payload": self._wsx_frame(_client_meta(INVOKE_SERVICE, token=True), request_data),
            },
            "response": {
                "name": "response", "title": f"{OK_RESPONSE}: {service}'s response",
                "contentType": "application/json",
                "payload": self._wsx_frame(_server_meta(OK_RESPONSE, status=200, in_reply_to=True), response_data),
            },
            "error-response": {"$ref": "#/components/messages/wsx.error-response"},
            "server-request": {"$ref": "#/components/messages/wsx.server-request"},
            "client-response": {"$ref": "#/components/messages/wsx.client-response"},
        }
        if gateway:
            messages["pubsub-delivery"] = {"$ref": "#/components/messages/wsx.pubsub-delivery"}
        if described["description"]:
            messages["invoke-service"]["description"] = described["description"]
        security = channel.get("security")
        scheme = self.wsx_security(security) if security else None
        entry: dict[str, Any] = {
            "address": urlsplit(address).path or "/",
            "title": f"WebSocket channel {name}",
            "description": (f"Clients connect to {address}, open a session with create-session"
                            f"{' and credentials' if scheme else ''} within {channel.get('new_token_wait_time', 5.0)} s, "
                            f"then invoke {service} with invoke-service. The session token lives "
                            f"{channel.get('token_ttl', 3600.0)} s after the client's last request, response or pong; "
                            f"the server pings every {channel.get('ping_interval', 30.0)} s and closes the connection "
                            f"with code 4002 after {channel.get('pings_missed_threshold', 2)} missed pings."),
            "messages": messages,
            "servers": [{"$ref": f"#/servers/{server}"}],
            "bindings": {"ws": {"method": "GET", "bindingVersion": WS_BINDING_VERSION}},
            "x-zato-object-type": WSX_CHANNEL,
            "x-zato-service": service,
            "x-zato-wsx": {name: channel.get(name) for name in (
                "new_token_wait_time", "token_ttl", "ping_interval", "pings_missed_threshold", "max_message_size")
                if channel.get(name) is not None},
        }
        tags = self._tag_objects([service])
        if tags:
            entry["tags"] = tags
        self.channels[channel_key] = entry
        channel_ref = {"$ref": f"#/channels/{channel_key}"}
        security_list = [{"$ref": f"#/components/securitySchemes/{scheme}"}] if scheme else []

        def operation(key: str, value: dict[str, Any]) -> None:
            if tags:
                value["tags"] = tags
            self.operations[self.operation_keys.new(f"wsx.{name}.{key}")] = value

        session: dict[str, Any] = {
            "action": "receive", "channel": channel_ref, "title": "Open a session",
            "summary": "The client's first frame; the reply carries the token every later request sends",
            "messages": [{"$ref": f"{ref}/create-session"}],
            "reply": {"channel": channel_ref,
                      "messages": [{"$ref": f"{ref}/session-opened"}, {"$ref": f"{ref}/forbidden"}]},
        }
        if security_list:
            session["security"] = security_list
        operation("create-session", session)
        operation("invoke-service", {
            "action": "receive", "channel": channel_ref, "title": f"Invoke {service}",
            "summary": described["summary"] or f"Runs {service}",
            "messages": [{"$ref": f"{ref}/invoke-service"}],
            "reply": {"channel": channel_ref, "messages": [{"$ref": f"{ref}/response"},
                                                           {"$ref": f"{ref}/error-response"},
                                                           {"$ref": f"{ref}/forbidden"}]},
            "x-zato-service": service,
        })
        operation("server-request", {
            "action": "send", "channel": channel_ref, "title": "The server asks the client",
            "summary": "self.request.wsx.invoke_client(data) or self.wsx.channel[name].invoke(...) in a service; "
                       "the client answers with client-response",
            "messages": [{"$ref": f"{ref}/server-request"}],
            "reply": {"channel": channel_ref, "messages": [{"$ref": f"{ref}/client-response"}]},
        })
        if gateway:
            operation("pubsub-delivery", {
                "action": "send", "channel": channel_ref, "title": "Pub/sub messages for the client",
                "summary": "Messages of the topics the client subscribed to through the gateway "
                           "(zato.pubsub.pubapi.subscribe-wsx), one frame each; a frame sent is a message delivered",
                "messages": [{"$ref": f"{ref}/pubsub-delivery"}],
            })

    def _wsx_frame(self, meta: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "required": ["meta"], "properties": {"meta": meta, "data": data}}

    def _wsx_common_messages(self) -> None:
        if "wsx.create-session" in self.messages:
            return
        meta = _client_meta(CREATE_SESSION, token=False)
        meta["properties"].update({
            "username": {"type": ["string", "null"], "description": "The user of the channel's Basic Auth "
                                                                    "security definition"},
            "secret": {"type": ["string", "null"], "description": "Its password, or the API key"},
        })
        error_meta = _server_meta(ERROR_RESPONSE, in_reply_to=True)
        error_meta["properties"]["status"] = {"type": "integer", "description": "400 for input SimpleIO refused, "
                                              "403/4xx for a service's own errors, 404 for a service not deployed, "
                                              "504 past the service timeout, 500 for anything else"}
        error_meta["properties"]["error_message"] = {"type": "string"}
        error_meta["required"] += ["status", "error_message"]
        forbidden_meta = _server_meta(FORBIDDEN)
        forbidden_meta["properties"]["status"] = {"type": "integer", "enum": [400, 403, 413]}
        forbidden_meta["required"].append("status")
        client_response_meta = _client_meta(CLIENT_RESPONSE, token=True)
        client_response_meta["properties"]["in_reply_to"] = {"type": "string", "description": "meta.id of the "
                                                                                               "server's request"}
        client_response_meta["required"].append("in_reply_to")
        wsx_delivery = {
            "type": "object",
            "properties": {**{name: DELIVERY_FIELDS[name] for name in WSX_DELIVERY_FIELDS + WSX_DELIVERY_OPTIONAL},
                           "data": {"description": "As published"}, "data_base64": DATA_BASE64},
            "required": list(WSX_DELIVERY_FIELDS),
        }
        psrq_meta = _server_meta(PUBSUB_DELIVERY)
        psrq_meta["properties"]["id"] = {"type": "string", "description": "The message's msg_id"}
        self.messages.update({
            "wsx.create-session": {
                "name": "create-session", "title": "create-session",
                "summary": "Opens a session: the first frame of every connection",
                "contentType": "application/json",
                "payload": self._wsx_frame(meta, {"type": "object"}),
                "examples": [{"name": "create-session", "payload": {
                    "meta": {"action": CREATE_SESSION, "id": "1", "timestamp": "2024-05-01T10:11:12.123456",
                             "token": None, "client_id": "crm-1", "client_name": "CRM", "username": "user",
                             "secret": "password"}, "data": {}}}],
            },
            "wsx.session-opened": {
                "name": "session-opened", "title": AUTH_RESPONSE,
                "summary": "The session is open: data.token goes into meta.token of every later request",
                "contentType": "application/json",
                "payload": self._wsx_frame(_server_meta(AUTH_RESPONSE, status=200, in_reply_to=True), {
                    "type": "object", "required": ["token"],
                    "properties": {"token": {"type": "string", "pattern": r"^zwsxt\."}}}),
            },
            "wsx.forbidden": {
                "name": "forbidden", "title": FORBIDDEN,
                "summary": "403 \"You are not authorized to access this resource\" (no session, wrong credentials, "
                           "a bad or expired token), after which the connection is closed (1008); 400 or 413 for a "
                           "frame that is not JSON, has no meta.id or is too large (the connection goes on)",
                "contentType": "application/json",
                "payload": self._wsx_frame(forbidden_meta, {"type": "string"}),
            },
            "wsx.error-response": {
                "name": "error-response", "title": ERROR_RESPONSE,
                "summary": "A request that failed; data.cid finds it in server.log (never a traceback)",
                "contentType": "application/json",
                "payload": self._wsx_frame(error_meta, {"type": "object", "required": ["cid"],
                                                        "properties": {"cid": {"type": "string"}}}),
            },
            "wsx.server-request": {
                "name": "server-request", "title": SERVER_REQUEST,
                "summary": "A request from the server; answer it with client-response, meta.in_reply_to its meta.id",
                "contentType": "application/json",
                "payload": self._wsx_frame(_server_meta(SERVER_REQUEST), {"description": "What the service sends"}),
            },
            "wsx.client-response": {
                "name": "client-response", "title": CLIENT_RESPONSE,
                "summary": "The client's answer to a server request: the waiting service gets data",
                "contentType": "application/json",
                "payload": self._wsx_frame(client_response_meta, {
                    "type": "object", "properties": {"response": {"description": "The answer"}}}),
            },
            "wsx.pubsub-delivery": {
                "name": "pubsub-delivery", "title": PUBSUB_DELIVERY,
                "summary": "A pub/sub message for a client subscribed through the gateway; meta.id is its msg_id",
                "contentType": "application/json",
                "payload": self._wsx_frame(psrq_meta, wsx_delivery),
            },
        })


def _sub_patterns(text: str) -> list[str]:
    """ The `sub=` patterns of an endpoint's topic_patterns (none: any topic). """
    lines = (line.strip() for line in text.splitlines())
    return [line[4:].strip() for line in lines if line.startswith("sub=")]


def _client_meta(action: str, *, token: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "type": "object",
        "required": ["action", "id"] + (["token"] if token else []),
        "properties": {
            "action": {"type": "string", "const": action},
            "id": {"type": "string", "description": "The request's id; the reply's meta.in_reply_to"},
            "timestamp": {"type": "string", "description": "When the client sent it (ISO 8601)"},
            "token": {"type": "string", "pattern": r"^zwsxt\.", "description": "data.token of zwsx.rspa"}
            if token else {"type": "null"},
            "client_id": {"type": ["string", "null"], "description": "The client's id (names it as a pub/sub "
                                                                     "subscriber)"},
            "client_name": {"type": ["string", "null"]},
        },
    }
    return meta


def _server_meta(msg_type: str, *, status: int | None = None, in_reply_to: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "type": "object",
        "required": ["id", "timestamp", "msg_type"],
        "properties": {
            "id": {"type": "string"},
            "timestamp": {**_ISO, "description": "UTC, without a suffix"},
            "msg_type": {"type": "string", "const": msg_type},
        },
    }
    if status is not None:
        meta["properties"]["status"] = {"type": "integer", "const": status}
        meta["required"].append("status")
    if in_reply_to:
        meta["properties"]["in_reply_to"] = {"type": "string", "description": "meta.id of the client's request"}
        meta["required"].append("in_reply_to")
    return meta


def service_names(server: Any) -> list[str]:
    """ The services the document may describe (those behind WebSocket channels and pub/sub
    subscriptions): a caller on the event loop imports those not imported yet in a thread
    first (`openapi.load_service_classes`), as `build_asyncapi` never imports. """
    objects = getattr(server, "config_objects", None) or {}
    names = {channel.get("service") or "" for channel in (objects.get(WSX_CHANNEL) or {}).values()}
    names |= {endpoint.get("service_name") or "" for endpoint in (objects.get(ENDPOINT) or {}).values()}
    services = getattr(server, "services", None)
    topics = objects.get(TOPIC) or {}
    if services is not None:
        names |= {name for name in services.names() if service_topic_name(name) in topics}
    return sorted(name for name in names if name)


def build_asyncapi(server: Any, *, include: list[str] | None = None, exclude: list[str] | None = None,
                   tags: list[str] | None = None) -> dict[str, Any]:
    """ The AsyncAPI 3.0.0 document of `server`'s pub/sub topics and WebSocket channels, as they
    are now; `include` / `exclude` (fnmatch patterns of service or topic names) and `tags` filter
    it (module docstring). """
    return _Builder(server, include, exclude, tags).build()


__all__ = ["ASYNCAPI_VERSION", "build_asyncapi", "delivery_fields", "service_names", "service_topic_name"]
