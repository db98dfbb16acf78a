""" User config files: read by services as self.config, reloaded when saved or on request,
and a broken file keeps the previous values. """

from __future__ import annotations

import os
import textwrap
import time

import httpx
import pytest
import trio

from zato.odb import ODB, sqlite_url
from zato.testing import admin_auth, run_server, set_config_value

SERVICE = '''
from zato.server.service import Service

class Greeting(Service):
    name = "t.greeting"

    def handle(self):
        user = self.config.user
        self.response.payload = {"greeting": user.demo.greeting, "crm": dict(self.config.get("crm", {}))}
'''


@pytest.fixture
async def client(server_dir):
    (server_dir / "pickup" / "greeting.py").write_text(textwrap.dedent(SERVICE))
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    odb.put_object("channel_rest", "greeting", {"url_path": "/greeting", "service": "t.greeting"})
    odb.close()
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, timeout=10) as client:
            client.server = server
            yield client


def write_user_conf(server_dir, text: str) -> None:
    path = server_dir / "config" / "user.conf"
    path.write_text(textwrap.dedent(text))
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a visible change on coarse clocks


async def wait_for_greeting(client, expected: str, timeout: float = 5.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if (await client.get("/greeting")).json()["greeting"] == expected:
            return time.monotonic() - started
        await trio.sleep(0.05)
    raise AssertionError(f"greeting did not become {expected!r} within {timeout} s")


async def test_services_read_user_config(client):
    assert (await client.get("/greeting")).json() == {"greeting": "Hello", "crm": {}}


async def test_saving_the_file_reloads_it(client, server_dir):
    write_user_conf(server_dir, "[demo]\ngreeting = Bonjour\n")
    took = await wait_for_greeting(client, "Bonjour")
    assert took < 3.0


async def test_a_broken_file_is_reported_and_the_previous_values_stay(client, server_dir, caplog, monkeypatch):
    write_user_conf(server_dir, "[demo\ngreeting = broken\n")
    await trio.sleep(1.2)
    assert (await client.get("/greeting")).json()["greeting"] == "Hello"
    assert "user config 'user' not loaded" in caplog.text and "user.conf" in caplog.text
    assert "the previous values stay" in caplog.text

    monkeypatch.delenv("ZATO_TEST_GREETING", raising=False)
    write_user_conf(server_dir, "[demo]\ngreeting = $ZATO_TEST_GREETING\n")
    await trio.sleep(1.2)
    assert (await client.get("/greeting")).json()["greeting"] == "Hello"
    assert "ZATO_TEST_GREETING is not set" in caplog.text

    monkeypatch.setenv("ZATO_TEST_GREETING", "Hola")
    reply = await client.post("/zato/api/invoke/zato.user-config.reload", auth=admin_auth())
    assert reply.status_code == 200 and reply.json()["reloaded"] == ["user"]
    assert (await client.get("/greeting")).json()["greeting"] == "Hola"  # at once, no waiting


async def test_more_files_named_in_server_conf(server_dir):
    (server_dir / "config" / "crm.ini").write_text("[endpoint]\nurl = http://crm.example\nretries = 3\n")
    set_config_value(server_dir, "user_config", "crm", "crm.ini")
    (server_dir / "pickup" / "greeting.py").write_text(textwrap.dedent(SERVICE))
    async with run_server(server_dir) as server:
        payload = await server.invoke("t.greeting", {})
    assert payload["crm"] == {"endpoint": {"url": "http://crm.example", "retries": "3"}}
