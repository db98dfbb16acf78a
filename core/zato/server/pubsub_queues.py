""" What a plugin may do with pub/sub's queues without importing the pubsub plugin: the plugin
(zato.builtin.pubsub) sets `PUBSUB_QUEUES` in each worker when it starts, and a plugin whose
clients subscribe (WebSocket channels: an unsubscribing client's queue is emptied) reads it:

    queues = PUBSUB_QUEUES.get(server)      # None when pub/sub is switched off
    deleted = await queues.clear(sub_key)
"""

from __future__ import annotations

from typing import Protocol

from zato.server.plugin_state import PluginState


class PubSubQueues(Protocol):
    async def clear(self, sub_key: str) -> int:
        """ Deletes every message waiting in the queue `sub_key` (guaranteed-delivery ones from the
        database, others from memory); returns how many. A message being delivered at that
        moment may still reach its subscriber once. """


PUBSUB_QUEUES: PluginState[PubSubQueues] = PluginState(
    "pubsub.queues", "pub/sub's queues are not available: the pubsub plugin is switched off (switch it on with "
                     "[deploy_internal] zato.builtin.pubsub = True in server.conf) or has not started yet")
