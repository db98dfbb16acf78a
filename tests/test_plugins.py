""" Plugin loading: built-in and entry-point plugins, switching off, broken plugins, the
registry of what each plugin registered, and every hook's effect on a running server. """

from __future__ import annotations

import json
import sys

import httpx
import pytest
from click.testing import CliRunner

import all_hooks_plugin
from zato.hookspecs import hookspec  # noqa: F401  (the contract under test)
from zato.plugins import DEFAULT_PLUGINS, PluginLoadError, load_plugins, new_plugin_manager, plugin_switches
from zato.config import ConfigError
from zato.registry import Kind, RegistrationError
from zato.testing import admin_auth, run_server, set_config_value

HOOKS = sorted(name for name in dir(__import__("zato.hookspecs").hookspecs)
               if not name.startswith("_") and callable(getattr(__import__("zato.hookspecs").hookspecs, name))
               and hasattr(getattr(__import__("zato.hookspecs").hookspecs, name), "zato_spec"))


def test_default_plugins_load_first_and_are_listed_with_distribution_and_version():
    loaded = load_plugins({})
    names = [p.name for p in loaded.plugins]
    assert names[:len(DEFAULT_PLUGINS)] == list(DEFAULT_PLUGINS)
    core = loaded.plugins[0]
    assert core.distribution == "zato-core" and core.builtin and core.loaded
    assert "register_http_routes" in core.hooks
    assert "rest" in loaded.registry.items(Kind.CHANNEL_TYPES)


def test_entry_point_plugin_is_found_loaded_and_its_hooks_listed(plugin_site):
    module = all_hooks_plugin.install(plugin_site)
    loaded = load_plugins({})
    info = next(p for p in loaded.plugins if p.name == "allhooks")
    assert (info.distribution, info.version, info.module, info.loaded) == ("zato-plugin-allhooks", "2.5", module, True)
    assert info.hooks == HOOKS  # it implements every hook
    registered = loaded.registry.by_plugin("allhooks")
    assert registered["channel_types"] == ["allhooks"]
    assert registered["outgoing_connection_types"] == ["allhooks_conn", "allhooks_out"]  # register_connectors first
    assert registered["rate_limiter_backends"] == ["allhooks_limiter"]
    assert registered["object_types"] == ["allhooks_thing", "allhooks_endpoint"]
    assert registered["server_config"] == ["allhooks"]
    assert registered["notification_handlers"] == ["allhooks.ping"]
    assert registered["security_types"] == ["allhooks_token"]
    assert registered["http_routes"] == ["/allhooks/greet/{name} GET"]
    assert registered["service_attributes"] == ["allhooks_greeter"]
    assert registered["request_attributes"] == ["allhooks_note"]
    assert len(registered["internal_services"]) == 1


def test_switched_off_plugin_is_never_imported(plugin_site, tmp_path):
    marker = tmp_path / "imported"
    module = plugin_site.add("noisy", f"open({str(marker)!r}, 'w').write('yes')\n")
    loaded = load_plugins({"noisy": False})
    info = next(p for p in loaded.plugins if p.name == "noisy")
    assert not info.enabled and not info.loaded
    assert not marker.exists() and module not in sys.modules
    load_plugins({"noisy": True})
    assert marker.exists()


def test_broken_plugin_stops_loading_naming_plugin_distribution_and_exception(plugin_site):
    module = plugin_site.add("broken", "raise RuntimeError('boom at import')\n", distribution="zato-plugin-broken",
                             version="0.3")
    with pytest.raises(PluginLoadError) as info:
        load_plugins({})
    message = str(info.value)
    for part in ("'broken'", "zato-plugin-broken 0.3", "RuntimeError: boom at import",
                 f"`[deploy_internal] {module} = False`", "--skip-broken-plugins"):
        assert part in message


def test_broken_plugin_is_skipped_when_asked_and_said_so(plugin_site, caplog):
    plugin_site.add("broken", "import no_such_module_anywhere\n")
    loaded = load_plugins({}, skip_broken=True)
    assert [p.name for p in loaded.skipped] == ["broken"]
    assert "broken" not in loaded.enabled_names()
    assert "ModuleNotFoundError" in loaded.skipped[0].error
    assert "starting without it" in caplog.text


def test_misspelt_hook_stops_loading(plugin_site):
    plugin_site.add("typo", "from zato import hookimpl\n@hookimpl\ndef register_chanel_types(register):\n    pass\n")
    with pytest.raises(PluginLoadError, match="register_chanel_types"):
        load_plugins({})


def test_duplicate_registration_names_both_plugins(plugin_site):
    source = ("from zato import hookimpl\nfrom zato.registry import RateLimiterBackend\n"
              "@hookimpl\ndef register_rate_limiter_backends(register):\n"
              "    register(RateLimiterBackend('same', lambda server: None))\n")
    plugin_site.add("first", source)
    plugin_site.add("second", source)
    # register_* hooks are called in pluggy's order: the plugin loaded last registers first
    with pytest.raises(RegistrationError, match="'same' is registered by plugin 'second' and again by plugin 'first'"):
        load_plugins({})


def test_registering_the_wrong_type_is_a_clear_error(plugin_site):
    plugin_site.add("wrong", "from zato import hookimpl\n@hookimpl\ndef register_channel_types(register):\n"
                             "    register('rest2')\n")
    with pytest.raises(RegistrationError, match=r"^plugin 'wrong': bad call to register\(\) in register_channel_types: "
                                                r"expected a zato.registry.ChannelType, got 'rest2'$"):
        load_plugins({})


def test_loading_twice_with_the_same_manager_is_safe(plugin_site):
    all_hooks_plugin.install(plugin_site)
    pm = new_plugin_manager()
    first = load_plugins({}, pm=pm)
    second = load_plugins({}, pm=pm)
    assert first.enabled_names() == second.enabled_names()
    assert len(pm.get_plugins()) == len(first.enabled_names())


def test_essentials_plugin_cannot_be_switched_off_by_its_old_name_either():
    with pytest.raises(ConfigError, match="the 'essentials' plugin cannot be switched off"):
        plugin_switches({"essentials": "False"})
    with pytest.raises(ConfigError, match="the 'essentials' plugin cannot be switched off"):
        plugin_switches({"core": "False"})  # its name before
    assert plugin_switches({"core": "True"}) == {"essentials": True}
    with pytest.raises(ConfigError, match="use True or False"):
        plugin_switches({"cache": "perhaps"})


def test_plugin_name_clash_between_two_distributions(plugin_site):
    plugin_site.add("twin", "", distribution="zato-plugin-twin-a")
    plugin_site.add("twin", "", distribution="zato-plugin-twin-b")
    with pytest.raises(PluginLoadError, match="used by zato-plugin-twin-"):
        load_plugins({})


# ################################################################################################
# Every hook's effect on a running server


async def test_every_hook_takes_effect_in_a_running_server(plugin_site, server_dir):
    module_name = all_hooks_plugin.install(plugin_site)
    set_config_value(server_dir, "allhooks", "greeting", "hello")
    set_config_value(server_dir, "allhooks", "custom_transport", "True")
    from zato.odb import ODB, sqlite_url
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    odb.put_object("security", "token1", {"type": "allhooks_token", "token": "s3cret"})
    odb.put_object("channel_rest", "guarded", {"url_path": "/guarded", "service": "allhooks.hello",
                                               "security": "token1"})
    odb.put_object("channel_rest", "misconfigured", {"url_path": "/misconfigured", "service": "allhooks.hello",
                                                     "security": "no-such-definition"})
    odb.close()
    async with run_server(server_dir) as server:
        plugin = sys.modules[module_name]
        # register_server_config: declared keys are typed and seen in FS_CONFIG_ONLY
        assert server.config.allhooks.count == 1 and ("fs_config.greeting", "hello") in plugin.EVENTS
        # startup_phase: every phase of a single-process server, in order
        phases = [detail for what, detail in plugin.EVENTS if what == "phase"]
        assert phases == ["FS_CONFIG_ONLY", "IMPL_BEFORE_RUN", "ON_STARTING", "BEFORE_POST_FORK", "AFTER_POST_FORK",
                          "IN_PROCESS_FIRST", "AFTER_STARTED"]
        # register_channel_types: applied with the stored definitions, runtime started
        assert ("channel.apply", []) in plugin.EVENTS and ("channel.run", None) in plugin.EVENTS
        # register_tasks: started before AFTER_STARTED
        assert plugin.EVENTS.index(("task.run", server.name)) < plugin.EVENTS.index(("phase", "AFTER_STARTED"))
        # register_object_types / register_outgoing_connection_types / register_rate_limiter_backends
        assert server.registry.get(Kind.OBJECT_TYPES, "allhooks_thing").field("size").default == 1
        assert server.registry.get(Kind.OUTGOING_CONNECTION_TYPES, "allhooks_out").accessor == "out.allhooks"
        # register_connectors: both halves, credited to the plugin
        assert server.registry.get(Kind.OUTGOING_CONNECTION_TYPES, "allhooks_conn").object_type == "allhooks_endpoint"
        assert server.registry.plugin_of(Kind.OBJECT_TYPES, "allhooks_endpoint") == "allhooks"
        assert server.registry.get(Kind.RATE_LIMITER_BACKENDS, "allhooks_limiter").create(server) is not None
        async with httpx.AsyncClient(base_url=server.address) as client:
            # register_http_routes
            reply = await client.get("/allhooks/greet/zato")
            assert reply.status_code == 200 and reply.json()["hello"] == "zato"
            assert reply.headers["x-zato-cid"] == reply.json()["cid"]
            # register_internal_services
            reply = await client.post("/zato/api/invoke/allhooks.hello", auth=admin_auth())
            assert reply.json() == {"hello": "from allhooks", "greeter": "greetings to allhooks.hello", "note": None}
            # register_security_types: a REST channel guarded by a definition of the plugin's type
            assert (await client.get("/guarded")).status_code == 401
            assert (await client.get("/guarded", headers={"x-allhooks-token": "wrong"})).status_code == 401
            reply = await client.get("/guarded", headers={"x-allhooks-token": "s3cret"})
            assert reply.status_code == 200 and reply.json() == {
                "hello": "from allhooks", "greeter": "greetings to allhooks.hello", "note": None}
            assert (await client.get("/misconfigured")).status_code == 401  # refused, never let through
        # register_notification_handlers + notification_transport
        await server.notify("allhooks.ping", {"n": 1})
        assert plugin.NOTIFICATIONS == [(server.pid, {"n": 1})]
        # config_objects_changed: runs after a change, with the types that changed
        from zato.server.config_objects import CHANGED
        await server.notify(CHANGED, {"types": ["allhooks_thing"]})
        assert ("config_objects_changed", ("allhooks_thing",)) in plugin.EVENTS
        assert "allhooks.ping" in [json.loads(message)["action"] for message in plugin.PUBLISHED]
        with pytest.raises(KeyError, match="no notification handler for 'nope'"):
            await server.notify("nope", {})
        assert not [e for e in plugin.EVENTS if e[0] == "shutdown"]
    # shutdown: called once the server stopped
    assert plugin.EVENTS[-1] == ("shutdown", server.name)


def test_register_cli_commands_adds_a_command(plugin_site):
    from zato.cli import add_plugin_commands, cli
    all_hooks_plugin.install(plugin_site)
    try:
        add_plugin_commands(cli, ["allhooks-hello"])
        result = CliRunner().invoke(cli, ["allhooks-hello"])
        assert result.exit_code == 0, result.output
        assert "hello from allhooks" in result.output
    finally:
        cli.commands.pop("allhooks-hello", None)


def test_plugins_list_shows_enabled_disabled_and_hooks(plugin_site, server_dir):
    from zato.cli import cli
    all_hooks_plugin.install(plugin_site)
    runner = CliRunner()
    rows = {r["name"]: r for r in json.loads(runner.invoke(cli, ["plugins", "list", str(server_dir), "--json"]).output)}
    assert rows["allhooks"]["enabled"] and rows["allhooks"]["distribution"] == "zato-plugin-allhooks"
    assert rows["allhooks"]["version"] == "2.5" and rows["allhooks"]["hooks"] == HOOKS
    assert rows["essentials"]["distribution"] == "zato-core"

    set_config_value(server_dir, "plugins", "allhooks", "False")
    rows = {r["name"]: r for r in json.loads(runner.invoke(cli, ["plugins", "list", str(server_dir), "--json"]).output)}
    assert not rows["allhooks"]["enabled"] and not rows["allhooks"]["loaded"] and rows["allhooks"]["hooks"] == []

    table = runner.invoke(cli, ["plugins", "list", str(server_dir)]).output
    assert "allhooks" in table and "not imported" in table


# ################################################################################################
# Opt-in plugins: off until server.conf switches them on, by [plugins] or by Zato's [component_enabled]

OPT_IN_SOURCE = """\
from zato import hookimpl
from zato.server.http import HTTPResponse

async def answer(request):
    return HTTPResponse.json({"opt_in": "on"})

@hookimpl
def register_http_routes(register):
    register("/optin/answer", answer, methods=("GET",))
"""


def _info(loaded, name):
    return next(p for p in loaded.plugins if p.name == name)


def test_opt_in_plugin_is_not_imported_unless_switched_on(plugin_site):
    module = plugin_site.add("optin", OPT_IN_SOURCE, opt_in=True)
    plain = plugin_site.add("plain", "")
    loaded = load_plugins({})
    info = _info(loaded, "optin")
    assert info.opt_in and not info.enabled and not info.loaded and info.hooks == []
    assert module not in sys.modules
    assert "/optin/answer GET" not in loaded.registry.items(Kind.HTTP_ROUTES)
    assert not _info(loaded, "plain").opt_in and _info(loaded, "plain").loaded and plain in sys.modules

    loaded = load_plugins(plugin_switches({"optin": "True"}))
    assert _info(loaded, "optin").loaded and module in sys.modules
    assert "/optin/answer GET" in loaded.registry.items(Kind.HTTP_ROUTES)


def test_opt_in_is_read_from_the_same_distribution_only(plugin_site):
    # another distribution's opt-in entry for the same name does not switch this plugin off
    plugin_site.add("shared", "", distribution="zato-plugin-shared")
    other = plugin_site.root / "zato_plugin_other-1.0.dist-info"
    other.mkdir()
    (other / "METADATA").write_text("Metadata-Version: 2.1\nName: zato-plugin-other\nVersion: 1.0\n")
    (other / "entry_points.txt").write_text("[zato.plugins.opt_in]\nshared = nothing_here\n")
    assert _info(load_plugins({}), "shared").loaded


def test_component_enabled_switches_an_opt_in_plugin_on_and_off(plugin_site, server_dir, caplog):
    from zato.server.server import ServerPaths, read_server_config
    module = plugin_site.add("optin", OPT_IN_SOURCE, opt_in=True)

    def switches():
        config = read_server_config(ServerPaths(server_dir))
        return plugin_switches(config.get("plugins"), config.get("component_enabled"))

    # Zato's own keys are not plugins: ignored, whatever their value, without a warning
    for key, value in (("stats", "False"), ("cassandra", "True"), ("sso", "perhaps"), ("live_msg_browser", "")):
        set_config_value(server_dir, "component_enabled", key, value)
    set_config_value(server_dir, "component_enabled", "optin", "False")
    with caplog.at_level("WARNING"):
        assert "optin" not in load_plugins(switches()).enabled_names()
    assert module not in sys.modules
    assert switches()["optin"] is False and not {"stats", "cassandra", "sso", "live_msg_browser"} & set(switches())
    assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text

    set_config_value(server_dir, "component_enabled", "optin", "True")
    assert switches()["optin"] is True
    assert _info(load_plugins(switches()), "optin").loaded and module in sys.modules


def test_component_enabled_switches_a_plugin_exactly_as_plugins_does(plugin_site):
    plugin_site.add("plain", "")
    assert plugin_switches({}, {"plain": "off"}) == {"plain": False}
    assert "plain" not in load_plugins(plugin_switches({}, {"plain": False})).enabled_names()
    with pytest.raises(ConfigError, match=r"\[component_enabled\] essentials = False: the 'essentials' plugin cannot"):
        plugin_switches({}, {"essentials": "False"})


def test_component_enabled_value_that_is_not_a_boolean_is_a_config_error(plugin_site):
    plugin_site.add("optin", OPT_IN_SOURCE, opt_in=True)
    with pytest.raises(ConfigError) as info:
        plugin_switches({}, {"optin": "perhaps"})
    message = str(info.value)
    assert "[component_enabled] optin = perhaps" in message and "use True or False" in message
    assert plugin_switches({}, {"cassandra": "perhaps"}) == {}  # not a plugin: not ours to check


def test_plugins_section_wins_over_component_enabled_with_one_warning(plugin_site, caplog):
    plugin_site.add("optin", OPT_IN_SOURCE, opt_in=True)
    with caplog.at_level("WARNING", logger="zato.plugins"):
        assert plugin_switches({"optin": "False"}, {"optin": "True"}) == {"optin": False}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert "[plugins] optin = False" in warnings[0] and "[component_enabled] optin = True" in warnings[0]
    assert "[plugins] wins" in warnings[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="zato.plugins"):
        assert plugin_switches({"optin": "True"}, {"optin": "yes"}) == {"optin": True}  # they agree
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "wins" not in warnings[0] and "[deploy_internal]" in warnings[0], warnings


async def test_component_enabled_switches_an_opt_in_plugin_on_in_a_running_server(plugin_site, server_dir):
    module = plugin_site.add("optin", OPT_IN_SOURCE, opt_in=True)
    async with run_server(server_dir) as server:
        assert "optin" not in server.plugins.enabled_names()
        async with httpx.AsyncClient(base_url=server.address) as client:
            assert (await client.get("/optin/answer")).status_code == 404
    assert module not in sys.modules

    set_config_value(server_dir, "component_enabled", "optin", "True")
    async with run_server(server_dir) as server:
        assert "optin" in server.plugins.enabled_names()
        async with httpx.AsyncClient(base_url=server.address) as client:
            reply = await client.get("/optin/answer")
            assert reply.status_code == 200 and reply.json() == {"opt_in": "on"}
    assert module in sys.modules


def test_plugins_list_shows_an_opt_in_plugin_off_until_switched_on(plugin_site, server_dir):
    from zato.cli import cli
    module = plugin_site.add("optin", OPT_IN_SOURCE, opt_in=True)
    runner = CliRunner()
    hint = f"off until switched on: [deploy_internal] {module} = True (or [component_enabled] optin = True) in server.conf"
    rows = {r["name"]: r for r in json.loads(runner.invoke(cli, ["plugins", "list", str(server_dir), "--json"]).output)}
    assert rows["optin"]["opt_in"] and not rows["optin"]["enabled"] and not rows["optin"]["loaded"]
    table = runner.invoke(cli, ["plugins", "list", str(server_dir)])
    assert table.exit_code == 0, table.output
    assert f"optin: {hint}" in table.output.splitlines()

    set_config_value(server_dir, "component_enabled", "optin", "True")
    rows = {r["name"]: r for r in json.loads(runner.invoke(cli, ["plugins", "list", str(server_dir), "--json"]).output)}
    assert rows["optin"]["enabled"] and rows["optin"]["loaded"] and rows["optin"]["hooks"] == ["register_http_routes"]
    assert hint not in runner.invoke(cli, ["plugins", "list", str(server_dir)]).output


def test_quickstart_lists_an_opt_in_plugin_commented_out(plugin_site, tmp_path):
    from zato.server.server import ServerPaths, read_server_config
    from zato.testing import create_test_server_dir
    module = plugin_site.add("optin", OPT_IN_SOURCE, opt_in=True)
    base_dir = create_test_server_dir(tmp_path / "fresh")
    text = (base_dir / "config" / "server.conf").read_text("utf-8")
    assert ("# off until switched on: uncomment the line below, or set [component_enabled] optin = True as in "
            f"Zato\n# {module} = True\n") in text
    config = read_server_config(ServerPaths(base_dir))
    assert "plugins" not in config and module not in config.deploy_internal
    assert "optin" not in plugin_switches(None, None, config.deploy_internal)
    set_config_value(base_dir, "component_enabled", "optin", "True")  # as the Zato article says
    config = read_server_config(ServerPaths(base_dir))
    assert plugin_switches(None, config.get("component_enabled"), config.deploy_internal)["optin"] is True
