""" IBM MQ outgoing connections and what surrounds them, on the stand-in queue manager: errors
that say what to do, an outage logged once, a server without IBM's MQ client, logs/ibm-mq.log,
and Zato's enmasse keys. """

from __future__ import annotations

import logging
import textwrap

import pytest
import trio
from click.testing import CliRunner

from zato.cli import cli
from zato.plugin_api import run_server

from mq_fixtures import (
    BACKOUT_QUEUE, DEFINITION, PASSWORD, StandIn, admin_client, create, listener_state, make_queue_manager,
    mq_server_dir, no_mq_library, recorded, recording_services, server_log, wait_for,
)

CATCHING_SERVICE = '''
from zato.server.service import Service


class SendCatching(Service):
    """ Sends as {"conn", "queue", "data"} say; answers with what was raised, if anything. """
    name = 'mq.send.catching'

    def handle(self):
        given = self.request.payload
        try:
            msg_id = self.outgoing.ibm_mq.send(given['data'], given['conn'], given['queue'],
                                               raise_on_error=given.get('raise_on_error', True))
        except Exception as exc:
            self.response.payload = {'error_type': type(exc).__name__, 'error': str(exc)}
        else:
            self.response.payload = {'msg_id': msg_id.hex() if msg_id else None}
'''


@pytest.fixture
def qm():
    with StandIn(make_queue_manager()) as qm:
        yield qm


def server_with_services(tmp_path, **config):
    base = mq_server_dir(tmp_path / "server", **config)
    (base / "pickup" / "catching.py").write_text(CATCHING_SERVICE)
    record = recording_services(base, tmp_path / "record.jsonl")
    return base, record


def plugin_records(caplog, level=logging.INFO):
    return [r for r in caplog.records if r.name == "zato.ibm_mq" and r.levelno >= level]


# ################################################################################################
# 5. Errors that say what to do


async def test_a_send_to_a_missing_queue_or_through_an_unknown_connection_says_what_to_do(qm, tmp_path):
    base, _ = server_with_services(tmp_path)
    async with run_server(base) as server:
        async with admin_client(server) as client:
            await create(client, "definition_ibm_mq", **DEFINITION)
            await create(client, "outgoing_ibm_mq", name="out", definition="QM1 dev")
            await create(client, "outgoing_ibm_mq", name="other", definition="QM1 dev")

            reply = await server.invoke("mq.send.catching", {"conn": "out", "queue": "NO.SUCH.Q", "data": "x"})
            assert reply["error_type"] == "MQError", reply
            assert "NO.SUCH.Q" in reply["error"] and "2085" in reply["error"], reply
            assert "MQRC_UNKNOWN_OBJECT_NAME" in reply["error"] and "outgoing_ibm_mq 'out'" in reply["error"]

            reply = await server.invoke("mq.send.catching", {"conn": "nope", "queue": "DEV.QUEUE.1", "data": "x"})
            assert reply["error_type"] == "ConnectionNotFound", reply
            assert "'nope'" in reply["error"] and "'out'" in reply["error"] and "'other'" in reply["error"], reply

            reply = await server.invoke("mq.send.catching", {"conn": "out", "queue": "NO.SUCH.Q", "data": "x",
                                                             "raise_on_error": False})
            assert reply == {"msg_id": None}

            reply = await server.invoke("mq.send.catching", {"conn": "out", "queue": "DEV.QUEUE.1", "data": "ok"})
            assert [m.msg_id.hex() for m in qm.messages("DEV.QUEUE.1")] == [reply["msg_id"]]


async def test_an_outage_is_logged_once_however_often_services_send_and_its_end_once(qm, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    base, _ = server_with_services(tmp_path)
    async with run_server(base) as server:
        async with admin_client(server) as client:
            await create(client, "definition_ibm_mq", **DEFINITION)
            await create(client, "outgoing_ibm_mq", name="out", definition="QM1 dev")
            send = {"conn": "out", "queue": "DEV.QUEUE.2", "data": "x"}
            assert "msg_id" in await server.invoke("mq.send.catching", send)
            qm.stop()
            for _ in range(4):
                reply = await server.invoke("mq.send.catching", send)
                assert "2009" in reply["error"] or "2059" in reply["error"], reply
            qm.start()
            assert "msg_id" in await server.invoke("mq.send.catching", send)
            assert "msg_id" in await server.invoke("mq.send.catching", send)

    errors = [r.getMessage() for r in plugin_records(caplog, logging.ERROR)]
    assert len([e for e in errors if "cannot connect" in e]) == 1, errors
    assert "MQRC_Q_MGR_NOT_AVAILABLE" in errors[0] and "is it running" in errors[0]
    again = [r.getMessage() for r in plugin_records(caplog) if "again" in r.getMessage()]
    assert len(again) == 1 and "outgoing_ibm_mq 'out'" in again[0], again
    assert len(qm.messages("DEV.QUEUE.2")) == 3


# ################################################################################################
# 6. No MQ library


async def test_without_the_mq_client_the_server_starts_and_says_what_to_install(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with no_mq_library():
        with pytest.raises(ImportError, match="libmqm_r"):
            import ibmmq  # noqa: F401
        base, _ = server_with_services(tmp_path)
        async with run_server(base) as server:
            async with admin_client(server) as client:
                await create(client, "definition_ibm_mq", **DEFINITION)
                await create(client, "channel_ibm_mq", name="ch", definition="QM1 dev", queue="DEV.QUEUE.1",
                             service="mq.record")
                await create(client, "outgoing_ibm_mq", name="out", definition="QM1 dev")

                with trio.fail_after(10):
                    while (await listener_state(client, "ch"))["state"] != "backing_off":
                        await trio.sleep(0.05)
                state = await listener_state(client, "ch")
                assert "no MQ client library" in state["last_error"] and "libmqm_r" in state["last_error"], state

                reply = await server.invoke("mq.send.catching", {"conn": "out", "queue": "DEV.QUEUE.1",
                                                                 "data": "x"})
                assert "no MQ client library" in reply["error"] and "LD_LIBRARY_PATH" in reply["error"], reply

    errors = [r.getMessage() for r in plugin_records(caplog, logging.ERROR) if "no MQ client library" in
              r.getMessage()]
    assert len(errors) == 1, errors
    assert "libmqm_r.so" in errors[0] and "redistributable client" in errors[0] and "restart" in errors[0]
    assert "The server runs without IBM MQ meanwhile" in errors[0]


# ################################################################################################
# 8. logs/ibm-mq.log has the low-level lines, server.log does not


async def test_the_low_level_lines_go_to_ibm_mq_log_and_not_to_server_log(qm, tmp_path):
    base, record = server_with_services(tmp_path)
    with server_log() as log:
        async with run_server(base) as server:
            async with admin_client(server) as client:
                await create(client, "definition_ibm_mq", **{**DEFINITION, "max_chars_printed": 12})
                await create(client, "channel_ibm_mq", name="ch", definition="QM1 dev", queue="DEV.QUEUE.1",
                             service="mq.record")
                await create(client, "channel_ibm_mq", name="failing", definition="QM1 dev", queue="DEV.QUEUE.3",
                             service="mq.fail", backout_threshold=1)
                await create(client, "outgoing_ibm_mq", name="out", definition="QM1 dev")
                qm.put("DEV.QUEUE.1", b"incoming-0123456789-the-rest")
                qm.put("DEV.QUEUE.3", b"poisoned-0123456789-the-rest")
                await server.invoke("mq.send.catching", {"conn": "out", "queue": "DEV.QUEUE.2",
                                                         "data": "outgoing-0123456789-the-rest"})
                await wait_for(lambda: len(recorded(record)) == 2 and qm.depth(BACKOUT_QUEUE) == 1, "both handled")

    mq_log = (base / "logs" / "ibm-mq.log").read_text()
    for line in ("channel_ibm_mq 'ch': connected to queue manager QM1 at localhost(1414)",
                 "outgoing_ibm_mq 'out': connected to queue manager QM1",
                 "channel_ibm_mq 'ch': got message ", "(backout count 0): b'incoming-012'",
                 "outgoing_ibm_mq 'out': put message ", "on DEV.QUEUE.2: b'outgoing-012'",
                 "moved from DEV.QUEUE.3 to DEV.BACKOUT.Q after 1 deliveries",
                 "channel_ibm_mq 'failing': reading DEV.QUEUE.3; backout after 1 deliveries to DEV.BACKOUT.Q"):
        assert line in mq_log, line
    assert "incoming-0123" not in mq_log and "the-rest" not in mq_log  # max_chars_printed
    assert "service mq.fail failed" in log.text  # server.log has the summary
    for low_level in ("got message", "put message", "opened queue", "moved from", "incoming-", "outgoing-",
                      "connected to"):
        assert low_level not in log.text, low_level


# ################################################################################################
# 9. Enmasse with Zato's keys


ENMASSE = """\
def_jms_wmq:
  - name: QM1 from Zato
    host: $MQ_HOST
    port: 1414
    queue_manager: QM1
    channel: DEV.APP.SVRCONN
    username: app
    password: {password}
    cache_open_send_queues: true
    cache_open_receive_queues: true
    use_shared_connections: false
    needs_mcd: false
    use_jms: false
    max_chars_printed: 50
channel_jms_wmq:
  - name: zato channel
    def_name: QM1 from Zato
    queue: DEV.QUEUE.1
    service_name: mq.record
    is_active: true
outconn_jms_wmq:
  - name: zato outconn
    def_name: QM1 from Zato
    delivery_mode: 1
    priority: 3
"""


async def test_an_enmasse_file_with_zatos_keys_creates_working_objects(qm, tmp_path, monkeypatch):
    base, record = server_with_services(tmp_path)
    config = tmp_path / "zato-export.yaml"
    config.write_text(textwrap.dedent(ENMASSE.format(password=PASSWORD)))
    result = CliRunner().invoke(cli, ["enmasse", "import", str(base), str(config)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "3 created" in result.output, result.output

    monkeypatch.setenv("MQ_HOST", "127.0.0.1")
    async with run_server(base) as server:
        definition = server.config_objects["definition_ibm_mq"]["QM1 from Zato"]
        assert definition["host"] == "127.0.0.1" and "cache_open_send_queues" not in definition
        assert server.config_objects["channel_ibm_mq"]["zato channel"]["service"] == "mq.record"
        qm.put("DEV.QUEUE.1", b"through enmasse")
        await wait_for(lambda: recorded(record), "the imported channel")
        assert recorded(record)[0]["data"] == "through enmasse"

        reply = await server.invoke("mq.send.catching", {"conn": "zato outconn", "queue": "DEV.QUEUE.2",
                                                         "data": "out through enmasse"})
        [sent] = qm.messages("DEV.QUEUE.2")
        assert sent.msg_id.hex() == reply["msg_id"] and sent.data == b"out through enmasse"
        assert (sent.md.Persistence, sent.md.Priority) == (0, 3)  # delivery_mode 1: not persistent
