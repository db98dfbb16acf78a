""" Start-up phases and user start-up callables (`[misc] startup_callable`), including the
seed article's examples (shared/seeds/000_*.txt), which must work unchanged. """

from __future__ import annotations

import json
import textwrap

import httpx
import pytest

from core_test_helpers import serve_asgi, text_app, unique_module_name
from zato.plugins import PluginLoadError
from zato.server.startup_callable import StartupError
from zato.testing import admin_auth, run_server, set_config_value

ALL_PHASES = ["FS_CONFIG_ONLY", "IMPL_BEFORE_RUN", "ON_STARTING", "BEFORE_POST_FORK", "AFTER_POST_FORK",
              "IN_PROCESS_FIRST", "AFTER_STARTED"]


def write_callables(server_dir, source: str) -> str:
    module = unique_module_name("user_startup")
    (server_dir / "lib" / f"{module}.py").write_text(textwrap.dedent(source), "utf-8")
    return module


RECORDER = """
    import json
    from zato.common import SERVER_STARTUP

    LOG = []

    def record(ctx):
        LOG.append((ctx.phase, sorted(ctx.kwargs)))

    def second(ctx):
        LOG.append(("second", ctx.phase))
"""


async def test_user_callables_run_in_every_phase_in_order(server_dir):
    module = write_callables(server_dir, RECORDER)
    set_config_value(server_dir, "misc", "startup_callable", f"{module}.record, {module}.second")
    async with run_server(server_dir):
        import sys
        log = sys.modules[module].LOG
    assert [entry[0] for entry in log if entry[0] != "second"] == ALL_PHASES
    # each phase: `record` first, then `second`, as listed in server.conf
    assert [entry for entry in log if entry[0] == "second"] == [("second", phase) for phase in ALL_PHASES]
    assert log[0] == ("FS_CONFIG_ONLY", ["base_dir", "pickup_config", "server_config", "sio_config", "sso_config"])
    assert dict((p, k) for p, k in log if p != "second")["AFTER_STARTED"] == ["server"]


async def test_fs_config_only_changes_made_in_place_take_effect(server_dir):
    module = write_callables(server_dir, """
        def adjust(ctx):
            if ctx.phase == "FS_CONFIG_ONLY":
                config = ctx.kwargs["server_config"]
                config.deploy_internal["zato.builtin.cache"] = False  # switch a plugin off before plugins load
                config.main.max_body_size = "10"       # typed afterwards like any value from the file
    """)
    set_config_value(server_dir, "misc", "startup_callable", f"{module}.adjust")
    async with run_server(server_dir) as server:
        assert "cache" not in server.plugins.enabled_names()
        assert "zato.cache.builtin.create" not in server.services
        assert server.config.main.max_body_size == 10
        async with httpx.AsyncClient(base_url=server.address) as client:
            reply = await client.post("/demo/hello", content=b"x" * 11)
            assert reply.status_code == 413


async def test_server_invoke_works_in_after_started(server_dir):
    module = write_callables(server_dir, """
        RESULTS = []
        def call(ctx):
            if ctx.phase == "AFTER_STARTED":
                RESULTS.append(ctx.kwargs["server"].invoke("zato.ping", {}))
    """)
    set_config_value(server_dir, "misc", "startup_callable", f"{module}.call")
    async with run_server(server_dir):
        import sys
        assert sys.modules[module].RESULTS == [{"pong": "zato"}]


@pytest.mark.parametrize("dotted,message", [
    ("no_such_module_xyz.func", "cannot import module 'no_such_module_xyz'"),
    ("json.no_such_function", "module 'json' has no 'no_such_function'"),
    ("plainname", "is not a dotted name"),
    ("json.__doc__", "is not callable"),
])
async def test_bad_dotted_name_stops_start_up_naming_it(server_dir, dotted, message):
    set_config_value(server_dir, "misc", "startup_callable", dotted)
    with pytest.raises(StartupError, match=message) as info:
        async with run_server(server_dir):
            pass
    assert "startup_callable" in str(info.value)


@pytest.mark.parametrize("phase", ["FS_CONFIG_ONLY", "ON_STARTING", "AFTER_STARTED"])
async def test_raising_callable_stops_start_up_naming_it_and_the_phase(server_dir, phase):
    module = write_callables(server_dir, f"""
        def explode(ctx):
            if ctx.phase == "{phase}":
                raise ValueError("no config service today")
    """)
    set_config_value(server_dir, "misc", "startup_callable", f"{module}.explode")
    with pytest.raises(BaseException) as info:
        async with run_server(server_dir):
            pass
    from zato.server.main import known_error
    error = known_error(info.value)
    assert isinstance(error, StartupError)
    assert f"{module}.explode raised in phase {phase}: ValueError: no config service today" in str(error)


async def test_plugin_failing_in_a_phase_stops_start_up_naming_it(plugin_site, server_dir):
    plugin_site.add("failing", "from zato import hookimpl\n@hookimpl\ndef startup_phase(phase, ctx):\n"
                               "    if phase == 'ON_STARTING':\n        raise OSError('disk gone')\n")
    with pytest.raises(BaseException) as info:
        async with run_server(server_dir):
            pass
    from zato.server.main import known_error
    assert "plugin 'failing' failed in start-up phase ON_STARTING: OSError: disk gone" in str(known_error(info.value))


async def test_broken_plugin_stops_the_server_unless_skipped(plugin_site, server_dir):
    plugin_site.add("broken", "raise ImportError('missing C library')\n")
    with pytest.raises(BaseException) as info:
        async with run_server(server_dir):
            pass
    from zato.server.main import known_error
    assert isinstance(known_error(info.value), PluginLoadError)
    set_config_value(server_dir, "main", "skip_broken_plugins", "True")
    async with run_server(server_dir) as server:
        assert "broken" not in server.plugins.enabled_names()
        assert [p.name for p in server.plugins.skipped] == ["broken"]


# ################################################################################################
# The seed article's callables, as published (only the blanks filled in)

SEED_CALLABLES = '''
# -*- coding: utf-8 -*-

# Requests
import requests

# Zato
from zato.common import CACHE, SERVER_STARTUP
from zato.common.util import as_bool

# Type completion imports
if 0:
    from zato.server.base.parallel import ParallelServer
    from zato.server.startup_callable import PhaseCtx

    ParallelServer = ParallelServer
    PhaseCtx = PhaseCtx

def update_fs_config(ctx):
    """ This callable has access to only to file-system based configuration files.
    """
    # type: (PhaseCtx)

    if ctx.phase == SERVER_STARTUP.PHASE.FS_CONFIG_ONLY:

        # server.conf
        server_config = ctx.kwargs['server_config']

        # pickup.conf
        pickup_config = ctx.kwargs['pickup_config']

        # simple-io.conf
        sio_config = ctx.kwargs['sio_config']

        # sso.conf
        sso_config = ctx.kwargs['sso_config']

        # Base directory the server was installed to
        base_dir = ctx.kwargs['base_dir']

        # Consult a remote resource and check
        # if Cassandra connections should be enabled
        response = requests.get('CONFIG_URL')

        # Convert to a bool object
        is_enabled = as_bool(response.text)

        # Update the server configuration in place
        server_config.component_enabled.cassandara = is_enabled

def create_cache(ctx):
    """ This is the callable that is invoked when the server is started.
    """
    # type: (PhaseCtx)

    if ctx.phase == SERVER_STARTUP.PHASE.AFTER_STARTED:

        # Server object where all our services are deployed to already
        server = ctx.kwargs['server'] # type: ParallelServer

        # Service to invoke
        service = 'zato.cache.builtin.create'

        # Input data to the service
        request = {
            'cluster_id': server.cluster_id,
            'name': 'my.cache',
            'is_active': True,
            'is_default': False,
            'max_size': 10000,
            'max_item_size': 10000,
            'extend_expiry_on_get': True,
            'extend_expiry_on_set': True,
            'cache_type': CACHE.TYPE.BUILTIN,
        }

        # Create a cache object by invoke the service
        server.invoke(service, request)
'''


async def test_seed_article_callables_work_unchanged(server_dir):
    async with serve_asgi(text_app("True")) as config_url:
        module = unique_module_name("my_startup")
        (server_dir / "lib" / f"{module}.py").write_text(SEED_CALLABLES.replace("CONFIG_URL", config_url), "utf-8")
        set_config_value(server_dir, "misc", "startup_callable", f"{module}.update_fs_config, {module}.create_cache")
        async with run_server(server_dir) as server:
            assert server.config.component_enabled.cassandara is True
            async with httpx.AsyncClient(base_url=server.address) as client:
                reply = await client.post("/zato/api/invoke/zato.cache.builtin.get-list", auth=admin_auth())
            caches = reply.json()
            assert [c["name"] for c in caches] == ["my.cache"]
            assert caches[0]["max_size"] == 10000 and caches[0]["cache_type"] == "builtin"
