""" Running a server in this process: `zato start --fg` and the background process `zato start` spawns. """

from __future__ import annotations

import errno
import logging
import os
import sys
from functools import partial
from pathlib import Path

import trio

from zato._plugin_modules import check_package_intact

check_package_intact()  # before anything that needs zato/__init__.py to have run

from zato.common.files import PRIVATE_DIR, PRIVATE_FILE, PUBLIC_FILE, make_dir, tighten, write_file
from zato.config import ConfigError
from zato.plugins import PluginLoadError
from zato.registry import RegistrationError
from zato.server.logs import setup_logging
from zato.server.server import ServerPaths, WorkerOptions, read_server_config, serve_worker
from zato.server.deployment import DeploymentError
from zato.server.startup_callable import StartupError

logger = logging.getLogger("zato.server")

START_FAILURE = "zato-start-failure: "  # how a worker tells the supervisor, on stderr, why it did not start

START_ERRORS = (ConfigError, StartupError, PluginLoadError, DeploymentError, RegistrationError)


class AlreadyRunning(Exception):
    pass


def known_error(exc: BaseException) -> BaseException | None:
    """ The first start-up error we can explain, looking inside exception groups and causes. """
    if isinstance(exc, START_ERRORS):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = known_error(inner)
            if found is not None:
                return found
    return None


def _os_errors(exc: BaseException):
    """ Every OSError inside `exc` (exception groups, causes and contexts), outermost first. """
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError):
            yield current
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        todo.extend((current.__cause__, current.__context__))


def explain_start_failure(exc: BaseException, paths: ServerPaths, config: dict) -> str | None:
    """ What to tell an administrator about a start-up failure, naming the file and key to fix,
    or None if it is not one we can explain (the log then has the traceback). """
    error = known_error(exc)
    if error is not None:
        return str(error)
    for os_error in _os_errors(exc):
        if os_error.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            main = config.get("main") or {}
            address = f"{main.get('host', '127.0.0.1')}:{main.get('port', 17010)}"
            hint = {errno.EADDRINUSE: "is another server using the port? ",
                    errno.EACCES: "ports below 1024 need privileges. "}.get(os_error.errno, "")
            return (f"cannot listen on {address}: {os_error.strerror}; {hint}Change [main] port (or host) in "
                    f"{paths.server_conf}")
    return None


def pid_alive(pid: int) -> bool:
    """ True if the process runs (a zombie, exited but not yet reaped by its parent, does not). """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b") ", 1)[1][:1] != b"Z"
    except (OSError, IndexError):
        return True


def read_pid(paths: ServerPaths) -> int | None:
    try:
        return int(paths.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def claim_pidfile(paths: ServerPaths) -> None:
    pid = read_pid(paths)
    if pid is not None and pid != os.getpid() and pid_alive(pid):
        raise AlreadyRunning(f"a server is already running in {paths.base_dir} (pid {pid}); `zato stop` it first")
    write_file(paths.pidfile, f"{os.getpid()}\n", PUBLIC_FILE)


def release_pidfile(paths: ServerPaths) -> None:
    if read_pid(paths) == os.getpid():
        paths.pidfile.unlink(missing_ok=True)
        paths.runtime_file.unlink(missing_ok=True)


def run_server(base_dir: str | Path, *, console: bool, sync_internal: bool = False,
               skip_broken_plugins: bool = False) -> int:
    """ Runs the server until it is stopped. Returns the process exit code. """
    paths = ServerPaths(base_dir)
    if not paths.server_conf.exists():
        print(f"error: {paths.base_dir} is not a server directory ({paths.server_conf} is missing); "
              f"create one with `zato quickstart create {base_dir}`", file=sys.stderr)
        return 2
    try:
        config = read_server_config(paths)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    make_dir(paths.work_dir, PRIVATE_DIR)  # before anything writes there: it holds the database and tokens
    setup_logging(paths.log_file, console=console, level=config.get("logging", {}).get("level", "INFO"))
    for private in (paths.server_conf, paths.config_dir / "secret.key"):  # written 0600; a copy may not be
        tighten(private, PRIVATE_FILE)
    try:
        claim_pidfile(paths)
    except AlreadyRunning as exc:
        logger.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    options = WorkerOptions(sync_internal=sync_internal, skip_broken_plugins=skip_broken_plugins, console=console)
    try:
        workers = int(config.main.get("workers", 1))
        if workers > 1:
            from zato.server.supervisor import Supervisor
            trio.run(Supervisor(paths, config, options).serve)
        else:
            trio.run(partial(serve_worker, paths.base_dir, options))
        return 0
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            return 0
        cause = explain_start_failure(exc, paths, config)
        if cause is None:
            logger.exception("the server stopped with an unexpected error")
            # `zato start` shows stderr: one line that says what, the traceback stays in the log
            cause = (f"the server stopped with an unexpected error: {type(exc).__name__}: {exc}; the traceback "
                     f"is in {paths.log_file}")
        else:
            logger.error("start-up failed: %s", cause)
        if not console:  # with --fg the log line above is on the console already
            print(f"error: {cause}", file=sys.stderr)
        return 1
    finally:
        release_pidfile(paths)
        logging.shutdown()


def main(argv: list[str] | None = None) -> int:
    """ `python -m zato.server.main DIR [--fg] [--sync-internal] [--skip-broken-plugins]` """
    args = list(sys.argv[1:] if argv is None else argv)
    flags = {a for a in args if a.startswith("--")}
    positional = [a for a in args if not a.startswith("--")]
    return run_server(positional[0], console="--fg" in flags, sync_internal="--sync-internal" in flags,
                      skip_broken_plugins="--skip-broken-plugins" in flags)


if __name__ == "__main__":
    sys.exit(main())
