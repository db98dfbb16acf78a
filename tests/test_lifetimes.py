""" A worker stops in the reverse order of its start: intake (HTTP, channel runtimes that run)
first, then background work drains, then `shutdown` hooks, then outgoing connections are
closed, then plugin tasks are cancelled. A test plugin with one of each records the order. """

from __future__ import annotations

import sys

import pytest

from zato.odb import ODB, sqlite_url
from zato.testing import run_server

PLUGIN_SOURCE = '''
import trio

from zato import hookimpl
from zato.registry import ChannelType, Field, ObjectType, OutgoingConnectionType

SERVICES_MODULE = {services!r}
EVENTS = []      # what happened, in order
RUNTIME = None   # the listener channel's runtime, once the server created it


class Listener:
    """ Takes items from a memory channel (a queue) and invokes a service for each; an item it
    has taken is finished under a shielded scope, as a listener that acknowledges does. """

    def __init__(self, server):
        global RUNTIME
        self.server = server
        self.send, self.receive = trio.open_memory_channel(10)
        self.run_cancelled = trio.Event()
        RUNTIME = self

    def apply(self, objects):
        pass

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        try:
            async for service, item in self.receive:
                with trio.CancelScope(shield=True):
                    EVENTS.append(f"listener took {{item}}")
                    try:
                        result = await self.server.invoke(service, item)
                    except Exception as exc:
                        EVENTS.append(f"listener failed {{item}}: {{exc}}")
                    else:
                        EVENTS.append(f"listener done {{item}}: {{result}}")
        except trio.Cancelled:
            EVENTS.append("channel.run cancelled")
            self.run_cancelled.set()
            raise


class Connection:
    def __init__(self, name):
        self.name = name
        self.closed = False

    def send(self, item):
        if self.closed:
            raise RuntimeError(f"outgoing connection {{self.name}} is closed")
        EVENTS.append(f"outgoing.send {{item}}")
        return "sent"

    async def close(self):
        self.closed = True
        EVENTS.append("outgoing.close")


@hookimpl
def register_object_types(register):
    register(ObjectType("lifetimes_listener", (Field("name", required=True),)))
    register(ObjectType("lifetimes_conn", (Field("name", required=True),)))


@hookimpl
def register_channel_types(register):
    register(ChannelType("lifetimes", "lifetimes_listener", Listener, "a listener on a memory channel"))


@hookimpl
def register_outgoing_connection_types(register):
    register(OutgoingConnectionType("lifetimes_out", "lifetimes_conn", "out.lifetimes",
                                    lambda server, definition: Connection(definition["name"])))


@hookimpl
def register_internal_services(register):
    register(SERVICES_MODULE)


@hookimpl
def register_tasks(register, server):
    async def run(*, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            EVENTS.append("task cancelled")
            raise
    register("idle", run)


@hookimpl
def shutdown(server):
    EVENTS.append("shutdown hook")
'''

SERVICES_SOURCE = '''
import time

import trio

from zato.server.service import Service


def plugin():
    import sys
    return sys.modules[{plugin!r}]


class SlowAsync(Service):
    """ Takes a while, then uses the outgoing connection. """
    name = "lifetimes.slow.async"

    async def handle(self):
        await trio.sleep(0.3)
        self.response.payload = self.out.lifetimes["main"].send(self.request.payload)


class SlowSync(Service):
    name = "lifetimes.slow.sync"

    def handle(self):
        time.sleep(0.3)
        self.response.payload = self.out.lifetimes["main"].send(self.request.payload)


class StartBackground(Service):
    name = "lifetimes.start_background"

    async def handle(self):
        self.invoke_async("lifetimes.background", "background")


class Background(Service):
    """ Runs until intake has stopped, then uses the outgoing connection. """
    name = "lifetimes.background"

    async def handle(self):
        await plugin().RUNTIME.run_cancelled.wait()
        self.out.lifetimes["main"].send(self.request.payload)
        plugin().EVENTS.append("background done")
'''


def install(plugin_site) -> str:
    import uuid
    plugin_module = f"zato_test_plugin_lifetimes_{uuid.uuid4().hex[:8]}"
    services_module = f"lifetimes_services_{uuid.uuid4().hex[:8]}"
    plugin_site.add("lifetimes", PLUGIN_SOURCE.format(services=services_module), module=plugin_module,
                    files={f"{services_module}.py": SERVICES_SOURCE.format(plugin=plugin_module)})
    plugin_site.modules.append(services_module)
    return plugin_module


def put_connection(server_dir) -> None:
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    odb.put_object("lifetimes_conn", "main", {})
    odb.close()


async def test_stop_runs_in_the_reverse_order_of_start(plugin_site, server_dir, caplog):
    module = install(plugin_site)
    put_connection(server_dir)
    async with run_server(server_dir) as server:
        plugin = sys.modules[module]
        await server.invoke("lifetimes.start_background")  # an invoke_async in flight, waiting
        assert plugin.EVENTS == []
        plugin.RUNTIME.send.send_nowait(("lifetimes.slow.async", "item"))  # taken as the stop begins
    assert plugin.EVENTS == [
        "listener took item",  # (1) intake: the listener finishes the item it took ...
        "outgoing.send item",
        "listener done item: sent",
        "channel.run cancelled",  # ... and its run task ends; HTTP has stopped meanwhile
        "outgoing.send background",  # (2) background work drains, its connection still open
        "background done",
        "shutdown hook",  # (3)
        "outgoing.close",  # (4)
        "task cancelled",  # (5)
    ]
    assert not (server_dir / "work" / "server.json").exists()
    messages = [record.getMessage() for record in caplog.records if record.name == "zato.server"]
    stopping = [line for line in messages if line.startswith(("stopping ", f"server {server.name} stopped"))]
    assert len(stopping) == 3, stopping
    assert "intake stopped in" in stopping[0] and "background task(s) may finish within" in stopping[0]
    assert "background work over after" in stopping[1]
    assert " stopped in " in stopping[2]


@pytest.mark.parametrize("service", ["lifetimes.slow.async", "lifetimes.slow.sync"])
async def test_a_listener_that_takes_an_item_while_stopping_finds_its_connection_open(plugin_site, server_dir,
                                                                                      service):
    module = install(plugin_site)
    put_connection(server_dir)
    async with run_server(server_dir) as server:
        plugin = sys.modules[module]
        plugin.RUNTIME.send.send_nowait((service, "late"))
        server.request_shutdown()  # the stop begins as the listener takes the item
    assert "listener done late: sent" in plugin.EVENTS, plugin.EVENTS
    assert plugin.EVENTS.index("listener done late: sent") < plugin.EVENTS.index("outgoing.close")


async def test_a_replaced_connection_is_closed_at_stop_without_waiting_out_its_delay(plugin_site, server_dir):
    """ A connection replaced by a live edit is closed `graceful_timeout` later, so calls in flight
    finish on it; a stop within that time closes it at once (before it was never closed, and the
    drain waited for the delay). """
    import time

    from zato.testing import set_config_value
    set_config_value(server_dir, "main", "graceful_timeout", 5)
    module = install(plugin_site)
    put_connection(server_dir)
    async with run_server(server_dir) as server:
        plugin = sys.modules[module]
        first = server.outgoing.map("out.lifetimes").get("main")
        server.odb.put_object("lifetimes_conn", "main", {})  # a new version of the same definition
        from zato.server import config_objects
        await config_objects.reload(server, ["lifetimes_conn"])
        assert server.outgoing.map("out.lifetimes").get("main") is not first  # replaced; the first waits to be closed
        assert not first.closed
        stopping_at = time.monotonic()
    assert first.closed and plugin.EVENTS.count("outgoing.close") == 2, plugin.EVENTS
    assert time.monotonic() - stopping_at < 3  # not the 5 s delay
