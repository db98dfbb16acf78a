""" One mechanism for plugins' runtime objects (PluginState), registry kinds as constants, and
service attributes provided by plugins through register_service_attributes (self.pubsub,
self.kvdb, a third party's own; tests/test_plugins.py runs the hook in a server). """

from __future__ import annotations

from types import SimpleNamespace

import pytest

from zato.plugin_api import Kind, PluginState, PluginStateMissing
from zato.plugins import load_plugins
from zato.registry import RegistrationError, Registry
from zato.server.service import Service
from zato.testing import ServiceTester


def _server() -> SimpleNamespace:
    return SimpleNamespace(plugin_state={})


def test_a_slot_sets_gets_requires_and_makes_on_first_use():
    slot = PluginState[list]("demo")
    server = _server()
    assert slot.get(server) is None
    with pytest.raises(PluginStateMissing, match=r"the demo plugin is not running in this server: .*\[deploy_internal\] zato_plugin_demo = True"):
        slot.require(server)
    made = slot.get_or_create(server, list)
    assert slot.get_or_create(server, lambda: pytest.fail("made twice")) is made is slot.require(server)
    slot.clear(server)
    assert slot.get(server) is None
    assert slot.set(server, [1]) == [1] and slot.get(server) == [1]


def test_two_slots_of_the_same_name_do_not_see_each_other():
    server = _server()
    mine, guess = PluginState[str]("pubsub"), PluginState[str]("pubsub")
    mine.set(server, "mine")
    assert guess.get(server) is None and "pubsub" not in server.plugin_state  # no string key to guess


def test_an_object_without_plugin_state_has_nothing():
    assert PluginState[int]("demo").get(object()) is None


def test_a_misspelt_registry_kind_is_an_error_not_an_empty_answer():
    registry = load_plugins({}).registry
    assert registry.items(Kind.OBJECT_TYPES) == registry.items("object_types")  # constants are the strings
    for call in (lambda: registry.items("object_type"), lambda: registry.values("chanel_types"),
                 lambda: Registry().add("objects", "x", 1, "p")):
        with pytest.raises(ValueError, match=r"unknown registry kind '\w+'; the kinds are server_config, object_types"):
            call()


def test_builtins_keep_their_runtime_in_slots_not_string_keys():
    import trio

    from zato.testing import create_test_server_dir, run_server

    async def main(base_dir):
        async with run_server(base_dir) as server:
            assert server.plugin_state and all(isinstance(key, PluginState) for key in server.plugin_state)

    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, create_test_server_dir(Path(tmp) / "server"))


# ################################################################################################
# Service attributes


class UsesPubSubAndKVDB(Service):
    name = "demo.uses-plugins"

    def handle(self):
        self.response.payload = {"kvdb": self.kvdb.conn}


class ReadsAMissingAttribute(Service):
    name = "demo.missing-inside-property"

    @property
    def helper(self):
        return self.no_such_thing_here

    def handle(self):
        self.response.payload = self.helper


async def test_a_provided_attribute_reaches_services_and_the_tester_can_set_it():
    with ServiceTester() as tester:
        tester.set_kvdb(SimpleNamespace(conn="the conn"))
        assert (await tester.invoke(UsesPubSubAndKVDB)).payload == {"kvdb": "the conn"}


def test_a_missing_plugin_attribute_names_the_plugin_to_enable():
    service = Service()
    service.server = SimpleNamespace(service_attributes={})
    with pytest.raises(AttributeError, match=r"self\.kvdb needs the redis plugin \(zato-plugin-redis\), which is "
                                             r"switched off .*\[deploy_internal\] zato_plugin_redis = True"):
        service.kvdb
    with pytest.raises(AttributeError, match=r"self\.pubsub needs the pubsub plugin .*\[deploy_internal\] "
                                             r"zato\.builtin\.pubsub = True"):
        service.pubsub
    with pytest.raises(AttributeError, match=r"'Service' object has no attribute 'nothing'"):
        service.nothing


def test_an_attribute_error_inside_a_property_is_its_own_not_the_propertys():
    service = ReadsAMissingAttribute()
    service.server = SimpleNamespace(service_attributes={})
    with pytest.raises(AttributeError, match="no_such_thing_here"):
        service.helper


def test_a_plugin_cannot_shadow_what_every_service_has():
    from zato.plugins import _register_service_attribute
    for name in ("invoke", "request", "_private", "not an identifier"):
        with pytest.raises(TypeError):
            _register_service_attribute(name, lambda service: None)
    with pytest.raises(TypeError, match="is called with the service"):
        _register_service_attribute("fine", "not callable")
    assert RegistrationError  # what a bad call to register() becomes (tests/test_plugins.py)
