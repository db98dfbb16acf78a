""" A server with the wsx plugin, the test services deployed, a Basic Auth definition and helpers
to create channels through the admin API. """

from __future__ import annotations

import textwrap
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

import httpx

from zato.plugin_api import admin_auth, create_test_server_dir, run_server

USER, PASSWORD = "wsx.user", "wsx-s3cret"
API_KEY = "wsx-api-key-123"

SERVICES = '''
import trio
from zato.server.service import Service
from zato.common.exception import Forbidden


class Echo(Service):
    name = 'wsx.echo'

    def handle(self):
        wsx = self.request.wsx
        self.response.payload = {'echo': self.request.payload, 'channel': wsx.channel_name,
                                 'pub_client_id': wsx.pub_client_id, 'ext_client_id': wsx.ext_client_id,
                                 'user': wsx.user, 'channel_type': self.channel.type,
                                 'channel_name': self.channel.name}


class AsyncEcho(Service):
    name = 'wsx.async-echo'

    async def handle(self):
        running = self.server.plugin_state.setdefault('test.wsx.running', {'now': 0, 'peak': 0})
        running['now'] += 1
        running['peak'] = max(running['peak'], running['now'])
        try:
            await trio.sleep(float(self.request.payload.get('sleep', 0)))
        finally:
            running['now'] -= 1
        self.response.payload = {'echo': self.request.payload}


class Failing(Service):
    name = 'wsx.failing'

    def handle(self):
        if self.request.payload.get('forbidden'):
            raise Forbidden(self.cid, 'not for you')
        raise ValueError('a secret detail that must not reach the client')


class AskTheClient(Service):
    name = 'wsx.ask-the-client'

    def handle(self):
        self.response.payload = {'answer': self.request.wsx.invoke_client({'question': 'ready?'})}


class Broadcast(Service):
    name = 'wsx.broadcast'

    def handle(self):
        self.response.payload = {'sent': self.wsx.channel[self.request.payload['channel']].broadcast(
            {'news': self.request.payload['news']})}


class InvokeByID(Service):
    name = 'wsx.invoke-by-id'

    def handle(self):
        payload = self.request.payload
        self.response.payload = {'answer': self.wsx.channel[payload['channel']].invoke(
            payload['pub_client_id'], payload['data'], timeout=5)}


class Hook(Service):
    name = 'wsx.hook'

    def handle(self):
        events = self.server.plugin_state.setdefault('test.wsx.hook', [])
        events.append((self.request.payload['event'], self.request.payload['pub_client_id']))
'''


def admin(server: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                             headers={"content-type": "application/json"})


@asynccontextmanager
async def wsx_server(tmp_path: Any, **config: Any) -> AsyncIterator[Any]:
    base_dir = create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 2}, **config)
    (base_dir / "pickup" / "wsx_services.py").write_text(textwrap.dedent(SERVICES))
    async with run_server(base_dir) as server:
        async with admin(server) as client:
            for name, definition, secret in (
                    ("wsx.basic", {"type": "basic_auth", "username": USER}, PASSWORD),
                    ("wsx.key", {"type": "apikey"}, API_KEY)):
                reply = await client.post("/zato/api/objects/security", json={"name": name, **definition})
                assert reply.status_code == 201, reply.text
                reply = await client.put(f"/zato/api/objects/security/{name}/secrets/password", json={"value": secret})
                assert reply.status_code == 204, reply.text
        yield server


async def create_channel(server: Any, name: str = "wsx.test", path: str = "/ws/test", **fields: Any) -> dict:
    port = urlsplit(server.address).port
    definition = {"name": name, "address": f"ws://127.0.0.1:{port}{path}", "service": "wsx.echo",
                  "security": "wsx.basic", **fields}
    async with admin(server) as client:
        reply = await client.post("/zato/api/objects/channel_web_socket", json=definition)
    assert reply.status_code == 201, reply.text
    return reply.json()
