""" The `zato` command line. Plugins add commands through the `register_cli_commands` hook. """

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import click

from zato._plugin_modules import check_package_intact

check_package_intact()  # before anything that needs zato/__init__.py to have run

from zato import __version__  # noqa: E402

EXIT_NOT_RUNNING = 3


def _console():
    from rich.console import Console
    return Console(stderr=False, highlight=False)


def _paths(base_dir: str):
    from zato.cli.admin_client import server_paths
    return server_paths(base_dir)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zato")
def cli() -> None:
    """ Zato: integration services on a trio core with pluggy plugins. """


# ################################################################################################


@cli.group()
def quickstart() -> None:
    """ Create a ready-to-run server directory. """


@quickstart.command("create")
@click.argument("base_dir", type=click.Path(file_okay=False))
@click.option("--port", default=17010, show_default=True, help="Port to listen on (0: any free port).")
@click.option("--workers", default=1, show_default=True, help="Worker processes sharing the port.")
@click.option("--name", default="server1", show_default=True, help="Server name.")
@click.option("--admin-password", envvar="ZATO_ADMIN_PASSWORD", default=None,
              help="Admin API password (default: generated and printed once). Env: ZATO_ADMIN_PASSWORD.")
def quickstart_create(base_dir: str, port: int, workers: int, name: str, admin_password: str | None) -> None:
    """ Make a server directory: config/server.conf, pickup/ with a demo service, logs/, work/
    with a SQLite configuration database holding a REST channel for the demo service. """
    from zato.cli.quickstart import QuickstartError, create_server_dir
    from zato.passwords import new_password

    console = _console()
    generated = admin_password is None
    password = admin_password or new_password()
    try:
        with console.status("creating the server directory") as status:
            paths = create_server_dir(base_dir, port=port, workers=workers, name=name, admin_password=password,
                                      progress=lambda m: console.print(f"[green]✓[/] {m}"))
    except QuickstartError as exc:
        raise click.ClickException(str(exc)) from None
    if generated:
        console.print(f"\nAdmin API user [bold]admin[/], password [bold]{password}[/] (shown only now; "
                      f"stored as a hash)")
    console.print(f"\nStart it:  zato start {base_dir}\nThen:      curl http://127.0.0.1:{port}/demo/hello"
                  if port else f"\nStart it:  zato start {base_dir}")


# ################################################################################################


@cli.command()
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--fg", is_flag=True, help="Run in the foreground, logging to the console too.")
@click.option("--sync-internal", is_flag=True, help="Rebuild the start-up cache of internal services.")
@click.option("--skip-broken-plugins", is_flag=True, help="Start without plugins that fail to import.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the server to answer.")
def start(base_dir: str, fg: bool, sync_internal: bool, skip_broken_plugins: bool, timeout: float) -> None:
    """ Start a server (in the background unless --fg). """
    paths = _paths(base_dir)
    if fg:
        from zato.server.main import run_server
        sys.exit(run_server(paths.base_dir, console=True, sync_internal=sync_internal,
                            skip_broken_plugins=skip_broken_plugins))

    from zato.server.main import pid_alive, read_pid
    pid = read_pid(paths)
    if pid and pid_alive(pid):
        raise click.ClickException(f"already running in {paths.base_dir} (pid {pid})")
    paths.runtime_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "zato.server.main", str(paths.base_dir)]
    command += ["--sync-internal"] * sync_internal + ["--skip-broken-plugins"] * skip_broken_plugins
    paths.logs_dir.mkdir(exist_ok=True)
    stderr_file = paths.logs_dir / "start-stderr.log"
    with open(stderr_file, "wb") as stderr:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                   start_new_session=True, cwd=paths.base_dir)
    console = _console()
    deadline = time.monotonic() + timeout
    with console.status(f"starting the server in {paths.base_dir}"):
        while True:
            code = process.poll()
            if code is not None:
                error = stderr_file.read_text("utf-8", "replace").strip()
                raise click.ClickException(f"the server did not start (exit code {code}).\n{error}\n"
                                           f"See {paths.log_file}")
            address = _answering_address(paths, process.pid)
            if address:
                break
            if time.monotonic() > deadline:
                raise click.ClickException(f"the server did not answer within {timeout:.0f} s; see {paths.log_file}")
            time.sleep(0.05)
    console.print(f"[green]✓[/] started (pid {process.pid}) at {address}")


def _answering_address(paths: Any, pid: int) -> str | None:
    from zato.server.server import read_runtime_file
    info = read_runtime_file(paths)
    if not info or info.get("pid") != pid:
        return None
    return info["address"] if ping(info["address"]) else None


def ping(address: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{address}/zato/ping", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


@cli.command()
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait before giving up.")
@click.option("--kill", "kill_after", is_flag=True, help="SIGKILL the server if it has not stopped in time.")
def stop(base_dir: str, timeout: float, kill_after: bool) -> None:
    """ Stop a server: SIGTERM, then wait for in-flight requests to finish. """
    from zato.server.main import pid_alive, read_pid
    paths = _paths(base_dir)
    pid = read_pid(paths)
    console = _console()
    if not pid or not pid_alive(pid):
        paths.pidfile.unlink(missing_ok=True)
        console.print(f"not running in {paths.base_dir}")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    with console.status(f"stopping pid {pid}"):
        while pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
    if pid_alive(pid):
        if not kill_after:
            raise click.ClickException(f"pid {pid} did not stop within {timeout:.0f} s; try again or use --kill")
        os.kill(pid, signal.SIGKILL)
        console.print(f"[yellow]killed[/] pid {pid}")
        return
    console.print(f"[green]✓[/] stopped (pid {pid})")


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


@cli.command()
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
def status(base_dir: str) -> None:
    """ Is the server running and answering? Exit code 0 if so, 3 if not. """
    from zato.server.main import pid_alive, read_pid
    from zato.server.server import read_runtime_file
    paths = _paths(base_dir)
    pid = read_pid(paths)
    console = _console()
    if not pid or not pid_alive(pid):
        console.print(f"not running in {paths.base_dir}")
        sys.exit(EXIT_NOT_RUNNING)
    info = read_runtime_file(paths) or {}
    address = info.get("address", "")
    started = time.perf_counter()
    answering = bool(address) and ping(address)
    took = (time.perf_counter() - started) * 1000
    state = f"[green]answering[/] ({took:.1f} ms)" if answering else "[red]not answering[/]"
    console.print(f"running: pid {pid}, {info.get('workers', '?')} worker(s), {address or 'no address yet'}, {state}")
    if not answering:
        sys.exit(1)


@cli.command("set-admin-password")
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
@click.password_option("--password", envvar="ZATO_ADMIN_PASSWORD", help="New password. Env: ZATO_ADMIN_PASSWORD.")
def set_admin_password(base_dir: str, password: str) -> None:
    """ Set the admin API password (stored as a scrypt hash in server.conf; restart to apply). """
    import re
    from zato.passwords import hash_password
    paths = _paths(base_dir)
    text = paths.server_conf.read_text("utf-8")
    new_line = f"password_hash = {hash_password(password)}"
    text, count = re.subn(r"(?m)^password_hash\s*=.*$", new_line, text)
    if not count:
        text += f"\n[admin]\nusername = admin\n{new_line}\n"
    from zato.common.files import write_file
    write_file(paths.server_conf.resolve(), text)  # 0600 whatever it was: it holds the hash
    _console().print("[green]✓[/] admin password set; restart the server to apply it")


@cli.command()
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("service")
@click.option("--payload", default=None, help="Request as JSON, e.g. '{\"id\": 1}'; '-' reads it from stdin.")
def invoke(base_dir: str, service: str, payload: str | None) -> None:
    """ Invoke a service on the server running in BASE_DIR and print its response. """
    from zato.cli.admin_client import admin_request, describe_error
    paths = _paths(base_dir)
    if payload == "-":
        payload = sys.stdin.read()
    if payload is not None:
        try:
            json.loads(payload)
        except ValueError as exc:
            raise click.ClickException(f"--payload is not valid JSON: {exc}") from None
    status_code, headers, body = admin_request(paths, "POST", f"/zato/api/invoke/{service}",
                                               payload.encode() if payload is not None else None)
    if status_code != 200:
        raise click.ClickException(describe_error(status_code, body))
    text = body.decode("utf-8", "replace")
    if "json" in headers.get("content-type", headers.get("Content-Type", "")):
        text = json.dumps(json.loads(body), indent=2)
    click.echo(text)


@cli.command("ping-connection")
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("connection_type")
@click.argument("name")
def ping_connection(base_dir: str, connection_type: str, name: str) -> None:
    """ Ping an outgoing connection of the server running in BASE_DIR (e.g. plain_http "My API").
    Exit code 0 if it answers, 1 if not. """
    from urllib.parse import quote
    from zato.cli.admin_client import admin_request, describe_error
    paths = _paths(base_dir)
    status_code, _, body = admin_request(paths, "POST", f"/zato/api/outgoing/{quote(connection_type, safe='')}/"
                                                        f"{quote(name, safe='')}/ping")
    if status_code != 200:
        raise click.ClickException(describe_error(status_code, body))
    result = json.loads(body)
    if result["ok"]:
        _console().print(f"[green]✓[/] {connection_type} {name!r} answered in {result['took_ms']} ms")
        return
    _console().print(f"[red]✗[/] {connection_type} {name!r} did not answer: {result['error']}")
    sys.exit(1)


# ################################################################################################


@cli.group()
def plugins() -> None:
    """ Inspect plugins. """


@plugins.command("list")
@click.argument("base_dir", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins_list(base_dir: str | None, as_json: bool) -> None:
    """ Every plugin: name, distribution, version, enabled or not (per DIR's server.conf), hooks. """
    from zato.config import ConfigError
    from zato.plugins import PluginLoadError, load_plugins, plugin_switches
    from zato.server.server import read_server_config

    try:
        config = read_server_config(_paths(base_dir)) if base_dir else {}
        switches = plugin_switches(config.get("plugins"), config.get("component_enabled"))
        loaded = load_plugins(switches, skip_broken=True)
    except (PluginLoadError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    rows = [{"name": p.name, "distribution": p.distribution, "version": p.version, "enabled": p.enabled,
             "loaded": p.loaded, "error": p.error, "hooks": p.hooks, "opt_in": p.opt_in,
             "registered": loaded.registry.by_plugin(p.name)} for p in loaded.plugins]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table
    table = Table(title="Zato plugins" + (f" for {base_dir}" if base_dir else ""))
    for column in ("name", "distribution", "version", "enabled", "hooks"):
        table.add_column(column)
    from rich.markup import escape
    off_until_switched_on = [row["name"] for row in rows if row["opt_in"] and not row["enabled"]]
    for row in rows:
        enabled = "[red]broken[/]" if row["error"] else ("yes" if row["enabled"] else "[dim]no[/]")
        not_loaded = row["error"] or ("off until switched on" if row["name"] in off_until_switched_on
                                      else "not imported")
        hooks = ", ".join(row["hooks"]) if row["loaded"] else f"[dim]{escape(not_loaded)}[/]"
        table.add_row(row["name"], row["distribution"], row["version"], enabled, hooks)
    _console().print(table)
    for name in off_until_switched_on:  # one line each, never wrapped, so it can be copied
        click.echo(f"{name}: off until switched on: [component_enabled] {name} = True or [plugins] {name} = True "
                   f"in server.conf")


# ################################################################################################


def _server_dir_in(argv: list[str]) -> Path | None:
    for arg in argv:
        if not arg.startswith("-") and (Path(arg) / "config" / "server.conf").is_file():
            return Path(arg)
    return None


def add_plugin_commands(group: click.Group, argv: list[str]) -> None:
    """ Lets enabled plugins add their commands (the `register_cli_commands` hook). """
    from zato.plugins import PluginLoadError, load_plugins, plugin_switches
    from zato.server.server import ServerPaths, read_server_config

    switches: dict[str, bool] = {}
    server_dir = _server_dir_in(argv)
    if server_dir is not None:
        try:
            config = read_server_config(ServerPaths(server_dir))
            switches = plugin_switches(config.get("plugins"), config.get("component_enabled"))
        except Exception:
            switches = {}
    try:
        loaded = load_plugins(switches, skip_broken=True)
    except PluginLoadError:
        return
    loaded.pm.hook.register_cli_commands(cli=group)


from zato.cli.enmasse import enmasse as _enmasse; cli.add_command(_enmasse)  # noqa: E402

LIGHT_COMMANDS = frozenset(("start", "stop", "status", "--version"))


def main(argv: list[str] | None = None) -> Any:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Core commands that must stay fast (start/stop/status) skip importing plugins.
    if not argv or argv[0] not in LIGHT_COMMANDS:
        add_plugin_commands(cli, argv)
    return cli.main(args=argv, prog_name="zato")
