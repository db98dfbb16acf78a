""" The `ibm_mq` plugin: IBM MQ for Zato services, as in Zato.

* `channel_ibm_mq` - a channel that takes messages off a queue, under syncpoint, and gives each
  to a service: `self.request.ibm_mq` (`data`, `msg_id`, `correlation_id`, `mqmd`, `reply_to`,
  `put_date`, `put_time`); committed after the service returns, backed out when it raises, moved
  to the backout queue past the backout threshold. Every worker runs every channel (competing
  consumers of the queue).
* `outgoing_ibm_mq` - `self.outgoing.ibm_mq.send(msg, outconn_name, queue_name, ...)` (also
  `self.out.ibm_mq`, `self.out.wmq`), returning the MsgId.
* `definition_ibm_mq` - where a queue manager is and how to connect to it, shared by both.

Off until switched on (`[component_enabled] ibm_mq = True`, as the Zato article says, or
`[deploy_internal] zato_plugin_ibm_mq = True`). It runs on IBM's `ibmmq` client library (or the older `pymqi`), which
needs IBM's MQ C client (libmqm) at run time: without it the server starts and says what to
install, and only IBM MQ objects are unavailable. Low-level details (connects, reason codes,
backouts, messages' first characters) go to logs/ibm-mq.log; server.log has the summary.

This module is imported at every start of a server that enables the plugin, so it stays light:
the MQ library is imported when the first connection is made.
"""

from __future__ import annotations

import logging
from typing import Any

from zato.plugin_api import (
    SERVER_STARTUP, Backoff, Connector, ListenerType, OutgoingConnectionType, feature_log_file, hookimpl,
)

from zato_plugin_ibm_mq.objects import CHANNEL, CHANNEL_TYPE, DEFINITION_TYPE, OUTGOING, OUTGOING_TYPE

PHASE = SERVER_STARTUP.PHASE
PLUGIN = "ibm_mq"
LOG_FILE = "ibm-mq.log"

logger = logging.getLogger("zato.ibm_mq")


@hookimpl
def register_object_types(register):
    register(DEFINITION_TYPE)
    register(CHANNEL_TYPE)


@hookimpl
def register_connectors(register):
    from zato_plugin_ibm_mq.outgoing import IBMMQFacade
    register(Connector(OUTGOING_TYPE, OutgoingConnectionType(
        PLUGIN, OUTGOING, "out.ibm_mq", create_outgoing, "IBM MQ outgoing connections: put messages on queues",
        facade=IBMMQFacade, aliases=("out.wmq",))))


def create_outgoing(server: Any, definition: dict[str, Any]) -> Any:
    """ One outgoing connection (the core calls this in a worker thread; it connects on first use). """
    from zato_plugin_ibm_mq.outgoing import OutgoingIBMMQ
    return OutgoingIBMMQ(server, definition)


def open_receiver(server: Any, definition: dict[str, Any]) -> Any:
    from zato_plugin_ibm_mq.channel import open_ibm_mq_receiver
    return open_ibm_mq_receiver(server, definition)


@hookimpl
def register_channel_types(register):
    register(ListenerType(PLUGIN, CHANNEL, "IBM MQ queues: each message to a service, under syncpoint",
                          open=open_receiver, placement="every_worker", restart=Backoff(initial=1.0, maximum=30.0)))


@hookimpl
def register_request_attributes(register):
    register("ibm_mq", "the IBM MQ message: data, msg_id, correlation_id, mqmd, reply_to, put_date, put_time")


@hookimpl
def startup_phase(phase, ctx):
    if phase == PHASE.ON_STARTING:
        server = ctx.kwargs["server"]
        feature_log_file("zato.ibm_mq.mq", server.paths.logs_dir / LOG_FILE)
        return _say_which_library()
    return None


async def _say_which_library() -> None:
    """ Loads the MQ library once, in a worker thread, and says in server.log which one, or what
    is missing (the server goes on without IBM MQ). """
    import trio

    from zato_plugin_ibm_mq.client import MQUnavailable, mq_library
    try:
        await trio.to_thread.run_sync(mq_library)
    except MQUnavailable as exc:
        logger.error("%s", exc)


@hookimpl
def register_http_routes(register):
    from zato_plugin_ibm_mq.admin import ROUTES
    for path, handler, openapi in ROUTES:
        register(path, handler, methods=("POST",), openapi=openapi)


@hookimpl
def register_cli_commands(cli):
    from zato_plugin_ibm_mq.admin import add_commands
    add_commands(cli)
