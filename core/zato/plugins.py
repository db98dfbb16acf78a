""" Finding, loading and listing plugins.

Built-in features are plugins too (`DEFAULT_PLUGINS`), loaded the same way as third-party
ones, which are found through the `zato.plugins` entry-point group. The `[deploy_internal]`
section of server.conf switches each one on or off, as Zato's does, by its module
(`zato_plugin_ftp = False`), and each module of internal services of a plugin that has several
(`read_deploy_internal`); `[component_enabled]` switches a plugin of its key's name too, as in
Zato, and `[plugins]` (by name) is still read for servers made before `[deploy_internal]`. A
plugin that is switched off is never imported. A plugin whose distribution lists it in the
`zato.plugins.opt_in` group too is off until switched on. `load_plugins` is the one function
that does all of it; `add_missing_deploy_internal_lines` writes the lines of plugins installed
after the server was created.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
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
    "apispec": "zato.builtin.apispec",
}

# Plugins the server cannot work without; server.conf cannot switch them off.
REQUIRED_PLUGINS = frozenset(("essentials",))

# Plugins that were renamed: the old name in [plugins] of server.conf -> the name now
RENAMED_PLUGINS = {"core": "essentials"}

# The section of server.conf that switches plugins and modules of internal services, as Zato's
DEPLOY_INTERNAL = "deploy_internal"

# Plugin names (which are also Zato's [component_enabled] names where Zato has one, as ibm_mq) ->
# the distribution that brings the plugin, for "install X" when a switch or a service names a
# plugin that is not installed
PLUGIN_DISTRIBUTIONS = {
    "ibm_mq": "zato-plugin-ibm-mq",
    "ftp": "zato-plugin-ftp",
    "dropbox": "zato-plugin-dropbox",
    "wsx": "zato-plugin-wsx",
    "redis": "zato-plugin-redis",
    "smtp": "zato-plugin-smtp",
    "sql": "zato-plugin-sql",
    "bst": "zato-plugin-bst",
    "enclog": "zato-plugin-enclog",
}

# What services reach by Zato's names -> the plugin that provides it: `out.ftp` is
# self.outgoing.ftp (and self.out.ftp), `request.ibm_mq` self.request.ibm_mq, `kvdb` self.kvdb
SERVICE_USES = {
    "out.ftp": "ftp",
    "out.wsx": "wsx",
    "out.ibm_mq": "ibm_mq",
    "out.wmq": "ibm_mq",
    "out.sql": "sql",
    "out.redis": "redis",
    "out.plain_http": "outgoing_http",
    "cloud.dropbox": "dropbox",
    "email.smtp": "smtp",
    "request.ibm_mq": "ibm_mq",
    "request.wsx": "wsx",
    "kvdb": "redis",
    "pubsub": "pubsub",
}


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

    modules_off: dict[str, str] = field(default_factory=dict)  # module of internal services -> its line

    def enabled_names(self) -> list[str]:
        return [p.name for p in self.plugins if p.loaded]

    def installed(self) -> list[PluginInfo]:
        """ The plugins found (built-in and installed), without those registered in-process (`extra`). """
        return [p for p in self.plugins if p.builtin or p._entry_point is not None]

    def internal_service_modules(self) -> list[str]:
        """ The modules of internal services to deploy: every one a loaded plugin registered, but
        those switched off in [deploy_internal]. """
        return [module for module in self.registry.items(Kind.INTERNAL_SERVICES) if module not in self.modules_off]

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


def plugin_module(plugin: PluginInfo | str) -> str:
    """ A plugin's key in [deploy_internal]: its module (`zato_plugin_ftp`, `zato.builtin.pubsub`).
    For a plugin that is not installed, its built-in module or the module its distribution would have. """
    if isinstance(plugin, PluginInfo):
        return plugin.module.partition(":")[0]
    return DEFAULT_PLUGINS.get(plugin) or f"zato_plugin_{plugin}"


class PluginNotEnabled(AttributeError):
    """ A service uses what a plugin provides (`self.outgoing.ftp`), and that plugin is not installed
    or is switched off; the message says what to install and which [deploy_internal] line to switch
    on. An AttributeError, so that `hasattr` and `getattr(..., default)` keep working. """


def plugin_not_enabled(what: str, name: str, server: Any = None) -> PluginNotEnabled:
    """ The error raised where a service uses `what`, which plugin `name` provides and which is not
    there (`plugin_needed`); `server` gives the plugins loaded in it. """
    plugins = getattr(server, "plugins", None)
    loaded = plugins.enabled_names() if hasattr(plugins, "enabled_names") else ()
    return PluginNotEnabled(plugin_needed(what, name, loaded=loaded))


def switch_on_line(name: str, found: list[PluginInfo] | None = None) -> str:
    """ The server.conf line that switches plugin `name` on: `[deploy_internal] zato_plugin_ftp = True`. """
    info = next((p for p in (found if found is not None else discover_plugins()) if p.name == name), None)
    return f"[{DEPLOY_INTERNAL}] {plugin_module(info or name)} = True"


def plugin_needed(what: str, name: str, found: list[PluginInfo] | None = None, loaded: Iterable[str] = ()) -> str:
    """ Why `what` (`self.outgoing.ftp`) is not there and what to do: install the plugin's
    distribution and/or switch its [deploy_internal] line on. `loaded`: the plugins loaded here. """
    found = discover_plugins() if found is None else found
    line = switch_on_line(name, found)
    info = next((p for p in found if p.name == name), None)
    if info is not None and name in set(loaded):
        return (f"{what} comes with the {name} plugin ({info.distribution}), which is on ({line}) but has not "
                f"provided it in this process; see the server log for why (did it fail to start?)")
    if info is None:
        distribution = PLUGIN_DISTRIBUTIONS.get(name, f"the distribution with the {name!r} plugin")
        return (f"{what} needs the {name} plugin, which is not installed: install {distribution} "
                f"(pip install {distribution}) and restart the server, with {line} in server.conf")
    return (f"{what} needs the {name} plugin ({info.distribution}), which is switched off in this server: "
            f"set {line} in server.conf and restart the server")


def _as_switch(line: str, value: Any, what: str = "") -> bool:
    from zato.config import ConfigError, as_bool
    try:
        return as_bool(value)
    except ValueError:
        raise ConfigError(f"{line} in server.conf: {what}use True or False") from None


def read_deploy_internal(section: dict[str, Any] | None,
                         found: list[PluginInfo] | None = None) -> tuple[dict[str, bool], dict[str, bool]]:
    """ `[deploy_internal]` of server.conf as (plugin name -> on, module of internal services -> on).

    A key that is an installed plugin's module (or its name) switches the plugin; every other key
    switches the module of internal services of that name (checked once plugins are loaded:
    `apply_module_switches`). """
    if not section:
        return {}, {}
    found = discover_plugins() if found is None else found
    by_key = {plugin_module(info): info.name for info in found}
    for info in found:
        by_key.setdefault(info.name, info.name)
    plugins: dict[str, bool] = {}
    modules: dict[str, bool] = {}
    for key, value in section.items():
        enabled = _as_switch(f"[{DEPLOY_INTERNAL}] {key} = {value}", value)
        if key in by_key:
            plugins[by_key[key]] = enabled
        else:
            modules[key] = enabled
    return plugins, modules


def plugin_switches(plugins_section: dict[str, Any] | None,
                    component_enabled: dict[str, Any] | None = None,
                    deploy_internal: dict[str, Any] | None = None, *,
                    found: list[PluginInfo] | None = None) -> dict[str, bool]:
    """ The plugin switches of server.conf as name -> enabled: `[deploy_internal]` (by module,
    `read_deploy_internal`), then `[component_enabled]`, then `[plugins]`.

    A key of `[component_enabled]` that names an installed plugin switches it (as Zato's gates a
    whole feature, it wins over `[deploy_internal]`, with a warning where they disagree); one
    naming a plugin that is not installed, set to True, is warned about with the distribution
    to install; its other keys are Zato's feature switches, not plugins, and are left alone.
    `[plugins]` is read for servers made before `[deploy_internal]`, with one warning saying what
    to move where; where it names a plugin another section names too, it wins.
    """
    from zato.config import ConfigError
    if found is None:
        found = discover_plugins() if (component_enabled or deploy_internal) else []
    switches, _ = read_deploy_internal(deploy_internal, found)
    modules = {info.name: plugin_module(info) for info in found}
    lines = {name: f"[{DEPLOY_INTERNAL}] {modules[name]} = {value}" for name, value in switches.items()}

    for name, value in (component_enabled or {}).items():
        line = f"[component_enabled] {name} = {value}"
        if name not in modules:
            if name in PLUGIN_DISTRIBUTIONS and _as_switch(line, value, f"{name!r} is a plugin's switch; "):
                logger.warning("%s in server.conf: no %s plugin is installed, so it stays off; install %s "
                               "(pip install %s) and restart the server", line, name, PLUGIN_DISTRIBUTIONS[name],
                               PLUGIN_DISTRIBUTIONS[name])
            continue  # otherwise one of Zato's feature switches (stats, sso, ...), not a plugin
        enabled = _as_switch(line, value, f"{name!r} is a plugin, switched on or off by this key; ")
        if name in switches and switches[name] != enabled:
            logger.warning("server.conf has %s and %s: [component_enabled] wins, as in Zato, so plugin %r is %s; "
                           "remove one of the two lines or make them agree", lines[name], line, name,
                           "on" if enabled else "off")
        switches[name] = enabled
        lines[name] = line

    legacy: list[str] = []  # `[plugins] name = value` -> its [deploy_internal] line
    overrides: list[str] = []
    for name, value in (plugins_section or {}).items():
        key = name
        if name in RENAMED_PLUGINS:
            logger.warning("[plugins] %s: the plugin is now called %r; rename the key in server.conf",
                           name, RENAMED_PLUGINS[name])
            name = RENAMED_PLUGINS[name]
        try:
            enabled = _as_switch(f"[plugins] {name} = {value!r}", value)
        except ConfigError:
            raise ConfigError(f"[plugins] {name} = {value!r}: use True or False") from None
        line = f"[plugins] {key} = {value}"
        if name in switches and switches[name] != enabled:
            overrides.append(f"{line} over {lines[name]}")
        switches[name] = enabled
        lines[name] = line
        legacy.append(f"`{key} = {value}` as `{modules.get(name) or plugin_module(name)} = {value}`")
    if legacy:
        wins = (f"; until then, where another line names the same plugin, [plugins] wins: {'; '.join(overrides)}"
                if overrides else "")
        _warn_once("server.conf: plugins are switched in [%s] now, as in Zato; [plugins] is still read, but "
                   "move its lines under [%s] (%s) and remove [plugins]%s" % (DEPLOY_INTERNAL, DEPLOY_INTERNAL,
                                                                            ", ".join(legacy), wins))

    for name in REQUIRED_PLUGINS:
        if switches.get(name) is False:
            raise ConfigError(f"{lines[name]}: the {name!r} plugin cannot be switched off; remove the line")
    return switches


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """ Logs `message` once per process: server.conf is read by several steps of one command
    (the CLI, the supervisor, each worker's start), and one warning per problem is enough. """
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning("%s", message)


def config_switches(config: dict[str, Any]) -> tuple[dict[str, bool], dict[str, bool]]:
    """ server.conf's (plugin switches, module-of-internal-services switches): `plugin_switches`
    and the module lines of `[deploy_internal]`. """
    section = config.get(DEPLOY_INTERNAL)
    found = discover_plugins()
    switches = plugin_switches(config.get("plugins"), config.get("component_enabled"), section, found=found)
    _, modules = read_deploy_internal(section, found)
    return switches, modules


def apply_module_switches(loaded: LoadedPlugins, modules: dict[str, bool]) -> None:
    """ Leaves out of `loaded.internal_service_modules()` each module switched off, and warns once
    about keys of [deploy_internal] that name neither an installed plugin nor a module of
    internal services of a loaded one. """
    registered = loaded.registry.items(Kind.INTERNAL_SERVICES)
    loaded.modules_off = {module: f"[{DEPLOY_INTERNAL}] {module} = False"
                          for module, enabled in modules.items() if not enabled and module in registered}
    unknown = sorted(module for module in modules if module not in registered)
    if not unknown:
        return
    hints = []
    for key in unknown:
        name = key.removeprefix("zato_plugin_")
        if name in PLUGIN_DISTRIBUTIONS and key != name:
            hints.append(f"{key} (the {name} plugin: install {PLUGIN_DISTRIBUTIONS[name]})")
        else:
            hints.append(key)
    logger.warning("[%s] in server.conf: %s name%s no installed plugin and no module of internal services of a "
                   "plugin that is on (Zato's own modules, zato.server.service.internal.*, mean nothing here: each "
                   "plugin has its own line); %s ignored", DEPLOY_INTERNAL, ", ".join(hints),
                   "s" if len(unknown) == 1 else "", "it is" if len(unknown) == 1 else "they are")


_SERVICE_USE = re.compile(r"\bself\.(?:(out|outgoing|cloud|email|request)\.([A-Za-z_]\w*)|(kvdb|pubsub)\b)")


def service_uses(source: str) -> dict[str, str]:
    """ What a module's source reaches that a plugin provides (a cheap scan of its text, not of
    its code): `self.outgoing.ftp` -> ftp, as Zato's name -> plugin name (`SERVICE_USES`). """
    uses: dict[str, str] = {}
    for match in _SERVICE_USE.finditer(source):
        namespace, attribute, plain = match.groups()
        key = plain or f"{'out' if namespace == 'outgoing' else namespace}.{attribute}"
        if key in SERVICE_USES:
            uses.setdefault(f"self.{plain or f'{namespace}.{attribute}'}", SERVICE_USES[key])
    return uses


def unavailable_service_uses(source: str, enabled: Iterable[str]) -> list[str]:
    """ One line per plugin a module's source uses (`service_uses`) that is not loaded here, saying
    what to install or switch on (`plugin_needed`); empty if every one is there. """
    enabled = set(enabled)
    by_plugin: dict[str, list[str]] = {}
    for what, name in service_uses(source).items():
        if name not in enabled:
            by_plugin.setdefault(name, []).append(what)
    if not by_plugin:
        return []
    found = discover_plugins()
    return [plugin_needed(" and ".join(whats), name, found, enabled) for name, whats in sorted(by_plugin.items())]


# ################################################################################################
# The [deploy_internal] stanza: written by quickstart, completed at start with plugins installed since

DEPLOY_INTERNAL_HEADER = f"""\
[{DEPLOY_INTERNAL}]
# What this server loads and deploys, as Zato's [{DEPLOY_INTERNAL}]: one line per plugin, by its
# module, and one per module of internal services of a plugin that has several. False: the plugin
# is never imported, or the module's services are not deployed. Restart after a change; the
# start-up cache of internal services is rebuilt by itself (--sync-internal rebuilds it anyway).
# A plugin installed later gets its line here at the next start. `zato plugins list DIR` shows them."""

_STANZA_KEY = re.compile(r"^\s*[#;]?\s*([A-Za-z_][\w.]*)\s*=")


def _first_sentence(text: str) -> str:
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    sentence = re.split(r"(?<=[a-z)`'])\. ", paragraph, maxsplit=1)[0].rstrip(".")
    return re.sub(r"^The `\w+` plugin(?: \([^)]*\))?: ", "", sentence)


def _module_docstring(module: str) -> str:
    """ The first sentence of a module's docstring, read from its source without running it. """
    import ast
    import importlib.util
    try:
        spec = importlib.util.find_spec(module)
        origin = spec.origin if spec is not None else None
        if not origin or not origin.endswith(".py"):
            return ""
        with open(origin, encoding="utf-8") as f:
            return _first_sentence(ast.get_docstring(ast.parse(f.read())) or "")
    except (ImportError, OSError, SyntaxError, ValueError):
        return ""


def plugin_description(info: PluginInfo) -> str:
    """ What a plugin brings, in one line: its distribution's summary, else its module's docstring. """
    summary = ""
    if not info.builtin:
        try:
            summary = metadata.distribution(info.distribution).metadata.get("Summary") or ""
        except metadata.PackageNotFoundError:
            pass
    return " ".join(summary.split()).rstrip(".") or _module_docstring(plugin_module(info)) or f"the {info.name} plugin"


def _comment(text: str) -> list[str]:
    import textwrap
    return textwrap.wrap(text, width=98, initial_indent="# ", subsequent_indent="#   ", break_on_hyphens=False)


def _modules_by_plugin(registry: Registry | None) -> dict[str, list[str]]:
    modules: dict[str, list[str]] = {}
    for module in (registry.items(Kind.INTERNAL_SERVICES) if registry is not None else ()):
        modules.setdefault(registry.plugin_of(Kind.INTERNAL_SERVICES, module), []).append(module)
    return modules


def deploy_internal_lines(found: list[PluginInfo], registry: Registry | None = None,
                          switches: dict[str, bool] | None = None, present: set[str] = frozenset()) -> list[str]:
    """ The [deploy_internal] lines (each after a comment saying what it brings) of the plugins in
    `found` whose key is not in `present`, and of the modules of internal services (`registry`)
    of plugins that registered several. A plugin's value is its switch in `switches`, True if it
    has none; an opt-in plugin without one gets its line commented out (it is off until switched on). """
    switches = switches or {}
    modules = _modules_by_plugin(registry)
    lines: list[str] = []
    for info in found:
        key = plugin_module(info)
        if key not in present and info.name not in present:
            lines.extend(_comment(f"{info.name} ({info.distribution}): {plugin_description(info)}"
                                  + (" (cannot be switched off)" if info.name in REQUIRED_PLUGINS else "")))
            enabled = switches.get(info.name)
            if enabled is None and info.opt_in:
                lines.append(f"# off until switched on: uncomment the line below, or set [component_enabled] "
                             f"{info.name} = True as in Zato")
                lines.append(f"# {key} = True")
            else:
                lines.append(f"{key} = {enabled is not False}")
        own = modules.get(info.name, [])
        if len(own) > 1:
            for module in own:
                if module not in present:
                    lines.extend(_comment(f"{info.name}: {_module_docstring(module) or 'internal services'}"))
                    lines.append(f"{module} = True")
    return lines


def _stanza_keys(lines: list[str]) -> tuple[int | None, int, set[str]]:
    """ (index of the [deploy_internal] header or None, index after its last non-blank line, the
    keys its lines name, commented out or not). """
    header, end, keys = None, len(lines), set()
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            if header is not None:
                break
            if stripped[1:-1].strip() == DEPLOY_INTERNAL:
                header = end = index + 1
            continue
        if header is not None:
            match = _STANZA_KEY.match(line)
            if match:
                keys.add(match.group(1))
            if stripped:
                end = index + 1
    return header, end, keys


def add_missing_deploy_internal_lines(path: Any, found: list[PluginInfo], registry: Registry | None,
                                      switches: dict[str, bool]) -> list[str]:
    """ Adds to server.conf's [deploy_internal] the lines of installed plugins (and modules of
    internal services) it does not name yet, as Zato adds missing modules back; creates the
    section if there is none. Every other line and comment stays as it is, and the file stays
    0600. Returns the keys added, and logs one line saying so. """
    from pathlib import Path as _Path

    from zato.common.files import PRIVATE_FILE, write_file
    path = _Path(path)
    text = path.read_text("utf-8")
    lines = text.splitlines()
    header, end, present = _stanza_keys(lines)
    added = deploy_internal_lines(found, registry, switches, present)
    if not added:
        return []
    if header is None:
        lines = (lines + [""] if lines and lines[-1].strip() else lines) + DEPLOY_INTERNAL_HEADER.splitlines() + added
    else:
        lines = lines[:end] + added + lines[end:]
    try:
        write_file(path, "\n".join(lines) + "\n", PRIVATE_FILE)
    except OSError as exc:
        logger.warning("%s: cannot add the [%s] lines of plugins installed since the server was created (%s); "
                       "add them by hand:\n%s", path, DEPLOY_INTERNAL, exc, "\n".join(added))
        return []
    keys = [line.lstrip("# ").split(" =")[0] for line in added if _STANZA_KEY.match(line) and " = " in line]
    logger.info("%s: added to [%s] the line%s of what was installed since the server was created: %s", path,
                DEPLOY_INTERNAL, "s" if len(keys) != 1 else "", ", ".join(keys))
    return keys


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
        install = f"; install {PLUGIN_DISTRIBUTIONS[name]} for it" if name in PLUGIN_DISTRIBUTIONS else ""
        logger.warning("server.conf switches plugin %r, but no such plugin is installed%s (installed: %s)", name,
                       install, ", ".join(p.name for p in plugins))

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
                f"{message}. Fix or uninstall it, switch it off with `[{DEPLOY_INTERNAL}] {plugin_module(info)} = "
                f"False` in server.conf, or start with --skip-broken-plugins") from exc
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
            raise TypeError(f"expected a {cls.__module__}.{cls.__name__}, got {value!r}")  # _register_for names the plugin
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
