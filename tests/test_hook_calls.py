""" How the core calls hook implementations one plugin at a time (`zato.plugins.hook_calls`):
in exactly the order pluggy's own `pm.hook.X(...)` calls them (last registered first,
`tryfirst` before, `trylast` after), and wrappers refused where there is no whole call to wrap. """

from __future__ import annotations

import sys

import click
import pytest

from zato import hookimpl
from zato.plugins import PluginLoadError, WrapperNotSupported, hook_calls, load_plugins, new_plugin_manager
from zato.registry import Kind
from zato.testing import run_server

LOG_MODULE = "zato_test_hook_order_log"

# Entry points are registered in the order of their names: a, b, c, d, e, f.
ORDERED_PLUGINS = {
    "order_a": "trylast=True",
    "order_b": "",
    "order_c": "tryfirst=True",
    "order_d": "",
    "order_e": "tryfirst=True",
    "order_f": "trylast=True",
}
# pluggy (1.7, HookCaller._add_hookimpl): tryfirst ones first, last registered first; then plain
# ones, last registered first; then trylast ones, each one registered going to the very end.
PLUGGY_ORDER = ["order_e", "order_c", "order_d", "order_b", "order_a", "order_f"]

ORDERED_SOURCE = '''
import trio

from zato import hookimpl
from zato.registry import ObjectType
from {log} import CALLS

NAME = {name!r}


@hookimpl({opts})
def register_object_types(register):
    CALLS.append(("register_object_types", NAME))
    register(ObjectType(NAME, ()))


@hookimpl({opts})
def startup_phase(phase, ctx):
    CALLS.append(("startup_phase:" + phase, NAME))


@hookimpl({opts})
def register_tasks(register, server):
    async def run(*, task_status=trio.TASK_STATUS_IGNORED):
        CALLS.append(("task.run", NAME))
        task_status.started()
        await trio.sleep_forever()
    register("ticker", run)


@hookimpl({opts})
def shutdown(server):
    CALLS.append(("shutdown", NAME))
'''


def install_ordered_plugins(plugin_site) -> list:
    (plugin_site.root / f"{LOG_MODULE}.py").write_text("CALLS = []\n")  # where every plugin records its calls
    for name, opts in ORDERED_PLUGINS.items():
        plugin_site.add(name, ORDERED_SOURCE.format(log=LOG_MODULE, name=name, opts=opts))
    plugin_site.modules.append(LOG_MODULE)
    return __import__(LOG_MODULE).CALLS


def names_of(calls: list, what: str) -> list[str]:
    return [name for kind, name in calls if kind == what]


def pluggy_order(pm, hook_name: str, calls: list, **kwargs) -> list[str]:
    """ The order pluggy itself calls the implementations of the test plugins in (as they record it). """
    others = [plugin for name, plugin in pm.list_name_plugin() if not name.startswith("order_")]
    del calls[:]
    pm.subset_hook_caller(hook_name, remove_plugins=others)(**kwargs)
    return [name for _, name in calls]


async def test_one_plugin_at_a_time_in_pluggy_order_with_tryfirst_and_trylast(plugin_site, server_dir):
    calls = install_ordered_plugins(plugin_site)
    async with run_server(server_dir) as server:
        pm = server.pm
        registered = [name for name in server.registry.items(Kind.OBJECT_TYPES) if name.startswith("order_")]
        phase = names_of(calls, "startup_phase:ON_STARTING")
        tasks = names_of(calls, "task.run")
    stopped = names_of(calls, "shutdown")

    assert registered == PLUGGY_ORDER
    assert phase == PLUGGY_ORDER
    assert tasks == PLUGGY_ORDER
    assert stopped == PLUGGY_ORDER
    # ... which is what pluggy's own call of each hook does with the same plugins
    assert pluggy_order(pm, "register_object_types", calls, register=lambda value: None) == PLUGGY_ORDER
    assert pluggy_order(pm, "startup_phase", calls, phase="ON_STARTING", ctx=None) == PLUGGY_ORDER
    assert pluggy_order(pm, "shutdown", calls, server=None) == PLUGGY_ORDER
    # ... and each registration is still credited to its own plugin
    for name in PLUGGY_ORDER:
        assert server.registry.plugin_of(Kind.OBJECT_TYPES, name) == name
    assert [call.plugin_name for call in hook_calls(pm, "shutdown") if call.plugin_name.startswith("order_")] \
        == PLUGGY_ORDER


WRAPPER_SOURCE = '''
from zato import hookimpl


@hookimpl({opts})
def {hook}({args}):
    yield
'''


@pytest.mark.parametrize("hook, args, opts", [
    ("startup_phase", "phase, ctx", "wrapper=True"),
    ("register_object_types", "register", "hookwrapper=True"),
    ("shutdown", "server", "wrapper=True"),
    ("register_tasks", "register, server", "wrapper=True"),
    ("config_objects_changed", "server, object_types", "wrapper=True"),
])
def test_a_wrapper_of_a_hook_called_one_plugin_at_a_time_is_refused_at_load(plugin_site, hook, args, opts):
    module = plugin_site.add("wrapping", WRAPPER_SOURCE.format(hook=hook, args=args, opts=opts))
    with pytest.raises(PluginLoadError) as info:
        load_plugins({})
    message = str(info.value)
    for part in ("plugin 'wrapping'", f"its {hook} implementation", f"{module}.py:", opts,
                 f"calls each plugin's {hook} on its own", f"remove {opts}", "tryfirst=True or trylast=True",
                 f"[deploy_internal] {module} = False"):
        assert part in message, (part, message)


def test_a_refused_wrapper_plugin_is_left_out_when_broken_plugins_are_skipped(plugin_site):
    plugin_site.add("wrapping", WRAPPER_SOURCE.format(hook="startup_phase", args="phase, ctx", opts="wrapper=True"))
    loaded = load_plugins({}, skip_broken=True)
    assert [p.name for p in loaded.skipped] == ["wrapping"]
    assert "WrapperNotSupported" in loaded.skipped[0].error
    assert not loaded.pm.has_plugin("wrapping")
    assert "wrapping" not in [call.plugin_name for call in hook_calls(loaded.pm, "startup_phase")]


def test_a_wrapper_of_a_hook_the_core_calls_through_pluggy_is_honoured(plugin_site):
    module = plugin_site.add("wrapping", '''
        from zato import hookimpl

        SEEN = []


        @hookimpl(wrapper=True)
        def register_cli_commands(cli):
            SEEN.append("before")
            result = yield
            SEEN.append("after")
            return result
    ''')
    loaded = load_plugins({})
    loaded.pm.hook.register_cli_commands(cli=click.Group())
    assert sys.modules[module].SEEN == ["before", "after"]


def test_a_wrapper_registered_some_other_way_is_refused_when_called(plugin_site):
    module = plugin_site.add("wrapping", WRAPPER_SOURCE.format(hook="shutdown", args="server", opts="wrapper=True"))
    pm = new_plugin_manager()
    pm.register(__import__(module), name="wrapping")  # not through load_plugins
    with pytest.raises(WrapperNotSupported, match="plugin 'wrapping': its shutdown implementation"):
        hook_calls(pm, "shutdown")


def test_an_in_process_plugin_with_a_wrapper_is_refused_naming_it():
    class Wrapping:
        @hookimpl(wrapper=True)
        def shutdown(self, server):
            yield

    with pytest.raises(PluginLoadError, match="plugin 'in_process_wrapper' cannot be loaded: its shutdown"):
        load_plugins({}, extra=[("in_process_wrapper", Wrapping())])
