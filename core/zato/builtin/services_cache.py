""" Internal services of the built-in cache (`zato.builtin.cache`), with Zato's names and fields. """

from __future__ import annotations

from typing import Any

from zato.builtin.cache import MAX_ITEM_SIZE_LIMIT, caches_of
from zato.common.exception import BadRequest
from zato.config import to_bool, to_int
from zato.server.service import Service

# Zato's fields of zato.cache.builtin.create that mean nothing here (one server's workers share
# a cache through the notification transport; there is no other synchronisation method)
IGNORED_FIELDS = ("cluster_id", "cache_type", "sync_method", "persistent_storage", "id", "cache_id")


def _cache_options(cid: str, payload: dict[str, Any]) -> dict[str, Any]:
    """ The create request, checked and typed; a BadRequest (400) names the field and the rule. """
    name = payload.get("name")
    if not isinstance(name, str) or not name.strip():
        raise BadRequest(cid, "zato.cache.builtin.create needs `name`, the cache's name (e.g. my.cache)")
    cache_type = payload.get("cache_type", "builtin")
    if cache_type != "builtin":
        raise BadRequest(cid, f"cache_type {cache_type!r} is not available here; only builtin caches exist")
    options: dict[str, Any] = {"name": name.strip()}
    for field, low, high in (("max_size", 1, 10 ** 9), ("max_item_size", 1, MAX_ITEM_SIZE_LIMIT)):
        if payload.get(field) not in (None, ""):
            try:
                value = to_int(payload[field])
            except ValueError as exc:
                raise BadRequest(cid, f"{field}: {exc}") from None
            if not low <= value <= high:
                raise BadRequest(cid, f"{field} = {value} is out of range: {low} to {high}")
            options[field] = value
    for field in ("extend_expiry_on_get", "extend_expiry_on_set", "is_active", "is_default"):
        if payload.get(field) not in (None, ""):
            try:
                options[field] = to_bool(payload[field])
            except ValueError as exc:
                raise BadRequest(cid, f"{field}: {exc}") from None
    return options


class Create(Service):
    """ Creates a cache in every worker (or changes the settings of an existing one, keeping its
    keys). Input: name, and optionally max_size, max_item_size, extend_expiry_on_get,
    extend_expiry_on_set, is_active, is_default; Zato's cluster_id and cache_type are accepted. """
    name = "zato.cache.builtin.create"

    async def handle(self):
        payload = self.request.payload
        if not isinstance(payload, dict):
            raise BadRequest(self.cid, "zato.cache.builtin.create takes a JSON object: {\"name\": ..., ...}")
        options = _cache_options(self.cid, payload)
        await self.server.notify("cache.builtin.create", options)
        self.response.payload = caches_of(self.server)[options["name"]].describe()


class Delete(Service):
    """ Deletes a cache, with its keys, in every worker. Input: name. """
    name = "zato.cache.builtin.delete"

    async def handle(self):
        payload = self.request.payload
        name = payload.get("name") if isinstance(payload, dict) else None
        if not isinstance(name, str) or not name:
            raise BadRequest(self.cid, "zato.cache.builtin.delete needs `name`, the cache's name")
        if name not in caches_of(self.server):
            raise BadRequest(self.cid, f"no built-in cache named {name!r}; existing: "
                                       f"{', '.join(sorted(caches_of(self.server))) or 'none'}")
        await self.server.notify("cache.builtin.delete", {"name": name})
        self.response.payload = {"deleted": name}


class Clear(Service):
    """ Removes every key of a cache, in every worker. Input: name. """
    name = "zato.cache.builtin.clear"

    async def handle(self):
        payload = self.request.payload
        name = payload.get("name") if isinstance(payload, dict) else None
        cache = caches_of(self.server).get(name) if isinstance(name, str) else None
        if cache is None:
            raise BadRequest(self.cid, f"zato.cache.builtin.clear needs `name`, an existing cache's name; existing: "
                                       f"{', '.join(sorted(caches_of(self.server))) or 'none'}")
        cache.clear()
        self.response.payload = {"cleared": name}


class GetList(Service):
    """ The caches this worker has (`default` once a service has used self.cache here). """
    name = "zato.cache.builtin.get-list"

    async def handle(self):
        self.response.payload = sorted((c.describe() for c in caches_of(self.server).values()), key=lambda c: c["name"])
