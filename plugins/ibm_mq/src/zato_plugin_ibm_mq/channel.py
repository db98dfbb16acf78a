""" Channels that take messages off IBM MQ queues (`channel_ibm_mq`), on the core's listener
contract: the core owns the task per channel, restarts, live edits and draining; this module
opens a receiver per channel.

Each message is got under syncpoint (MQGMO_SYNCPOINT): it is committed after its service
returned and backed out when the service raised, so MQ itself redelivers it (BackoutCount + 1),
to this worker or to any other consumer of the queue. Once a message was delivered as often as
the backout threshold allows (the channel's `backout_threshold`, else the queue's BOTHRESH),
it is put on the backout queue (the channel's `backout_queue`, else the queue's BOQNAME, else
the queue manager's dead-letter queue with a dead-letter header) in the same unit of work as
its get, so it is never lost and never loops.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from zato.plugin_api import FailurePolicy, Invocation

from zato_plugin_ibm_mq.client import MQError, QueueManagerConnection, mq_library, mq_logger
from zato_plugin_ibm_mq.message import IBMMQMessage
from zato_plugin_ibm_mq.objects import CHANNEL, DEFINITION

DEFAULT_BACKOUT_THRESHOLD = 3  # when neither the channel nor the queue sets one
NO_MSG_AVAILABLE = 2033


def definition_of(channel: dict[str, Any]) -> dict[str, Any]:
    """ The connection definition a channel or outgoing connection names (resolved by the core). """
    found = (channel.get("_references") or {}).get("definition")
    if not found:
        raise MQError(f"{CHANNEL} {channel.get('name')!r}: its definition {channel.get('definition')!r} does not "
                      f"exist (create a {DEFINITION} of that name, or name another one)")
    return found


class Receiver:
    """ The receiver of one channel: one connection, one queue open for input, one message in hand. """

    def __init__(self, channel: dict[str, Any], conn: QueueManagerConnection) -> None:
        self.channel = channel
        self.conn = conn
        self.queue_name = channel["queue"]
        self.max_chars = int(definition_of(channel).get("max_chars_printed") or 100)
        self.backout_queue = ""
        self.uses_dead_letter_queue = False
        self.failure_policy = FailurePolicy(attempts=DEFAULT_BACKOUT_THRESHOLD, backoff=None)

    # ############################################################################################
    # In the owner thread

    def prepare(self, qmgr: Any) -> None:
        """ Opens the queue and reads its backout settings; refuses to start without anywhere to
        put a message that keeps failing. """
        mq = mq_library()
        cmqc = mq.CMQC
        queue = self.conn.open_queue(self.queue_name, self._input_options(cmqc))
        threshold = int(self.channel.get("backout_threshold") or 0)
        boq = (self.channel.get("backout_queue") or "").strip()
        try:
            attributes = queue.inquire([cmqc.MQIA_BACKOUT_THRESHOLD, cmqc.MQCA_BACKOUT_REQ_Q_NAME])
            threshold = threshold or int(attributes[cmqc.MQIA_BACKOUT_THRESHOLD])
            boq = boq or _text(attributes[cmqc.MQCA_BACKOUT_REQ_Q_NAME])
        except mq.MQMIError as exc:  # not authorised to inquire: the channel's own settings only
            mq_logger.warning("%s: cannot read BOTHRESH and BOQNAME of %s (reason %s)", self.conn.what,
                              self.queue_name, getattr(exc, "reason", exc))
        if not boq:
            boq = _text(qmgr.inquire(cmqc.MQCA_DEAD_LETTER_Q_NAME))
            self.uses_dead_letter_queue = bool(boq)
        if not boq:
            raise MQError(f"{self.conn.what}: messages of {self.queue_name} that keep failing would have nowhere "
                          f"to go: set the channel's backout_queue, the queue's BOQNAME, or a dead-letter queue "
                          f"(DEADQ) on queue manager {self.conn.endpoint.queue_manager}")
        self.backout_queue = boq
        self.failure_policy = FailurePolicy(attempts=max(1, threshold or DEFAULT_BACKOUT_THRESHOLD), backoff=None)
        mq_logger.info("%s: reading %s; backout after %d deliveries to %s%s", self.conn.what, self.queue_name,
                       self.failure_policy.attempts, boq, " (the dead-letter queue)" if self.uses_dead_letter_queue
                       else "")

    @staticmethod
    def _input_options(cmqc: Any) -> int:
        return cmqc.MQOO_INPUT_AS_Q_DEF | cmqc.MQOO_INQUIRE | cmqc.MQOO_FAIL_IF_QUIESCING

    def _get(self, qmgr: Any) -> tuple[bytes, Any] | None:
        mq = mq_library()
        cmqc = mq.CMQC
        queue = self.conn.open_queue(self.queue_name, self._input_options(cmqc))
        md, gmo = mq.MD(), mq.GMO()
        gmo.Options = cmqc.MQGMO_WAIT | cmqc.MQGMO_SYNCPOINT | cmqc.MQGMO_FAIL_IF_QUIESCING
        gmo.WaitInterval = int(self.channel.get("wait_interval") or 1000)
        try:
            data = queue.get(None, md, gmo)
        except mq.MQMIError as exc:
            if getattr(exc, "reason", None) == NO_MSG_AVAILABLE:
                return None
            raise
        mq_logger.info("%s: got message %s from %s (backout count %d): %r", self.conn.what, bytes(md.MsgId).hex(),
                       self.queue_name, md.BackoutCount, data[:self.max_chars])
        return data, md

    def _backout(self, qmgr: Any, *_: Any) -> None:
        qmgr.backout()

    def _commit(self, qmgr: Any) -> None:
        qmgr.commit()

    def _to_backout_queue(self, qmgr: Any, item: tuple[bytes, Any], error: str) -> None:
        mq = mq_library()
        cmqc = mq.CMQC
        data, md = item
        target = self.conn.open_queue(self.backout_queue, cmqc.MQOO_OUTPUT | cmqc.MQOO_FAIL_IF_QUIESCING)
        pmo = mq.PMO()
        pmo.Options = cmqc.MQPMO_SYNCPOINT | cmqc.MQPMO_FAIL_IF_QUIESCING
        if self.uses_dead_letter_queue:
            dlh = mq.DLH()
            dlh.Reason = cmqc.MQRC_BACKOUT_THRESHOLD_REACHED if hasattr(cmqc, "MQRC_BACKOUT_THRESHOLD_REACHED") \
                else cmqc.MQFB_APPL_FIRST
            dlh.DestQName = self.queue_name.encode()
            dlh.DestQMgrName = self.conn.endpoint.queue_manager.encode()
            dlh.Format = md.Format
            dlh.CodedCharSetId = md.CodedCharSetId
            dlh.Encoding = md.Encoding
            md.Format = cmqc.MQFMT_DEAD_LETTER_HEADER
            data = dlh.pack() + data
        target.put(data, md, pmo)
        qmgr.commit()  # the get and the put, together
        mq_logger.warning("%s: message %s moved from %s to %s after %d deliveries; the last error: %s",
                          self.conn.what, bytes(md.MsgId).hex(), self.queue_name, self.backout_queue,
                          md.BackoutCount + 1, error)

    # ############################################################################################
    # The receiver contract

    async def receive(self) -> tuple[bytes, Any]:
        while True:
            item = await self.conn.call(self._get, what=f"MQGET from {self.queue_name}", on_cancelled=self._undo_get)
            if item is not None:
                return item

    def _undo_get(self, item: Any) -> None:
        """ In the owner thread: a get that finished after its receive was cancelled took a message
        for nobody; it goes back to the queue (its BackoutCount + 1). """
        if item is not None and self.conn.qmgr is not None:
            self.conn.qmgr.backout()

    def to_invocation(self, item: tuple[bytes, Any]) -> Invocation:
        data, md = item
        message = IBMMQMessage.of(data, md, self.queue_name)
        payload: Any = message.data
        if (self.channel.get("data_format") or "") == "json":
            payload = json.loads(message.data)
        return Invocation(self.channel["service"], payload, attributes={"ibm_mq": message},
                          raw_request=message.data, delivery_count=message.backout_count)

    async def ack(self, item: Any) -> None:
        await self.conn.call(self._commit, what="MQCMIT")

    async def nack(self, item: Any, error: BaseException) -> None:
        try:
            await self.conn.call(self._backout, what="MQBACK")
        except MQError as exc:
            if not exc.connection_lost:
                raise
            # the queue manager backed the unit of work out itself when the connection went
            mq_logger.warning("%s: MQBACK not needed, the connection is gone and the queue manager backs out the "
                              "message (%s)", self.conn.what, exc)

    async def dead_letter(self, item: Any, error: BaseException | None) -> None:
        await self.conn.call(self._to_backout_queue, item, f"{type(error).__name__}: {error}" if error else "",
                             what=f"moving a message to {self.backout_queue}")


@asynccontextmanager
async def open_ibm_mq_receiver(server: Any, channel: dict[str, Any]) -> AsyncIterator[Receiver]:
    """ `ListenerType.open` of `channel_ibm_mq`: connects, opens the queue, yields the receiver;
    on exit backs out what was not committed and disconnects. """
    from zato_plugin_ibm_mq.client import Endpoint
    mq_library()  # MQUnavailable says what to install
    conn = QueueManagerConnection(Endpoint.of(definition_of(channel)), f"{CHANNEL} {channel['name']!r}")
    try:
        receiver = Receiver(channel, conn)
        await conn.call(receiver.prepare, what=f"opening {channel['queue']}")
        yield receiver
    finally:
        try:
            conn.later(_backout_if_connected)
        finally:
            conn.close()


def _backout_if_connected(conn: QueueManagerConnection) -> None:
    if conn.qmgr is not None:
        try:
            conn.qmgr.backout()  # MQDISC would commit what is in hand
        except Exception:
            pass


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value or "").strip(" \x00")
