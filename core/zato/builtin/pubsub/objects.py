""" The pub/sub configuration objects (`pubsub_topic`, `pubsub_endpoint`, `pubsub_subscription`:
their schemas and checks) and the runtime configuration a worker builds from them: topics and one
queue (a sub_key) per subscription and topic. """

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from zato.builtin.pubsub.message import SERVICE_ENDPOINT, SERVICE_TOPIC_PREFIX
from zato.common.pubsub import sub_key
from zato.registry import Field, Kind, ObjectType, ZatoSpelling
from zato.server.listeners import Backoff, FailurePolicy

TOPIC, ENDPOINT, SUBSCRIPTION = "pubsub_topic", "pubsub_endpoint", "pubsub_subscription"
OBJECT_TYPES = (TOPIC, ENDPOINT, SUBSCRIPTION)
ENDPOINT_SERVICE = "service"
ZATO_ENDPOINT_TYPES = {"srv": ENDPOINT_SERVICE}  # Zato's endpoint_type values that differ from ours


# ################################################################################################
# Object types


def _at_least(data: dict[str, Any], limits: dict[str, float]) -> list[dict[str, str]]:
    errors = []
    for name, minimum in limits.items():
        value = data.get(name)
        if isinstance(value, (int, float)) and value < minimum:
            errors.append({"field": name, "error": f"must be {minimum:g} or more, not {value!r}"})
    return errors


def check_topic(data: dict[str, Any], partial: bool = False) -> list[dict[str, str]]:
    return _at_least(data, {"max_depth_gd": 0, "max_depth_non_gd": 0})


def check_endpoint(data: dict[str, Any], partial: bool = False) -> list[dict[str, str]]:
    patterns = data.get("topic_patterns")
    if not isinstance(patterns, str) or patterns.startswith("$"):
        return []
    bad = [line.strip() for line in patterns.splitlines()
           if line.strip() and not line.strip().startswith(("pub=", "sub="))]
    if bad:
        return [{"field": "topic_patterns", "error": f"each line is pub=PATTERN or sub=PATTERN (as in Zato), not "
                                                     f"{', '.join(repr(line) for line in bad)}"}]
    return []


def check_subscription(data: dict[str, Any], partial: bool = False) -> list[dict[str, str]]:
    errors = _at_least(data, {"max_attempts": 1, "retry_seconds": 0, "retry_backoff": 1, "retry_max_seconds": 0,
                              "delivery_timeout": 0})
    topics = data.get("topic_list")
    if topics is not None and not (partial and "topic_list" not in data):
        if not topics or not all(isinstance(topic, str) and topic.strip() for topic in topics):
            errors.append({"field": "topic_list", "error": "must name at least one topic, each a non-empty string"})
    return errors


TOPIC_TYPE = ObjectType(TOPIC, (
    Field("has_gd", "bool", default=True,
          description="Messages published without has_gd are guaranteed delivery (stored in the database) if True, "
                      "kept in RAM only if False"),
    Field("max_depth_gd", "int", default=10000, minimum=0,
          description="At most this many GD messages wait in the topic; publishing more fails (0: no limit)",
          example=10000),
    Field("max_depth_non_gd", "int", default=1000, minimum=0,
          description="At most this many non-GD messages wait in a worker's RAM (0: no limit)", example=1000),
    Field("description", "str", default=""),
), "A pub/sub topic: publishers send messages to it by name, its subscriptions get them.", check=check_topic,
    zato=ZatoSpelling(TOPIC, ignored=(
        "id", "cluster_id", "is_internal", "is_api_sub_allowed", "depth_check_freq", "pub_buffer_size_gd",
        "task_sync_interval", "task_delivery_interval", "hook_service_id", "hook_service_name", "on_no_subs_pub",
        "limit_retention", "limit_message_expiry", "limit_sub_inactivity", "current_depth_gd", "last_pub_time")))

ENDPOINT_TYPE = ObjectType(ENDPOINT, (
    Field("endpoint_type", "str", default=ENDPOINT_SERVICE,
          description="How its subscriptions get messages: 'service' (more types come with other plugins)",
          example=ENDPOINT_SERVICE),
    Field("service_name", "str", references="service",
          description="For service endpoints: the service that gets the messages (empty: the service each "
                      "message was published to)", example="my.target"),
    Field("topic_patterns", "str", default="",
          description="One per line, as in Zato: 'sub=/orders/*' lets its subscriptions name matching topics "
                      "(empty: any topic); 'pub=' lines are kept for REST and WebSocket publishers",
          example="sub=/orders/*"),
    Field("description", "str", default=""),
), "Who takes part in pub/sub: a subscriber (and later, a publisher) of a given type.", check=check_endpoint,
    zato=ZatoSpelling(ENDPOINT, fields={"service_name": "service_name", "service": "service_name"}, values={"endpoint_type": ZATO_ENDPOINT_TYPES},
                      ignored=("id", "cluster_id", "is_internal", "role", "sec_def", "sec_name", "security_name",
                               "security_id", "ws_channel_id", "ws_channel_name", "service_id", "hook_service_id",
                               "hook_service_name", "tags", "message_tag_patterns", "pub_tag_patterns")))

SUBSCRIPTION_TYPE = ObjectType(SUBSCRIPTION, (
    Field("endpoint_name", "str", required=True, references=ENDPOINT, description="The endpoint that subscribes"),
    Field("endpoint_type", "str", default=ENDPOINT_SERVICE, description="The endpoint's type (as in Zato's enmasse)"),
    Field("topic_list", "list", required=True, item_type="str", description="The topics subscribed to", example=["/orders/new"]),
    Field("delivery_method", "str", default="notify", choices=("notify",),
          description="'notify': messages are delivered as they come (the only method so far)"),
    Field("max_attempts", "int", default=10, minimum=1,
          description="Delivery attempts (the first included) before a message goes to the dead-letter queue",
          example=10),
    Field("retry_seconds", "float", default=1.0, minimum=0, description="Seconds to wait after the first failed attempt (0: the next attempt at once)",
          example=1.0),
    Field("retry_backoff", "float", default=2.0, minimum=1, description="Each further wait is the previous one times this"),
    Field("retry_max_seconds", "float", default=60.0, minimum=0, description="No wait between attempts is longer"),
    Field("delivery_timeout", "float", default=0.0, minimum=0,
          description="Seconds a delivery may take before it counts as failed (0: no limit)"),
), "A subscription of an endpoint to topics; each topic gets its own queue, named by its sub_key.",
   check=check_subscription,
   zato=ZatoSpelling(SUBSCRIPTION, fields={"topic_list_json": "topic_list", "delivery_max_retry": "max_attempts",
                                           "wait_non_sock_err": "retry_seconds"},
                     values={"endpoint_type": ZATO_ENDPOINT_TYPES},
                     ignored=("id", "cluster_id", "sub_key", "is_internal", "has_gd", "should_ignore_if_sub_exists",
                              "should_delete_all", "delivery_data_format", "delivery_batch_size",
                              "wrap_one_msg_in_list", "delivery_err_should_block", "wait_sock_err", "out_http_method",
                              "out_rest_http_soap_id", "rest_connection", "out_amqp_id", "amqp_exchange",
                              "amqp_routing_key", "files_directory_list", "ftp_directory_list", "sms_twilio_from",
                              "sms_twilio_to_list", "smtp_subject", "smtp_from", "smtp_to_list", "smtp_body",
                              "smtp_is_html", "active_status", "server_id", "hook_service_id", "topic_id",
                              "endpoint_id", "creation_time", "ext_client_id", "delivery_endpoint", "service_id")))


# ################################################################################################
# Runtime configuration, built from the objects


def failure_policy(max_attempts: int, retry_seconds: float, retry_backoff: float, retry_max_seconds: float,
                   delivery_timeout: float) -> FailurePolicy:
    """ A subscription's settings as the core's one failure policy for deliveries to services:
    `max_attempts` attempts in all; after failure n, `retry_seconds * retry_backoff ** (n - 1)`
    seconds, never more than `retry_max_seconds`, without jitter (as the settings always meant);
    `delivery_timeout` bounds each attempt (0: no limit). A zero wait means the next attempt at
    once. """
    initial = min(retry_seconds, retry_max_seconds)
    backoff = Backoff(initial=initial, maximum=retry_max_seconds, multiplier=retry_backoff, jitter=0.0) \
        if initial > 0 else None
    return FailurePolicy(attempts=max_attempts, backoff=backoff, timeout=delivery_timeout or None)


@dataclass
class SubscriptionConfig:
    sub_key: str
    name: str
    topic_name: str
    endpoint_name: str
    endpoint_type: str
    service_name: str  # the endpoint's, may be empty
    max_attempts: int
    retry_seconds: float
    retry_backoff: float
    retry_max_seconds: float
    delivery_timeout: float
    policy: FailurePolicy = field(init=False, repr=False, compare=False)  # made of the five settings above

    def __post_init__(self) -> None:
        self.policy = failure_policy(self.max_attempts, self.retry_seconds, self.retry_backoff,
                                     self.retry_max_seconds, self.delivery_timeout)

    def retry_wait(self, failed_attempts: int) -> float:
        """ The wait after the `failed_attempts`-th failure (the policy's back-off, even after the
        last attempt). """
        backoff = self.policy.backoff
        return backoff.delay(failed_attempts) if backoff is not None else 0.0


@dataclass
class TopicConfig:
    name: str
    has_gd: bool
    max_depth_gd: int
    max_depth_non_gd: int
    sub_keys: list[str] = field(default_factory=list)


def make_sub_key(endpoint_type: str, subscription: str, topic: str) -> str:
    """ Stable across restarts and servers: a subscription's queue for one topic. """
    return sub_key("srv" if endpoint_type == ENDPOINT_SERVICE else endpoint_type, subscription, topic)


def _patterns(text: str, kind: str) -> list[str]:
    out = []
    for line in (text or "").splitlines():
        line = line.strip()
        if line.startswith(f"{kind}="):
            out.append(line[len(kind) + 1:].strip())
    return out


def build_config(objects: dict[str, dict[str, dict[str, Any]]], delivery_types: set[str]) \
        -> tuple[dict[str, TopicConfig], dict[str, SubscriptionConfig], list[str]]:
    """ Topics and subscription queues from the active objects; `problems` says what was left out. """
    problems: list[str] = []
    topics = {name: TopicConfig(name, bool(obj.get("has_gd", True)), int(obj.get("max_depth_gd") or 0),
                                int(obj.get("max_depth_non_gd") or 0))
              for name, obj in objects.get(TOPIC, {}).items()}
    endpoints = objects.get(ENDPOINT, {})
    subs: dict[str, SubscriptionConfig] = {}
    for name, obj in objects.get(SUBSCRIPTION, {}).items():
        endpoint = endpoints.get(obj.get("endpoint_name") or "")
        where = f"pubsub_subscription {name!r}"
        if endpoint is None:
            problems.append(f"{where}: its endpoint {obj.get('endpoint_name')!r} does not exist or is inactive; "
                            f"no message is delivered to it until that is fixed")
            continue
        endpoint_type = endpoint.get("endpoint_type") or ENDPOINT_SERVICE
        if obj.get("endpoint_type") and obj["endpoint_type"] != endpoint_type:
            problems.append(f"{where}: endpoint_type is {obj['endpoint_type']!r} but its endpoint "
                            f"{endpoint['name']!r} is of type {endpoint_type!r}; make them agree")
            continue
        if endpoint_type not in delivery_types:
            problems.append(f"{where}: no enabled plugin delivers to endpoints of type {endpoint_type!r} (known: "
                            f"{', '.join(sorted(delivery_types))}); its messages stay queued until one does")
            continue
        if (obj.get("delivery_method") or "notify") != "notify":
            problems.append(f"{where}: delivery_method {obj['delivery_method']!r} is not supported (only 'notify'); "
                            f"its messages stay queued")
            continue
        allowed = _patterns(endpoint.get("topic_patterns", ""), "sub")
        for topic_name in obj.get("topic_list") or []:
            if topic_name not in topics:
                problems.append(f"{where}: topic {topic_name!r} does not exist or is inactive; create it first")
                continue
            if allowed and not any(fnmatchcase(topic_name, pattern) for pattern in allowed):
                problems.append(f"{where}: endpoint {endpoint['name']!r} may not subscribe to {topic_name!r} (its "
                                f"sub= patterns: {', '.join(allowed)})")
                continue
            sub_key = make_sub_key(endpoint_type, name, topic_name)
            subs[sub_key] = SubscriptionConfig(
                sub_key=sub_key, name=name, topic_name=topic_name, endpoint_name=endpoint["name"],
                endpoint_type=endpoint_type, service_name=endpoint.get("service_name") or "",
                max_attempts=max(int(obj.get("max_attempts") or 1), 1),
                retry_seconds=max(float(obj.get("retry_seconds") or 0.0), 0.0),
                retry_backoff=max(float(obj.get("retry_backoff") or 1.0), 1.0),
                retry_max_seconds=max(float(obj.get("retry_max_seconds") or 0.0), 0.0),
                delivery_timeout=max(float(obj.get("delivery_timeout") or 0.0), 0.0))
            topics[topic_name].sub_keys.append(sub_key)
    return topics, subs, problems


def create_service_objects(server: Any, service: str, topic_name: str) -> list[str]:
    """ Blocking: the objects through which messages reach a service, those missing created:
    Zato's shared service endpoint, the service's topic and its subscription. """
    from zato.objects import validate
    from zato.odb import ObjectExists
    schemas = server.registry.items(Kind.OBJECT_TYPES)
    wanted = [
        (ENDPOINT, SERVICE_ENDPOINT, {"endpoint_type": ENDPOINT_SERVICE, "service_name": "",
                                      "topic_patterns": f"sub={SERVICE_TOPIC_PREFIX}*",
                                      "description": "Delivers messages published to services"}),
        (TOPIC, topic_name, {"has_gd": True, "description": f"Messages published to service {service}"}),
        (SUBSCRIPTION, topic_name, {"endpoint_name": SERVICE_ENDPOINT, "endpoint_type": ENDPOINT_SERVICE,
                                    "topic_list": [topic_name]}),
    ]
    created = []
    for object_type, name, data in wanted:
        data = validate(schemas[object_type], {"name": name, **data})
        try:
            server.odb.create_object(object_type, name, data)
        except ObjectExists:
            continue
        created.append(f"{object_type} {name!r}")
    return created
