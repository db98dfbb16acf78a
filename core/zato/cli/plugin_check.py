""" `zato plugin check [NAME]`: loads an installed plugin in a throw-away server and reports on it.

Each plugin gets one line per check, ✓ (fine), ! (a warning) or ✗ (a problem):

* hooks: every function marked `@hookimpl` names a hook of zato/hookspecs.py, asks only for
  arguments that hook passes, and is no wrapper of a hook the core calls one plugin at a time
  (what pluggy and `zato.plugins.load_plugins` check, with the function's file:line; a module that
  cannot be imported is reported with the plugin's own error and file:line);
* start: a temporary server directory with the plugin switched on in [deploy_internal] (even an
  opt-in one; the other installed plugins off, the built-ins on), started in this process on a free
  port and stopped again; warnings logged on the way are shown;
* what it registers (`Registry.by_plugin`), one line per kind, the services its modules of
  internal services deploy and the CLI commands it adds;
* docs: every field of its object types has a description (the undocumented ones as TYPE.FIELD);
* import time: its module imported in a fresh interpreter after the core (`python -X importtime`),
  the best of a few warm runs (bytecode cached in a temporary PYTHONPYCACHEPREFIX, as
  PYTHONDONTWRITEBYTECODE may be set), with a warning past `--import-threshold` seconds naming the
  heaviest packages it pulls in.

It never runs the plugin's own tests. Without NAME, every installed plugin that is not built in is
checked, each in its own server. Exit code 0 when nothing is ✗ (warnings allowed), 1 when something
is, 2 for a usage error (an unknown plugin: the installed ones are listed). `--json` prints the same
as JSON.
"""

from __future__ import annotations

import difflib
import inspect
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

import click

OK, WARN, FAIL = "ok", "warn", "fail"
MARKS = {OK: "[green]✓[/]", WARN: "[yellow]![/]", FAIL: "[red]✗[/]"}

# What each registry kind is called in the report
KIND_NAMES = {
    "server_config": "server.conf sections",
    "object_types": "object types",
    "channel_types": "channel/listener types",
    "outgoing_connection_types": "outgoing connection types",
    "rate_limiter_backends": "rate limiter backends",
    "security_types": "security types",
    "internal_services": "modules of internal services",
    "http_routes": "HTTP routes",
    "asgi_mounts": "ASGI mounts",
    "notification_handlers": "notification handlers",
    "migrations": "migration branches",
    "service_attributes": "service attributes",
    "request_attributes": "request attributes",
    "pubsub_delivery_targets": "pub/sub delivery targets",
    "deployable_files": "deployable files",
}

# What a server imports of the core before it loads plugins: the baseline of the import-time check
CORE_IMPORTS = "zato.plugin_api, zato.plugins, zato.server.server"
_MARKER = "--zato-plugin-check--"


class UsageProblem(click.ClickException):
    """ A usage error (an unknown plugin): exit code 2. """
    exit_code = 2


@dataclass
class Check:
    status: str  # OK, WARN or FAIL
    check: str  # hooks, start, registers, docs, import_time...
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    name: str
    distribution: str
    version: str
    module: str
    builtin: bool
    opt_in: bool
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.status != FAIL for check in self.checks)

    def add(self, status: str, check: str, message: str, **details: Any) -> Check:
        item = Check(status, check, message, details)
        self.checks.append(item)
        return item

    def as_dict(self) -> dict[str, Any]:
        out = {key: value for key, value in asdict(self).items() if key != "checks"}
        out["ok"] = self.ok
        out["checks"] = [asdict(check) for check in self.checks]
        return out


# ################################################################################################
# Where things are


def _where(function: Any) -> str:
    """ file:line of a function's `def` (after its decorators). """
    function = inspect.unwrap(function)
    try:
        source, first = inspect.getsourcelines(function)
        offset = next((index for index, line in enumerate(source)
                       if line.lstrip().startswith(("def ", "async def "))), 0)
        return f"{inspect.getsourcefile(function)}:{first + offset}"
    except (TypeError, OSError):
        code = getattr(function, "__code__", None)
        return f"{code.co_filename}:{code.co_firstlineno}" if code is not None else "?"


def _error_location(exc: BaseException, prefer: str = "") -> str:
    """ file:line where `exc` was raised: a SyntaxError's own place, else the deepest frame of the
    traceback that is in the plugin's files (`prefer`: a directory), else the deepest real frame. """
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    chain: list[BaseException] = []  # the error and what caused it (a core error wrapping the plugin's)
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    own, frames = [], []
    for item in reversed(chain):  # the deepest cause first
        item_frames = [frame for frame in traceback.extract_tb(item.__traceback__) if not frame.filename.startswith("<")]
        frames = frames or item_frames
        own = own or [frame for frame in item_frames if prefer and frame.filename.startswith(prefer)]
    frame = (own or frames or [None])[-1]
    return f"{frame.filename}:{frame.lineno}" if frame is not None else "?"


def _module_dir(module_name: str) -> str:
    """ The directory of a module's files (its package's, for a module of a package), without importing it. """
    import importlib.util
    top = module_name.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return ""
    if spec is None:
        return ""
    if spec.submodule_search_locations:
        return str(Path(list(spec.submodule_search_locations)[0]))
    return str(Path(spec.origin)) if spec.origin else ""


# ################################################################################################
# Hooks


def check_hooks(report: Report, module: Any) -> None:
    """ Every @hookimpl function of `module` against zato/hookspecs.py: its hook exists, its
    arguments are the spec's, no wrapper of a hook called one plugin at a time; then pluggy's own
    validation (`register`, `check_pending`) for what that leaves. """
    import pluggy

    from zato.plugins import ONE_AT_A_TIME_HOOKS, new_plugin_manager

    pm = new_plugin_manager()
    spec_names = sorted(name for name in dir(pm.hook) if not name.startswith("_")
                        and getattr(getattr(pm.hook, name), "spec", None) is not None)
    impls: list[str] = []
    problems: list[str] = []
    for attribute in dir(module):
        opts = pm.parse_hookimpl_opts(module, attribute)
        if opts is None:
            continue
        function = getattr(module, attribute)
        hook_name = opts.get("specname") or attribute
        where = _where(function)
        impls.append(hook_name)
        caller = getattr(pm.hook, hook_name, None)
        spec = getattr(caller, "spec", None)
        if spec is None:
            close = difflib.get_close_matches(hook_name, spec_names, n=1)
            problems.append(f"{attribute} ({where}) is marked @hookimpl, but there is no hook {hook_name!r}"
                            + (f"; did you mean {close[0]!r}?" if close else "; see zato/hookspecs.py"))
            continue
        argnames, _ = pluggy._hooks.varnames(function)
        unknown = [arg for arg in argnames if arg not in spec.argnames]
        if unknown:
            problems.append(f"{attribute} ({where}) asks for {', '.join(unknown)}, which the {hook_name} hook "
                            f"does not pass (it passes {', '.join(spec.argnames) or 'nothing'})")
        wrapper = "wrapper=True" if opts.get("wrapper") else "hookwrapper=True" if opts.get("hookwrapper") else ""
        if wrapper and hook_name in ONE_AT_A_TIME_HOOKS:
            problems.append(f"{attribute} ({where}) is marked {wrapper}, but the core calls each plugin's "
                            f"{hook_name} on its own, so there is nothing to wrap; use tryfirst=True or "
                            f"trylast=True instead")
    if not problems:  # what pluggy refuses that the checks above do not know of
        try:
            pm.register(module, name=report.name)
            pm.check_pending()
        except (pluggy.PluginValidationError, ValueError) as exc:
            problems.append(str(exc))
    if problems:
        for problem in problems:
            report.add(FAIL, "hooks", problem)
        return
    if not impls:
        report.add(WARN, "hooks", "no function is marked @hookimpl: the plugin does nothing")
        return
    report.add(OK, "hooks", f"{len(impls)} hook implementation(s) match zato/hookspecs.py: {', '.join(sorted(impls))}",
               hooks=sorted(impls))


# ################################################################################################
# A throw-away server


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(f"{record.levelname} {record.name}: {record.getMessage()}")
        except Exception:  # a record whose arguments do not fit its message
            self.messages.append(f"{record.levelname} {record.name}: {record.msg}")


def _server_dir(base: Path, info: Any, found: list[Any]) -> Path:
    """ A server directory on a free port with `info` switched on in [deploy_internal] and the
    other installed (not built-in) plugins switched off. """
    from zato.cli.quickstart import create_server_dir
    from zato.passwords import new_password
    from zato.plugins import DEPLOY_INTERNAL, plugin_module
    from zato.testing import set_config_value

    paths = create_server_dir(base, port=0, admin_password=new_password())
    set_config_value(paths.base_dir, "main", "graceful_timeout", 3)
    for other in found:
        if not other.builtin:
            set_config_value(paths.base_dir, DEPLOY_INTERNAL, plugin_module(other), other.name == info.name)
    return paths.base_dir


@asynccontextmanager
async def _running(base_dir: Path) -> AsyncIterator[Any]:
    """ A server worker in this trio run, as zato.testing.run_server starts it, stopped on exit;
    an error stays inside its exception group, with its cause (what the plugin raised). """
    import trio

    from zato.server.server import serve_worker
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_worker, base_dir)
        try:
            yield server
        finally:
            server.request_shutdown()


def _first_error(exc: BaseException) -> BaseException:
    """ The first error inside (nested) exception groups that is not a cancellation. """
    import trio
    while isinstance(exc, BaseExceptionGroup):
        inner = [item for item in exc.exceptions if not isinstance(item, trio.Cancelled)]
        exc = (inner or list(exc.exceptions))[0]
    return exc


def run_in_server(report: Report, info: Any, found: list[Any], timeout: float) -> dict[str, Any] | None:
    """ Starts a throw-away server with the plugin on and stops it; what it registered, or None
    if it did not start (the reason is in `report`). """
    import trio

    from zato.registry import Kind

    collected: dict[str, Any] = {}
    handler = _Collect()
    root = logging.getLogger()
    with tempfile.TemporaryDirectory(prefix="zato-plugin-check-") as tmp:
        try:
            base_dir = _server_dir(Path(tmp) / "server", info, found)
        except Exception as exc:  # quickstart migrates every installed plugin's tables: another one may be broken
            report.add(FAIL, "start", f"cannot create the throw-away server directory: {type(exc).__name__}: {exc}")
            return None

        async def start_and_stop() -> None:
            with trio.fail_after(timeout):
                async with _running(base_dir) as server:
                    collected["address"] = server.address
                    collected["loaded"] = server.plugins.enabled_names()
                    collected["registered"] = server.registry.by_plugin(info.name)
                    modules = set(server.registry.by_plugin(info.name).get(Kind.INTERNAL_SERVICES, ()))
                    collected["services"] = sorted(entry.name for entry in server.services.entries.values()
                                                   if entry.module in modules)
                    collected["object_types"] = [server.registry.get(Kind.OBJECT_TYPES, name) for name in
                                                 server.registry.by_plugin(info.name).get(Kind.OBJECT_TYPES, ())]
                    collected["pm"] = server.pm
                    collected["stopping"] = time.perf_counter()

        started = time.perf_counter()
        root.addHandler(handler)
        try:
            trio.run(start_and_stop)
        except trio.TooSlowError:
            report.add(FAIL, "start", f"the server with the plugin on did not start and stop within {timeout:.0f} s "
                                      f"(--timeout)")
            return None
        except Exception as exc:
            exc = _first_error(exc)
            where = _error_location(exc, _module_dir(info.module.partition(":")[0]))
            report.add(FAIL, "start", f"the server did not start with the plugin on: {type(exc).__name__}: {exc} "
                                      f"({where})", where=where)
            return None
        finally:
            root.removeHandler(handler)
    took = time.perf_counter() - started
    if info.name not in collected.get("loaded", ()):
        report.add(FAIL, "start", "the server started, but the plugin was not loaded (switched on in "
                                  "[deploy_internal]); see the warnings")
    else:
        report.add(OK, "start", f"a throw-away server with the plugin on started at {collected['address']} and "
                                f"stopped ({took:.1f} s)", seconds=round(took, 3))
    own = _module_dir(info.module.partition(":")[0])
    for message in handler.messages[:20]:
        report.add(WARN, "start", f"logged while starting and stopping: {message}", log=message,
                   own=bool(own and own in message))
    return collected


def check_registrations(report: Report, collected: dict[str, Any]) -> None:
    registered = collected.get("registered") or {}
    for kind, names in registered.items():
        report.add(OK, "registers", f"{KIND_NAMES.get(kind, kind)}: {', '.join(names)}", kind=str(kind), names=names)
    services = collected.get("services") or []
    if services:
        report.add(OK, "registers", f"services: {', '.join(services)}", kind="services", names=services)
    commands = _cli_commands(report.name, collected.get("pm"))
    if commands:
        report.add(OK, "registers", f"CLI commands: {', '.join('zato ' + c for c in commands)}", kind="cli_commands",
                   names=commands)
    if not registered and not services and not commands:
        report.add(WARN, "registers", "registers nothing the core keeps (no register_* hook added anything)")


def _cli_commands(name: str, pm: Any) -> list[str]:
    """ The commands the plugin's register_cli_commands adds to an empty group. """
    if pm is None:
        return []
    group = click.Group("zato")
    for impl in pm.hook.register_cli_commands.get_hookimpls():
        if impl.plugin_name == name and not (impl.wrapper or impl.hookwrapper):
            try:
                impl.function(**{arg: group for arg in impl.argnames})
            except Exception as exc:
                return [f"(register_cli_commands failed: {type(exc).__name__}: {exc})"]
    return sorted(group.commands)


def check_docs(report: Report, object_types: list[Any]) -> None:
    if not object_types:
        return
    undocumented = [f"{object_type.name}.{item.name}" for object_type in object_types for item in object_type.fields
                    if not (item.description or "").strip()]
    if undocumented:
        report.add(FAIL, "docs", f"{len(undocumented)} field(s) of its object types have no description: "
                                 f"{', '.join(undocumented)}; give each Field a description=...",
                   undocumented=undocumented)
    else:
        fields = sum(len(object_type.fields) for object_type in object_types)
        report.add(OK, "docs", f"every field of its {len(object_types)} object type(s) is documented ({fields} fields)")
    bare = [object_type.name for object_type in object_types if not (object_type.description or "").strip()]
    if bare:
        report.add(WARN, "docs", f"object type(s) without a description: {', '.join(bare)}", undocumented_types=bare)


# ################################################################################################
# Import time


def parse_importtime(stderr: str) -> tuple[list[tuple[str, int, int, int]], list[tuple[str, int, int, int]]]:
    """ `python -X importtime` output as (before the marker, after it): (module, depth, self µs, cumulative µs). """
    before: list[tuple[str, int, int, int]] = []
    after: list[tuple[str, int, int, int]] = []
    current = before
    for line in stderr.splitlines():
        if line.strip() == _MARKER:
            current = after
            continue
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue  # the header
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip())) // 2
        current.append((name.strip(), depth, int(parts[0]), int(parts[1])))
    return before, after


def _import_run(module: str, env: dict[str, str]) -> tuple[float, float, list[tuple[str, int, int, int]], str]:
    code = (f"import sys; import {CORE_IMPORTS}; print({_MARKER!r}, file=sys.stderr, flush=True); "
            f"import {module}")
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                            env=env, timeout=120)
    before, after = parse_importtime(result.stderr)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if not line.startswith("import time:")
                 and line.strip() != _MARKER]
        return -1, 0, after, "\n".join(lines[-3:])
    core = sum(cumulative for _, depth, _, cumulative in before if depth == 0) / 1e6
    plugin = sum(cumulative for _, depth, _, cumulative in after if depth == 0) / 1e6
    return plugin, core, after, ""


def heaviest(entries: list[tuple[str, int, int, int]], count: int = 5) -> list[tuple[str, float]]:
    """ The top-level packages that took longest, by their modules' own time: (package, seconds). """
    by_package: dict[str, int] = {}
    for name, _, own, _ in entries:
        by_package[name.split(".")[0]] = by_package.get(name.split(".")[0], 0) + own
    return [(name, micro / 1e6) for name, micro in sorted(by_package.items(), key=lambda item: -item[1])[:count]]


def check_import_time(report: Report, module: str, threshold: float, runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="zato-plugin-check-pyc-") as prefix:
        env = {**os.environ, "PYTHONPYCACHEPREFIX": prefix}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode goes to the temporary prefix only
        cold, _, cold_entries, error = _import_run(module, env)
        if error:
            report.add(FAIL, "import_time", f"`python -c 'import {module}'` fails in a fresh interpreter: {error}")
            return
        warm = [_import_run(module, env) for _ in range(max(0, runs - 1))]
    if warm:
        seconds, core, entries, _ = min(warm, key=lambda run: run[0])
        how = f"best of {len(warm)} warm run(s); cold {cold:.2f} s; the core itself {core:.2f} s"
    else:
        seconds, core, entries = cold, 0.0, cold_entries
        how = "one cold run: bytecode compiled too"
    top = heaviest(entries)
    named = ", ".join(f"{name} {took:.2f} s" for name, took in top[:3] if took >= 0.001)
    details = {"seconds": round(seconds, 4), "cold_seconds": round(cold, 4), "threshold": threshold,
               "core_seconds": round(core, 4), "runs": runs, "heaviest": [{"module": name, "seconds": round(took, 4)} for name, took in top]}
    if seconds > threshold:
        report.add(WARN, "import_time", f"importing {module} takes {seconds:.2f} s beyond the core ({how}), more than "
                                        f"{threshold:g} s (--import-threshold); heaviest: {named}; import what is "
                                        f"heavy inside the functions that need it", **details)
    else:
        report.add(OK, "import_time", f"importing {module} takes {seconds:.3f} s beyond the core ({how})"
                                      + (f"; heaviest: {named}" if named else ""), **details)


# ################################################################################################
# The command


def check_plugin(info: Any, found: list[Any], *, threshold: float, runs: int, timeout: float,
                 import_time: bool = True) -> Report:
    """ Every check of one plugin (`zato.plugins.PluginInfo`). """
    from zato.plugins import plugin_module

    report = Report(info.name, info.distribution, info.version, info.module, info.builtin, info.opt_in)
    module_name = plugin_module(info)
    try:
        module = info.load_module()
    except Exception as exc:
        where = _error_location(exc, _module_dir(module_name))
        report.add(FAIL, "import", f"{module_name} cannot be imported: {type(exc).__name__}: {exc} ({where})",
                   where=where)
        return report
    check_hooks(report, module)
    if report.ok:
        collected = run_in_server(report, info, found, timeout)
        if collected is not None:
            check_registrations(report, collected)
            check_docs(report, collected.get("object_types") or [])
    if import_time:
        check_import_time(report, module_name, threshold, runs)
    return report


def _print(console: Any, report: Report) -> None:
    from rich.markup import escape
    kind = "built-in" if report.builtin else "opt-in" if report.opt_in else "installed"
    console.print(f"[bold]{escape(report.name)}[/] ({escape(report.distribution)} {escape(report.version)}, "
                  f"module {escape(report.module)}, {kind})", soft_wrap=True)
    for item in report.checks:
        console.print(f"  {MARKS[item.status]} {escape(item.check)}: {escape(item.message)}", soft_wrap=True)


@click.command("check")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
@click.option("--import-threshold", default=0.25, show_default=True, type=click.FloatRange(min=0),
              help="Seconds the plugin's import may take beyond the core's before a warning.")
@click.option("--runs", default=3, show_default=True, type=click.IntRange(min=1),
              help="Imports to time (the first is cold; the best of the others counts).")
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds the throw-away server may take to start and stop.")
def check(name: str | None, as_json: bool, import_threshold: float, runs: int, timeout: float) -> None:
    """ Check an installed plugin: load it in a throw-away server and report what it registers,
    whether its hooks match the specs, whether its object types are documented and how long it
    takes to import. NAME is the plugin's name (its entry point's); without it, every installed
    plugin that is not built in. Exit code 0 if nothing is wrong (warnings allowed), 1 if
    something is, 2 for an unknown plugin. Does not run the plugin's tests. """
    from zato.plugins import PluginLoadError, discover_plugins

    try:
        found = discover_plugins()
    except PluginLoadError as exc:
        raise UsageProblem(str(exc)) from None
    installed = [info for info in found if not info.builtin]
    if name is None:
        chosen = installed
        if not chosen:
            raise UsageProblem("no plugin is installed besides the built-in ones; give a built-in's name to check "
                               "it (" + ", ".join(info.name for info in found) + ")")
    else:
        chosen = [info for info in found if info.name == name]
        if not chosen:
            close = difflib.get_close_matches(name, [info.name for info in found], n=1)
            raise UsageProblem(
                f"no plugin named {name!r} is installed" + (f" (did you mean {close[0]!r}?)" if close else "")
                + "; installed: " + (", ".join(info.name for info in installed) or "none")
                + "; built in: " + ", ".join(info.name for info in found if info.builtin))

    from zato.cli import _console
    console = _console()
    reports = []
    for info in chosen:
        if as_json:
            report = check_plugin(info, found, threshold=import_threshold, runs=runs, timeout=timeout)
        else:
            with console.status(f"checking {info.name}"):
                report = check_plugin(info, found, threshold=import_threshold, runs=runs, timeout=timeout)
            _print(console, report)
        reports.append(report)
    ok = all(report.ok for report in reports)
    if as_json:
        click.echo(json.dumps({"ok": ok, "plugins": [report.as_dict() for report in reports]}, indent=2, default=str))
    elif len(reports) > 1:
        failed = [report.name for report in reports if not report.ok]
        console.print(f"[red]✗[/] {len(failed)} of {len(reports)} plugins have problems: {', '.join(failed)}" if failed
                      else f"[green]✓[/] {len(reports)} plugins checked, no problems", soft_wrap=True)
    sys.exit(0 if ok else 1)
