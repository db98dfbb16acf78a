""" Zato's broker client as services see it (`self.broker_client`): messages to every worker.

In Zato a server's workers, and the servers of a cluster, hear about changes through a broker;
service code publishes to it too, to run a service everywhere (the Zato 2.0 config-reload
recipe, docs/services.md):

    msg = {'action': SERVICE.PUBLISH.value, 'service': 'util.config._reload', 'payload': '',
           'cid': new_cid()}
    self.broker_client.publish(msg)

Here the broker is the notification transport between a server's workers (the supervisor's
hub; a `notification_transport` plugin carries the same messages between servers). A
`SERVICE.PUBLISH` message runs the service once in every worker, this one included, in the
background: `publish` returns once the message is sent, not when the services have run; a
service that fails in a worker is logged there with its cid.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import Any

from zato.common.broker_message import SERVICE, code_to_name

__all__ = ["BrokerClient", "SERVICE_PUBLISH", "run_published_service"]

logger = logging.getLogger("zato.broker")

# The notification that carries SERVICE.PUBLISH between workers
SERVICE_PUBLISH = "broker.service.publish"


class BrokerClient:
    """ `self.broker_client` of one service invocation. """

    __slots__ = ("server", "cid")

    def __init__(self, server: Any, cid: str = "") -> None:
        self.server = server
        self.cid = cid

    def publish(self, msg: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        """ Sends `msg` to every worker. `msg['action']` is a code from
        `zato.common.broker_message`; `SERVICE.PUBLISH.value` runs `msg['service']` with
        `msg['payload']` in each worker (under `msg['cid']` if given). Zato's extra arguments
        (`msg_type`...) are accepted: every message here goes to every worker.

        From a plain `def handle` this blocks until the message is sent; from an `async def
        handle` it returns an awaitable (`await self.broker_client.publish(msg)`). """
        if not isinstance(msg, dict):
            raise TypeError(f"broker_client.publish takes a dict with 'action' (e.g. SERVICE.PUBLISH.value), "
                            f"not {type(msg).__name__}")
        action = msg.get("action")
        if action != SERVICE.PUBLISH.value:
            known = code_to_name.get(str(action))
            what = f"{action!r} ({known})" if known else repr(action)
            raise ValueError(f"broker_client.publish: action {what} is not carried here; only SERVICE.PUBLISH "
                             f"(from zato.common.broker_message import SERVICE; msg['action'] = "
                             f"SERVICE.PUBLISH.value) runs a service in every worker. Configuration changes made "
                             f"through the admin API or enmasse reach every worker by themselves")
        name = msg.get("service")
        if not isinstance(name, str) or not name:
            raise ValueError("broker_client.publish: msg['service'] must be the name of the service to run in every "
                             f"worker (e.g. MyService.name), got {name!r}")
        if name not in self.server.services:
            raise ValueError(f"broker_client.publish: no service named {name!r} is deployed; check msg['service']")
        payload = {"service": name, "payload": msg.get("payload"), "cid": msg.get("cid") or self.cid or None}
        try:
            json.dumps(payload)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"broker_client.publish: msg['payload'] for {name!r} must be JSON-serialisable (it "
                            f"travels to the other workers as JSON): {exc}") from None
        return self.server.run_trio(partial(self.server.notify, SERVICE_PUBLISH, payload))


def run_published_service(server: Any, message: dict[str, Any]) -> None:
    """ The `SERVICE_PUBLISH` notification handler: runs the service in this worker, in the
    background, so that the notifications behind it are not held up by it. """
    nursery = server.background_nursery
    if nursery is None:
        logger.warning("cid=%s service %s published to every worker arrived before this worker started; not run here",
                       message.get("cid"), message.get("service"))
        return
    try:
        nursery.start_soon(_run, server, message)
    except RuntimeError:  # the worker is stopping: its background work no longer takes new tasks
        logger.warning("cid=%s service %s published to every worker arrived while this worker stops; not run here",
                       message.get("cid"), message.get("service"))


async def _run(server: Any, message: dict[str, Any]) -> None:
    name, cid = message.get("service"), message.get("cid")
    try:
        await server.invoke_service(name, message.get("payload"), cid=cid, channel="broker")
    except Exception:
        logger.exception("cid=%s service %s, published to every worker, failed in this worker (pid %s)", cid, name,
                         server.pid)
