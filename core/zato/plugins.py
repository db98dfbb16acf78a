""" Finding, loading and listing plugins.

Built-in features are plugins too (`DEFAULT_PLUGINS`), loaded the same way as third-party
ones, which are found through the `zato.plugins` entry-point group. The `[plugins]` section of
server.conf switches each one on or off by name (so does `[component_enabled]`, as in Zato); a
plugin that is switched off is never imported. A plugin whose distribution lists it in the
`zato.plugins.opt_in` group too is off until switched on. `load_plugins` is the one function
that does all of it.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterable

import pluggy

from zato import PROJECT_NAME, __version__, hookspecs
from zato.registry import (
    ASGIMount, ChannelType, Connector, DeployableFile, HTTPRoute, Kind, ObjectType, OutgoingConnectionType, RateLimiterBackend, Registry,
    RegistrationError, SecurityType, ServerConfigSection, Task,
)

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "zato.plugins"
# A distribution lists a plugin's entry point here as well (same name, same module) to have it off
# until server.conf switches it on
OPT_IN_ENTRY_POINT_GROUP = "zato.plugins.opt_in"
CORE_DISTRIBUTION = "zato-core"

# name -> module; the order is the order they are registered in
DEFAULT_PLUGINS: dict[str, str] = {
    "essentials": "zato.builtin.essentials",
    "cache": "zato.builtin.cache",
    "rest": "zato.builtin.rest",
    "hot_deploy": "zato.builtin.hot_deploy",
    "admin_api": "zato.builtin.admin_api",
    "user_config": "zato.builtin.user_config",
    "outgoing_http": "zato.builtin.outgoing_http",
    "metrics": "zato.builtin.metrics",
    "security": "zato.builtin.security",
    "pubsub": "zato.builtin.pubsub",
    "rate_limit": "zato.builtin.rate_limit",
    "scheduler": "zato.builtin.scheduler",
    "listeners": "zato.builtin.listeners",
}

# Plugins the server cannot work without; server.conf cannot switch them off.
REQUIRED_PLUGINS = frozenset(("essentials",))

# Plugins that were renamed: the old name in [plugins] of server.conf -> the name now
RENAMED_PLUGINS = {"core": "essentials"}


class PluginLoadError(Exception):
    """ A plugin could not be imported or registered. """


class WrapperNotSupported(PluginLoadError):
    """ A plugin implements, as a wrapper, a hook whose implementations the core calls one at a
    time (`ONE_AT_A_TIME_HOOKS`), where there is no call of the whole hook to wrap. """


@dataclass
class PluginInfo:
    """ One plugin as `zato plugins list` shows it. """
    name: str
    distribution: str
    version: str
    module: str
    builtin: bool
    enabled: bool = True
    opt_in: bool = False  # off unless server.conf switches it on (`OPT_IN_ENTRY_POINT_GROUP`)
    loaded: bool = False
    error: str = ""
    hooks: list[str] = field(default_factory=list)
    load_ms: float = 0.0
    _entry_point: Any = None

    def load_module(self) -> Any:
        if self._entry_point is not None:
            return self._entry_point.load()
        return importlib.import_module(self.module)


@dataclass
class LoadedPlugins:
    """ The result of `load_plugins`: the plugin manager, what was found, what was registered. """
    pm: pluggy.PluginManager
    plugins: list[PluginInfo]
    registry: Registry
    skipped: list[PluginInfo] = field(default_factory=list)

    def enabled_names(self) -> list[str]:
        return [p.name for p in self.plugins if p.loaded]

    def fingerprint(self) -> list[tuple[str, str, str]]:
        """ (name, distribution, version) of every loaded plugin, for the start-up cache. """
        return sorted((p.name, p.distribution, p.version) for p in self.plugins if p.loaded)


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


def discover_plugins() -> list[PluginInfo]:
    """ Every plugin there is, built-in and installed, without importing any of them. """
    found = [PluginInfo(name=name, distribution=CORE_DISTRIBUTION, version=__version__, module=module, builtin=True)
             for name, module in DEFAULT_PLUGINS.items()]
    seen = {p.name: p for p in found}
    opt_in = {(entry_point.name, entry_point.dist.name if entry_point.dist else "?")
              for entry_point in metadata.entry_points(group=OPT_IN_ENTRY_POINT_GROUP)}
    for entry_point in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        dist = entry_point.dist
        info = PluginInfo(
            name=entry_point.name,
            distribution=dist.name if dist else "?",
            version=dist.version if dist else "?",
            module=entry_point.value,
            builtin=False,
            opt_in=(entry_point.name, dist.name if dist else "?") in opt_in,
            _entry_point=entry_point,
        )
        if entry_point.name in seen:
            other = seen[entry_point.name]
            if other.distribution == info.distribution:
                continue  # the same distribution seen twice on sys.path
            raise PluginLoadError(
                f"plugin name {entry_point.name!r} is used by {other.distribution} and by {info.distribution}; "
                f"uninstall one of them")
        seen[info.name] = info
        found.append(info)
    return found


def plugin_switches(plugins_section: dict[str, Any] | None,
                    component_enabled: dict[str, Any] | None = None) -> dict[str, bool]:
    """ The `[plugins]` and `[component_enabled]` sections of server.conf as name -> enabled.

    A key of `[component_enabled]` that names an installed plugin switches it as `[plugins]`
    does; its other keys are Zato's feature switches, not plugins, and are left alone. Where
    both sections name a plugin and disagree, `[plugins]` wins, with a warning.
    """
    from zato.config import ConfigError, as_bool
    switches: dict[str, bool] = {}
    lines: dict[str, str] = {}  # name -> the line that switched it, for errors
    for name, value in (plugins_section or {}).items():
        key = name
        if name in RENAMED_PLUGINS:
            logger.warning("[plugins] %s: the plugin is now called %r; rename the key in server.conf",
                           name, RENAMED_PLUGINS[name])
            name = RENAMED_PLUGINS[name]
        try:
            switches[name] = as_bool(value)
        except ValueError:
            raise ConfigError(f"[plugins] {name} = {value!r}: use True or False") from None
        lines[name] = f"[plugins] {key} = {value}"

    component_enabled = component_enabled or {}
    installed = {p.name for p in discover_plugins()} if component_enabled else set()
    for name, value in component_enabled.items():
        if name not in installed:
            continue  # one of Zato's feature switches (stats, sso, ...), not a plugin
        line = f"[component_enabled] {name} = {value}"
        try:
            enabled = as_bool(value)
        except ValueError:
            raise ConfigError(f"{line} in server.conf: {name!r} is a plugin, switched on or off by this key; "
                              f"use True or False") from None
        if name in switches:
            if switches[name] != enabled:
                logger.warning("server.conf has %s and %s: [plugins] wins, so plugin %r is %s; remove one of "
                               "the two lines or make them agree", lines[name], line, name,
                               "on" if switches[name] else "off")
            continue
        switches[name] = enabled
        lines[name] = line

    for name in REQUIRED_PLUGINS:
        if switches.get(name) is False:
            raise ConfigError(f"{lines[name]}: the {name!r} plugin cannot be switched off; remove the line")
    return switches


def load_plugins(
    switches: dict[str, bool] | None = None,
    *,
    skip_broken: bool = False,
    pm: pluggy.PluginManager | None = None,
    extra: Iterable[tuple[str, Any]] = (),
) -> LoadedPlugins:
    """ Imports and registers every plugin that is switched on, then collects what they register.

    `switches` is name -> bool (`plugin_switches`); a plugin not named there is enabled, unless
    it is opt-in (`PluginInfo.opt_in`): then it is off, and not imported.
    A plugin that fails to import raises `PluginLoadError` naming the plugin, its distribution
    and the exception, unless `skip_broken` is set, in which case it is left out and logged.
    `extra` are (name, module-or-object) pairs registered as well (tests use it).
    Safe to call twice with the same `pm`: plugins already registered are not registered again.
    """
    switches = switches or {}
    pm = pm or new_plugin_manager()
    plugins = discover_plugins()
    skipped: list[PluginInfo] = []
    unknown = set(switches) - {p.name for p in plugins}
    for name in sorted(unknown):
        logger.warning("[plugins] %s: no such plugin is installed (installed: %s)", name, ", ".join(p.name for p in plugins))

    for info in plugins:
        info.enabled = switches.get(info.name, not info.opt_in)
        if not info.enabled:
            continue
        if pm.has_plugin(info.name):
            info.loaded = True
            continue
        started = time.perf_counter()
        try:
            module = info.load_module()
            pm.register(module, name=info.name)
            _refuse_wrappers_registered_by(pm, info.name)
        except Exception as exc:
            info.error = f"{type(exc).__name__}: {exc}"
            message = (f"plugin {info.name!r} (distribution {info.distribution} {info.version}, module {info.module}) "
                       f"failed to load: {info.error}")
            if skip_broken:
                logger.error("%s; starting without it because broken plugins are skipped", message)
                skipped.append(info)
                continue
            raise PluginLoadError(
                f"{message}. Fix or uninstall it, switch it off with `{info.name} = False` under [plugins] "
                f"in server.conf, or start with --skip-broken-plugins") from exc
        info.loaded = True
        info.load_ms = (time.perf_counter() - started) * 1000

    for name, plugin in extra:
        if not pm.has_plugin(name):
            pm.register(plugin, name=name)
            try:
                _refuse_wrappers_registered_by(pm, name)
            except WrapperNotSupported as exc:
                raise PluginLoadError(f"plugin {name!r} cannot be loaded: {exc}") from None
            plugins.append(PluginInfo(name=name, distribution="(in-process)", version="-", module=str(plugin),
                                      builtin=False, loaded=True))

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginLoadError(f"a plugin implements a hook that does not exist: {exc}") from exc

    for info in plugins:
        plugin = pm.get_plugin(info.name)
        if plugin is not None:
            info.hooks = sorted(impl.name for impl in _hook_callers_of(pm, plugin))

    registry = collect_registrations(pm)
    return LoadedPlugins(pm=pm, plugins=plugins, registry=registry, skipped=skipped)


def _hook_callers_of(pm: pluggy.PluginManager, plugin: Any) -> list[Any]:
    return pm.get_hookcallers(plugin) or []


# What each register_* hook's `register` argument builds, and under which registry kind.
def _register_server_config(section: str, keys: dict[str, Any], *, free_form: bool = False, doc: str = "") -> tuple[str, Any]:
    return section, ServerConfigSection(section, dict(keys), free_form, doc)


def _register_typed(cls: type) -> Callable[[Any], tuple[str, Any]]:
    def build(value: Any) -> tuple[str, Any]:
        if not isinstance(value, cls):
            raise RegistrationError(f"expected a {cls.__module__}.{cls.__name__}, got {value!r}")
        return value.name, value
    return build


def _register_module(module_name: str) -> tuple[str, Any]:
    return module_name, module_name


def _register_route(path: str, handler: Callable[..., Any], *, methods: Iterable[str] = ("GET",),
                    openapi: dict[str, dict[str, Any]] | None = None) -> tuple[str, Any]:
    methods = tuple(m.upper() for m in methods)
    if openapi is not None:
        if not isinstance(openapi, dict) or not all(isinstance(op, dict) for op in openapi.values()):
            raise TypeError(f"{path}: openapi must map methods to OpenAPI operation objects (dicts), "
                            f"e.g. {{'post': {{'summary': ...}}}}")
        extra = sorted(set(openapi) - {m.lower() for m in methods})
        if extra:
            raise TypeError(f"{path}: openapi describes {', '.join(extra)}, but the route's methods are "
                            f"{', '.join(methods)}; use lower-case names of the route's methods as keys")
        openapi = {method.lower(): dict(operation) for method, operation in openapi.items()}
    return f"{path} {','.join(methods)}", HTTPRoute(path, handler, methods, openapi)


def _register_asgi_mount(prefix: str, app: Callable[..., Any], *, description: str = "") -> tuple[str, Any]:
    try:
        mount = ASGIMount(prefix, app, description)
    except RegistrationError as exc:
        raise TypeError(str(exc)) from None  # `register` says which plugin
    return mount.prefix, mount  # by prefix: two plugins mounting one prefix is a duplicate name


def _register_notification_handler(action: str, handler: Callable[..., Any]) -> tuple[str, Any]:
    return action, handler


def _new_attribute(what: str, name: Any, owner: type, taken: bool, instead: str) -> None:
    """ Refuses a plugin's attribute `name` for every `owner` (a service, a request) unless it is a
    public identifier that `owner` does not have yet (`taken`). """
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise TypeError(f"a {what} attribute is a public Python identifier, not {name!r}")
    if taken:
        raise TypeError(f"{name!r} is already an attribute of every {what} ({owner.__module__}.{owner.__name__}); "
                        f"{instead}")


def _register_service_attribute(name: str, provide: Callable[[Any], Any]) -> tuple[str, Any]:
    service_class = _service_class()
    _new_attribute("service", name, service_class,
                   isinstance(name, str) and (hasattr(service_class, name) or name in service_class.__annotations__),
                   "choose another name")
    if not callable(provide):
        raise TypeError(f"provide for {name!r} is called with the service and returns the attribute; got {provide!r}")
    return name, provide


def _register_request_attribute(name: str, description: str = "") -> tuple[str, Any]:
    from zato.server.service import Request  # not at import: the service module brings trio
    _new_attribute("request", name, Request, isinstance(name, str) and (name in Request.__slots__ or hasattr(Request, name)),
                   "name a channel's attribute after its plugin (self.request.ibm_mq)")
    return name, description


def _service_class() -> type:
    from zato.server.service import Service  # not at import: the service module brings trio
    return Service


def _register_connector(connector: Any) -> list[tuple[Kind, str, Any]]:
    """ A `Connector` is two registrations, each under its own kind. """
    if not isinstance(connector, Connector):
        raise TypeError(f"expected a zato.registry.Connector(object_type, connection_type), got {connector!r}")
    if not isinstance(connector.object_type, ObjectType) or not isinstance(connector.connection_type,
                                                                            OutgoingConnectionType):
        raise TypeError(f"a Connector holds a zato.registry.ObjectType and a zato.registry.OutgoingConnectionType, "
                        f"got {connector.object_type!r} and {connector.connection_type!r}")
    problem = connector.mismatch()
    if problem:
        raise TypeError(problem)
    return [(Kind.OBJECT_TYPES, connector.object_type.name, connector.object_type),
            (Kind.OUTGOING_CONNECTION_TYPES, connector.connection_type.name, connector.connection_type)]


def _register_delivery_target(endpoint_type: str, deliver: Any) -> tuple[str, Any]:
    if not isinstance(endpoint_type, str) or not endpoint_type.isidentifier() or endpoint_type != endpoint_type.lower():
        raise TypeError(f"a pub/sub endpoint type is a lower-case identifier (as 'wsx'), not {endpoint_type!r}")
    if not inspect.iscoroutinefunction(deliver):
        raise TypeError(f"deliver for endpoint type {endpoint_type!r} is an async def deliver(server, subscription, "
                        f"message, cid), got {deliver!r}")
    return endpoint_type, deliver


def _register_migrations(branch_label: str, directory: Any) -> tuple[str, Any]:
    from zato.odb import check_branch  # not at import: zato.odb brings SQLAlchemy
    return check_branch(branch_label, directory)


REGISTER_HOOKS: dict[str, tuple[str | None, Callable[..., Any]]] = {
    # hook name: (registry kind, builder of (name, value) from register's arguments); a hook that
    # registers under several kinds has None, and its builder returns a list of (kind, name, value)
    "register_server_config": (Kind.SERVER_CONFIG, _register_server_config),
    "register_object_types": (Kind.OBJECT_TYPES, _register_typed(ObjectType)),
    "register_connectors": (None, _register_connector),
    "register_channel_types": (Kind.CHANNEL_TYPES, _register_typed(ChannelType)),
    "register_outgoing_connection_types": (Kind.OUTGOING_CONNECTION_TYPES, _register_typed(OutgoingConnectionType)),
    "register_rate_limiter_backends": (Kind.RATE_LIMITER_BACKENDS, _register_typed(RateLimiterBackend)),
    "register_security_types": (Kind.SECURITY_TYPES, _register_typed(SecurityType)),
    "register_internal_services": (Kind.INTERNAL_SERVICES, _register_module),
    "register_http_routes": (Kind.HTTP_ROUTES, _register_route),
    "register_asgi_mounts": (Kind.ASGI_MOUNTS, _register_asgi_mount),
    "register_notification_handlers": (Kind.NOTIFICATION_HANDLERS, _register_notification_handler),
    "register_migrations": (Kind.MIGRATIONS, _register_migrations),
    "register_service_attributes": (Kind.SERVICE_ATTRIBUTES, _register_service_attribute),
    "register_request_attributes": (Kind.REQUEST_ATTRIBUTES, _register_request_attribute),
    "register_pubsub_delivery_targets": (Kind.PUBSUB_DELIVERY_TARGETS, _register_delivery_target),
    "register_deployable_files": (Kind.DEPLOYABLE_FILES, _register_typed(DeployableFile)),
}


# Hooks whose implementations the core calls one at a time (through `hook_calls`): to credit what
# each plugin registers to it, or so that one failing does not stop the others. A wrapper
# (`wrapper=True`, `hookwrapper=True`) has no call of the whole hook to wrap there, so plugins
# that implement one of these hooks as a wrapper are refused when they load.
ONE_AT_A_TIME_HOOKS = frozenset((*REGISTER_HOOKS, "register_tasks", "startup_phase", "shutdown",
                                 "config_objects_changed"))


@dataclass(frozen=True)
class HookCall:
    """ One plugin's implementation of a hook; calling it with keyword arguments passes those
    the implementation asks for, as pluggy does. """
    hook_name: str
    plugin_name: str
    impl: Any

    def __call__(self, **kwargs: Any) -> Any:
        impl = self.impl
        missing = [arg for arg in impl.argnames if arg not in kwargs]
        if missing:
            raise TypeError(f"the {self.hook_name} hook of plugin {self.plugin_name!r} asks for "
                            f"{', '.join(missing)}, which the hook does not pass (it passes {', '.join(kwargs)}); "
                            f"see its specification in zato/hookspecs.py")
        given = {arg: kwargs[arg] for arg in impl.argnames}
        given.update({arg: kwargs[arg] for arg in impl.kwargnames if arg in kwargs})
        return impl.function(**given)


def hook_calls(pm: pluggy.PluginManager, hook_name: str) -> list[HookCall]:
    """ The implementations of `hook_name`, one per plugin, in the order `pm.hook.<hook_name>(...)`
    calls them: last registered first, `tryfirst` ones before every other and `trylast` ones
    after (pluggy's `HookCaller` keeps them in the reverse of that order and its `_multicall`
    walks them backwards). The one way the core calls implementations one at a time.

    Wrappers are refused: `load_plugins` does it for `ONE_AT_A_TIME_HOOKS`, and this does it for a
    plugin registered on the manager some other way.
    """
    impls = getattr(pm.hook, hook_name).get_hookimpls()
    for impl in impls:
        if impl.wrapper or impl.hookwrapper:
            raise WrapperNotSupported(f"plugin {impl.plugin_name!r}: {_wrapper_problem(hook_name, impl)}")
    return [HookCall(hook_name, impl.plugin_name, impl) for impl in reversed(impls)]


def _refuse_wrappers_registered_by(pm: pluggy.PluginManager, plugin_name: str) -> None:
    """ Raises `WrapperNotSupported` (and unregisters the plugin) if it implements one of
    `ONE_AT_A_TIME_HOOKS` as a wrapper. """
    plugin = pm.get_plugin(plugin_name)
    for caller in _hook_callers_of(pm, plugin):
        if caller.name not in ONE_AT_A_TIME_HOOKS:
            continue
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin and (impl.wrapper or impl.hookwrapper):
                pm.unregister(name=plugin_name)
                raise WrapperNotSupported(_wrapper_problem(caller.name, impl))


def _wrapper_problem(hook_name: str, impl: Any) -> str:
    function = impl.function
    code = getattr(function, "__code__", None)
    where = f" ({code.co_filename}:{code.co_firstlineno})" if code is not None else ""
    kind = "wrapper=True" if impl.wrapper else "hookwrapper=True"
    return (f"its {hook_name} implementation {getattr(function, '__qualname__', function)!r}{where} is marked "
            f"{kind}, but the core calls each plugin's {hook_name} on its own, so there is no call of the whole "
            f"hook to wrap; remove {kind} and use tryfirst=True or trylast=True to run before or after the others")


def collect_registrations(pm: pluggy.PluginManager, registry: Registry | None = None) -> Registry:
    """ Calls every `register_*` hook of the loading phase, one plugin at a time (in pluggy's
    order, `hook_calls`), so that each registered thing is recorded with the plugin that
    registered it.
    """
    registry = registry or Registry()
    for hook_name, (kind, build) in REGISTER_HOOKS.items():
        for call in hook_calls(pm, hook_name):
            call(register=_register_for(call.plugin_name, hook_name, kind, build, registry))
    return registry


def _register_for(plugin_name: str, hook_name: str, kind: str, build: Callable[..., tuple[str, Any]],
                  registry: Registry) -> Callable[..., None]:
    """ The `register` one plugin's `register_*` hook is called with. """
    def register(*args: Any, **kwargs: Any) -> None:
        try:
            built = build(*args, **kwargs)
        except TypeError as exc:
            raise RegistrationError(f"plugin {plugin_name!r}: bad call to register() in {hook_name}: {exc}") from None
        for item_kind, name, value in (built if isinstance(built, list) else [(kind, *built)]):
            registry.add(item_kind, name, value, plugin_name)
    return register


def register_tasks(pm: pluggy.PluginManager, server: Any) -> list[Task]:
    """ Collects the long-running tasks plugins hand over (started by the server, in this order). """
    tasks: list[Task] = []
    seen: set[str] = set()
    for call in hook_calls(pm, "register_tasks"):
        def register(name: str, run: Callable[..., Any], placement: str = "every_worker",
                     _plugin: str = call.plugin_name) -> None:
            full_name = f"{_plugin}.{name}"
            if full_name in seen:
                raise RegistrationError(f"plugin {_plugin!r} registered task {name!r} twice")
            if placement not in ("every_worker", "one_process"):
                raise RegistrationError(f"plugin {_plugin!r}: task {name!r}: placement {placement!r} is not one of "
                                        f"every_worker (the default: it runs in every worker) or one_process (in one "
                                        f"process among all sharing the configuration database)")
            seen.add(full_name)
            if placement == "one_process":  # runs only where the lease task:<plugin>.<name> is held
                from functools import partial

                from zato.server.placement import run_in_one_process, task_lease_name
                run = partial(run_in_one_process, server, task_lease_name(full_name), run)
            tasks.append(Task(full_name, run, placement))
        call(register=register, server=server)
    return tasks


async def await_maybe(value: Any) -> Any:
    """ Awaits what a hook returned if it is awaitable: the one place hook results are awaited. """
    if inspect.isawaitable(value):
        return await value
    return value
