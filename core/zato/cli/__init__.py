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


class NotSupported(click.ClickException):
    """ A Zato option whose meaning cannot be kept here: exit code 2, as for a usage error. """
    exit_code = 2


def zato_note(option: str, note: str) -> None:
    """ One line on stderr about a Zato option that is accepted but does nothing here. """
    click.echo(f"note: {option}: {note}", err=True)


def zato_option(*names: str, **kwargs: Any) -> Any:
    """ A Zato 3.2 option, accepted for compatibility and hidden from --help. """
    kwargs.setdefault("default", None)
    return click.option(*names, hidden=True, **kwargs)


def zato_base_options(function: Any) -> Any:
    """ The options every Zato 3.2 command takes (`--verbose`, `--store-log`, `--store-config`). """
    for name in ("--store-config", "--store-log", "--verbose"):
        function = zato_option(name, is_flag=True, default=False)(function)
    return function


def note_base_options(verbose: bool = False, store_log: bool = False, store_config: bool = False) -> None:
    if store_log:
        zato_note("--store-log", "ignored; the server's own log is logs/server.log")
    if store_config:
        zato_note("--store-config", "ignored; nothing is stored between commands")


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
@click.argument("zato_positional", nargs=-1, metavar="[sqlite [KVDB_HOST KVDB_PORT]]")
@click.option("--port", default=17010, show_default=True, help="Port to listen on (0: any free port).")
@click.option("--workers", default=None, type=int, help="Worker processes sharing the port.  [default: 1]")
@click.option("--name", default="server1", show_default=True, help="Server name.")
@click.option("--admin-password", envvar="ZATO_ADMIN_PASSWORD", default=None,
              help="Admin API password (default: generated and printed once). Env: ZATO_ADMIN_PASSWORD.")
@zato_option("--odb-type", "--odb_type", "odb_type")
@zato_option("--kvdb-host", "--kvdb_host", "kvdb_host")
@zato_option("--kvdb-port", "--kvdb_port", "kvdb_port")
@zato_option("--kvdb-password", "--kvdb_password", "kvdb_password")
@zato_option("--odb-host", "--odb_host", "odb_host")
@zato_option("--odb-port", "--odb_port", "odb_port")
@zato_option("--odb-user", "--odb_user", "odb_user")
@zato_option("--odb-db-name", "--odb_db_name", "odb_db_name")
@zato_option("--odb-password", "--odb_password", "odb_password")
@zato_option("--postgresql-schema", "postgresql_schema")
@zato_option("--cluster-name", "--cluster_name", "cluster_name")
@zato_option("--servers", type=int)
@zato_option("--threads-per-server", "--threads_per_server", "threads_per_server", type=int)
@zato_option("--secret-key", "--secret_key", "secret_key")
@zato_option("--jwt-secret-key", "--jwt_secret_key", "jwt_secret_key")
@zato_option("--no-scheduler", "no_scheduler", is_flag=True, default=False)
@zato_option("--scheduler-only", "scheduler_only", is_flag=True, default=False)
@zato_option("--preamble-script", "preamble_script")
@zato_option("--scheduler-address-for-server", "scheduler_address_for_server")
@zato_option("--server-address-for-scheduler", "server_address_for_scheduler")
@zato_option("--scheduler-api-client-for-server-username", "scheduler_api_client_for_server_username")
@zato_option("--scheduler-api-client-for-server-password", "scheduler_api_client_for_server_password")
@zato_option("--server-api-client-for-scheduler-username", "server_api_client_for_scheduler_username")
@zato_option("--server-api-client-for-scheduler-password", "server_api_client_for_scheduler_password")
@zato_base_options
def quickstart_create(base_dir: str, zato_positional: tuple[str, ...], port: int, workers: int | None, name: str,
                      admin_password: str | None, **zato: Any) -> None:
    """ Make a server directory: config/server.conf, pickup/ with a demo service, logs/, work/
    with a SQLite configuration database holding a REST channel for the demo service.

    Zato 3.2's spelling works too: `zato quickstart create DIR sqlite localhost 6379`, and its
    options (--odb-type, --servers, --threads-per-server, --cluster-name...); those that mean
    nothing here are reported on stderr, one line each. """
    from zato.cli.quickstart import QuickstartError, create_server_dir
    from zato.passwords import new_password

    workers = _zato_quickstart_arguments(zato_positional, workers, zato)
    console = _console()
    generated = admin_password is None
    password = admin_password or new_password()
    try:
        with console.status("creating the server directory"):
            create_server_dir(base_dir, port=port, workers=workers, name=name, admin_password=password,
                              progress=lambda m: console.print(f"[green]✓[/] {m}"))
    except QuickstartError as exc:
        raise click.ClickException(str(exc)) from None
    if generated:
        console.print(f"\nAdmin API user [bold]admin[/], password [bold]{password}[/] (shown only now; "
                      f"stored as a hash)")
    console.print(f"\nStart it:  zato start {base_dir}\nThen:      curl http://127.0.0.1:{port}/demo/hello"
                  if port else f"\nStart it:  zato start {base_dir}")


def _zato_quickstart_arguments(positional: tuple[str, ...], workers: int | None, zato: dict[str, Any]) -> int:
    """ Checks Zato 3.2's arguments of `quickstart create` and returns the number of workers.
    Zato's positional ODB_TYPE KVDB_HOST KVDB_PORT (before 3.2) are its --odb-type,
    --kvdb-host and --kvdb-port. Raises `NotSupported` where the meaning cannot be kept. """
    if len(positional) > 3:
        raise click.UsageError(f"unexpected arguments {' '.join(positional[3:])!r}; Zato's positional arguments are "
                               f"ODB_TYPE [KVDB_HOST KVDB_PORT]")
    odb_type = zato.pop("odb_type") or (positional[0] if positional else None)
    kvdb_host = zato.pop("kvdb_host") or (positional[1] if len(positional) > 1 else None)
    kvdb_port = zato.pop("kvdb_port") or (positional[2] if len(positional) > 2 else None)
    if odb_type is not None and odb_type.lower() != "sqlite":
        raise NotSupported(f"ODB type {odb_type!r}: quickstart creates a SQLite configuration database; create the "
                           f"server with sqlite, then set [odb] url (e.g. postgresql+psycopg://user:password@host/db) "
                           f"in config/server.conf")
    kvdb_password = zato.pop("kvdb_password")
    if kvdb_host or kvdb_port or kvdb_password:
        zato_note("KVDB_HOST/KVDB_PORT", "ignored; the server needs no Redis (the redis plugin's connections are "
                                         "configuration objects)")
    odb_options = [key for key in ("odb_host", "odb_port", "odb_user", "odb_db_name", "odb_password",
                                   "postgresql_schema") if zato.pop(key)]
    if odb_options:
        zato_note(", ".join("--" + key.replace("_", "-") for key in odb_options),
                  "ignored with SQLite; the database is work/zato.db ([odb] url in server.conf)")
    servers = zato.pop("servers")
    if servers is not None and servers != 1:
        raise NotSupported(f"--servers {servers}: quickstart creates one server; use --workers N for N processes "
                           f"sharing its port, or run quickstart once per server directory")
    threads = zato.pop("threads_per_server")
    if threads is not None:
        if workers is not None and workers != threads:
            raise click.UsageError(f"--threads-per-server {threads} and --workers {workers} say the same thing "
                                   f"differently; give one of them")
        workers = threads  # Zato's main threads per server are its gunicorn workers: ours are worker processes
    if zato.pop("cluster_name"):
        zato_note("--cluster-name", "ignored; a server here belongs to no cluster (its name is --name)")
    for key in ("secret_key", "jwt_secret_key"):
        if zato.pop(key):
            zato_note("--" + key.replace("_", "-"), "ignored; quickstart generates config/secret.key")
    if zato.pop("scheduler_only"):
        raise NotSupported("--scheduler-only: the scheduler runs inside the server, not as a component of its own")
    if zato.pop("no_scheduler"):
        zato_note("--no-scheduler", "the scheduler runs inside the server; switch its plugin (scheduler) off in "
                                    "config/server.conf instead")
    if zato.pop("preamble_script"):
        zato_note("--preamble-script", "ignored; there are no start-up scripts: use `zato start DIR`")
    scheduler_options = [key for key in list(zato) if "scheduler" in key and zato.pop(key)]
    if scheduler_options:
        zato_note(", ".join("--" + key.replace("_", "-") for key in scheduler_options),
                  "ignored; the scheduler runs inside the server and needs no address or API client")
    note_base_options(**zato)
    return workers if workers is not None else 1


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
    from zato.server.server import deploy_failures_file
    deploy_failures_file(paths).unlink(missing_ok=True)  # what the server writes is about this start only
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
                cause = start_failure_cause(stderr_file.read_text("utf-8", "replace"), paths)
                raise click.ClickException(f"the server did not start (exit code {code}): {cause}\n"
                                           f"See {paths.log_file}")
            info = _answering(paths, process.pid)
            if info:
                break
            if time.monotonic() > deadline:
                raise click.ClickException(f"the server did not answer within {timeout:.0f} s; see {paths.log_file}")
            time.sleep(0.05)
    failures = info.get("deploy_failures") or []
    if not failures:
        console.print(f"[green]✓[/] started (pid {process.pid}) at {info['address']}")
        return
    # It runs (exit code 0), but what it serves is not what is in pickup/
    console.print(f"[yellow]![/] started (pid {process.pid}) at {info['address']}, but {len(failures)} user "
                  f"module(s) in {paths.pickup_dir} did not deploy; fix them and save (hot deploy) or restart:",
                  soft_wrap=True)
    for failure in failures:
        where = failure.get("file", "?") + (f":{failure['line']}" if failure.get("line") else "")
        error = failure.get("error", "")
        click.echo(f"  {error}" if error.startswith(failure.get("file") or "\0") else f"  {where}: {error}")


def start_failure_cause(stderr_text: str, paths: Any) -> str:
    """ Why a server process exited during start-up: the `error: ...` lines it wrote to stderr
    (`zato.server.main.run_server`), else the last line of a crash on stderr, else the last
    ERROR line of its log. """
    lines = stderr_text.strip().splitlines()
    errors = [line[len("error: "):] for line in lines if line.startswith("error: ")]
    if errors:
        return "\n".join(errors)
    if lines:
        return lines[-1]
    try:
        log = paths.log_file.read_text("utf-8", "replace").splitlines()
    except OSError:
        log = []
    for line in reversed(log[-200:]):
        if " ERROR " in line:
            return line.split(" ERROR ", 1)[1].strip()
    return "no error was reported"


def _answering(paths: Any, pid: int) -> dict[str, Any] | None:
    """ The runtime file of the server process `pid` once it answers at its address. """
    from zato.server.server import read_runtime_file
    info = read_runtime_file(paths)
    if not info or info.get("pid") != pid:
        return None
    return info if ping(info["address"]) else None


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
    """ Invoke a service on the server running in BASE_DIR and print its response. If the service
    raises, the exception's type, message and place are shown with the cid (the log has the
    traceback under it). Zato's spelling: `zato service invoke DIR NAME --payload ...`. """
    invoke_service(base_dir, service, payload)


def invoke_service(base_dir: str, service: str, payload: str | None, headers: dict[str, str] | None = None,
                   verbose: bool = False) -> None:
    from zato.cli.admin_client import ERROR_DETAILS_HEADER, admin_request
    paths = _paths(base_dir)
    if payload == "-":
        payload = sys.stdin.read()
    if payload is not None:
        try:
            json.loads(payload)
        except ValueError as exc:
            raise click.ClickException(f"--payload is not valid JSON: {exc}") from None
    status_code, reply_headers, body = admin_request(
        paths, "POST", f"/zato/api/invoke/{service}", payload.encode() if payload is not None else None,
        headers={**(headers or {}), ERROR_DETAILS_HEADER: "true"})
    reply_headers = {key.lower(): value for key, value in reply_headers.items()}
    if verbose:
        click.echo(f"cid: {reply_headers.get('x-zato-cid', '?')}", err=True)
    if status_code != 200:
        raise click.ClickException(_describe_invoke_error(service, status_code, body))
    text = body.decode("utf-8", "replace")
    if "json" in reply_headers.get("content-type", ""):
        text = json.dumps(json.loads(body), indent=2)
    click.echo(text)


def _describe_invoke_error(service: str, status_code: int, body: bytes) -> str:
    from zato.cli.admin_client import describe_error
    try:
        data = json.loads(body)
        exception = data["exception"]
    except (ValueError, KeyError, TypeError):
        return describe_error(status_code, body)
    where = f"\n  at {exception['where']}" if exception.get("where") else ""
    return (f"service {service} raised {exception['type']}: {exception['message']}{where}\n"
            f"  cid {data.get('cid', '?')} (the server log has the traceback under it)")


@cli.group("service")
def service_group() -> None:
    """ Zato's service commands (`zato service invoke`). """


@service_group.command("invoke")
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("name")
@click.option("--payload", default=None, help="Request as JSON; '-' reads it from stdin.")
@click.option("--headers", default=None, help="HTTP headers the service sees: 'name=value; name2=value2'.")
@zato_option("--channel")
@zato_option("--data-format", "data_format")
@zato_option("--transport")
@zato_option("--url-path", "url_path")
@zato_option("--max-cid-repr", "max_cid_repr")
@zato_option("--max-response-repr", "max_response_repr")
@zato_option("--is-async", "is_async", is_flag=True, default=False)
@zato_option("--expiration")
@zato_base_options
def service_invoke(base_dir: str, name: str, payload: str | None, headers: str | None, **zato: Any) -> None:
    """ Invoke a service (Zato's spelling of `zato invoke DIR NAME`). """
    if zato.pop("is_async"):
        raise NotSupported("--is-async: the admin API invokes services and waits for the response; invoke it "
                           "without --is-async, or from a service with self.invoke_async")
    data_format = zato.pop("data_format")
    if data_format is not None and data_format.lower() != "json":
        raise NotSupported(f"--data-format {data_format}: the admin API takes JSON; give --payload as JSON, or "
                           f"call a REST channel with data_format text or form")
    if zato.pop("channel") not in (None, "invoke"):
        zato_note("--channel", "ignored; the admin API invokes through its own channel (admin.invoke)")
    for option, note in (("transport", "ignored; the admin API is called over HTTP"),
                         ("url_path", "ignored; the admin API's invoke path is /zato/api/invoke/NAME"),
                         ("max_cid_repr", "ignored; the cid is shown whole (with --verbose)"),
                         ("max_response_repr", "ignored; the response is shown whole"),
                         ("expiration", "ignored; it applies to --is-async only")):
        if zato.pop(option) is not None:
            zato_note("--" + option.replace("_", "-"), note)
    verbose = zato.pop("verbose")
    note_base_options(**zato)
    extra_headers = {}
    for pair in (headers or "").split(";"):
        if pair.strip():
            key, equals, value = pair.strip().partition("=")
            if not equals or not key.strip():
                raise click.UsageError(f"--headers: {pair.strip()!r} is not name=value; separate headers with ';'")
            extra_headers[key.strip()] = value.strip()
    invoke_service(base_dir, name, payload, extra_headers, verbose=verbose)


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


@cli.command("create-rest-channel")
@click.argument("base_dir", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--path", "path_option", type=click.Path(exists=True, file_okay=False),
              help="The server directory (Zato's spelling of BASE_DIR).")
@click.option("--name", default=None, help="Channel name (default: auto.rest.channel.<timestamp>).")
@click.option("--url-path", default=None, help="URL path (default: /<name>).")
@click.option("--service", default="zato.ping", show_default=True, help="Service the channel invokes.")
@click.option("--is-active", default="true", show_default=True, help="true or false.")
@click.option("--basic-auth", default=None,
              help="'true' (generated user and password), 'false' (none) or 'USER, PASSWORD'.")
@click.option("--api-key", default=None, help="'true' (generated header and key), 'false' (none) or 'HEADER, KEY'.")
@zato_option("--store-requests", "store_requests", type=int)
@zato_option("--store-responses", "store_responses", type=int)
@zato_option("--max-bytes-requests", "max_bytes_requests", type=int)
@zato_option("--max-bytes-responses", "max_bytes_responses", type=int)
@zato_base_options
def create_rest_channel(base_dir: str | None, path_option: str | None, name: str | None, url_path: str | None,
                        service: str, is_active: str, basic_auth: str | None, api_key: str | None,
                        **zato: Any) -> None:
    """ Create a REST channel on the running server, as Zato's `zato create-rest-channel` does
    (with a security definition if --basic-auth or --api-key asks for one), and print it with
    the credentials as JSON. """
    from datetime import datetime, timezone
    from urllib.parse import quote
    from zato.cli.admin_client import admin_request, describe_error

    if not (base_dir or path_option):
        raise click.UsageError("give the server directory: zato create-rest-channel DIR (or --path DIR)")
    paths = _paths(base_dir or path_option)
    for option in ("store_requests", "store_responses", "max_bytes_requests", "max_bytes_responses"):
        if zato.pop(option):
            zato_note("--" + option.replace("_", "-"), "ignored; channels keep no audit log of messages here (the "
                                                        "log has each request's cid, service and status)")
    note_base_options(**zato)
    if basic_auth and api_key and "false" not in (basic_auth.lower(), api_key.lower()):
        raise click.UsageError("give --basic-auth or --api-key, not both")
    active = {"true": True, "false": False}.get(is_active.strip().lower())
    if active is None:
        raise click.UsageError(f"--is-active {is_active!r}: give true or false")
    if service == "pub.zato.ping":  # Zato's default; ours is zato.ping
        service = "zato.ping"
    now = datetime.now(timezone.utc).strftime("%Y_%m_%dT%H_%M_%S_%f")  # Zato's fs_safe_now
    name = name or f"auto.rest.channel.{now}"
    channel: dict[str, Any] = {"name": name, "url_path": url_path or "/" + name, "service": service,
                               "is_active": active}
    printed: dict[str, Any] = {}
    security = _channel_security(f"auto.sec.{now}", basic_auth, api_key)
    if security is not None:
        _create_security(paths, security)
        channel["security"] = security["name"]
        printed = {"security": security["name"], **({"username": security["username"]}
                                                     if security["type"] == "basic_auth"
                                                     else {"header": security["header"]}),
                   ("password" if security["type"] == "basic_auth" else "key"): security["password"]}
    status, _, body = admin_request(paths, "POST", "/zato/api/objects/channel_rest", json.dumps(channel).encode())
    if status >= 300:
        if security is not None:  # no definition left behind that nothing uses
            admin_request(paths, "DELETE", f"/zato/api/objects/security/{quote(security['name'], safe='')}")
        raise click.ClickException(f"cannot create the REST channel {name!r}: {describe_error(status, body)}")
    created = json.loads(body)
    for warning in created.get("warnings") or ():
        click.echo(f"warning: {warning}", err=True)
    click.echo(json.dumps({key: created.get(key) for key in ("name", "url_path", "service", "is_active")}
                          | printed, indent=2))


def _create_security(paths: Any, security: dict[str, Any]) -> None:
    """ Creates a security definition, then sets its password (a secret has a call of its own). """
    from urllib.parse import quote
    from zato.cli.admin_client import admin_request, describe_error
    definition = {key: value for key, value in security.items() if key != "password"}
    status, _, body = admin_request(paths, "POST", "/zato/api/objects/security", json.dumps(definition).encode())
    if status >= 300:
        raise click.ClickException(f"cannot create the security definition {security['name']!r}: "
                                   f"{describe_error(status, body)}")
    path = f"/zato/api/objects/security/{quote(security['name'], safe='')}"
    status, _, body = admin_request(paths, "PUT", f"{path}/secrets/password",
                                    json.dumps({"value": security["password"]}).encode())
    if status >= 300:
        admin_request(paths, "DELETE", path)
        raise click.ClickException(f"cannot set the password of the security definition {security['name']!r}: "
                                   f"{describe_error(status, body)}")


def _channel_security(name: str, basic_auth: str | None, api_key: str | None) -> dict[str, Any] | None:
    """ The security definition Zato's create-rest-channel makes for --basic-auth or --api-key:
    'true' generates the credentials, 'false' asks for none, 'A, B' gives them. """
    import uuid
    for kind, value in (("basic_auth", basic_auth), ("apikey", api_key)):
        if not value or value.strip().lower() == "false":
            continue
        if value.strip().lower() == "true":
            if kind == "basic_auth":
                first, second = name, f"api.password.{uuid.uuid4().hex}"
            else:  # Zato's header from the name: auto.sec.2022_03_26T... -> X-Auto-Sec-2022-03-26-...
                parts = name.replace(".", "-").replace("_", "-").replace("T", "-").split("-")
                first, second = "X-" + "-".join(part.capitalize() for part in parts), f"api.key.{uuid.uuid4().hex}"
        else:
            first, comma, second = (part.strip() for part in value.partition(","))
            if not comma or not first or not second:
                option = "--basic-auth" if kind == "basic_auth" else "--api-key"
                raise click.UsageError(f"{option} {value!r}: give true, false or two values separated by a comma")
        return {"name": name, "type": kind, "password": second,
                **({"username": first} if kind == "basic_auth" else {"header": first})}
    return None


@cli.command("check-config")
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
@zato_base_options
def check_config(base_dir: str, **zato: Any) -> None:
    """ Check a server directory as the server would read it at start: server.conf (every key
    of the plugins switched on), start-up callables, plugins, the configuration database and
    the objects in it, and whether the port is free. Prints each problem with the file and key
    (or object) to fix; exit code 0 if there is none, 1 if there is. """
    note_base_options(**zato)
    paths = _paths(base_dir)
    console = _console()
    problems = [problem for problem in _check_server_dir(paths, console)]
    if problems:
        for problem in problems:
            console.print(f"[red]✗[/] {problem}", soft_wrap=True)
        sys.exit(1)
    console.print(f"[green]✓[/] {paths.base_dir}: no problems found", soft_wrap=True)


def _check_server_dir(paths: Any, console: Any):
    """ Yields each problem found in the server directory `paths`, as the server would meet them. """
    from rich.markup import escape
    from zato.config import ConfigError
    from zato.odb import ODB
    from zato.plugins import PluginLoadError
    from zato.server.main import pid_alive, read_pid
    from zato.server.server import (
        Server, WorkerOptions, database_url, load_configured_plugins, read_server_config,
    )
    from zato.server.startup_callable import StartupError, load_startup_callables

    ok = lambda message: console.print(f"[green]✓[/] {escape(message)}", soft_wrap=True)  # noqa: E731
    try:
        config = read_server_config(paths)
    except ConfigError as exc:
        yield escape(str(exc))
        return
    if str(paths.lib_dir) not in sys.path:  # as the server has it, for start-up callables
        sys.path.insert(0, str(paths.lib_dir))
    try:
        load_startup_callables(config.misc.get("startup_callable"))
    except StartupError as exc:
        yield escape(str(exc))
    try:
        plugins = load_configured_plugins(config, skip_broken=False, add_missing_lines=False)
    except (ConfigError, PluginLoadError) as exc:
        yield escape(str(exc))
        return
    ok(f"{paths.server_conf}: read; {len(plugins.enabled_names())} plugins switched on")

    try:
        odb = ODB(database_url(paths, config))
    except Exception as exc:
        yield escape(f"[odb] url in {paths.server_conf}: cannot open the configuration database: {exc}")
        return
    try:
        from zato.server.config_objects import read_objects
        server = Server(paths, config, plugins, WorkerOptions(), [])
        server.odb = odb
        try:
            objects, errors = read_objects(server)
        except Exception as exc:
            yield escape(f"cannot read the configuration database ([odb] url in {paths.server_conf}): "
                         f"{type(exc).__name__}: {exc}; start the server once to create or upgrade it")
            return
        for message in errors.values():
            yield escape(message)
        ok(f"configuration database: {sum(len(by_name) for by_name in objects.values())} active object(s) read")
    finally:
        odb.close()

    pid = read_pid(paths)
    if pid and pid_alive(pid):
        ok(f"a server is running (pid {pid}); its port is not checked")
        return
    host, port = config.main.get("host", "127.0.0.1"), int(config.main.get("port", 17010))
    if port:
        problem = _port_problem(host, port)
        if problem:
            yield escape(f"[main] port = {port} in {paths.server_conf}: cannot listen on {host}:{port}: {problem}; "
                         f"is another server using the port? Change [main] port")
        else:
            ok(f"{host}:{port} is free")


def _port_problem(host: str, port: int) -> str | None:
    import socket
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
            sock.bind(address)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


# ################################################################################################


@cli.group()
def plugins() -> None:
    """ Inspect plugins. """


@plugins.command("list")
@click.argument("base_dir", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--available", is_flag=True,
              help="List the plugins of a plugin index (--index, or [main] plugin_index in DIR's server.conf) and "
                   "which of them are installed.")
@click.option("--index", "index_location", default=None, metavar="PATH_OR_URL",
              help="The plugin index to read with --available: a path, a file:// or an http(s):// URL "
                   "(docs/plugin-index.md).")
def plugins_list(base_dir: str | None, as_json: bool, available: bool, index_location: str | None) -> None:
    """ Every plugin: name, distribution, version, enabled or not (per DIR's server.conf), hooks,
    and what its distribution says of it (summary, links). With --available: the plugins of a
    plugin index, which are installed and which installed ones are older than the index's. """
    from zato.config import ConfigError
    from zato.plugins import PluginLoadError, config_switches, load_plugins, switch_on_line
    from zato.server.server import read_server_config

    if index_location is not None and not available:
        raise click.UsageError("--index is read with --available: zato plugins list --available --index PATH_OR_URL")
    try:
        config = read_server_config(_paths(base_dir)) if base_dir else {}
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if available:
        from zato.cli.plugin_index import list_available
        list_available(base_dir, config, index_location, as_json)
        return
    try:
        switches, _ = config_switches(config)
        loaded = load_plugins(switches, skip_broken=True)
    except (PluginLoadError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    rows = []
    for p in loaded.plugins:
        about = _distribution_about(p)
        rows.append({"name": p.name, "distribution": p.distribution, "version": p.version, "enabled": p.enabled,
                     "loaded": p.loaded, "error": p.error, "hooks": p.hooks, "opt_in": p.opt_in,
                     "registered": loaded.registry.by_plugin(p.name), "summary": about["summary"],
                     "urls": about["urls"]})
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
    for row in (row for row, plugin in zip(rows, loaded.plugins) if not plugin.builtin):
        # what each installed distribution says of itself: one line each, never wrapped
        links = "; ".join(f"{label}: {url}" for label, url in row["urls"].items())
        click.echo(f"{row['name']} ({row['distribution']}): {row['summary']}" + (f" ({links})" if links else ""))
    for name in off_until_switched_on:  # one line each, never wrapped, so it can be copied
        click.echo(f"{name}: off until switched on: {switch_on_line(name)} (or [component_enabled] {name} = True) "
                   f"in server.conf")


def _distribution_about(info: Any) -> dict[str, Any]:
    """ What a plugin's distribution metadata says of it: its summary (for a built-in, its module's
    docstring: they share zato-core's) and its links (Home-page, then each Project-URL) by label. """
    from importlib import metadata
    from zato.plugins import plugin_description
    summary, urls = plugin_description(info), {}
    if info.builtin or info.distribution in ("?", "(in-process)"):
        return {"summary": summary, "urls": urls}
    try:
        meta = metadata.distribution(info.distribution).metadata
    except metadata.PackageNotFoundError:
        return {"summary": summary, "urls": urls}
    if meta.get("Home-page"):
        urls["Homepage"] = meta["Home-page"].strip()
    for value in meta.get_all("Project-URL") or ():
        label, _, url = value.partition(",")
        if url.strip():
            urls.setdefault(label.strip() or "URL", url.strip())
    return {"summary": summary, "urls": urls}


# ################################################################################################


def _server_dir_in(argv: list[str]) -> Path | None:
    for arg in argv:
        if not arg.startswith("-") and (Path(arg) / "config" / "server.conf").is_file():
            return Path(arg)
    return None


def add_plugin_commands(group: click.Group, argv: list[str]) -> None:
    """ Lets enabled plugins add their commands (the `register_cli_commands` hook). """
    from zato.plugins import PluginLoadError, config_switches, load_plugins
    from zato.server.server import ServerPaths, read_server_config

    switches: dict[str, bool] = {}
    server_dir = _server_dir_in(argv)
    if server_dir is not None:
        try:
            config = read_server_config(ServerPaths(server_dir))
            switches, _ = config_switches(config)
        except Exception:
            switches = {}
    try:
        loaded = load_plugins(switches, skip_broken=True)
    except PluginLoadError:
        return
    loaded.pm.hook.register_cli_commands(cli=group)


from zato.cli.enmasse import enmasse as _enmasse; cli.add_command(_enmasse)  # noqa: E402
from zato.cli.plugin_kit import plugin as _plugin; cli.add_command(_plugin)  # noqa: E402

LIGHT_COMMANDS = frozenset(("start", "stop", "status", "--version"))


def main(argv: list[str] | None = None) -> Any:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Core commands that must stay fast (start/stop/status) skip importing plugins.
    if not argv or argv[0] not in LIGHT_COMMANDS:
        add_plugin_commands(cli, argv)
    return cli.main(args=argv, prog_name="zato")
