""" What services see as `self.pubsub` (`PubSubAPI`). """

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from zato.server.outgoing import BlockingCalls

if TYPE_CHECKING:
    from zato.builtin.pubsub.runtime import PubSub

# The dual-mode call of `publish`: a plain `def` blocks, an `async def` gets an awaitable
_CALLS = BlockingCalls("pub/sub publish")


class PubSubAPI:
    """ `self.pubsub` in a service. """

    def __init__(self, runtime: PubSub, service: Any) -> None:
        self._runtime = runtime
        self._service = service

    def publish(self, name: Any, *args: Any, **kwargs: Any) -> Any:
        """ Publishes to a topic, or to a service by its name (or class), and returns the msg_id
        (`data_list=[{...}, ...]`: the list of them, in order).

        Options, per message: `data`, `priority` (1-9, higher first; default 5), `expiration`
        (milliseconds), `has_gd` (True: stored before this returns; False: RAM only), `mime_type`,
        `correl_id` (or `correlation_id`), `in_reply_to`, `msg_id`, `ext_client_id`, `user_ctx`.
        With `data_list`, each element is a dict of these, and options given beside `data_list`
        are defaults for every element. A full topic raises `TopicFull`, bad options
        `PublishError`, and nothing is published.

        From a plain `def handle` this blocks until the messages are stored; from an
        `async def handle` it returns an awaitable: `msg_id = await self.pubsub.publish(...)`.
        """
        published_by = getattr(self._service, "name", None)
        # A plain `def` stores the messages from its own worker thread; an `async def` awaits the
        # runtime's trio-side publish (no extra thread hop for RAM-only messages).
        return _CALLS.call(partial(self._runtime.publish_blocking, published_by=published_by), name, args, kwargs,
                           on_loop=partial(self._runtime.publish, published_by=published_by))

    def wait_for_topic(self, name: str, timeout: float = 10.0) -> Any:
        """ True once this worker knows the topic (False after `timeout` seconds), as in Zato. """
        async def wait() -> bool:
            with trio.move_on_after(timeout):
                while name not in self._runtime.topics:
                    await trio.sleep(0.05)
                return True
            return False
        return self._runtime.server.run_trio(wait)

    def __repr__(self) -> str:
        return f"<PubSubAPI of {self._service!r}>"
