""" Per-server runtime objects of plugins: the one way a plugin keeps what it builds at run time.

A plugin declares its slot once, at module level, and reaches its object only through it:

    SCHEDULER = PluginState[Scheduler]("scheduler")

    SCHEDULER.set(server, Scheduler(server))        # when the plugin starts (e.g. ON_STARTING)
    SCHEDULER.get(server)                           # the object, or None if it has not started
    SCHEDULER.require(server)                       # the object, or an error saying why there is none
    SCHEDULER.get_or_create(server, make)           # made on first use

The objects live in `server.plugin_state`, keyed by the slot itself, so two plugins cannot reach
each other's objects by guessing a string, and a slot is found by importing its module (a public
accessor of that plugin, never a private module of another plugin).
"""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class PluginStateMissing(LookupError):
    """ A plugin's runtime object is asked for in a server where that plugin has not started. """


class PluginState(Generic[T]):
    """ One plugin's runtime object in each server process (see the module's docstring). """

    __slots__ = ("name", "_missing")

    def __init__(self, name: str, missing: str = "") -> None:
        self.name = name
        # What `require` says when there is no object; empty: the default, which names the plugin
        # and its [deploy_internal] line (built when needed: it looks the plugin's module up)
        self._missing = missing

    @property
    def missing(self) -> str:
        return self._missing or self.default_missing()

    def get(self, server: Any) -> T | None:
        return getattr(server, "plugin_state", _EMPTY).get(self)

    def require(self, server: Any) -> T:
        value = self.get(server)
        if value is None:
            raise PluginStateMissing(self.missing)
        return value

    def default_missing(self) -> str:
        from zato.plugins import switch_on_line  # not at import: plugins declare their slots at module level
        plugin = self.name.split(".")[0]
        return (f"the {plugin} plugin is not running in this server: it is switched off (switch it on with "
                f"{switch_on_line(plugin)} in server.conf) or has not started yet")

    def set(self, server: Any, value: T) -> T:
        server.plugin_state[self] = value
        return value

    def get_or_create(self, server: Any, make: Callable[[], T]) -> T:
        value = server.plugin_state.get(self)
        if value is None:
            value = server.plugin_state[self] = make()
        return value

    def clear(self, server: Any) -> None:
        getattr(server, "plugin_state", {}).pop(self, None)

    def __repr__(self) -> str:
        return f"PluginState({self.name!r})"


_EMPTY: dict = {}
