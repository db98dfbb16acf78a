""" What plugins register through the `register_<things>` hooks, and the registry that owns it.

Each registered thing is a small frozen dataclass; the `Registry` keeps them by kind and name,
rejects duplicates naming both plugins, and remembers which plugin registered what.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


class RegistrationError(Exception):
    """ A plugin registered something twice or registered something malformed. """


@dataclass(frozen=True)
class Field:
    """ One field of a configuration object type. """
    name: str
    type: str = "str"  # str, int, float, bool, list, dict, datetime
    default: Any = None
    required: bool = False
    secret: bool = False
    # "encrypt" (the server needs it in clear) or "hash" (only checked), or a function of the
    # object's data returning one of them (zato.objects.storage_of)
    secret_storage: Any = "encrypt"
    references: str | None = None  # object type this field names an object of ("service": a service)
    description: str = ""
    example: Any = None
    choices: tuple[Any, ...] | None = None  # the only values allowed (a `$NAME` reference is checked when loaded)


@dataclass(frozen=True)
class ObjectType:
    """ A configuration object type (REST channel, security definition, SQL pool...). """
    name: str
    fields: tuple[Field, ...]
    description: str = ""
    # Optional checks beyond the schema (a cron expression, a time zone name...):
    # `check(data, partial=...)` returns a list of {"field": ..., "error": ...}; see zato.objects.validate
    check: Callable[..., list[dict[str, str]]] | None = None

    def field(self, name: str) -> Field:
        for item in self.fields:
            if item.name == name:
                return item
        raise KeyError(name)


@dataclass(frozen=True)
class ChannelType:
    """ A way requests reach services. `create(server)` returns the channel's runtime. """
    name: str
    object_type: str
    create: Callable[[Any], Any]
    description: str = ""


@dataclass(frozen=True)
class OutgoingConnectionType:
    """ A way services reach other systems. `create(server, definition)` returns a connection. """
    name: str
    object_type: str
    accessor: str
    create: Callable[[Any, dict], Any]
    description: str = ""


@dataclass(frozen=True)
class RateLimiterBackend:
    """ Where rate-limit counters live. `create(server)` returns the limiter. """
    name: str
    create: Callable[[Any], Any]
    description: str = ""


@dataclass(frozen=True)
class SecurityType:
    """ A way callers authenticate. `check(definition, request)` returns the user name or raises
    `HTTPError` (401/403). """
    name: str
    check: Callable[[dict, Any], Any]
    description: str = ""


@dataclass(frozen=True)
class HTTPRoute:
    path: str
    handler: Callable[..., Any]
    methods: tuple[str, ...] = ("GET",)


@dataclass(frozen=True)
class ServerConfigSection:
    name: str
    keys: dict[str, Any]
    free_form: bool = False
    doc: str = ""


@dataclass(frozen=True)
class Task:
    name: str
    run: Callable[..., Any]


@dataclass
class Registered:
    value: Any
    plugin: str


@dataclass
class Registry:
    """ Everything plugins registered, by kind ("channel_types", "object_types"...) and name. """
    kinds: dict[str, dict[str, Registered]] = field(default_factory=dict)

    def add(self, kind: str, name: str, value: Any, plugin: str) -> None:
        items = self.kinds.setdefault(kind, {})
        if name in items:
            other = items[name].plugin
            raise RegistrationError(
                f"{kind}: {name!r} is registered by plugin {other!r} and again by plugin {plugin!r}; "
                f"disable one of them in the [plugins] section of server.conf")
        items[name] = Registered(value, plugin)

    def get(self, kind: str, name: str) -> Any:
        return self.kinds[kind][name].value

    def values(self, kind: str) -> list[Any]:
        return [item.value for item in self.kinds.get(kind, {}).values()]

    def items(self, kind: str) -> dict[str, Any]:
        return {name: item.value for name, item in self.kinds.get(kind, {}).items()}

    def plugin_of(self, kind: str, name: str) -> str:
        return self.kinds[kind][name].plugin

    def by_plugin(self, plugin: str) -> dict[str, list[str]]:
        """ What one plugin registered: kind -> names. """
        out: dict[str, list[str]] = {}
        for kind, items in self.kinds.items():
            for name, item in items.items():
                if item.plugin == plugin:
                    out.setdefault(kind, []).append(name)
        return out
