""" WebSocket channels in a running server, with the test kit's client: sessions with Basic Auth and
API keys, invoke-service, errors as Zato frames them, server requests, broadcasts, admin listing,
invoking and disconnecting, live edits, oversized and non-JSON frames, back-pressure, Zato's
enmasse rows. """

from __future__ import annotations

import json
import socket
import textwrap

import click
import pytest
import trio
from click.testing import CliRunner

from wsx_fixtures import API_KEY, PASSWORD, SERVICES, USER, admin, create_channel, wsx_server
from zato.cli import add_plugin_commands, cli
from zato.plugin_api import create_test_server_dir, run_server
from zato_plugin_wsx.connection import MAX_IN_FLIGHT
from zato_plugin_wsx.testing import WSXClient, WSXClosed, WSXRefused


async def test_a_session_then_invoke_returns_the_services_response(tmp_path):
    async with wsx_server(tmp_path) as server:
        await create_channel(server)
        with trio.fail_after(20):
            async with await WSXClient.connect(server.address, "/ws/test") as client:
                opened = await client.create_session(USER, PASSWORD, client_id="crm-1", client_name="CRM")
                assert opened["meta"]["msg_type"] == "zwsx.rspa" and opened["meta"]["status"] == 200
                assert opened["data"]["token"].startswith("zwsxt.") and opened["meta"]["in_reply_to"] == "test.1"
                reply = await client.invoke({"customer_id": 1})
    assert reply["meta"]["msg_type"] == "zwsx.rspok" and reply["meta"]["status"] == 200
    assert reply["meta"]["in_reply_to"] == "test.2"
    data = reply["data"]
    assert data["echo"] == {"customer_id": 1} and data["channel"] == "wsx.test"
    assert data["pub_client_id"].startswith("ws.") and data["ext_client_id"] == "crm-1" and data["user"] == USER
    assert (data["channel_type"], data["channel_name"]) == ("web-socket", "wsx.test")  # Zato's self.channel


async def test_an_api_key_opens_a_session_too(tmp_path):
    async with wsx_server(tmp_path) as server:
        await create_channel(server, security="wsx.key")
        with trio.fail_after(20):
            async with await WSXClient.connect(server.address, "/ws/test") as client:
                assert (await client.create_session(None, API_KEY))["meta"]["msg_type"] == "zwsx.rspa"
            wrong = await WSXClient.connect(server.address, "/ws/test")
            refused = await wrong.create_session(None, "not the key")
            with pytest.raises(WSXClosed) as closed:
                await wrong.receive()
    assert refused["meta"]["msg_type"] == "zwsx.merr" and refused["meta"]["status"] == 403
    assert refused["data"] == "You are not authorized to access this resource"
    assert closed.value.code == 1008


@pytest.mark.parametrize("secret", ["wrong", None])
async def test_wrong_credentials_are_refused_and_the_connection_closed(tmp_path, secret):
    async with wsx_server(tmp_path) as server:
        await create_channel(server)
        with trio.fail_after(20):
            client = await WSXClient.connect(server.address, "/ws/test")
            refused = await client.create_session(USER, secret)
            with pytest.raises(WSXClosed) as closed:
                await client.receive()
    assert refused["meta"]["msg_type"] == "zwsx.merr" and "in_reply_to" not in refused["meta"]
    assert closed.value.code == 1008


async def test_requests_before_a_session_or_with_a_bad_token_are_refused(tmp_path):
    async with wsx_server(tmp_path) as server:
        await create_channel(server)
        with trio.fail_after(20):
            early = await WSXClient.connect(server.address, "/ws/test")
            await early.send_frame("invoke-service", {"x": 1})
            refused = await early.receive()
            with pytest.raises(WSXClosed):
                await early.receive()
            client = await WSXClient.connect(server.address, "/ws/test")
            await client.create_session(USER, PASSWORD)
            await client.send_frame("invoke-service", {"x": 1}, token="zwsxt.guessed")
            bad_token = await client.receive()
            with pytest.raises(WSXClosed):
                await client.receive()
    assert refused["meta"]["msg_type"] == bad_token["meta"]["msg_type"] == "zwsx.merr"


async def test_service_errors_are_zato_error_frames_with_the_cid_and_no_traceback(tmp_path, caplog):
    async with wsx_server(tmp_path) as server:
        await create_channel(server, service="wsx.failing")
        with trio.fail_after(20):
            async with await WSXClient.connect(server.address, "/ws/test") as client:
                await client.create_session(USER, PASSWORD)
                failed = await client.invoke({})
                forbidden = await client.invoke({"forbidden": True})
                still_open = await client.invoke({})  # the connection goes on after errors
    assert failed["meta"]["msg_type"] == "zwsx.rsperr" and failed["meta"]["status"] == 500
    assert failed["meta"]["error_message"] == "Internal server error"
    assert failed["data"] == {"cid": failed["meta"]["id"]} and failed["meta"]["in_reply_to"] == "test.2"
    assert "secret detail" not in json.dumps(failed) and "secret detail" in caplog.text
    assert f"cid={failed['meta']['id']}" in caplog.text
    assert forbidden["meta"]["status"] == 403 and forbidden["meta"]["error_message"] == "not for you"
    assert still_open["meta"]["msg_type"] == "zwsx.rsperr"


async def test_malformed_and_oversized_frames_get_a_clear_error_and_the_connection_survives(tmp_path):
    async with wsx_server(tmp_path) as server:
        await create_channel(server, max_message_size=1000)
        with trio.fail_after(20):
            async with await WSXClient.connect(server.address, "/ws/test") as client:
                await client.create_session(USER, PASSWORD)
                await client.send_text("not json {")
                not_json = await client.receive()
                await client.send_text(json.dumps({"meta": {"action": "invoke-service"}, "data": {}}))
                no_id = await client.receive()
                await client.send_frame("dance", {})
                bad_action = await client.receive()
                await client.send_text("x" * 1001)
                too_big = await client.receive()
                works = await client.invoke({"still": "here"})
    assert not_json["meta"]["status"] == 400 and "not JSON" in not_json["data"]
    assert no_id["meta"]["status"] == 400 and "meta.id" in no_id["data"]
    assert bad_action["meta"]["msg_type"] == "zwsx.rsperr" and bad_action["meta"]["in_reply_to"] == "test.2"
    assert "'dance' is not one of" in bad_action["meta"]["error_message"]
    assert too_big["meta"]["status"] == 413 and "max_message_size of 1000" in too_big["data"]
    assert works["data"]["echo"] == {"still": "here"}


async def test_a_service_asks_the_client_and_gets_its_answer(tmp_path):
    async with wsx_server(tmp_path) as server:
        await create_channel(server, service="wsx.ask-the-client")
        with trio.fail_after(20):
            async with await WSXClient.connect(server.address, "/ws/test") as client:
                await client.create_session(USER, PASSWORD)
                msg_id = await client.send_frame("invoke-service", {})
                request = await client.next_request()
                assert request["meta"]["msg_type"] == "zwsx.rqc" and request["data"] == {"question": "ready?"}
                await client.respond(request, {"ready": True})
                reply = await client.reply_to(msg_id)
    assert reply["data"] == {"answer": {"response": {"ready": True}}}


async def test_admin_lists_invokes_and_disconnects_connections(tmp_path):
    async with wsx_server(tmp_path) as server:
        await create_channel(server)
        await create_channel(server, name="other", path="/ws/other")
        with trio.fail_after(30):
            async with admin(server) as api, \
                    await WSXClient.connect(server.address, "/ws/test") as first, \
                    await WSXClient.connect(server.address, "/ws/other") as second:
                await first.create_session(USER, PASSWORD, client_id="alpha", client_name="Alpha")
                await second.create_session(USER, PASSWORD, client_id="beta")
                listed = (await api.get("/zato/api/wsx/connections")).json()["connections"]
                only = (await api.get("/zato/api/wsx/connections", params={"ext_client_id": "alpha"})).json()
                of_channel = (await api.get("/zato/api/wsx/connections", params={"channel": "other"})).json()
                alpha = only["connections"][0]["pub_client_id"]
                async with trio.open_nursery() as nursery:
                    async def answer() -> None:
                        request = await first.next_request()
                        await first.respond(request, f"pong to {request['data']}")
                    nursery.start_soon(answer)
                    invoked = await api.post(f"/zato/api/wsx/connections/{alpha}/invoke", json={"data": "ping?"})
                silent = await api.post(f"/zato/api/wsx/connections/{alpha}/invoke", json={"data": 1, "timeout": 0.3})
                gone = await api.post(f"/zato/api/wsx/connections/{alpha}/disconnect")
                with pytest.raises(WSXClosed) as closed:
                    await first.receive_until(lambda frame: False)
                after = (await api.get("/zato/api/wsx/connections")).json()["connections"]
                unknown = await api.post(f"/zato/api/wsx/connections/{alpha}/disconnect")
    assert {c["ext_client_id"] for c in listed} == {"alpha", "beta"}
    row = next(c for c in listed if c["ext_client_id"] == "alpha")
    assert row["ext_client_name"] == "Alpha" and row["channel_name"] == "wsx.test" and row["user"] == USER
    assert row["peer_address"].startswith("127.0.0.1:") and row["server_pid"] > 0 and row["connection_time"]
    assert [c["ext_client_id"] for c in only["connections"]] == ["alpha"]
    assert [c["ext_client_id"] for c in of_channel["connections"]] == ["beta"]
    assert invoked.status_code == 200 and invoked.json() == {"response": "pong to ping?"}
    assert silent.status_code == 504 and "did not answer within 0.3 s" in silent.text
    assert gone.status_code == 200 and closed.value.code == 4005
    assert [c["ext_client_id"] for c in after] == ["beta"] and unknown.status_code == 404


def zato(*args):
    """ `zato ...` in this process with the commands of the plugins, on a copy of the command group. """
    argv = [str(arg) for arg in args]
    group = click.Group("zato", commands=dict(cli.commands), callback=cli.callback)
    add_plugin_commands(group, argv)
    return CliRunner().invoke(group, argv)


async def test_the_zato_wsx_commands_list_invoke_and_disconnect_through_the_running_server(tmp_path):
    async with wsx_server(tmp_path) as server:
        await create_channel(server)
        base = server.paths.base_dir
        with trio.fail_after(30):
            async with await WSXClient.connect(server.address, "/ws/test") as client:
                await client.create_session(USER, PASSWORD, client_id="cli-client", client_name="From the CLI")
                table = await trio.to_thread.run_sync(zato, "wsx", "connections", base)
                as_json = await trio.to_thread.run_sync(zato, "wsx", "connections", base, "--client-id", "cli-client",
                                                        "--json")
                none = await trio.to_thread.run_sync(zato, "wsx", "connections", base, "--channel", "no.such")
                [row] = json.loads(as_json.output)
                async with trio.open_nursery() as nursery:
                    async def answer() -> None:
                        request = await client.next_request()
                        await client.respond(request, {"got": request["data"]})
                    nursery.start_soon(answer)
                    invoked = await trio.to_thread.run_sync(zato, "wsx", "invoke", base, row["pub_client_id"],
                                                            "--data", '{"cmd": "status"}')
                silent = await trio.to_thread.run_sync(zato, "wsx", "invoke", base, row["pub_client_id"], "--data",
                                                       "anyone?", "--timeout", "0.3")
                gone = await trio.to_thread.run_sync(zato, "wsx", "disconnect", base, row["pub_client_id"])
                with pytest.raises(WSXClosed) as closed:
                    await client.receive_until(lambda frame: False)
                again = await trio.to_thread.run_sync(zato, "wsx", "disconnect", base, row["pub_client_id"])
    assert table.exit_code == 0 and "1 WebSocket connections" in table.output and "cli-client" in table.output
    assert row["ext_client_name"] == "From the CLI" and row["channel_name"] == "wsx.test"
    # the server's own name beside its host, in the table and the JSON
    assert row["server_name"] == server.name and row["server_host"] == socket.gethostname(), row
    assert f"{server.name}:{row['server_pid']}" in table.output and "HOST" in table.output, table.output
    assert none.exit_code == 0 and "0 WebSocket connections" in none.output
    assert invoked.exit_code == 0 and json.loads(invoked.output) == {"got": {"cmd": "status"}}, invoked.output
    assert silent.exit_code == 1 and "HTTP 504" in silent.output and "did not answer within 0.3 s" in silent.output
    assert gone.exit_code == 0 and closed.value.code == 4005
    assert again.exit_code == 1 and "HTTP 404" in again.output and "GET /zato/api/wsx/connections" in again.output


async def test_services_broadcast_to_every_client_of_a_channel(tmp_path):
    async with wsx_server(tmp_path) as server:
        await create_channel(server)
        with trio.fail_after(20):
            clients = [await WSXClient.connect(server.address, "/ws/test") for _ in range(3)]
            for client in clients[:2]:
                await client.create_session(USER, PASSWORD)
            result = await server.invoke("wsx.broadcast", {"channel": "wsx.test", "news": "hello"})
            received = [(await client.next_request())["data"] for client in clients[:2]]
            for client in clients:
                await client.aclose()
    assert result == {"sent": 2} and received == [{"news": "hello"}] * 2  # the third has no session


async def test_a_deleted_channel_closes_its_clients_and_is_gone(tmp_path):
    async with wsx_server(tmp_path) as server:
        await create_channel(server, hook_service="wsx.hook")
        with trio.fail_after(20):
            client = await WSXClient.connect(server.address, "/ws/test")
            await client.create_session(USER, PASSWORD)
            async with admin(server) as api:
                assert (await api.delete("/zato/api/objects/channel_web_socket/wsx.test")).status_code == 204
            with pytest.raises(WSXClosed) as closed:
                await client.receive()
            with pytest.raises(WSXRefused) as refused:
                await WSXClient.connect(server.address, "/ws/test")
            while len(server.plugin_state.get("test.wsx.hook", [])) < 2:
                await trio.sleep(0.05)
    assert closed.value.code == 1012 and refused.value.status == 404
    assert [event for event, _ in server.plugin_state["test.wsx.hook"]] == ["connected", "disconnected"]


async def test_bad_addresses_are_refused_naming_the_field(tmp_path):
    async with wsx_server(tmp_path) as server:
        await create_channel(server)
        async with admin(server) as api:
            for address, problem in (("http://127.0.0.1/x", "not a ws:// or wss:// URL"),
                                     ("ws://127.0.0.1:1/", "has no path"),
                                     ("ws://127.0.0.1:1/zato/x", "under /zato/")):
                reply = await api.post("/zato/api/objects/channel_web_socket",
                                       json={"name": "bad", "address": address, "service": "wsx.echo"})
                assert reply.status_code == 400 and problem in reply.text, reply.text
            clash = await api.post("/zato/api/objects/channel_web_socket", json={
                "name": "clash", "address": "ws://127.0.0.1:1/ws/test", "service": "wsx.echo"})
            assert clash.status_code in (400, 409) and "served by WebSocket channel 'wsx.test'" in clash.text, clash.text


async def test_a_client_faster_than_its_service_is_held_back_not_buffered(tmp_path):
    async with wsx_server(tmp_path) as server:
        await create_channel(server, service="wsx.async-echo")
        with trio.fail_after(30):
            async with await WSXClient.connect(server.address, "/ws/test") as client:
                await client.create_session(USER, PASSWORD)
                for _ in range(40):  # far more than run at once
                    await client.send_frame("invoke-service", {"sleep": 0.2})
                replies = [await client.receive() for _ in range(40)]
    assert all(reply["meta"]["msg_type"] == "zwsx.rspok" for reply in replies)
    # they ran in parallel, but never more than MAX_IN_FLIGHT at once: the rest waited unread
    assert server.plugin_state["test.wsx.running"]["peak"] == MAX_IN_FLIGHT


ZATO_EXPORT = """
security:
  - name: wsx.enmasse
    type: basic_auth
    username: enmasse.user
    password: enmasse-s3cret
web_socket:
  - name: from.zato
    id: 12
    is_active: true
    is_internal: false
    address: ws://0.0.0.0:17010/zato-export/ws
    service_name: wsx.echo
    sec_def: wsx.enmasse
    data_format: json
    new_token_wait_time: 7
    token_ttl: 600
    ping_interval: 45
    pings_missed_threshold: 3
    is_audit_log_sent_active: false
"""


async def test_zatos_web_socket_rows_import_with_enmasse(tmp_path):
    base_dir = create_test_server_dir(tmp_path / "server")
    (base_dir / "pickup" / "wsx_services.py").write_text(textwrap.dedent(SERVICES))
    export = tmp_path / "zato-export.yaml"
    export.write_text(ZATO_EXPORT)
    result = await trio.to_thread.run_sync(
        lambda: CliRunner().invoke(cli, ["enmasse", "import", str(base_dir), str(export)], catch_exceptions=False))
    assert result.exit_code == 0 and "2 created" in result.output, result.output
    async with run_server(base_dir) as server:
        definition = server.config_objects["channel_web_socket"]["from.zato"]
        assert (definition["service"], definition["security"], definition["token_ttl"],
                definition["pings_missed_threshold"]) == ("wsx.echo", "wsx.enmasse", 600, 3)
        with trio.fail_after(20):
            async with await WSXClient.connect(server.address, "/zato-export/ws") as client:
                assert (await client.create_session("enmasse.user", "enmasse-s3cret"))["meta"]["status"] == 200
                reply = await client.invoke({"via": "enmasse"})
    assert reply["data"]["echo"] == {"via": "enmasse"} and reply["data"]["user"] == "enmasse.user"


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_a_channel_on_another_port_gets_a_listener_of_its_own_while_it_exists(tmp_path):
    port = free_port()
    async with wsx_server(tmp_path) as server:
        definition = {"name": "own.port", "address": f"ws://127.0.0.1:{port}/own/ws", "service": "wsx.echo",
                      "security": "wsx.basic"}
        async with admin(server) as api:
            assert (await api.post("/zato/api/objects/channel_web_socket", json=definition)).status_code == 201
        with trio.fail_after(20):
            own = f"http://127.0.0.1:{port}"
            while True:  # the listener starts in the background
                try:
                    client = await WSXClient.connect(own, "/own/ws")
                    break
                except OSError:
                    await trio.sleep(0.05)
            async with client:
                await client.create_session(USER, PASSWORD)
                reply = await client.invoke({"port": port})
            with pytest.raises(WSXRefused):  # not on the server's own port
                await WSXClient.connect(server.address, "/own/ws")
            async with admin(server) as api:
                assert (await api.delete("/zato/api/objects/channel_web_socket/own.port")).status_code == 204
            while True:  # and the listener is gone with the channel
                try:
                    await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
                    await trio.sleep(0.05)
                except OSError:
                    break
    assert reply["data"]["echo"] == {"port": port}


async def test_an_address_the_server_cannot_listen_on_is_logged_and_the_server_goes_on(tmp_path, caplog):
    # a host name that does not resolve, and a port another program holds: neither stops the server
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        async with wsx_server(tmp_path) as server:
            async with admin(server) as api:
                for name, address in (("no.such.host", "ws://no-such-host.invalid:17999/ws"),
                                      ("port.taken", f"ws://127.0.0.1:{taken.getsockname()[1]}/ws2")):
                    reply = await api.post("/zato/api/objects/channel_web_socket", json={
                        "name": name, "address": address, "service": "wsx.echo"})
                    assert reply.status_code == 201, reply.text
                with trio.fail_after(20):
                    while caplog.text.count("are not served: cannot listen there") < 2:
                        await trio.sleep(0.05)
                alive = await api.get("/zato/ping")
    assert alive.status_code == 200
    assert "no-such-host.invalid:17999 are not served: cannot listen there (gaierror" in caplog.text
    assert "check the host and port of the channels' address" in caplog.text


async def test_a_client_that_stops_reading_holds_up_nobody_and_is_disconnected_at_once(tmp_path):
    async with wsx_server(tmp_path) as server:
        await create_channel(server)
        with trio.fail_after(60):
            silent = await WSXClient.connect(server.address, "/ws/test")  # it never reads again
            await silent.create_session(USER, PASSWORD, client_id="silent")
            async with trio.open_nursery() as nursery:
                async def flood() -> None:  # until its socket buffers are full and sending blocks
                    for _ in range(200):
                        await server.invoke("wsx.broadcast", {"channel": "wsx.test", "news": "x" * 200_000})
                nursery.start_soon(flood)
                await trio.sleep(2)
                async with await WSXClient.connect(server.address, "/ws/test") as other:  # others are served
                    await other.create_session(USER, PASSWORD, client_id="other")
                    reply = await other.invoke({"still": "served"})
                async with admin(server) as api:
                    [row] = (await api.get("/zato/api/wsx/connections", params={"ext_client_id": "silent"})).json()[
                        "connections"]
                    with trio.fail_after(10):
                        gone = await api.post(f"/zato/api/wsx/connections/{row['pub_client_id']}/disconnect")
                nursery.cancel_scope.cancel()
            await silent.stream.aclose()
    assert reply["data"]["echo"] == {"still": "served"} and gone.status_code == 200


async def test_a_service_that_is_not_deployed_is_a_404_naming_it(tmp_path):
    async with wsx_server(tmp_path, wsx={"gateway_service_allowed": "wsx.not-deployed-either"}) as server:
        await create_channel(server, service="wsx.not-deployed")
        await create_channel(server, name="wsx.gateway", path="/ws/gateway", service="helpers.web-sockets-gateway")
        with trio.fail_after(20):
            async with await WSXClient.connect(server.address, "/ws/test") as client:
                await client.create_session(USER, PASSWORD)
                missing = await client.invoke({"x": 1})
                still_open = await client.invoke({"x": 2})
            async with await WSXClient.connect(server.address, "/ws/gateway") as client:
                await client.create_session(USER, PASSWORD)
                named = await client.invoke({"service": "wsx.not-deployed-either", "request": {}})
    for reply, name, in_reply_to in ((missing, "wsx.not-deployed", "test.2"), (still_open, "wsx.not-deployed", "test.3"),
                                     (named, "wsx.not-deployed-either", "test.2")):
        meta = reply["meta"]
        assert meta["msg_type"] == "zwsx.rsperr" and meta["status"] == 404, reply
        assert meta["in_reply_to"] == in_reply_to and name in meta["error_message"], reply
        assert reply["data"] == {"cid": meta["id"]}, reply


async def test_an_address_from_the_environment_is_served(tmp_path, monkeypatch):
    async with wsx_server(tmp_path) as server:
        port = server.address.rsplit(":", 1)[1]
        monkeypatch.setenv("WSX_ADDR", f"ws://127.0.0.1:{port}/ws/from-env")  # read when the object is loaded
        async with admin(server) as api:
            reply = await api.post("/zato/api/objects/channel_web_socket", json={
                "name": "wsx.env", "address": "$WSX_ADDR", "service": "wsx.echo", "security": "wsx.basic"})
            assert reply.status_code == 201, reply.text
            stored = (await api.get("/zato/api/objects/channel_web_socket/wsx.env")).json()
        with trio.fail_after(20):
            async with await WSXClient.connect(server.address, "/ws/from-env") as client:
                opened = await client.create_session(USER, PASSWORD)
                reply = await client.invoke({"from": "env"})
            with pytest.raises(WSXRefused):  # the variable's name is no path
                await WSXClient.connect(server.address, "/$WSX_ADDR")
    assert stored["address"] == "$WSX_ADDR"  # kept as given; the environment gives its value
    assert opened["meta"]["msg_type"] == "zwsx.rspa"
    assert reply["meta"]["msg_type"] == "zwsx.rspok" and reply["data"]["echo"] == {"from": "env"}
    assert reply["data"]["channel"] == "wsx.env"
