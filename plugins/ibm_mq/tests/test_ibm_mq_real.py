""" Against a real queue manager, opt-in: IBM MQ's client and a queue manager cannot be installed
on the machines this suite usually runs on, so this test runs only when told where one is:

    ZATO_TEST_IBM_MQ=localhost(1414)/QM1/DEV.APP.SVRCONN   # host(port)/queue manager/channel
    ZATO_TEST_IBM_MQ_USER=app ZATO_TEST_IBM_MQ_PASSWORD=passw0rd
    ZATO_TEST_IBM_MQ_QUEUE=DEV.QUEUE.1                      # emptied by the test; default DEV.QUEUE.1

(IBM's developer container, `icr.io/ibm-messaging/mq`, with `MQ_APP_PASSWORD` set, answers as
above.) It needs IBM's MQ client library (libmqm) where this Python finds it. Without
ZATO_TEST_IBM_MQ it is skipped, saying so, in CI too: no CI machine has a queue manager. """

from __future__ import annotations

import os
import re
import uuid

import pytest

from zato.plugin_api import run_server

from mq_fixtures import admin_client, create, mq_server_dir, wait_for

TARGET = os.environ.get("ZATO_TEST_IBM_MQ", "")

pytestmark = pytest.mark.skipif(not TARGET, reason="ZATO_TEST_IBM_MQ is not set: no real queue manager to test "
                                                   "against (host(port)/QM/CHANNEL; see this module's docstring)")

SERVICES = '''
from zato.server.service import Service

RECEIVED = []


class Receive(Service):
    name = "real.mq.receive"

    def handle(self):
        RECEIVED.append((self.request.ibm_mq.data, self.request.ibm_mq.correlation_id))


class Send(Service):
    name = "real.mq.send"

    def handle(self):
        request = self.request.payload
        self.response.payload = {"msg_id": self.outgoing.ibm_mq.send(
            request["data"], "real", request["queue"], correlation_id=request["correlation_id"]).hex()}
'''


async def test_a_message_sent_through_an_outgoing_connection_reaches_a_channel(tmp_path):
    import sys
    from zato_plugin_ibm_mq.client import mq_library, reset_library
    reset_library()
    try:
        mq_library()
    except Exception as exc:  # the point of this opt-in test is the real client: say what is missing
        pytest.fail(f"ZATO_TEST_IBM_MQ is set but the MQ client library cannot be loaded: {exc}")
    found = re.fullmatch(r"(?P<host>[^()]+)\((?P<port>\d+)\)/(?P<qm>[^/]+)/(?P<channel>.+)", TARGET)
    assert found, f"ZATO_TEST_IBM_MQ={TARGET!r}: expected host(port)/QM/CHANNEL"
    queue = os.environ.get("ZATO_TEST_IBM_MQ_QUEUE", "DEV.QUEUE.1")
    base = mq_server_dir(tmp_path / "server")
    (base / "pickup" / "real_mq.py").write_text(SERVICES)
    async with run_server(base) as server:
        async with admin_client(server) as client:
            await create(client, "definition_ibm_mq", name="real", host=found["host"], port=int(found["port"]),
                         queue_manager=found["qm"], channel=found["channel"],
                         username=os.environ.get("ZATO_TEST_IBM_MQ_USER", ""),
                         password=os.environ.get("ZATO_TEST_IBM_MQ_PASSWORD", ""))
            await create(client, "outgoing_ibm_mq", name="real", definition="real")
            reply = await client.post("/zato/api/ibm-mq/definitions/real/ping")
            assert reply.json()["ok"], reply.text
            await create(client, "channel_ibm_mq", name="real", definition="real", queue=queue,
                         service="real.mq.receive")
            correlation_id = uuid.uuid4().hex[:24]
            await server.invoke("real.mq.send", {"data": "from the real test", "queue": queue,
                                                 "correlation_id": correlation_id})
            received = sys.modules[server.services.get("real.mq.receive").cls.__module__].RECEIVED
            await wait_for(lambda: ("from the real test", correlation_id.encode()) in received,
                           "the message through the real queue manager", timeout=30)
