""" `register_connectors`: an object type and its outgoing connection type in one registration,
credited to the plugin, refused when the two do not fit together, and working in a server. """

from __future__ import annotations

import httpx
import pytest

from zato.plugins import load_plugins
from zato.registry import Kind, RegistrationError
from zato.testing import admin_auth, run_server

GREETER = '''
from zato.plugin_api import Connector, Field, ObjectType, OutgoingConnectionType, hookimpl


class Greeter:
    def __init__(self, server, definition):
        self.greeting = definition["greeting"]

    def ping(self):
        return None

    def close(self):
        return None


ENDPOINT = ObjectType("greeter_endpoint", (
    Field("name", required=True),
    Field("greeting", required=True, description="What the connection says"),
    Field("times", "int", default=1, minimum=1),
))


@hookimpl
def register_connectors(register):
    register(Connector(ENDPOINT, OutgoingConnectionType("greeter", "{object_type}", "out.greeter", Greeter)))
'''


def greeter(object_type: str = "greeter_endpoint") -> str:
    return GREETER.replace("{object_type}", object_type)


def test_a_connector_registers_both_types_credited_to_its_plugin(plugin_site):
    plugin_site.add("greeter", greeter())
    loaded = load_plugins({})
    registry = loaded.registry
    assert registry.by_plugin("greeter") == {Kind.OBJECT_TYPES: ["greeter_endpoint"],
                                             Kind.OUTGOING_CONNECTION_TYPES: ["greeter"]}
    assert registry.plugin_of(Kind.OBJECT_TYPES, "greeter_endpoint") == "greeter"
    assert registry.plugin_of(Kind.OUTGOING_CONNECTION_TYPES, "greeter") == "greeter"
    assert registry.get(Kind.OBJECT_TYPES, "greeter_endpoint").field("times").minimum == 1
    assert registry.get(Kind.OUTGOING_CONNECTION_TYPES, "greeter").accessor == "out.greeter"
    info = next(p for p in loaded.plugins if p.name == "greeter")
    assert info.hooks == ["register_connectors"]


def test_a_connection_type_for_another_object_type_is_refused_naming_plugin_and_both_names(plugin_site):
    plugin_site.add("greeter", greeter(object_type="greeter_endpont"))
    with pytest.raises(RegistrationError) as info:
        load_plugins({})
    message = str(info.value)
    for part in ("plugin 'greeter'", "register_connectors", "connector 'greeter'", "'greeter_endpont'",
                 "'greeter_endpoint'", "object_type='greeter_endpoint'"):
        assert part in message, message


def test_register_connectors_takes_only_a_connector(plugin_site):
    plugin_site.add("wrong", "from zato.plugin_api import Field, ObjectType, hookimpl\n@hookimpl\n"
                             "def register_connectors(register):\n"
                             "    register(ObjectType('wrong_thing', (Field('name', required=True),)))\n")
    with pytest.raises(RegistrationError, match=r"plugin 'wrong': bad call to register\(\) in register_connectors: "
                                                r"expected a zato.registry.Connector"):
        load_plugins({})


def test_a_connector_whose_object_type_another_plugin_registered_names_both_plugins(plugin_site):
    plugin_site.add("greeter", greeter().replace('"greeter_endpoint"', '"outgoing_rest"'))
    # register_* hooks are called in pluggy's order: the plugin loaded last registers first
    with pytest.raises(RegistrationError,
                       match="object_types: 'outgoing_rest' is registered by plugin 'greeter' and again by plugin "
                             "'outgoing_http'"):
        load_plugins({})


def test_the_built_in_and_bundled_connectors_register_through_register_connectors():
    loaded = load_plugins({})
    plugins = {p.name: p for p in loaded.plugins}
    expected = {"outgoing_http": ("outgoing_rest", "plain_http"), "smtp": ("email_smtp", "smtp"),
                "sql": ("outgoing_sql", "sql"), "redis": ("outgoing_redis", "redis")}
    for plugin, (object_type, connection_type) in expected.items():
        if plugin not in plugins:
            pytest.fail(f"plugin {plugin!r} is not installed; run scripts/install")
        registered = loaded.registry.by_plugin(plugin)
        assert registered[Kind.OBJECT_TYPES] == [object_type], plugin
        assert registered[Kind.OUTGOING_CONNECTION_TYPES] == [connection_type], plugin
        assert "register_connectors" in plugins[plugin].hooks
        assert "register_outgoing_connection_types" not in plugins[plugin].hooks, plugin


async def test_a_connector_works_in_a_running_server(plugin_site, server_dir):
    plugin_site.add("greeter", greeter())
    from zato.odb import ODB, sqlite_url
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    odb.put_object("greeter_endpoint", "Hi", {"greeting": "hello"})
    odb.close()
    async with run_server(server_dir) as server:
        assert server.outgoing.map("out.greeter")["Hi"].greeting == "hello"
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth()) as client:
            reply = await client.post("/zato/api/objects/greeter_endpoint", json={"name": "Bad", "times": 0})
            assert reply.status_code == 400, reply.text
            assert {"greeting", "times"} <= {problem["field"] for problem in reply.json()["errors"]}, reply.text


STYLED = '''
from zato.plugin_api import Connector, Field, ObjectType, OutgoingConnectionType, hookimpl


class Styled:
    def __init__(self, server, definition):
        self.suffix = definition["_references"]["style"]["suffix"]

    def close(self):
        return None


@hookimpl
def register_object_types(register):
    register(ObjectType("greeter_style", (Field("name", required=True), Field("suffix", default="."))))


@hookimpl
def register_connectors(register):
    register(Connector(ObjectType("styled_greeter", (Field("name", required=True),
                                                     Field("style", required=True, references="greeter_style"))),
                       OutgoingConnectionType("styled", "styled_greeter", "out.styled", Styled)))
'''


async def test_a_connection_gets_the_objects_it_names_and_is_rebuilt_when_one_changes(plugin_site, server_dir):
    plugin_site.add("styled", STYLED)
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(),
                                     headers={"content-type": "application/json"}) as client:
            for object_type, data in (("greeter_style", {"name": "loud", "suffix": "!"}),
                                      ("styled_greeter", {"name": "Hi", "style": "loud"})):
                reply = await client.post(f"/zato/api/objects/{object_type}", json=data)
                assert reply.status_code == 201, reply.text
            first = server.outgoing.map("out.styled")["Hi"]
            assert first.suffix == "!"
            reply = await client.patch("/zato/api/objects/greeter_style/loud", json={"suffix": "!!!"})
            assert reply.status_code == 200, reply.text
            rebuilt = server.outgoing.map("out.styled")["Hi"]  # the style changed, not the connection's own object
            assert rebuilt is not first and rebuilt.suffix == "!!!"


async def test_a_connection_that_cannot_be_built_says_why_when_a_service_asks_for_it(plugin_site, server_dir):
    plugin_site.add("greeter", greeter().replace('self.greeting = definition["greeting"]',
                                                 'self.greeting = definition["greeting"]\n'
                                                 '        if self.greeting == "boom":\n'
                                                 '            raise ValueError("greetings cannot be boom")'))
    from zato.odb import ODB, sqlite_url
    from zato.server.outgoing import ConnectionNotFound
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    odb.put_object("greeter_endpoint", "Loud", {"greeting": "boom"})
    odb.close()
    async with run_server(server_dir) as server:
        with pytest.raises(ConnectionNotFound, match=r"no outgoing connection 'Loud' in out.greeter; known: none are "
                                                     r"configured; 'Loud' could not be built: ValueError: greetings "
                                                     r"cannot be boom \(correct its definition"):
            server.outgoing.map("out.greeter")["Loud"]
