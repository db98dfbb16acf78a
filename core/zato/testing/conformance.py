""" The conformance suite every outgoing connection type passes: connect, ping, reconnect after
an outage, live edit, close, bad config. A plugin runs it against its real remote end:

```python
from zato.testing.conformance import OutgoingConnectionConformance

class TestSMTPConformance(OutgoingConnectionConformance):
    connection_type = "smtp"            # OutgoingConnectionType.name
    object_type = "email_smtp"          # its ObjectType.name

    @pytest.fixture
    async def peer(self):               # a `Peer` (below) around a real server on 127.0.0.1
        ...
```

The suite starts a Zato server in-process with every installed plugin, creates the connection
through the admin API (secrets through their own call), and drives the peer.
"""

from __future__ import annotations

import time
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import pytest
import trio

from zato.testing._servers import admin_auth, create_test_server_dir, run_server


class Peer(Protocol):
    """ What a plugin's `peer` fixture yields. """

    def definition(self, name: str) -> dict[str, Any]:
        """ Fields (no secrets) of a connection to this peer, for the admin API. """

    def secrets(self) -> dict[str, str]:
        """ Secret fields to set through their own call ({} if none). """

    def use(self, connection: Any) -> None:
        """ A real round trip through the connection (runs in a worker thread); raises if it fails. """

    def edited(self, definition: dict[str, Any]) -> dict[str, Any]:
        """ A changed definition that still reaches this peer (a live edit). """

    def check_edit(self, connection: Any) -> None:
        """ Asserts the connection now works as the edited definition says (runs in a worker thread). """

    def assert_closed(self, connection: Any) -> None:
        """ Asserts the connection released what it held (sockets, pools). """

    def bad_definitions(self) -> list[tuple[dict[str, Any], str]]:
        """ (definition, field named in the admin API's errors) pairs that must be refused. """

    async def stop(self) -> None:
        """ The remote end goes away. """

    async def start(self) -> None:
        """ It comes back at the same address. """


class OutgoingConnectionConformance:
    connection_type: str = ""
    object_type: str = ""
    name = "conformance connection"

    @pytest.fixture
    async def zato(self, tmp_path):
        """ A running server (graceful_timeout short, so replaced connections close quickly) and an
        admin client. """
        base_dir = create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 0.3})
        async with run_server(base_dir) as server:
            # admin writes need Content-Type: application/json, with or without a body
            async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                                         headers={"content-type": "application/json"}) as client:
                client.server = server
                yield client

    def url(self, name: str = "") -> str:
        return f"/zato/api/objects/{self.object_type}" + (f"/{quote(name, safe='')}" if name else "")

    async def create(self, zato: Any, peer: Peer, name: str | None = None) -> Any:
        name = name or self.name
        reply = await zato.post(self.url(), json={**peer.definition(name), "name": name})
        assert reply.status_code == 201, reply.text
        for field, value in peer.secrets().items():
            reply = await zato.put(f"{self.url(name)}/secrets/{field}", json={"value": value})
            assert reply.status_code == 204, reply.text
        return self.connection(zato, name)

    def connection(self, zato: Any, name: str | None = None) -> Any:
        server = zato.server
        outconn_type = server.registry.get("outgoing_connection_types", self.connection_type)
        return server.outgoing.map(outconn_type.accessor)[name or self.name]

    async def ping(self, zato: Any, name: str | None = None) -> dict[str, Any]:
        reply = await zato.post(f"/zato/api/outgoing/{self.connection_type}/{quote(name or self.name, safe='')}/ping")
        assert reply.status_code == 200, reply.text
        return reply.json()

    # ############################################################################################

    async def test_connects_and_is_used(self, zato, peer):
        connection = await self.create(zato, peer)
        ping = await self.ping(zato)
        assert ping["ok"], ping
        await trio.to_thread.run_sync(peer.use, connection)

    async def test_ping_reports_an_outage_and_it_reconnects_when_the_peer_is_back(self, zato, peer):
        connection = await self.create(zato, peer)
        await trio.to_thread.run_sync(peer.use, connection)
        await peer.stop()
        ping = await self.ping(zato)
        assert not ping["ok"] and ping["error"], ping
        with pytest.raises(Exception):
            await trio.to_thread.run_sync(peer.use, connection)
        await peer.start()
        deadline = time.monotonic() + 15
        while True:
            try:
                await trio.to_thread.run_sync(peer.use, connection)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await trio.sleep(0.2)
        assert (await self.ping(zato))["ok"]

    async def test_a_live_edit_rebuilds_the_connection(self, zato, peer):
        old = await self.create(zato, peer)
        await trio.to_thread.run_sync(peer.use, old)  # so that closing it has something to release
        edited = peer.edited({**peer.definition(self.name), "name": self.name})
        reply = await zato.put(self.url(self.name), json=edited)
        assert reply.status_code == 200, reply.text
        new = self.connection(zato)
        assert new is not old
        await trio.to_thread.run_sync(peer.use, new)
        await trio.to_thread.run_sync(peer.check_edit, new)
        await trio.sleep(0.6)  # past graceful_timeout: the replaced connection is closed
        peer.assert_closed(old)

    async def test_a_deleted_connection_is_gone_and_closed(self, zato, peer):
        connection = await self.create(zato, peer)
        await trio.to_thread.run_sync(peer.use, connection)
        reply = await zato.delete(self.url(self.name))
        assert reply.status_code == 204, reply.text
        with pytest.raises(LookupError, match=f"no outgoing connection {self.name!r}"):
            self.connection(zato)
        await trio.sleep(0.6)
        peer.assert_closed(connection)

    async def test_unknown_names_list_the_ones_that_exist(self, zato, peer):
        await self.create(zato, peer)
        with pytest.raises(LookupError) as info:
            self.connection(zato, "no such connection")
        assert repr(self.name) in str(info.value)

    async def test_bad_config_is_refused_naming_the_field(self, zato, peer):
        for definition, field in peer.bad_definitions():
            reply = await zato.post(self.url(), json={"name": "bad", **definition})
            assert reply.status_code == 400, (definition, reply.text)
            assert field in {e["field"] for e in reply.json()["errors"]}, (definition, reply.json())

    async def test_connections_close_when_the_server_stops(self, tmp_path, peer):
        base_dir = create_test_server_dir(tmp_path / "stopping")
        async with run_server(base_dir) as server:
            async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                                         headers={"content-type": "application/json"}) as zato:
                zato.server = server
                connection = await self.create(zato, peer)
                await trio.to_thread.run_sync(peer.use, connection)
        peer.assert_closed(connection)
