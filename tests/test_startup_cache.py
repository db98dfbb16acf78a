""" The start-up cache of internal services: reused, invalidated by plugin and file changes,
rebuilt when corrupt or tampered with, and on --sync-internal. """

from __future__ import annotations

import json
import os
import sys

import httpx

import all_hooks_plugin
from zato.server.server import WorkerOptions
from zato.testing import admin_auth, run_server, set_config_value


def services_module_of(plugin_site) -> str:
    return next(m for m in plugin_site.modules if m.startswith("allhooks_services_"))


async def start_and_report(server_dir, options=None) -> tuple[str, list[str]]:
    async with run_server(server_dir, options) as server:
        return server.internal_services_source, server.services.names()


async def test_second_start_uses_the_cache_without_importing_service_modules(plugin_site, server_dir, caplog):
    all_hooks_plugin.install(plugin_site)
    services_module = services_module_of(plugin_site)
    source, names = await start_and_report(server_dir)
    assert source == "fresh" and "allhooks.hello" in names
    assert "deployed" in caplog.text and "internal services (fresh)" in caplog.text

    sys.modules.pop(services_module)
    caplog.clear()
    async with run_server(server_dir) as server:
        assert server.internal_services_source == "cache"
        assert "internal services (cache)" in caplog.text
        assert "allhooks.hello" in server.services and services_module not in sys.modules
        async with httpx.AsyncClient(base_url=server.address) as client:
            reply = await client.post("/zato/api/invoke/allhooks.hello", auth=admin_auth())
        assert reply.json() == {"hello": "from allhooks", "greeter": "greetings to allhooks.hello",
                                "note": None}  # imported on first use
        assert services_module in sys.modules


async def test_changed_service_file_invalidates_the_cache(plugin_site, server_dir):
    all_hooks_plugin.install(plugin_site)
    await start_and_report(server_dir)
    path = plugin_site.root / f"{services_module_of(plugin_site)}.py"
    path.write_text(path.read_text() + "\n\nclass Added(Service):\n    name = 'allhooks.added'\n"
                    "    def handle(self):\n        pass\n")
    sys.modules.pop(services_module_of(plugin_site))
    source, names = await start_and_report(server_dir)
    assert source == "fresh" and "allhooks.added" in names


async def test_changed_plugin_set_or_version_invalidates_the_cache(plugin_site, server_dir):
    all_hooks_plugin.install(plugin_site)
    assert (await start_and_report(server_dir))[0] == "fresh"
    assert (await start_and_report(server_dir))[0] == "cache"

    set_config_value(server_dir, "plugins", "cache", "False")
    source, names = await start_and_report(server_dir)
    assert source == "fresh" and "zato.cache.builtin.create" not in names

    metadata = next(plugin_site.root.glob("zato_plugin_allhooks-*.dist-info")) / "METADATA"
    metadata.write_text(metadata.read_text().replace("Version: 2.5", "Version: 2.6"))
    assert (await start_and_report(server_dir))[0] == "fresh"
    assert (await start_and_report(server_dir))[0] == "cache"


async def test_corrupt_cache_is_rebuilt_never_trusted(server_dir, caplog):
    await start_and_report(server_dir)
    cache = server_dir / "work" / "startup-cache.json"
    cache.write_bytes(b"\x00not json at all")
    source, names = await start_and_report(server_dir)
    assert source == "fresh" and "zato.ping" in names
    assert "start-up cache rebuilt: cache file is corrupt" in caplog.text
    assert json.loads(cache.read_text())["format"] == 1  # written anew


async def test_tampered_cache_is_detected_by_its_checksum(server_dir, caplog):
    await start_and_report(server_dir)
    cache = server_dir / "work" / "startup-cache.json"
    data = json.loads(cache.read_text())
    data["entries"][0]["name"] = "evil.service"
    cache.write_text(json.dumps(data))
    source, names = await start_and_report(server_dir)
    assert source == "fresh" and "evil.service" not in names
    assert "checksum does not match" in caplog.text


async def test_cache_with_a_missing_field_is_rebuilt(server_dir, caplog):
    await start_and_report(server_dir)
    cache = server_dir / "work" / "startup-cache.json"
    data = json.loads(cache.read_text())
    del data["checksum"]
    cache.write_text(json.dumps(data))
    assert (await start_and_report(server_dir))[0] == "fresh"
    assert "cache file is corrupt" in caplog.text


async def test_sync_internal_rebuilds_the_cache(server_dir):
    await start_and_report(server_dir)
    cache = server_dir / "work" / "startup-cache.json"
    before = os.stat(cache).st_mtime_ns
    assert (await start_and_report(server_dir, WorkerOptions(sync_internal=True)))[0] == "fresh"
    assert os.stat(cache).st_mtime_ns != before
    assert (await start_and_report(server_dir))[0] == "cache"
