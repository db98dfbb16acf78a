""" Outgoing IBM MQ connections (`outgoing_ibm_mq`) and what services call:
`self.outgoing.ibm_mq.send(msg, outconn_name, queue_name, ...)` (also `self.out.ibm_mq`,
`self.out.wmq`), as in Zato. """

from __future__ import annotations

import json
import logging
import math
from typing import Any

from zato.plugin_api import BlockingCalls

from zato_plugin_ibm_mq.channel import definition_of
from zato_plugin_ibm_mq.client import Endpoint, MQError, QueueManagerConnection, mq_library, mq_logger
from zato_plugin_ibm_mq.objects import NON_PERSISTENT, OUTGOING, PERSISTENT

logger = logging.getLogger("zato.ibm_mq")

# A plain `def` service puts from its own thread (waiting for the connection's owner thread); an
# `async def` awaits the put
_CALLS = BlockingCalls("IBM MQ send")

ID_LENGTH = 24  # MsgId and CorrelId


def _mq_id(value: Any, what: str) -> bytes:
    if value in (None, "", b""):
        return b""
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(raw) > ID_LENGTH:
        raise MQError(f"{what} is {len(raw)} bytes; MQ allows at most {ID_LENGTH}")
    return raw.ljust(ID_LENGTH, b"\x00")


def _data_of(msg: Any) -> tuple[bytes, bool]:
    """ The bytes to put and whether they are text (MQFMT_STRING, UTF-8). """
    if isinstance(msg, bytes):
        return msg, False
    if isinstance(msg, str):
        return msg.encode("utf-8"), True
    return json.dumps(msg).encode("utf-8"), True


class OutgoingIBMMQ:
    """ One outgoing connection: puts messages on any queue of its definition's queue manager,
    with the connection's delivery mode, priority and expiration unless a call gives its own. """

    def __init__(self, server: Any, definition: dict[str, Any]) -> None:
        # Built without the MQ library: without IBM's MQ client, each send raises MQUnavailable,
        # which says what to install (a connection that could not be built would only be "not found")
        self.name = definition["name"]
        self.delivery_mode = int(definition.get("delivery_mode") or PERSISTENT)
        self.priority = definition.get("priority")
        self.expiration = definition.get("expiration")
        self.max_chars = int(definition_of(definition).get("max_chars_printed") or 100)
        self.conn = QueueManagerConnection(Endpoint.of(definition_of(definition)), f"{OUTGOING} {self.name!r}")

    # In the owner thread
    def _put(self, qmgr: Any, queue_name: str, msg: Any, correlation_id: Any, msg_id: Any, reply_to: str,
             expiration: Any, priority: Any, delivery_mode: Any) -> bytes:
        mq = mq_library()
        cmqc = mq.CMQC
        data, is_text = _data_of(msg)
        md, pmo = mq.MD(), mq.PMO()
        pmo.Options = cmqc.MQPMO_NO_SYNCPOINT | cmqc.MQPMO_FAIL_IF_QUIESCING
        if is_text:
            md.Format = cmqc.MQFMT_STRING
            md.CodedCharSetId = 1208
        mode = int(delivery_mode if delivery_mode is not None else self.delivery_mode)
        if mode not in (NON_PERSISTENT, PERSISTENT):
            raise MQError(f"delivery_mode is 1 (non-persistent) or 2 (persistent), not {delivery_mode!r}")
        md.Persistence = cmqc.MQPER_PERSISTENT if mode == PERSISTENT else cmqc.MQPER_NOT_PERSISTENT
        chosen_priority = priority if priority is not None else self.priority
        if chosen_priority is not None:
            md.Priority = int(chosen_priority)
        chosen_expiration = expiration if expiration is not None else self.expiration
        if chosen_expiration:
            md.Expiry = max(1, math.ceil(int(chosen_expiration) / 100))  # milliseconds -> MQ's tenths of a second
        correl = _mq_id(correlation_id, "correlation_id")
        if correl:
            md.CorrelId = correl
        given_id = _mq_id(msg_id, "msg_id")
        if given_id:
            md.MsgId = given_id
        else:
            pmo.Options |= cmqc.MQPMO_NEW_MSG_ID
        if reply_to:
            md.ReplyToQ = reply_to.encode()
        queue = self.conn.open_queue(queue_name, cmqc.MQOO_OUTPUT | cmqc.MQOO_FAIL_IF_QUIESCING)
        queue.put(data, md, pmo)
        mq_logger.info("%s: put message %s on %s: %r", self.conn.what, bytes(md.MsgId).hex(), queue_name,
                       data[:self.max_chars])
        return bytes(md.MsgId)

    def send_blocking(self, *args: Any) -> bytes:
        return self.conn.call_blocking(self._put, *args, what=f"MQPUT to {args[0]}")

    async def send(self, *args: Any) -> bytes:
        return await self.conn.call(self._put, *args, what=f"MQPUT to {args[0]}")

    def ping(self) -> None:
        """ Connects if need be and asks the queue manager its name. """
        mq = mq_library()
        self.conn.call_blocking(lambda qmgr: qmgr.inquire(mq.CMQC.MQCA_Q_MGR_NAME), what="ping")

    def close(self) -> None:
        self.conn.close()


class IBMMQFacade:
    """ `self.outgoing.ibm_mq` in services. """

    def __init__(self, connections: Any) -> None:
        self.connections = connections

    def send(self, msg: Any, outconn_name: str, queue_name: str, correlation_id: Any = "", msg_id: Any = "",
             reply_to: str = "", expiration: int | None = None, priority: int | None = None,
             delivery_mode: int | None = None, raise_on_error: bool = True) -> Any:
        """ Puts `msg` (text, bytes, or a dict or list sent as JSON) on `queue_name` through the
        outgoing connection `outconn_name`; returns the message's MsgId (24 bytes). `expiration`
        is in milliseconds, `delivery_mode` 1 (non-persistent) or 2 (persistent), `priority`
        0-9; each defaults to the connection's. From a plain `def handle` this blocks until MQ has
        the message; from an `async def handle` it returns an awaitable. `raise_on_error=False`
        logs a failure and returns None instead of raising it. """
        connection = self.connections[outconn_name]
        args = (queue_name, msg, correlation_id, msg_id, reply_to, expiration, priority, delivery_mode)
        if raise_on_error:
            return _CALLS.call(connection.send_blocking, *args, on_loop=connection.send)
        return _CALLS.call(_logged(connection.send_blocking), *args, on_loop=_logged_async(connection.send))

    def conn(self) -> "IBMMQFacade":
        """ Itself, as Zato's facade gives it. """
        return self


def _logged(send: Any) -> Any:
    def call(*args: Any) -> Any:
        try:
            return send(*args)
        except Exception as exc:
            logger.error("IBM MQ send to %s failed (raise_on_error=False): %s", args[0], exc)
            return None
    return call


def _logged_async(send: Any) -> Any:
    async def call(*args: Any) -> Any:
        try:
            return await send(*args)
        except Exception as exc:
            logger.error("IBM MQ send to %s failed (raise_on_error=False): %s", args[0], exc)
            return None
    return call
