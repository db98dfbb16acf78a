""" The IBM MQ admin API calls and the `zato ibm-mq` commands, against an in-process server on
the stand-in queue manager. """

from __future__ import annotations

import click
import httpx
import pytest
import trio
from click.testing import CliRunner

from zato.cli import add_plugin_commands, cli
from zato.plugin_api import run_server

from mq_fixtures import DEFINITION, StandIn, admin_client, create, make_queue_manager, mq_server_dir

SEND = "/zato/api/ibm-mq/outgoing/{}/send"
PING = "/zato/api/ibm-mq/definitions/{}/ping"


@pytest.fixture
def qm():
    with StandIn(make_queue_manager()) as qm:
        yield qm


async def configured(client):
    await create(client, "definition_ibm_mq", **DEFINITION)
    await create(client, "outgoing_ibm_mq", name="out", definition="QM1 dev")


async def test_send_puts_a_message_and_answers_its_msg_id(qm, tmp_path):
    async with run_server(mq_server_dir(tmp_path / "server")) as server:
        async with admin_client(server) as client:
            await configured(client)
            reply = await client.post(SEND.format("out"), json={"queue": "DEV.QUEUE.2", "data": "from the API",
                                                                "correlation_id": "c-1", "priority": 8})
            assert reply.status_code == 200, reply.text
            [sent] = qm.messages("DEV.QUEUE.2")
            assert reply.json() == {"msg_id": sent.msg_id.hex()}
            assert sent.data == b"from the API" and sent.md.Priority == 8
            assert sent.correl_id == b"c-1".ljust(24, b"\x00")

            reply = await client.post(SEND.format("nope"), json={"queue": "DEV.QUEUE.2", "data": "x"})
            assert reply.status_code == 404 and "'out'" in reply.text, reply.text
            reply = await client.post(SEND.format("out"), json={"queue": "NO.SUCH.Q", "data": "x"})
            assert reply.status_code == 502 and "NO.SUCH.Q" in reply.text and "2085" in reply.text, reply.text
            reply = await client.post(SEND.format("out"), json={"data": "x"})
            assert reply.status_code == 400 and "queue" in reply.text, reply.text


async def test_ping_answers_with_the_queue_managers_name_or_why_not(qm, tmp_path):
    async with run_server(mq_server_dir(tmp_path / "server")) as server:
        async with admin_client(server) as client:
            await configured(client)
            reply = await client.post(PING.format("QM1%20dev"))
            assert reply.status_code == 200, reply.text
            answer = reply.json()
            assert (answer["ok"], answer["queue_manager"]) == (True, "QM1") and answer["took_ms"] >= 0

            qm.stop()
            answer = (await client.post(PING.format("QM1%20dev"))).json()
            assert answer["ok"] is False, answer
            assert "2059" in answer["error"] and "MQRC_Q_MGR_NOT_AVAILABLE" in answer["error"], answer
            qm.start()
            assert (await client.post(PING.format("QM1%20dev"))).json()["ok"] is True

            reply = await client.post(PING.format("unknown"))
            assert reply.status_code == 404 and "'QM1 dev'" in reply.text, reply.text


async def test_both_calls_need_admin_credentials(qm, tmp_path):
    async with run_server(mq_server_dir(tmp_path / "server")) as server:
        async with admin_client(server) as client:
            await configured(client)
        async with httpx.AsyncClient(base_url=server.address, timeout=10) as anonymous:
            reply = await anonymous.post(SEND.format("out"), json={"queue": "DEV.QUEUE.2", "data": "x"})
            assert reply.status_code == 401, reply.text
            assert (await anonymous.post(PING.format("QM1%20dev"))).status_code == 401
        async with httpx.AsyncClient(base_url=server.address, timeout=10, auth=("admin", "wrong")) as wrong:
            assert (await wrong.post(PING.format("QM1%20dev"))).status_code == 401
    assert qm.depth("DEV.QUEUE.2") == 0


def zato(*args):
    """ `zato ...` in this process, with the commands the plugins enabled in the server directory
    add (as `zato.cli.main` does), on a copy of the command group so that other tests see none. """
    argv = [str(arg) for arg in args]
    group = click.Group("zato", commands=dict(cli.commands), callback=cli.callback)
    add_plugin_commands(group, argv)
    return CliRunner().invoke(group, argv)


async def test_the_zato_ibm_mq_commands_send_and_ping_through_the_running_server(qm, tmp_path):
    base = mq_server_dir(tmp_path / "server")
    async with run_server(base) as server:
        async with admin_client(server) as client:
            await configured(client)

            result = await trio.to_thread.run_sync(zato, "ibm-mq", "send", base, "out", "DEV.QUEUE.1", "--data",
                                                   "x from the CLI", "--correlation-id", "cli-1")
            assert result.exit_code == 0, result.output
            [sent] = qm.messages("DEV.QUEUE.1")
            assert result.output.strip() == f"sent to DEV.QUEUE.1 through 'out': MsgId {sent.msg_id.hex()}"
            assert sent.data == b"x from the CLI" and sent.correl_id == b"cli-1".ljust(24, b"\x00")

            result = await trio.to_thread.run_sync(zato, "ibm-mq", "ping", base, "QM1 dev")
            assert result.exit_code == 0, result.output
            assert "'QM1 dev': queue manager QM1 answered in" in result.output

            qm.stop()
            result = await trio.to_thread.run_sync(zato, "ibm-mq", "ping", base, "QM1 dev")
            assert result.exit_code == 1, result.output
            assert "'QM1 dev' did not answer" in result.output and "2059" in result.output

            result = await trio.to_thread.run_sync(zato, "ibm-mq", "send", base, "nope", "DEV.QUEUE.1", "--data", "x")
            assert result.exit_code == 1 and "HTTP 404" in result.output and "'out'" in result.output, result.output

    result = zato("ibm-mq", "ping", base, "QM1 dev")  # the server is gone
    assert result.exit_code == 1 and "no server is running" in result.output, result.output
