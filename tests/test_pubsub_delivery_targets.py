""" `register_pubsub_delivery_targets`: a plugin's own kind of subscriber gets pub/sub messages
with the same retries and dead letters as services, and bad registrations stop loading with the
plugin named. """

from __future__ import annotations

import sys

import httpx
import pytest
import trio

from zato.builtin.pubsub import RUNTIME, make_sub_key
from zato.plugins import load_plugins
from zato.registry import Kind, RegistrationError
from zato.testing import admin_auth, run_server

API = "/zato/api"

PROBE_PLUGIN = '''
from zato.plugin_api import hookimpl

received = []  # (subscription name, endpoint name, data, delivery_count)


async def deliver(server, subscription, message, cid):
    received.append((subscription.name, subscription.endpoint_name, message.data, message.delivery_count))
    if message.data == "fail" or (message.data == "fail-once" and message.delivery_count == 1):
        raise RuntimeError(f"the probe refuses {message.data!r}")


@hookimpl
def register_pubsub_delivery_targets(register):
    register("probe", deliver)
'''

PUBLISHER = '''
from zato.server.service import Service


class Publish(Service):
    name = "test.targets.publish"

    def handle(self):
        self.response.payload = {"msg_id": self.pubsub.publish("/probe", data=self.request.payload["data"])}
'''


async def wait_for(predicate, timeout: float = 15.0, what: str = "") -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def test_a_plugins_endpoint_type_gets_messages_with_retries_and_dead_letters(plugin_site, server_dir):
    module = plugin_site.add("probe", PROBE_PLUGIN)
    (server_dir / "pickup" / "publisher.py").write_text(PUBLISHER)
    async with run_server(server_dir) as server:
        received = sys.modules[module].received
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=15,
                                     headers={"content-type": "application/json"}) as api:
            for object_type, data in (
                    ("pubsub_topic", {"name": "/probe"}),
                    ("pubsub_endpoint", {"name": "probe.endpoint", "endpoint_type": "probe"}),
                    ("pubsub_subscription", {"name": "probe.sub", "endpoint_name": "probe.endpoint",
                                             "endpoint_type": "probe", "topic_list": ["/probe"], "max_attempts": 2,
                                             "retry_seconds": 0.05})):
                reply = await api.post(f"{API}/objects/{object_type}", json=data)
                assert reply.status_code == 201, reply.text
            for data in ("hello", "fail-once", "fail"):
                await server.invoke("test.targets.publish", {"data": data})
            await wait_for(lambda: len(received) == 5, what="five delivery attempts")
            await trio.sleep(0.2)
            assert sorted(received) == sorted([
                ("probe.sub", "probe.endpoint", "hello", 1),
                ("probe.sub", "probe.endpoint", "fail-once", 1), ("probe.sub", "probe.endpoint", "fail-once", 2),
                ("probe.sub", "probe.endpoint", "fail", 1), ("probe.sub", "probe.endpoint", "fail", 2)])
            runtime = RUNTIME.require(server)
            await wait_for(lambda: runtime.stats["dead_lettered"] == 1, what="the dead letter")
            await runtime.flush()
            sub_key = make_sub_key("probe", "probe.sub", "/probe")
            dead = (await api.get(f"{API}/pubsub/dlq", params={"sub_key": sub_key})).json()
            assert [(d["delivery_count"], d["last_error"]) for d in dead] == [(2, "RuntimeError: the probe refuses 'fail'")]


@pytest.mark.parametrize(("endpoint_type", "deliver", "error"), [
    ("Probe-Type", "async def deliver(*args): pass", "a lower-case identifier"),
    ("probe", "def deliver(*args): pass", "is an async def deliver(server, subscription, message, cid)"),
])
def test_a_bad_registration_stops_loading_naming_the_plugin(plugin_site, endpoint_type, deliver, error):
    plugin_site.add("probe", f'''
from zato.plugin_api import hookimpl
{deliver}

@hookimpl
def register_pubsub_delivery_targets(register):
    register({endpoint_type!r}, deliver)
''')
    with pytest.raises(RegistrationError, match="plugin 'probe'") as caught:
        load_plugins({})
    assert error in str(caught.value)


def test_one_endpoint_type_of_two_plugins_is_refused_naming_both(plugin_site):
    plugin_site.add("probe", PROBE_PLUGIN)
    plugin_site.add("other", PROBE_PLUGIN)
    with pytest.raises(RegistrationError) as caught:
        load_plugins({})
    assert "probe" in str(caught.value) and "other" in str(caught.value)


def test_the_pubsub_plugin_registers_its_service_target(plugin_site):
    plugin_site.add("probe", PROBE_PLUGIN)
    registry = load_plugins({}).registry
    assert registry.plugin_of(Kind.PUBSUB_DELIVERY_TARGETS, "service") == "pubsub"
    assert registry.plugin_of(Kind.PUBSUB_DELIVERY_TARGETS, "probe") == "probe"
