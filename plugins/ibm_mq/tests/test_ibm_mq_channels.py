""" IBM MQ channels beyond the article, on the stand-in queue manager under the real `ibmmq`
layer: backouts and the backout queue, the dead-letter queue, a queue manager restart mid-stream,
live edits, competing consumers and errors that say what to do. """

from __future__ import annotations

import logging
from urllib.parse import quote

import pytest
import trio

from zato.plugin_api import run_server

from mq_fixtures import (
    API, BACKOUT_QUEUE, DEAD_LETTER_QUEUE, DEFINITION, PASSWORD, USER, StandIn, admin_client, create,
    listener_state, make_queue_manager, mq_server_dir, recorded, recording_services, wait_for,
)
from zato_plugin_ibm_mq.testing import QueueManagerStandIn


@pytest.fixture
def qm():
    with StandIn(make_queue_manager()) as qm:
        yield qm


async def start_channel(client, name="ch", queue="DEV.QUEUE.1", service="mq.record", **fields):
    await create(client, "definition_ibm_mq", **DEFINITION)
    await create(client, "channel_ibm_mq", name=name, definition="QM1 dev", queue=queue, service=service, **fields)


async def wait_state(client, name, state, timeout=10.0):
    async def current():
        return (await listener_state(client, name))["state"]
    with trio.fail_after(timeout):
        while await current() != state:
            await trio.sleep(0.05)
    return await listener_state(client, name)


# ################################################################################################
# 1. A failing service: backouts, then the backout queue


async def test_a_failing_message_is_backed_out_then_moved_to_the_queues_backout_queue(qm, tmp_path):
    base = mq_server_dir(tmp_path / "server")
    record = recording_services(base, tmp_path / "record.jsonl")
    async with run_server(base) as server:
        async with admin_client(server) as client:
            await start_channel(client, service="mq.fail")
            put = qm.put("DEV.QUEUE.1", b"poison", CorrelId=b"corr-42")
            await wait_for(lambda: qm.depth(BACKOUT_QUEUE) == 1, "the message on the backout queue")

            # one delivery per attempt, MQ counting them: BOTHRESH 3 of DEV.QUEUE.1
            assert [(r["data"], r["backout_count"]) for r in recorded(record)] == [
                ("poison", 0), ("poison", 1), ("poison", 2)]
            assert {r["msg_id"] for r in recorded(record)} == {put.MsgId.hex()}
            [moved] = qm.messages(BACKOUT_QUEUE)
            assert moved.data == b"poison" and moved.msg_id == put.MsgId
            assert moved.correl_id == b"corr-42".ljust(24, b"\x00")
            assert qm.depth("DEV.QUEUE.1") == 0 and qm.depth(DEAD_LETTER_QUEUE) == 0
            state = await listener_state(client, "ch")
            assert (state["received"], state["failed"], state["retried"], state["dead_lettered"],
                    state["succeeded"]) == (3, 3, 2, 1, 0), state
            assert state["state"] == "running"


async def test_the_channels_own_backout_threshold_and_queue_override_the_queues(qm, tmp_path):
    base = mq_server_dir(tmp_path / "server")
    record = recording_services(base, tmp_path / "record.jsonl")
    async with run_server(base) as server:
        async with admin_client(server) as client:
            await start_channel(client, service="mq.fail", backout_threshold=2, backout_queue="DEV.QUEUE.3")
            put = qm.put("DEV.QUEUE.1", b"twice only")
            await wait_for(lambda: qm.depth("DEV.QUEUE.3") == 1, "the message on the channel's backout queue")
            assert [r["backout_count"] for r in recorded(record)] == [0, 1]
            [moved] = qm.messages("DEV.QUEUE.3")
            assert (moved.data, moved.msg_id) == (b"twice only", put.MsgId)
            assert qm.depth(BACKOUT_QUEUE) == 0 and qm.depth("DEV.QUEUE.1") == 0
            state = await listener_state(client, "ch")
            assert (state["failed"], state["retried"], state["dead_lettered"]) == (2, 1, 1), state


async def test_without_a_backout_queue_the_message_goes_to_the_dead_letter_queue_with_an_mqdlh(qm, tmp_path):
    qm.define_queue("NO.BOQ.Q", backout_threshold=2)
    base = mq_server_dir(tmp_path / "server")
    recording_services(base, tmp_path / "record.jsonl")
    async with run_server(base) as server:
        async with admin_client(server) as client:
            await start_channel(client, queue="NO.BOQ.Q", service="mq.fail")
            put = qm.put("NO.BOQ.Q", "to the DLQ", CorrelId=b"c-dlq")  # text: MQSTR
            await wait_for(lambda: qm.depth(DEAD_LETTER_QUEUE) == 1, "the message on the dead-letter queue")
            [moved] = qm.messages(DEAD_LETTER_QUEUE)
            import ibmmq
            dlh = ibmmq.DLH()
            size = dlh.get_length()
            dlh.unpack(moved.data[:size])
            assert dlh.Reason == ibmmq.CMQC.MQRC_BACKOUT_THRESHOLD_REACHED
            assert dlh.DestQName.rstrip(b" \x00") == b"NO.BOQ.Q"
            assert dlh.DestQMgrName.rstrip(b" \x00") == b"QM1"
            assert dlh.Format == ibmmq.CMQC.MQFMT_STRING and dlh.CodedCharSetId == 1208  # what the data is
            assert moved.md.Format.rstrip(b" \x00") == ibmmq.CMQC.MQFMT_DEAD_LETTER_HEADER.rstrip(b" \x00")
            assert moved.data[size:] == b"to the DLQ"
            assert moved.msg_id == put.MsgId and moved.correl_id == b"c-dlq".ljust(24, b"\x00")
            assert qm.depth("NO.BOQ.Q") == 0 and qm.depth(BACKOUT_QUEUE) == 0


async def test_with_nowhere_to_put_a_failing_message_the_channel_refuses_to_start(tmp_path):
    qm = QueueManagerStandIn("QM1", channels=["DEV.APP.SVRCONN"], listeners=["localhost(1414)"],
                             users={USER: PASSWORD})  # no DEADQ
    qm.define_queue("DEV.QUEUE.1", backout_threshold=3)  # no BOQNAME
    with StandIn(qm):
        base = mq_server_dir(tmp_path / "server")
        record = recording_services(base, tmp_path / "record.jsonl")
        async with run_server(base) as server:
            async with admin_client(server) as client:
                qm.put("DEV.QUEUE.1", b"keep me")
                await start_channel(client)
                state = await wait_state(client, "ch", "backing_off")
                error = state["last_error"]
                assert "DEV.QUEUE.1" in error and "backout_queue" in error and "BOQNAME" in error, error
                assert "dead-letter queue" in error and "QM1" in error, error
                await trio.sleep(0.3)
                assert [m.data for m in qm.messages("DEV.QUEUE.1")] == [b"keep me"]
                assert recorded(record) == []


# ################################################################################################
# 2. A queue manager restart mid-stream


async def test_a_queue_manager_restart_mid_stream_loses_nothing_and_handles_nothing_twice(qm, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    base = mq_server_dir(tmp_path / "server")
    record = recording_services(base, tmp_path / "record.jsonl")
    release = tmp_path / "release"
    async with run_server(base) as server:
        async with admin_client(server) as client:
            ids = [qm.put("DEV.QUEUE.1", f"m-{n:04d}".encode()).MsgId.hex() for n in range(200)]
            await start_channel(client, service="mq.hold")
            # mq.hold records each message, and on m-0050's first delivery waits for the test to stop
            # the queue manager, then fails (the message is in hand when the queue manager goes)
            await wait_for(lambda: (tmp_path / "holding").exists(), "m-0050 in hand")
            assert len(recorded(record)) == 50
            qm.stop()
            release.write_text("")
            await wait_for(lambda: "cannot connect" in caplog.text, "a failed reconnect")
            await trio.sleep(0.5)
            qm.start()
            await wait_for(lambda: len(recorded(record)) >= 200 and qm.depth("DEV.QUEUE.1") == 0,
                           "every message handled", timeout=10)
            await trio.sleep(0.3)  # anything handled twice would show now
            handled = recorded(record)
            assert sorted(r["msg_id"] for r in handled) == sorted(ids)  # each once
            assert [r["backout_count"] for r in handled if r["data"] == "m-0050"] == [1]  # backed out by the stop
            assert all(r["backout_count"] == 0 for r in handled if r["data"] != "m-0050")

    ours = [r for r in caplog.records if r.name == "zato.ibm_mq"]
    outage = [r.getMessage() for r in ours if "cannot connect" in r.getMessage()]
    assert len(outage) == 1, outage
    assert "MQRC_Q_MGR_NOT_AVAILABLE" in outage[0] and "channel_ibm_mq 'ch'" in outage[0]
    # m-0050's unit of work went with the connection: nothing to back out, and no error about it
    assert not [r for r in caplog.records if "nack failed" in r.getMessage()]
    again = [r.getMessage() for r in ours if "connected to" in r.getMessage() and "again" in r.getMessage()]
    assert len(again) == 1, again
    mq_log = (base / "logs" / "ibm-mq.log").read_text()
    assert "MQRC_CONNECTION_BROKEN" in mq_log and "dropped" in mq_log


# ################################################################################################
# 3. Live edits


async def test_editing_a_channels_queue_moves_it_to_the_new_queue(qm, tmp_path):
    base = mq_server_dir(tmp_path / "server")
    record = recording_services(base, tmp_path / "record.jsonl")
    async with run_server(base) as server:
        async with admin_client(server) as client:
            await start_channel(client)
            qm.put("DEV.QUEUE.1", b"before")
            await wait_for(lambda: len(recorded(record)) == 1, "the first message")
            reply = await client.patch(f"{API}/objects/channel_ibm_mq/ch", json={"queue": "DEV.QUEUE.3"})
            assert reply.status_code == 200, reply.text
            qm.put("DEV.QUEUE.3", b"after")
            await wait_for(lambda: len(recorded(record)) == 2, "the message on the new queue")
            qm.put("DEV.QUEUE.1", b"not read")
            await trio.sleep(1.0)
            assert [(r["data"], r["queue"]) for r in recorded(record)] == [("before", "DEV.QUEUE.1"),
                                                                            ("after", "DEV.QUEUE.3")]
            assert [m.data for m in qm.messages("DEV.QUEUE.1")] == [b"not read"]


async def test_editing_the_definition_reaches_the_running_channel_and_the_outgoing_connection(qm, tmp_path):
    base = mq_server_dir(tmp_path / "server")
    record = recording_services(base, tmp_path / "record.jsonl")
    async with run_server(base) as server:
        async with admin_client(server) as client:
            await start_channel(client)
            await create(client, "outgoing_ibm_mq", name="out", definition="QM1 dev")
            await wait_state(client, "ch", "running")
            await server.invoke("mq.send", {"queue": "DEV.QUEUE.2", "data": "first"})

            secret = f"{API}/objects/definition_ibm_mq/{quote('QM1 dev')}/secrets/password"
            assert (await client.put(secret, json={"value": "wrong"})).status_code in (200, 204)
            state = await wait_state(client, "ch", "backing_off")
            assert "2035" in state["last_error"] and "MQRC_NOT_AUTHORIZED" in state["last_error"]
            with pytest.raises(Exception, match="2035"):
                await server.invoke("mq.send", {"queue": "DEV.QUEUE.2", "data": "refused"})

            assert (await client.put(secret, json={"value": PASSWORD})).status_code in (200, 204)
            await wait_state(client, "ch", "running")
            qm.put("DEV.QUEUE.1", b"after the fix")
            await wait_for(lambda: len(recorded(record)) == 1, "the channel reconnected")
            await server.invoke("mq.send", {"queue": "DEV.QUEUE.2", "data": "second"})
            assert [m.data for m in qm.messages("DEV.QUEUE.2")] == [b"first", b"second"]


# ################################################################################################
# 4. Competing consumers


async def test_two_servers_compete_for_one_queue_and_handle_each_message_once(qm, tmp_path):
    record = tmp_path / "record.jsonl"
    bases = []
    for n in (1, 2):
        base = mq_server_dir(tmp_path / f"server{n}")
        recording_services(base, record, server_name=f"server{n}", delay=0.01)
        bases.append(base)
    ids = [qm.put("DEV.QUEUE.1", f"c-{n:03d}".encode()).MsgId.hex() for n in range(120)]
    async with run_server(bases[0]) as one, run_server(bases[1]) as two:
        async with admin_client(one) as client_one, admin_client(two) as client_two:
            for client in (client_one, client_two):
                await start_channel(client, service="mq.slow")
            await wait_for(lambda: len(recorded(record)) >= 120 and qm.depth("DEV.QUEUE.1") == 0,
                           "every message handled", timeout=10)
            await trio.sleep(0.2)
    handled = recorded(record)
    assert sorted(r["msg_id"] for r in handled) == sorted(ids)
    by_server = {name: sum(1 for r in handled if r["server"] == name) for name in ("server1", "server2")}
    assert all(count >= 10 for count in by_server.values()), by_server


# ################################################################################################
# 5. Errors that say what to do


async def test_a_wrong_password_and_an_unknown_queue_say_what_to_do(qm, tmp_path):
    base = mq_server_dir(tmp_path / "server")
    recording_services(base, tmp_path / "record.jsonl")
    async with run_server(base) as server:
        async with admin_client(server) as client:
            await create(client, "definition_ibm_mq", **{**DEFINITION, "password": "not-it"})
            await create(client, "definition_ibm_mq", **{**DEFINITION, "name": "good"})
            await create(client, "channel_ibm_mq", name="bad password", definition="QM1 dev", queue="DEV.QUEUE.1",
                         service="mq.record")
            await create(client, "channel_ibm_mq", name="no queue", definition="good", queue="NO.SUCH.Q",
                         service="mq.record")
            state = await wait_state(client, "bad password", "backing_off")
            assert "2035" in state["last_error"] and "MQRC_NOT_AUTHORIZED" in state["last_error"], state
            assert "check the definition's username and password" in state["last_error"], state
            assert "channel_ibm_mq 'bad password'" in state["last_error"], state
            state = await wait_state(client, "no queue", "backing_off")
            assert "2085" in state["last_error"] and "MQRC_UNKNOWN_OBJECT_NAME" in state["last_error"], state
            assert "NO.SUCH.Q" in state["last_error"] and "check the queue's name" in state["last_error"], state
