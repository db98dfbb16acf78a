""" How services reach outgoing connections by name, with Zato's accessors:
`self.out.plain_http[name].conn`, `self.outgoing.sql.get(name)`, `self.email.smtp[name].conn`,
`self.cloud.dropbox[name].conn`, `self.kvdb.conn`.

Each outgoing connection type names its accessor path (`OutgoingConnectionType.accessor`, e.g.
`"out.plain_http"`): the first part is the namespace (`out` - also reachable as `outgoing` -,
`email`, `cloud`), the second the map of connections by name.
"""

from __future__ import annotations

from typing import Any, Iterator


class ConnectionNotFound(LookupError):
    """ No outgoing connection of that name; the message lists the ones that exist. """


class ConnectionMap:
    """ Connections of one type by name: `[name]` and `.get(name)`. """

    def __init__(self, path: str) -> None:
        self.path = path
        self._items: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(repr(n) for n in sorted(self._items)) or "none are configured"
            raise ConnectionNotFound(f"no outgoing connection {name!r} in {self.path}; known: {known}") from None

    def get(self, name: str) -> Any:
        return self[name]

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def set(self, name: str, connection: Any) -> None:
        self._items[name] = connection

    def pop(self, name: str) -> Any:
        return self._items.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._items)


class Namespace:
    """ `self.out`, `self.email`, `self.cloud`: connection maps by type as attributes. """

    def __init__(self, name: str) -> None:
        self._name = name
        self._maps: dict[str, ConnectionMap] = {}

    def map(self, type_name: str) -> ConnectionMap:
        if type_name not in self._maps:
            self._maps[type_name] = ConnectionMap(f"{self._name}.{type_name}")
        return self._maps[type_name]

    def __getattr__(self, type_name: str) -> ConnectionMap:
        if type_name.startswith("_"):
            raise AttributeError(type_name)
        try:
            return self._maps[type_name]
        except KeyError:
            known = ", ".join(sorted(self._maps)) or "none (is the plugin providing it enabled?)"
            raise AttributeError(f"no outgoing connection type {self._name}.{type_name}; known: {known}") from None


class Outgoing:
    """ Every outgoing connection of a server, reachable through its accessor path. """

    def __init__(self) -> None:
        self.namespaces: dict[str, Namespace] = {}
        self.kvdb: Any = None  # set by the plugin that provides the server's key-value database

    def namespace(self, name: str) -> Namespace:
        if name == "outgoing":
            name = "out"
        if name not in self.namespaces:
            self.namespaces[name] = Namespace(name)
        return self.namespaces[name]

    def map(self, accessor: str) -> ConnectionMap:
        """ `"out.plain_http"` -> the map of plain HTTP connections. """
        namespace, _, type_name = accessor.partition(".")
        if not type_name:
            raise ValueError(f"an accessor is `namespace.type`, e.g. out.plain_http, not {accessor!r}")
        return self.namespace(namespace).map(type_name)
