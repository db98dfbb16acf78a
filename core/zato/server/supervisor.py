""" `[main] workers = N` with N > 1: one supervising process binds the port and runs N trio
worker processes that share it. A worker that dies is restarted (with back-off); when the
supervisor dies, the kernel stops the workers (PR_SET_PDEATHSIG), so none outlives it.
Worker log lines reach the supervisor through a pipe and are written by it alone, which keeps
log rotation safe. Notifications between workers go through the supervisor's `Hub`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import trio

from zato.common import SERVER_STARTUP
from zato.config import Bunch
from zato.registry import Kind
from zato.server.logs import relay_logger
from zato.server.main import START_FAILURE
from zato.server.notify import Hub, read_lines
from zato.odb import ODB
from zato.server.server import (
    ServerPaths, WorkerOptions, database_url, load_configured_plugins, run_plugin_phase, write_cli_token,
    write_runtime_file,
)
from zato.server.startup_callable import PhaseCtx, StartupError, load_startup_callables, run_user_callables

logger = logging.getLogger("zato.supervisor")

READY_TIMEOUT = 120.0
MAX_BACKOFF = 10.0


def bind_socket(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """ The listening socket the workers share. """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc}; is another server using the port? "
                           f"Change [main] port in server.conf") from exc
    sock.set_inheritable(True)
    return sock


class WorkerProcess:
    """ A worker process, forked from the supervisor's own thread.

    The kernel ties `PR_SET_PDEATHSIG` to the thread that forked, not to the process: trio's
    `open_process` forks from a pool thread that exits after some idle seconds, which would
    stop the worker with it. Forking here (a few milliseconds) keeps the worker tied to the
    thread that lives as long as the supervisor. """

    def __init__(self, command: list[str], pass_fds: tuple[int, ...]) -> None:
        self.popen = subprocess.Popen(command, pass_fds=pass_fds, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.pid = self.popen.pid
        self.stderr = trio.lowlevel.FdStream(os.dup(self.popen.stderr.fileno()))
        self.popen.stderr.close()
        self.start_failure: str | None = None  # why it did not start, as it said on stderr

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def send_signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()

    async def wait(self) -> int:
        return await trio.to_thread.run_sync(self.popen.wait, abandon_on_cancel=True)


class Supervisor:
    def __init__(self, paths: ServerPaths, config: Bunch, options: WorkerOptions) -> None:
        self.paths = paths
        self.config = config
        self.options = options
        self.workers = int(config.main.get("workers", 1))  # checked by read_server_config
        # host, port and graceful_timeout are read once plugins have typed and checked server.conf
        self.host = "127.0.0.1"
        self.port = 0
        self.graceful_timeout = 10.0
        self.hub = Hub()
        self.hub.on_control = self._on_control
        self.processes: dict[int, Any] = {}
        self.ready: dict[int, int] = {}
        self.all_ready = trio.Event()
        self.stopping = False
        self.failed: str | None = None
        self.failed_event = trio.Event()
        self.sock: socket.socket | None = None
        self.relay = relay_logger(console_only=options.console)

    def _on_control(self, index: int, line: bytes) -> None:
        data = json.loads(line)
        if data.get("action") == "__ready__":
            self.ready[index] = data.get("origin", 0)
            if len(self.ready) == self.workers:
                self.all_ready.set()

    def worker_command(self, index: int, notify_fd: int) -> list[str]:
        command = [sys.executable, "-m", "zato.server.worker", str(self.paths.base_dir),
                   "--index", str(index), "--workers", str(self.workers),
                   "--listen-fd", str(self.sock.fileno()), "--notify-fd", str(notify_fd),
                   "--parent-pid", str(os.getpid())]
        if self.options.sync_internal and index == 0:
            command.append("--sync-internal")
        if self.options.skip_broken_plugins:
            command.append("--skip-broken-plugins")
        if self.options.console:
            command.append("--console")
        return command

    async def keep_worker(self, index: int) -> None:
        """ Runs worker `index`, restarting it whenever it dies, until the supervisor stops. """
        backoff = 0.5
        while not self.stopping:
            theirs = self.hub.new_link(index)
            started = time.monotonic()
            process = WorkerProcess(self.worker_command(index, theirs.fileno()),
                                    pass_fds=(self.sock.fileno(), theirs.fileno()))
            theirs.close()
            self.processes[index] = process
            logger.info("worker %d started (pid %d)", index + 1, process.pid)
            output_done = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._relay_output, process, output_done)
                nursery.start_soon(self.hub.serve_link, index)
                code = await process.wait()
                with trio.move_on_after(1):  # the last lines it wrote (why it did not start) are still in the pipe
                    await output_done.wait()
                nursery.cancel_scope.cancel()
            self.ready.pop(index, None)
            if self.stopping:
                return
            if not self.all_ready.is_set():
                cause = getattr(process, "start_failure", None)
                self.failed = (f"worker {index + 1} did not start: {cause}" if cause else
                               f"worker {index + 1} exited with code {code} during start-up; see {self.paths.log_file}")
                self.failed_event.set()
                return
            if time.monotonic() - started > 30:
                backoff = 0.5  # it ran for a while: not a crash loop
            delay, backoff = backoff, min(backoff * 2, MAX_BACKOFF)
            logger.error("worker %d (pid %d) exited with code %s; restarting it in %.1f s", index + 1, process.pid,
                         code, delay)
            await trio.sleep(delay)

    async def _relay_output(self, process: Any, done: trio.Event) -> None:
        async for line in read_lines(process.stderr):
            text = line.decode("utf-8", "replace")
            if text.startswith(START_FAILURE):  # the worker logged it itself; kept to say why it did not start
                process.start_failure = text[len(START_FAILURE):].strip()
                continue
            self.relay.info("%s", text)
        done.set()

    async def serve(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        started = time.perf_counter()
        if str(self.paths.lib_dir) not in sys.path:  # start-up callables live there, as in a worker
            sys.path.insert(0, str(self.paths.lib_dir))
        user_callables = load_startup_callables(self.config.misc.get("startup_callable"))
        plugins = load_configured_plugins(self.config, skip_broken=self.options.skip_broken_plugins)
        main = self.config.main
        self.host, self.port, self.graceful_timeout = main.host, main.port, main.graceful_timeout
        self.sock = bind_socket(self.host, self.port)
        # once, before the workers: the core's chain and the branches of the plugins switched on
        await trio.to_thread.run_sync(prepare_database, self.paths, self.config, plugins.registry.items(Kind.MIGRATIONS))
        write_cli_token(self.paths)  # the workers read it
        address = f"http://{self.host}:{self.sock.getsockname()[1]}"
        ctx = PhaseCtx(SERVER_STARTUP.PHASE.BEFORE_POST_FORK, (), {"supervisor": self, "server_config": self.config})
        if user_callables:
            await trio.to_thread.run_sync(run_user_callables, user_callables, ctx)
        await run_plugin_phase(plugins, ctx.phase, ctx)

        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                for index in range(self.workers):
                    nursery.start_soon(self.keep_worker, index)
                with trio.move_on_after(READY_TIMEOUT) as timeout:
                    async with trio.open_nursery() as waiter:
                        async def wait_failed() -> None:
                            await self.failed_event.wait()
                            waiter.cancel_scope.cancel()

                        async def wait_ready() -> None:
                            await self.all_ready.wait()
                            waiter.cancel_scope.cancel()

                        waiter.start_soon(wait_failed)
                        waiter.start_soon(wait_ready)
                if self.failed or timeout.cancelled_caught:
                    await self._stop_workers()
                    raise StartupError(self.failed or f"workers did not start within {READY_TIMEOUT:.0f} s")
                write_runtime_file(self.paths, address, os.getpid(), self.workers)
                logger.info("supervisor ready at %s with %d workers (pids %s) in %.0f ms", address, self.workers,
                            ", ".join(str(p.pid) for p in self.processes.values()),
                            (time.perf_counter() - started) * 1000)
                task_status.started(address)
                async for signum in signals:
                    logger.info("received %s, stopping %d workers", signal.Signals(signum).name, self.workers)
                    break
                await self._stop_workers()
                nursery.cancel_scope.cancel()

    async def _stop_workers(self) -> None:
        self.stopping = True
        with trio.CancelScope(shield=True):
            for process in self.processes.values():
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            with trio.move_on_after(self.graceful_timeout + 5):
                for process in self.processes.values():
                    await process.wait()
            for process in self.processes.values():
                if process.returncode is None:
                    logger.warning("worker pid %d did not stop in time; killing it", process.pid)
                    process.kill()
                    await process.wait()


def prepare_database(paths: ServerPaths, config: Bunch, migrations: dict[str, Any] | None = None) -> None:
    odb = ODB(database_url(paths, config))
    try:
        odb.upgrade(migrations)
    finally:
        odb.close()


def set_parent_death_signal(parent_pid: int) -> None:
    """ Linux: have the kernel send SIGTERM to this process when its parent dies. """
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        logger.warning("cannot ask the kernel to stop this worker with its supervisor")
    if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
        os._exit(1)
