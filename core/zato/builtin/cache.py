""" The `cache` plugin: named in-memory caches (`zato.cache.builtin.*` services), as Zato's
built-in cache. A cache created through any worker exists in every worker: creation travels
as a notification. Cache contents are per worker process.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from zato import hookimpl
from zato.server.plugin_state import PluginState

PLUGIN = "cache"
CACHES = PluginState["dict[str, Cache]"](PLUGIN)


@dataclass
class Cache:
    name: str
    max_size: int = 10000
    max_item_size: int = 10000
    extend_expiry_on_get: bool = True
    extend_expiry_on_set: bool = True
    is_active: bool = True
    is_default: bool = False
    items: OrderedDict = field(default_factory=OrderedDict)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "max_size": self.max_size, "max_item_size": self.max_item_size,
                "extend_expiry_on_get": self.extend_expiry_on_get, "extend_expiry_on_set": self.extend_expiry_on_set,
                "is_active": self.is_active, "is_default": self.is_default, "cache_type": "builtin",
                "current_size": len(self.items)}


def caches_of(server: Any) -> dict[str, Cache]:
    return CACHES.get_or_create(server, dict)


FIELDS = ("max_size", "max_item_size", "extend_expiry_on_get", "extend_expiry_on_set", "is_active", "is_default")


def _create(server: Any, payload: dict[str, Any]) -> None:
    options = {key: payload[key] for key in FIELDS if key in payload}
    caches_of(server)[payload["name"]] = Cache(payload["name"], **options)


def _delete(server: Any, payload: dict[str, Any]) -> None:
    caches_of(server).pop(payload["name"], None)


@hookimpl
def register_internal_services(register):
    register("zato.builtin.services_cache")


@hookimpl
def register_notification_handlers(register):
    register("cache.builtin.create", _create)
    register("cache.builtin.delete", _delete)
