""" A server with the bst plugin, BST definitions created through the admin API and test services
deployed from pickup/, and helpers to call it. """

from __future__ import annotations

import textwrap
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import httpx

from zato.plugin_api import admin_auth, create_test_server_dir, run_server

ORDERS = """\
Orders
------
Objects: Order, Priority order
New: Submitted
Submitted: Ready
Ready: Sent
Sent: Confirmed, Rejected
Rejected: Updated
Updated: Ready
Force stop: Canceled, Timed out
"""

CUSTOMERS = """\
Customer consent
----------------
Objects: Customer
Consent given: Consent confirmed, Consent withdrawn
Consent withdrawn: Consent given again
"""

SERVICES = '''
import threading

from zato.server.service import Service
from zato_bst import transition_to, TransitionConflict, TransitionRefused


class MyService(Service):
    """ The article's service. """
    name = 'bst.test.my-service'

    def handle(self):
        with transition_to(self, 'Order', 123, 'ready'):
            self.server.plugin_state.setdefault('test.bst.ran', []).append(('my-service', self.cid))
        self.response.payload = {'ok': True}


class Move(Service):
    """ transition_to with everything from the payload; `fail` raises inside the block, `barrier`
    waits inside it for that many invocations (all read the same state). """
    name = 'bst.test.move'

    def handle(self):
        payload = self.request.payload
        ran = self.server.plugin_state.setdefault('test.bst.ran', [])
        with transition_to(self, payload['object_type'], payload['object_id'], payload['state_new'],
                           def_name=payload.get('def_name'), force=payload.get('force', False),
                           user_ctx=payload.get('user_ctx')) as plan:
            ran.append((payload['state_new'], self.cid))
            if payload.get('barrier'):
                barriers = self.server.plugin_state.setdefault('test.bst.barriers', {})
                barrier = barriers.setdefault(payload['barrier_name'], threading.Barrier(payload['barrier']))
                barrier.wait(timeout=20)
            if payload.get('fail'):
                raise ValueError('the block failed')
        self.response.payload = {'state_old': plan.state_old, 'state_new': plan.state_new, 'cid': self.cid}


class AsyncMove(Service):
    """ `async with transition_to(...)` in an async def handle. """
    name = 'bst.test.async-move'

    async def handle(self):
        payload = self.request.payload
        ran = self.server.plugin_state.setdefault('test.bst.ran', [])
        async with transition_to(self, payload['object_type'], payload['object_id'], payload['state_new'],
                                 force=payload.get('force', False), user_ctx=payload.get('user_ctx')) as plan:
            ran.append((payload['state_new'], self.cid))
            if payload.get('fail'):
                raise ValueError('the async block failed')
        self.response.payload = {'state_old': plan.state_old, 'state_new': plan.state_new, 'cid': self.cid}


class PlainWithInAsync(Service):
    """ A plain `with` in an async def handle: refused, it would block the loop. """
    name = 'bst.test.plain-with-in-async'

    async def handle(self):
        with transition_to(self, 'Order', 1, 'New'):
            pass


class Bench(Service):
    """ `count` transitions of distinct objects through transition_to in one invocation. """
    name = 'bst.test.bench'

    def handle(self):
        payload = self.request.payload
        for index in range(payload['count']):
            with transition_to(self, 'Order', f"{payload['prefix']}-{index}", 'New'):
                pass
        self.response.payload = {'done': payload['count']}
'''


OTHER_PLUGINS_OFF = {"enclog": False}


def admin(server: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=60,
                             headers={"content-type": "application/json"})


async def invoke(server: Any, service: str, payload: Any = None) -> httpx.Response:
    """ The service through the admin API's invoke endpoint (a real HTTP request). """
    async with admin(server) as client:
        return await client.post(f"/zato/api/invoke/{service}", json=payload)


async def create_definition(server: Any, name: str, text: str) -> None:
    async with admin(server) as client:
        reply = await client.post("/zato/api/objects/bst_definition", json={"name": name, "text": text})
    assert reply.status_code == 201, reply.text


@asynccontextmanager
async def bst_server(tmp_path: Any, *, definitions: bool = True, services: str = SERVICES,
                     **config: Any) -> AsyncIterator[Any]:
    config.setdefault("main", {"graceful_timeout": 2})
    # Only the plugins under test: another installed plugin stays off (enclog, on without an [enclog]
    # section, would start and drop the records of getLogger('enclog'), with a warning in server.log)
    config["plugins"] = {**OTHER_PLUGINS_OFF, **config.get("plugins", {})}
    base_dir = create_test_server_dir(tmp_path / "server", **config)
    (base_dir / "pickup" / "bst_test_services.py").write_text(textwrap.dedent(services))
    async with run_server(base_dir) as server:
        if definitions:
            await create_definition(server, "Orders", ORDERS)
            await create_definition(server, "Customer consent", CUSTOMERS)
        server.test_base_dir = base_dir
        yield server
