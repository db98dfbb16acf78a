""" Internal services of the built-in cache (`zato.builtin.cache`). """

from __future__ import annotations

from zato.builtin.cache import caches_of
from zato.server.service import Service


class Create(Service):
    """ Creates a cache in every worker. Input: name, and optionally max_size, max_item_size,
    extend_expiry_on_get, extend_expiry_on_set, is_active, is_default. """
    name = "zato.cache.builtin.create"

    async def handle(self):
        payload = self.request.payload or {}
        if not payload.get("name"):
            raise ValueError("zato.cache.builtin.create needs a `name`")
        await self.server.notify("cache.builtin.create", payload)
        self.response.payload = caches_of(self.server)[payload["name"]].describe()


class Delete(Service):
    name = "zato.cache.builtin.delete"

    async def handle(self):
        await self.server.notify("cache.builtin.delete", {"name": self.request.payload["name"]})
        self.response.payload = {"deleted": self.request.payload["name"]}


class GetList(Service):
    """ The caches this worker has. """
    name = "zato.cache.builtin.get-list"

    async def handle(self):
        self.response.payload = sorted((c.describe() for c in caches_of(self.server).values()), key=lambda c: c["name"])
