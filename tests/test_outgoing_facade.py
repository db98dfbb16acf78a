""" A plugin's own outgoing facade: `self.outgoing.<type>` is a call the plugin defines
(`self.outgoing.demo_queue.send(msg, conn, queue)`), not a map of connections by name, kept in
step with the definitions without a core edit. """

from __future__ import annotations

import httpx

from zato.odb import ODB, sqlite_url
from zato.testing import admin_auth, run_server

PLUGIN_SOURCE = '''
from zato.plugin_api import Field, ObjectType, OutgoingConnectionType, hookimpl


class Sender:
    def __init__(self, connections):
        self.connections = connections

    def send(self, message, conn, queue):
        return f"{self.connections[conn].prefix}:{queue}:{message}"


class Connection:
    def __init__(self, server, definition):
        self.prefix = definition["prefix"]


@hookimpl
def register_object_types(register):
    register(ObjectType("outgoing_demo_queue", (Field("prefix", required=True),)))


@hookimpl
def register_outgoing_connection_types(register):
    register(OutgoingConnectionType("demo_queue", "outgoing_demo_queue", "outgoing.demo_queue", Connection,
                                    facade=Sender))
'''

SERVICE_SOURCE = '''
from zato.server.service import Service


class SendsThroughTheFacade(Service):
    name = "demo.sends"

    def handle(self):
        self.response.payload = {"sent": self.outgoing.demo_queue.send("hello", "main", "DEV.QUEUE.1")}
'''


async def test_the_facade_is_what_services_get_and_follows_live_edits(plugin_site, server_dir):
    plugin_site.add("demo_queue", PLUGIN_SOURCE)
    (server_dir / "pickup" / "sends.py").write_text(SERVICE_SOURCE)
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    odb.put_object("outgoing_demo_queue", "main", {"prefix": "v1"})
    odb.close()
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth()) as client:
            reply = await client.post("/zato/api/invoke/demo.sends")
            assert reply.status_code == 200, reply.text
            assert reply.json() == {"sent": "v1:DEV.QUEUE.1:hello"}
            reply = await client.patch("/zato/api/objects/outgoing_demo_queue/main", json={"prefix": "v2"})
            assert reply.status_code == 200, reply.text
            reply = await client.post("/zato/api/invoke/demo.sends")
            assert reply.json() == {"sent": "v2:DEV.QUEUE.1:hello"}  # the same facade, the new connection
        # The map stays reachable for the core (closing, listing)
        assert server.outgoing.map("outgoing.demo_queue").names() == ["main"]
