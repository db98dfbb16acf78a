""" The IBM MQ article end to end, on the stand-in queue manager under the real `ibmmq` layer:
a message put on DEV.QUEUE.1 reaches the channel service with its MQMD, the producer service
puts on DEV.QUEUE.2, with plain and `async def` services. """

from __future__ import annotations

import logging

import pytest

from zato.plugin_api import run_server

from mq_fixtures import (
    ARTICLE_SERVICES, DEFINITION, StandIn, admin_client, create, listener_state, make_queue_manager, mq_server_dir,
    wait_for,
)

ASYNC_SERVICES = '''
from zato.server.service import Service


class AsyncChannel(Service):
    name = 'api.mq.async-channel'

    async def handle(self):
        self.logger.info('Async data: %s, backout count %s', self.request.ibm_mq.data, self.request.ibm_mq.mqmd.BackoutCount)


class AsyncProducer(Service):
    name = 'api.mq.async-producer'

    async def handle(self):
        msg_id = await self.outgoing.ibm_mq.send(self.request.raw_request, 'My MQ Connection', 'DEV.QUEUE.3',
                                                 correlation_id=b'corr-1', reply_to='DEV.QUEUE.1', priority=7)
        self.response.payload = {'msg_id': msg_id.hex(), 'wmq_is_the_same': self.out.wmq is self.outgoing.ibm_mq}
'''


@pytest.fixture
def qm():
    with StandIn(make_queue_manager()) as qm:
        yield qm


async def test_the_articles_channel_and_producer_run_unchanged(qm, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    base = mq_server_dir(tmp_path / "server")
    (base / "pickup" / "article.py").write_text(ARTICLE_SERVICES)
    async with run_server(base) as server:
        async with admin_client(server) as client:
            await create(client, "definition_ibm_mq", **DEFINITION)
            await create(client, "channel_ibm_mq", name="My MQ Channel", definition="QM1 dev", queue="DEV.QUEUE.1",
                         service="api.mq.channel")
            await create(client, "outgoing_ibm_mq", name="My MQ Connection", definition="QM1 dev")
            await wait_for(lambda: qm.connection_count() >= 1, "the channel connected")

            qm.put("DEV.QUEUE.1", b"This is a test message", appl_name="MQ Explorer 9.1.5")
            await wait_for(lambda: "Data: This is a test message" in caplog.messages, "the channel's log line")
            assert "Sent by: b'MQ Explorer 9.1.5           '" in caplog.messages  # as the article shows it
            assert "CorrelId: " + repr(b"\x00" * 24) in caplog.messages
            await wait_for(lambda: qm.depth("DEV.QUEUE.1") == 0, "the message committed")
            state = await listener_state(client, "My MQ Channel")
            assert (state["state"], state["succeeded"]) == ("running", 1)

            await server.invoke("api.mq.producer", "Hello from Zato")
            [sent] = qm.messages("DEV.QUEUE.2")
            assert sent.data == b"Hello from Zato" and sent.md.Format.rstrip(b" \x00") == b"MQSTR"


async def test_async_services_receive_and_send_and_zatos_spellings_reach_the_same(qm, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    base = mq_server_dir(tmp_path / "server")
    (base / "pickup" / "async_mq.py").write_text(ASYNC_SERVICES)
    async with run_server(base) as server:
        async with admin_client(server) as client:
            await create(client, "definition_ibm_mq", **DEFINITION)
            await create(client, "channel_ibm_mq", name="async", definition="QM1 dev", queue="DEV.QUEUE.1",
                         service="api.mq.async-channel")
            await create(client, "outgoing_ibm_mq", name="My MQ Connection", definition="QM1 dev")
            qm.put("DEV.QUEUE.1", "zażółć".encode("utf-8"), CodedCharSetId=1208)
            await wait_for(lambda: "Async data: zażółć, backout count 0" in caplog.messages, "the async channel")

            reply = await server.invoke("api.mq.async-producer", "to queue 3")
            [sent] = qm.messages("DEV.QUEUE.3")
            assert reply == {"msg_id": sent.md.MsgId.hex(), "wmq_is_the_same": True}
            assert sent.md.CorrelId == b"corr-1".ljust(24, b"\x00") and sent.md.ReplyToQ.rstrip(b" \x00") == b"DEV.QUEUE.1"
            assert sent.md.Priority == 7 and sent.md.Persistence == 1  # delivery_mode 2 (persistent) by default
