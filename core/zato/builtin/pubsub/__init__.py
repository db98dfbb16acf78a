""" The `pubsub` plugin: durable publish/subscribe, as Zato's `self.pubsub.publish` offers it.

    msg_id = self.pubsub.publish('my.target', data={'abc': 'Hello World'})   # to a service
    msg_id = self.pubsub.publish('/orders/new', data=order, priority=7)        # to a topic
    ids = self.pubsub.publish('/orders/new', data_list=[{'data': a}, {'data': b, 'priority': 9}])

From a plain `def handle` this blocks until the messages are stored (guaranteed-delivery ones
committed to disk); from an `async def handle` it returns an awaitable:
`msg_id = await self.pubsub.publish(...)`, the same convention as `self.invoke`.

What lives where (see docs/pubsub.md):

* Topics, endpoints and subscriptions are configuration objects (`pubsub_topic`,
  `pubsub_endpoint`, `pubsub_subscription`: admin API, enmasse). Publishing to a service name
  creates its topic (`/zato/s/to/<name>`) and subscription on first use, as Zato does.
* Guaranteed-delivery (GD, the default) messages are stored in the configuration database
  (`zato.builtin.pubsub.store`) before `publish` returns; non-GD ones live in this worker's RAM.
* Writes are group-committed (`PubSubStore.submit`): whichever thread finds the database free
  writes everything waiting - concurrent publications, acknowledgements, retries, claims - in
  one transaction. A plain `def` service publishes from its own worker thread, with no round
  trip to the trio loop; messages for queues this worker can take at once are stored already
  claimed by it and handed to their runner right after the commit.
* Each worker runs one delivery runtime (`PubSub.serve`): a writer task for delivery
  bookkeeping, a poller noticing what other processes published, and one runner per
  subscription queue delivering in order of priority, then publication time. A runner whose
  subscriber raises follows the core's one failure policy (`zato.server.listeners.FailurePolicy`,
  made of the subscription's `max_attempts` and `retry_*`): a retry after its back-off, then
  the dead-letter queue; other queues go on. Each queue's outcomes are counted (admin API,
  `zato_pubsub_deliveries_total`).
* Deliveries are claimed with a lease, so several workers and servers sharing the database never
  deliver one message to two consumers at once. Delivery is at-least-once: a message whose
  delivery was under way when a server was killed is delivered again.
* Delivery targets are a registry by endpoint type (the `register_pubsub_delivery_targets`
  hook): services here; WebSocket and REST subscribers are other plugins' targets.

The package: this module (the hook implementations and the public names), `objects` (the object
types and the runtime configuration built from them), `runtime` (`PubSub`: delivery and
publishing), `api` (`self.pubsub`), `message`, `store` (the tables' statements), `admin` (the
admin API), `services` (internal services), `migrations` (the `pubsub` Alembic branch).
"""


from __future__ import annotations

from typing import Any

import trio

from zato import hookimpl
from zato.builtin.pubsub.api import PubSubAPI
from zato.builtin.pubsub.message import PublishError, PubSubMessage, TopicFull
from zato.builtin.pubsub.objects import (
    ENDPOINT_SERVICE, ENDPOINT_TYPE, OBJECT_TYPES, SUBSCRIPTION_TYPE, TOPIC_TYPE, SubscriptionConfig, TopicConfig,
    make_sub_key,
)
from zato.builtin.pubsub.runtime import DeliveryError, DeliveryTarget, PubSub, deliver_to_service
from zato.server.plugin_state import PluginState
from zato.server.pubsub_queues import PUBSUB_QUEUES

PLUGIN = "pubsub"
RUNTIME = PluginState[PubSub](PLUGIN)


# ################################################################################################
# Hooks


@hookimpl
def register_server_config(register):
    from zato.registry import Setting
    register(PLUGIN, {
        "poll_interval": Setting(0.2, exclusive_minimum=0, maximum=3600,
                                 doc="Seconds between two looks for messages published by other processes"),
        "lease_seconds": Setting(30.0, exclusive_minimum=0, maximum=86400,
                                 doc="Seconds a claimed delivery is reserved for this server"),
        "claim_batch": Setting(50, minimum=1, maximum=100_000, doc="Messages a queue holds in RAM"),
        "cleanup_interval": Setting(10.0, exclusive_minimum=0, maximum=86400,
                                    doc="Seconds between two removals of expired messages"),
        # Zato's key for what helpers.web-sockets-gateway may run; the wsx plugin reads it (its own
        # spelling is [wsx] gateway_service_allowed)
        "wsx_gateway_service_allowed": Setting("", doc="Services WebSocket clients may invoke through "
                                                       "helpers.web-sockets-gateway, comma-separated (Zato's "
                                                       "spelling of [wsx] gateway_service_allowed)"),
    },
             doc="Publish/subscribe: how often to look for messages published by other processes (seconds), how "
                 "long a claimed delivery is reserved for this server, how many messages a queue holds in RAM, "
                 "how often expired messages are removed.")


@hookimpl
def register_migrations(register):
    """ The tables of this plugin: messages, deliveries, dead letters, topic state. """
    from pathlib import Path
    register("pubsub", Path(__file__).resolve().parent / "migrations")


@hookimpl
def register_object_types(register):
    register(TOPIC_TYPE)
    register(ENDPOINT_TYPE)
    register(SUBSCRIPTION_TYPE)


@hookimpl
def startup_phase(phase, ctx):
    if phase == "ON_STARTING":
        server = ctx.kwargs["server"]
        runtime = PubSub(server)
        RUNTIME.set(server, runtime)
        PUBSUB_QUEUES.set(server, runtime)
        return trio.to_thread.run_sync(runtime.store.check_schema)


@hookimpl
def register_tasks(register, server):
    runtime = RUNTIME.get(server)
    if runtime is not None:
        register("delivery", runtime.serve)


@hookimpl
def config_objects_changed(server, object_types):
    runtime = RUNTIME.get(server)
    if runtime is not None and set(object_types) & set(OBJECT_TYPES):
        runtime.apply_config()


@hookimpl
def register_http_routes(register):
    from zato.builtin.pubsub.admin import ROUTES
    for path, handler, methods, openapi in ROUTES:
        register(path, handler, methods=methods, openapi=openapi)


@hookimpl
def register_internal_services(register):
    register("zato.builtin.pubsub.services")


@hookimpl
def register_pubsub_delivery_targets(register):
    register(ENDPOINT_SERVICE, deliver_to_service)


@hookimpl
def register_service_attributes(register):
    register("pubsub", lambda service: runtime_of(service.server).api_for(service))


@hookimpl
def shutdown(server):
    runtime = RUNTIME.get(server)
    if runtime is not None:
        return runtime.stop()


def runtime_of(server: Any) -> PubSub:
    """ The worker's pub/sub, or an error saying why there is none. """
    runtime = RUNTIME.get(server)
    if runtime is None:
        raise AttributeError("self.pubsub needs the pubsub plugin: it is switched off (switch it on with "
                             "[deploy_internal] zato.builtin.pubsub = True in server.conf) or the server has not "
                             "reached the ON_STARTING phase")
    return runtime


__all__ = ["RUNTIME", "DeliveryError", "DeliveryTarget", "PubSub", "PubSubAPI", "PubSubMessage", "PublishError",
           "SubscriptionConfig", "TopicConfig", "TopicFull", "make_sub_key", "runtime_of"]
