""" One worker process of a Zato server: start-up phases, plugins, services, channels and the
HTTP server (hypercorn's trio worker inside our own nursery), and a graceful stop.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import os
import secrets
import signal
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, NoReturn

import trio

from zato import __version__
from zato.common import SERVER_STARTUP
from zato.common.util import new_cid
from zato.config import Bunch, apply_schema, as_bool, read_ini
from zato.odb import ODB, sqlite_url
from zato.plugins import (
    LoadedPlugins, add_missing_deploy_internal_lines, apply_module_switches, await_maybe, config_switches, hook_calls,
    load_plugins, register_tasks,
)
from zato.registry import Kind
from zato.server import config_objects, startup_cache
from zato.server.http import ASGIApp, Handler, HTTPError, Router
from zato.server.notify import LocalTransport, SupervisorLinkTransport
from zato.server.observability import RequestObserver
from zato.server.outgoing import Outgoing, OutgoingConnections
from zato.server.service import HTTPRequestInfo, Request, Response, Service, in_trio_thread, request_attributes
from zato.server.service_threads import SyncCalls
from zato.server.deployment import DeploymentError, ServiceNotFound, ServiceStore
from zato.server.startup_callable import PhaseCtx, StartupError, load_startup_callables, run_user_callables

logger = logging.getLogger("zato.server")

PHASE = SERVER_STARTUP.PHASE
OPTIONAL_CONFIG_FILES = {"pickup_config": "pickup.conf", "sio_config": "simple-io.conf", "sso_config": "sso.conf"}


class NoRateLimits:
    """ `server.rate_limits` without a rate-limiting plugin: nothing is limited. """
    is_active = False
    service_checks: Mapping[str, Callable[[str, str], Any]] = MappingProxyType({})


NO_RATE_LIMITS = NoRateLimits()


@dataclass
class WorkerOptions:
    """ How this worker process was started. """
    worker_index: int = 0
    workers: int = 1
    listen_fd: int | None = None  # a socket inherited from the supervisor
    notify_fd: int | None = None  # this worker's end of the link to the supervisor
    skip_broken_plugins: bool = False
    sync_internal: bool = False
    write_runtime_file: bool = True
    console: bool = False  # log to the console as well (zato start --fg)


class ServerPaths:
    """ Where things are in a server directory. """

    def __init__(self, base_dir: Path | str) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.config_dir = self.base_dir / "config"
        self.server_conf = self.config_dir / "server.conf"
        self.pickup_dir = self.base_dir / "pickup"
        self.logs_dir = self.base_dir / "logs"
        self.log_file = self.logs_dir / "server.log"
        self.work_dir = self.base_dir / "work"
        self.lib_dir = self.base_dir / "lib"
        self.database = self.work_dir / "zato.db"
        self.pidfile = self.base_dir / "pidfile"
        self.runtime_file = self.work_dir / "server.json"
        self.startup_cache = self.work_dir / "startup-cache.json"
        self.cli_token = self.work_dir / "cli-token"


def read_server_config(paths: ServerPaths) -> Bunch:
    """ server.conf, with the keys read before plugins load (workers, [plugins]...) checked; the
    rest is typed and checked by `apply_schema` once plugins have declared them. """
    from zato.config import check_startup_keys
    config = read_ini(paths.server_conf)
    config.setdefault("main", Bunch())
    config.setdefault("misc", Bunch())
    check_startup_keys(config)
    return config


def _read_optional(path: Path) -> Bunch:
    return read_ini(path) if path.exists() else Bunch()


class Server:
    """ What start-up callables see as `ctx.kwargs['server']` and services as `self.server`. """

    def __init__(self, paths: ServerPaths, config: Bunch, plugins: LoadedPlugins, options: WorkerOptions,
                 user_callables: list[tuple[str, Callable[[PhaseCtx], Any]]]) -> None:
        self.paths = paths
        self.base_dir = str(paths.base_dir)
        self.repo_location = str(paths.config_dir)
        self.config = self.fs_server_config = config
        self.options = options
        self.plugins = plugins
        self.pm = plugins.pm
        self.registry = plugins.registry
        # self.<name> of services that plugins provide (self.pubsub, self.kvdb): name -> provide(service)
        self.service_attributes: dict[str, Any] = self.registry.items(Kind.SERVICE_ATTRIBUTES)
        # self.request.<name> that plugins' channels add (self.request.scheduler_job): name -> None
        self.request_attributes = MappingProxyType(dict.fromkeys(self.registry.items(Kind.REQUEST_ATTRIBUTES)))
        self.user_callables = user_callables
        self.cluster_id = 1
        self.name = config.main.get("name", "server1")
        self.pid = os.getpid()
        self.version = __version__
        self.services = ServiceStore()
        self.router = Router()
        self._routes_by_owner: dict[str, list[tuple[str, tuple[str, ...], Handler, str]]] = {}
        self.app = ASGIApp(self.router, server=self, max_body_size=int(config.main.get("max_body_size", 10 * 1024 * 1024)),
                           observer=RequestObserver(self))
        self.odb: ODB | None = None
        self.user_config = Bunch()
        self.channels: dict[str, Any] = {}
        self.config_objects: dict[str, dict[str, dict[str, Any]]] = {}  # type -> name -> active object
        self.config_errors: dict[str, str] = {}  # "type:name" -> why that object is not used
        self.outgoing = Outgoing()  # outgoing connections by accessor (self.out.plain_http...)
        self.outgoing_connections = OutgoingConnections(self)  # builds and rebuilds them
        self.background_nursery: trio.Nursery | None = None  # owns invoke_async and other detached work
        self.cli_token = ""  # lets the local CLI (work/cli-token) use the admin API
        self.plugin_state: dict[str, Any] = {}  # a place for plugins to keep per-server objects, by plugin name
        # What channels and invocations check, replaced by a rate-limiting plugin: `is_active` (HTTP
        # channels then await `check_http(request, object_type, name, security)`) and
        # `service_checks` (service name -> async check(cid, channel), only services with limits)
        self.rate_limits: Any = NO_RATE_LIMITS
        self.sync_limiter = trio.CapacityLimiter(int(config.main.get("sync_service_threads", 64)))
        # Each plain `def` service gets a share of those threads (half by default)
        self.max_threads_per_service = int(config.main.get("max_threads_per_service", 0)) or \
            max(1, self.sync_limiter.total_tokens // 2)
        self.thread_wait_timeout = float(config.main.get("thread_wait_timeout", 5.0))
        self._service_threads: dict[str, ServiceThreads] = {}
        # The threads themselves: a pool kept awake while busy (zato.server.service_threads)
        self.sync_calls = SyncCalls(self.sync_limiter.total_tokens) if SyncCalls.available else None
        # Seconds an HTTP channel's service may take when the channel sets no timeout (0: no limit)
        self.service_timeout = float(config.main.get("service_timeout", 60.0)) or None
        self.trio_token: trio.lowlevel.TrioToken | None = None
        self.transport: Any = None
        self.address = ""
        self.started_at = 0.0
        self._shutdown = trio.Event()
        self.internal_services_source = ""  # "cache" or "fresh": how internal services were deployed

    # ############################################################################################
    # Start-up phases

    async def run_phase(self, phase: str, *, users: bool = True, plugins: bool = True, **kwargs: Any) -> None:
        started = time.perf_counter()
        ctx = PhaseCtx(phase, (), kwargs)
        if users and self.user_callables:
            await trio.to_thread.run_sync(run_user_callables, self.user_callables, ctx)
        if plugins:
            await run_plugin_phase(self.plugins, phase, ctx)
        logger.info("phase %s done in %.1f ms", phase, (time.perf_counter() - started) * 1000)

    # ############################################################################################
    # Routes

    def set_websocket_endpoint(self, path: str, app: Callable | None, owner: str) -> None:
        """ Serves WebSockets at exactly `path` with an ASGI application (None: no longer), for
        endpoints that come and go while the server runs (the wsx plugin's channels). The app gets
        `scope["extensions"]["zato"]` (cid, server) and can ping its peers
        (zato.server.websocket_pings). """
        self.app.set_websocket_endpoint(path, app, owner)

    def set_routes(self, owner: str, routes: list[tuple[str, tuple[str, ...], Handler, str]]) -> None:
        """ Replaces the HTTP routes one owner (a plugin, a channel type) contributes. The new table
        is built aside and swapped in whole: requests in flight keep the handler they matched. """
        previous = self._routes_by_owner.get(owner)
        self._routes_by_owner[owner] = routes
        try:
            self.router.replace([route for items in self._routes_by_owner.values() for route in items])
        except ValueError:
            if previous is None:
                self._routes_by_owner.pop(owner)
            else:
                self._routes_by_owner[owner] = previous
            raise

    # ############################################################################################
    # Invoking services

    async def invoke_service(self, name: str, payload: Any = None, *, cid: str | None = None, channel: str = "invoke",
                             raw_request: Any = None, http: HTTPRequestInfo | None = None,
                             timeout: float | None = None, attributes: Mapping[str, Any] | None = None,
                             channel_type: str = "invoke") -> Response:
        """ Runs one service and returns its `Response`; the service's exceptions propagate,
        except those that would stop the server (`SystemExit`, `KeyboardInterrupt`...), which
        come out as `ServiceAborted`.

        Input is parsed by the service's SimpleIO (`InputError` lists every bad field) and its
        output checked (`OutputError`). `handle_<METHOD>` is used for HTTP requests with that
        method. `timeout` (seconds) raises `trio.TooSlowError` at the deadline, whatever the kind
        of service: an `async def` service is cancelled at once; a plain `def` service keeps
        running in its thread (Python cannot interrupt it), is cancelled at its next call into
        the server (`self.invoke`...), and its result is discarded (logged when it finishes). A
        plain `def` service runs in at most `[main] max_threads_per_service` threads at once;
        a call that cannot get one within `[main] thread_wait_timeout` raises `ServiceBusy` (503).
        `attributes` are what the calling channel adds to the request (`self.request.<name>`;
        names its plugin declared in `register_request_attributes`, else ValueError).
        """
        entry = self.services.entries.get(name)
        if entry is None:
            raise ServiceNotFound(name)
        if entry.cls is None:  # deployed from the start-up cache, not imported yet
            entry = await trio.to_thread.run_sync(self.services.get, name)
        check_rate_limit = self.rate_limits.service_checks.get(entry.name)  # only services with limits are in it
        if check_rate_limit is not None:
            cid = cid or new_cid()
            await check_rate_limit(cid, channel)  # raises RateLimitExceeded (429) or AddressNotAllowed (403)
        cid = cid or new_cid()
        try:
            service = entry.cls()
        except Exception:
            raise
        except BaseException as exc:
            _contain(exc, entry.name, cid)
        service.server = self
        service.name = entry.name
        service.logger = _service_logger(entry.name)
        service.cid = cid
        service.request = request = Request(payload, raw_request, http, channel,
                                            request_attributes(self.request_attributes, attributes), channel_type)
        service.response = response = Response()
        sio = entry.sio
        if sio is not None:
            request.input = sio.parse_input((http.params if http else None, payload))
            if sio.has_output:
                response.payload = Bunch()
        handler_name, is_async = entry.verbs.get(http.method, _DEFAULT_HANDLER) if http else _DEFAULT_HANDLER
        if handler_name == "handle":
            is_async = entry.is_async
        with self.app.observer.time_service(entry.name):
            if timeout:
                # trio.fail_after's own scope, without its two generator-based context managers
                if timeout < 0 or timeout != timeout:
                    raise ValueError(f"a service's timeout is a number of seconds, 0 or more, not {timeout!r}")
                deadline = trio.CancelScope(relative_deadline=timeout)
                with deadline:
                    await self._run_handler(service, handler_name, is_async, entry.name, cid)
                if deadline.cancelled_caught:
                    raise trio.TooSlowError
            else:
                await self._run_handler(service, handler_name, is_async, entry.name, cid)
        if sio is not None and sio.has_output:
            response.payload = sio.check_output(response.payload)
        return response

    async def _run_handler(self, service: Service, handler_name: str, is_async: bool, name: str, cid: str) -> None:
        """ before_handle, the handler and after_handle: on the loop, or in a worker thread. """
        try:
            if is_async:
                kind = type(service)
                if kind.before_handle is not _NO_HOOK_BEFORE:  # Service's own does nothing: not even awaited
                    await await_maybe(service.before_handle())
                await getattr(service, handler_name)()
                if kind.after_handle is not _NO_HOOK_AFTER:
                    await await_maybe(service.after_handle())
            else:
                await self._run_in_thread(service, handler_name)
        except Exception:
            raise
        except BaseException as exc:
            _contain(exc, name, cid)

    async def _run_in_thread(self, service: Service, handler_name: str) -> None:
        """ Runs a plain `def` service in a worker thread of its service's share. A cancelled
        caller (its deadline, its own caller) stops waiting at once; the thread runs on, and
        what it calls into the server from then on raises `trio.Cancelled`. """
        threads = self._service_threads.get(service.name)
        if threads is None:
            threads = self._service_threads[service.name] = ServiceThreads(
                service.name, self.max_threads_per_service, self.sync_limiter, self.thread_wait_timeout)
        calls = ThreadCalls(trio.current_effective_deadline())
        token = _thread_calls.set(calls)
        try:
            if self.sync_calls is not None:
                await self.sync_calls.run(_run_sync_service, service, handler_name, limiter=threads)
            else:
                await trio.to_thread.run_sync(_run_sync_service, service, handler_name, limiter=threads,
                                              abandon_on_cancel=True)
        except trio.Cancelled:
            calls.cancel()
            raise
        finally:
            _thread_calls.reset(token)

    def invoke(self, name: str, payload: Any = None, **kwargs: Any) -> Any:
        """ Invokes a service and returns its response payload.

        From a worker thread (plain `def handle`, start-up callables) this blocks until the
        result is there; from the trio loop it returns an awaitable.
        """
        return self.run_trio(partial(self._invoke_payload, name, payload, **kwargs))

    def run_trio(self, async_fn: Callable[[], Any]) -> Any:
        """ Runs `async_fn()` on the trio loop, for code running in either kind of service.

        From the trio thread it returns the awaitable. From a thread trio started (a plain
        `def handle`, a start-up callable) it blocks; the deadline and the cancellation of the
        invocation that started the thread reach `async_fn` (`trio.Cancelled` is raised in the
        thread; `ThreadCalls`). From any other thread it blocks, running in a task of its own.
        """
        if in_trio_thread():
            return async_fn()
        if _in_trio_worker_thread():
            calls = _thread_calls.get(None)
            with SyncCalls.waiting_on_trio():  # what it waits for may be a plain def service too
                if calls is None:
                    return trio.from_thread.run(async_fn)
                try:
                    return trio.from_thread.run(calls.run, async_fn)
                finally:
                    trio.from_thread.check_cancelled()  # the service's caller gave up meanwhile: Cancelled wins
        if self.trio_token is None:
            raise RuntimeError("server.invoke is available from the AFTER_STARTED phase on")
        return trio.from_thread.run(async_fn, trio_token=self.trio_token)

    async def _invoke_payload(self, name: str, payload: Any = None, **kwargs: Any) -> Any:
        return (await self.invoke_service(name, payload, **kwargs)).payload

    # ############################################################################################
    # Security

    async def authenticate(self, request: Any, security_name: str) -> str:
        """ Checks a request against a security definition; returns the user name or raises
        `HTTPError` (401/403). A definition that does not exist is refused, never ignored. """
        definition = self.config_objects.get("security", {}).get(security_name)
        if definition is None:
            logger.error("cid=%s security definition %r does not exist or is inactive; request refused",
                         request.cid, security_name)
            raise HTTPError(401)
        # the registered item itself, not `registry.items()`, which copies the whole kind per call
        registered = self.registry.kinds.get(Kind.SECURITY_TYPES, _NO_ITEMS).get(definition.get("type", ""))
        security_type = registered.value if registered is not None else None
        if security_type is None:
            logger.error("cid=%s security definition %r has type %r, which no enabled plugin provides; request "
                         "refused", request.cid, security_name, definition.get("type"))
            raise HTTPError(401)
        return await await_maybe(security_type.check(definition, request))

    async def authenticate_credentials(self, security_name: str, username: str | None, secret: str | None, *,
                                       cid: str, client: tuple[str, int] | None, path: str) -> str:
        """ Checks credentials that came outside HTTP headers (a WebSocket client's create-session)
        against a security definition, as if sent as Basic Auth or in the definition's API key
        header: the same checks, throttle and log lines. Returns the user name or raises
        `HTTPError` (401/403). """
        import base64

        from zato.server.credentials import apikey_header
        definition = self.config_objects.get("security", {}).get(security_name) or {}
        secret = secret if isinstance(secret, str) else ""
        if definition.get("type") == "apikey":
            headers = {apikey_header(definition).lower(): secret}
        else:
            pair = f"{username if isinstance(username, str) else ''}:{secret}".encode("utf-8")
            headers = {"authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        return await self.authenticate(_CredentialsRequest(self, cid, path, client, headers), security_name)

    # ############################################################################################
    # Notifications between workers

    async def notify(self, action: str, payload: Any = None) -> None:
        """ Runs the handlers of `action` in this worker, then in every other worker. """
        handlers = self.registry.items(Kind.NOTIFICATION_HANDLERS)
        if action not in handlers:
            raise KeyError(f"no notification handler for {action!r}; known: {', '.join(sorted(handlers))}")
        message = json.dumps({"action": action, "payload": payload, "origin": self.pid}).encode()
        await self._handle_notification(action, payload)
        await self.transport.publish(message)

    async def _deliver(self, message: bytes) -> None:
        data = json.loads(message)
        await self._handle_notification(data["action"], data.get("payload"))

    async def _handle_notification(self, action: str, payload: Any) -> None:
        handler = self.registry.items(Kind.NOTIFICATION_HANDLERS).get(action)
        if handler is None:
            logger.warning("no handler for notification %r (is the plugin that sends it enabled in every worker?)", action)
            return
        await await_maybe(handler(self, payload))

    # ############################################################################################

    def request_shutdown(self) -> None:
        self._shutdown.set()

    @property
    def stopping(self) -> bool:
        """ True from the moment a stop was asked for (SIGTERM, `request_shutdown`): work that
        would start something new in the background (a scheduler firing) is not begun any more. """
        return self._shutdown.is_set()

    def __repr__(self) -> str:
        return f"<Server {self.name} pid={self.pid} worker={self.options.worker_index}/{self.options.workers}>"


_DEFAULT_HANDLER = ("handle", False)
_NO_ITEMS: Mapping[str, Any] = MappingProxyType({})
_NO_HOOK_BEFORE = Service.before_handle
_NO_HOOK_AFTER = Service.after_handle


@functools.lru_cache(maxsize=4096)
def _service_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"zato.service.{name}")


def _in_trio_worker_thread() -> bool:
    """ True in a thread started by `trio.to_thread.run_sync`; raises `trio.Cancelled` there if the
    task that started it is being cancelled. """
    try:
        trio.from_thread.check_cancelled()
    except RuntimeError:
        return False
    return True


def _run_sync_service(service: Service, handler_name: str) -> None:
    started = time.monotonic()
    try:
        service.before_handle()
        getattr(service, handler_name)()
        service.after_handle()
    finally:
        if _was_abandoned():
            service.logger.warning("cid=%s service %s finished %.1f s after it started, after its caller stopped "
                                   "waiting (deadline or cancellation); its response was discarded", service.cid,
                                   service.name, time.monotonic() - started)


def _was_abandoned() -> bool:
    try:
        trio.from_thread.check_cancelled()
    except trio.Cancelled:
        return True
    return False


class _CredentialsRequest:
    """ What security definitions read of a request, for credentials that came another way. """

    def __init__(self, server: Server, cid: str, path: str, client: Any, headers: dict[str, str]) -> None:
        self.server, self.cid, self.path, self.client, self.headers = server, cid, path, client, headers

    def single_header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class ServiceAborted(Exception):
    """ A service raised an exception that is not an `Exception` (`SystemExit` from `sys.exit()`,
    `KeyboardInterrupt`, `GeneratorExit`...). Such an exception would stop the server, so it is
    turned into this one where the service is called: its caller gets an error (HTTP 500) and the
    log the original traceback. The original is `__cause__`. """

    def __init__(self, service: str, cid: str, exc: BaseException) -> None:
        super().__init__(f"service {service} raised {type(exc).__name__}({exc}) (cid {cid}); a service cannot stop "
                         f"the server: raise an Exception instead")
        self.service = service
        self.cid = cid


def _contain(exc: BaseException, service: str, cid: str) -> NoReturn:
    """ Raises what a BaseException out of user code becomes: cancellation as it is (trio owns
    it), anything else as `ServiceAborted`. Call it in an `except BaseException` block. """
    if isinstance(exc, trio.Cancelled) or (
            isinstance(exc, BaseExceptionGroup) and exc.subgroup(trio.Cancelled) is not None):
        raise exc
    raise ServiceAborted(service, cid, exc) from exc


class ServiceBusy(HTTPError):
    """ A plain `def` service runs in as many threads as its share of the pool allows, and a call
    waited `[main] thread_wait_timeout` seconds for one: HTTP 503 with `Retry-After`. """

    def __init__(self, service: str, share: int, waited: float) -> None:
        super().__init__(503, f"Error 503 Service Unavailable: service {service} is busy (all of its {share} threads "
                              f"are in use, waited {waited:g} s); retry later",
                         headers={"retry-after": str(max(1, round(waited)))})
        self.service = service


class ServiceThreads:
    """ The worker threads one plain `def` service may use: its share of the server's pool
    (`[main] max_threads_per_service` of `[main] sync_service_threads`), so that a service that
    hangs cannot take every thread from the others. Passed to `trio.to_thread.run_sync` as its
    limiter, so a thread holds its slot until it really finishes, even after its caller stopped
    waiting for it. """

    __slots__ = ("service", "share", "own", "pool", "wait")

    def __init__(self, service: str, share: int, pool: trio.CapacityLimiter, wait: float) -> None:
        self.service = service
        self.share = share
        self.own = trio.CapacityLimiter(share)
        self.pool = pool
        self.wait = wait

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        try:
            self.own.acquire_on_behalf_of_nowait(borrower)
        except trio.WouldBlock:
            acquired = False
            with trio.move_on_after(self.wait):
                await self.own.acquire_on_behalf_of(borrower)
                acquired = True
            if not acquired:
                logger.warning("service %s refused a call: all of its %d threads are in use (hung calls?); see "
                               "[main] max_threads_per_service", self.service, self.share)
                raise ServiceBusy(self.service, self.share, self.wait) from None
        try:
            # a free thread is taken without the scheduling round of the awaiting acquire: the
            # thread's start is a checkpoint of its own
            self.pool.acquire_on_behalf_of_nowait(borrower)
        except trio.WouldBlock:
            try:
                await self.pool.acquire_on_behalf_of(borrower)
            except BaseException:
                self.own.release_on_behalf_of(borrower)
                raise
        except BaseException:
            self.own.release_on_behalf_of(borrower)
            raise

    def release_on_behalf_of(self, borrower: object) -> None:
        self.pool.release_on_behalf_of(borrower)
        self.own.release_on_behalf_of(borrower)

    def statistics(self) -> dict[str, Any]:
        own = self.own.statistics()
        return {"service": self.service, "share": self.share, "in_use": own.borrowed_tokens, "waiting": own.tasks_waiting}


class ThreadCalls:
    """ What a plain `def` service's thread calls into the trio loop (`server.run_trio`). The
    thread is started with `abandon_on_cancel=True` (a caller past its deadline stops waiting),
    so trio runs those calls as system tasks: this object gives them the invocation's deadline
    and cancels the ones in progress when the invocation is cancelled. """

    __slots__ = ("deadline", "cancelled", "scopes")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.cancelled = False
        self.scopes: set[trio.CancelScope] = set()

    async def run(self, async_fn: Callable[[], Any]) -> Any:
        scope = trio.CancelScope(deadline=self.deadline)
        if self.cancelled:
            scope.cancel()
        self.scopes.add(scope)
        try:
            with scope:
                return await async_fn()
        finally:
            self.scopes.discard(scope)
        raise trio.TooSlowError  # the scope was cancelled: the thread raises Cancelled (run_trio) or this

    def cancel(self) -> None:
        self.cancelled = True
        for scope in list(self.scopes):
            scope.cancel()


_thread_calls: ContextVar[ThreadCalls] = ContextVar("zato_thread_calls")


async def run_plugin_phase(plugins: LoadedPlugins, phase: str, ctx: PhaseCtx) -> None:
    """ Every plugin's `startup_phase`, in pluggy's order (`hook_calls`), each awaited before the next. """
    for call in hook_calls(plugins.pm, "startup_phase"):
        try:
            await await_maybe(call(phase=phase, ctx=ctx))
        except Exception as exc:
            raise StartupError(f"plugin {call.plugin_name!r} failed in start-up phase {phase}: "
                               f"{type(exc).__name__}: {exc}") from exc


# ################################################################################################


def load_configured_plugins(config: Bunch, *, skip_broken: bool, add_missing_lines: bool = True) -> LoadedPlugins:
    """ Loads the plugins server.conf switches on, then types server.conf by what they declare.
    `add_missing_lines`: plugins installed since the server was created get their [deploy_internal]
    line in server.conf (a server starting); off for commands that only read (`zato check-config`). """
    skip_broken = skip_broken or as_bool(config.main.get("skip_broken_plugins", False))
    switches, module_switches = config_switches(config)
    plugins = load_plugins(switches, skip_broken=skip_broken)
    apply_module_switches(plugins, module_switches)
    if add_missing_lines and config.get("__path__"):
        add_missing_deploy_internal_lines(config["__path__"], plugins.installed(), plugins.registry, switches)
    for warning in apply_schema(config, plugins.registry.values(Kind.SERVER_CONFIG)):
        logger.warning(warning)
    return plugins


async def serve_worker(base_dir: Path | str, options: WorkerOptions | None = None, *,
                       task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
    """ Starts a server worker and serves until SIGTERM/SIGINT or `server.request_shutdown()`.
    `task_status.started(server)` is called once it answers HTTP.
    """
    options = options or WorkerOptions()
    started = time.perf_counter()
    paths = ServerPaths(base_dir)
    if str(paths.lib_dir) not in sys.path:
        sys.path.insert(0, str(paths.lib_dir))

    config = read_server_config(paths)
    user_callables = load_startup_callables(config.misc.get("startup_callable"))

    fs_kwargs: dict[str, Any] = {"server_config": config, "base_dir": str(paths.base_dir)}
    for key, file_name in OPTIONAL_CONFIG_FILES.items():
        fs_kwargs[key] = _read_optional(paths.config_dir / file_name)
    phase_started = time.perf_counter()
    if user_callables:
        await trio.to_thread.run_sync(run_user_callables, user_callables, PhaseCtx(PHASE.FS_CONFIG_ONLY, (), fs_kwargs))

    # User callables ran first, so FS_CONFIG_ONLY can switch plugins on or off.
    plugins = load_configured_plugins(config, skip_broken=options.skip_broken_plugins)
    await run_plugin_phase(plugins, PHASE.FS_CONFIG_ONLY, PhaseCtx(PHASE.FS_CONFIG_ONLY, (), fs_kwargs))
    logger.info("phase %s done in %.1f ms (plugins: %s)", PHASE.FS_CONFIG_ONLY,
                (time.perf_counter() - phase_started) * 1000, ", ".join(plugins.enabled_names()))

    server = Server(paths, config, plugins, options, user_callables)
    server.trio_token = trio.lowlevel.current_trio_token()
    server.cli_token = read_cli_token(paths) if options.notify_fd is not None else write_cli_token(paths)
    await server.run_phase(PHASE.IMPL_BEFORE_RUN, server=server)

    try:
        # One nursery per lifetime, nested as hypercorn's worker_serve nests its own: what lives
        # longest outermost, intake innermost. A stop ends them from the inside out.
        async with trio.open_nursery() as longest:  # the notification transport, plugin tasks
            async with trio.open_nursery() as background:  # invoke_async and other detached work
                async with trio.open_nursery() as intake:  # HTTP, the channel runtimes that run
                    lifetimes = Lifetimes(longest, background, intake)
                    await _start(server, lifetimes, started)
                    task_status.started(server)
                    await _wait_for_stop(server)
                    _stop_intake(server, lifetimes)  # (1) the intake nursery ends: nothing new comes in
                _drain_background(server, lifetimes)  # (2) the background nursery ends
            await _stop(server, lifetimes)  # (3) shutdown hooks, (4) outgoing connections, (5) the rest
    finally:
        if server.odb is not None:
            server.odb.close()


@dataclass
class Lifetimes:
    """ The nurseries of one worker, one per lifetime (see `serve_worker`). """
    longest: trio.Nursery  # the notification transport and plugin tasks: cancelled last
    background: trio.Nursery  # invoke_async and other detached work: drained once intake has stopped
    intake: trio.Nursery  # HTTP and the channel runtimes that run: stopped first
    channels: trio.Nursery | None = None  # inside intake: the channel runtimes' `run` tasks
    stop_started: float = 0.0  # trio.current_time() when the stop began
    graceful_deadline: float = 0.0  # stop_started + [main] graceful_timeout


async def _start(server: Server, lifetimes: Lifetimes, started: float) -> None:
    """ Starts everything in the order it depends on each other: phases, services, channels
    applied, then background work, outgoing connections, plugin tasks and the notification
    transport, and last intake (channel runtimes that run, then HTTP), once everything their
    services use is there. `_stop_intake`, `_drain_background` and `_stop` undo it in reverse. """
    paths, options, config = server.paths, server.options, server.config
    if server.sync_calls is not None:  # wakes threads for calls queued behind blocked ones
        lifetimes.longest.start_soon(server.sync_calls.watch, name="zato.sync_calls.watch")

    server.odb = ODB(database_url(paths, config))
    await trio.to_thread.run_sync(server.odb.upgrade, server.registry.items(Kind.MIGRATIONS))  # enabled plugins' branches
    await config_objects.load_all(server)
    await server.run_phase(PHASE.ON_STARTING, server=server)

    if options.workers == 1:  # in a multi-worker server the supervisor runs BEFORE_POST_FORK
        await server.run_phase(PHASE.BEFORE_POST_FORK, server=server)
    await server.run_phase(PHASE.AFTER_POST_FORK, server=server)

    await trio.to_thread.run_sync(deploy_internal_services, server)
    await trio.to_thread.run_sync(deploy_user_services, server)

    for route in server.registry.values(Kind.HTTP_ROUTES):
        server.set_routes(f"route:{route.path}:{','.join(route.methods)}", [(route.path, route.methods, route.handler, route.path)])
    server.app.set_mounts([(prefix, mount.app, server.registry.plugin_of(Kind.ASGI_MOUNTS, prefix))
                           for prefix, mount in server.registry.items(Kind.ASGI_MOUNTS).items()])
    for channel_type in server.registry.values(Kind.CHANNEL_TYPES):
        runtime = channel_type.create(server)
        server.channels[channel_type.name] = runtime
        await config_objects.apply_channel_type(server, channel_type, runtime)  # a failure is logged, start goes on

    first = options.worker_index == 0
    await server.run_phase(PHASE.IN_PROCESS_FIRST if first else PHASE.IN_PROCESS_OTHER, server=server)

    server.background_nursery = lifetimes.background
    await server.outgoing_connections.apply_all()
    await lifetimes.longest.start(server.outgoing_connections.run_placements)  # one_process connection types
    for task in register_tasks(server.pm, server):
        await lifetimes.longest.start(task.run)

    server.transport = server.pm.hook.notification_transport(server=server) or (
        SupervisorLinkTransport(options.notify_fd, on_closed=server.request_shutdown)
        if options.notify_fd is not None else LocalTransport())
    await lifetimes.longest.start(server.transport.run, server._deliver)

    running = [runtime for runtime in server.channels.values() if hasattr(runtime, "run")]
    lifetimes.channels = await lifetimes.intake.start(_serve_channels, running)
    binds = await lifetimes.intake.start(_serve_http, server)
    server.address = binds[0] if binds else ""
    if options.write_runtime_file:
        write_runtime_file(paths, server.address, os.getpid(), options.workers)

    await server.run_phase(PHASE.AFTER_STARTED, server=server)
    server.started_at = time.time()
    # What start-up made lives as long as the server: keep it out of every collection, and
    # collect less often (requests allocate many short-lived objects).
    gc.collect()
    gc.freeze()
    threshold = int(config.main.get("gc_threshold", 10000))
    if threshold > 0:
        gc.set_threshold(threshold, 20, 20)
    logger.info("Zato %s server %s ready at %s in %.0f ms (worker %d of %d, pid %d)", __version__, server.name,
                server.address, (time.perf_counter() - started) * 1000, options.worker_index + 1, options.workers,
                os.getpid())
    if options.notify_fd is not None:
        await server.transport.publish(json.dumps({"action": "__ready__", "origin": os.getpid(),
                                                   "index": options.worker_index}).encode())


async def _serve_channels(runtimes: list[Any], *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
    """ The `run` of every channel runtime that has one (listeners), in a nursery of their own
    inside intake, so that a stop can cancel them together while HTTP drains. """
    async with trio.open_nursery() as nursery:
        for runtime in runtimes:
            await nursery.start(runtime.run)
        task_status.started(nursery)
        await trio.sleep_forever()


async def _serve_http(server: Server, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.trio import serve

    from zato.server import http_transport, websocket_pings
    http_transport.install()  # hypercorn's trio worker, cheaper per request (a StartupError if not 0.18)
    websocket_pings.install()  # ASGI applications can ping WebSocket peers (zato.websocket.ping)
    main = server.config.main
    hconfig = HypercornConfig()
    if server.options.listen_fd is not None:
        hconfig.bind = [f"fd://{server.options.listen_fd}"]
    else:
        hconfig.bind = [f"{main.get('host', '127.0.0.1')}:{main.get('port', 17010)}"]
    hconfig.graceful_timeout = float(main.get("graceful_timeout", 10))
    hconfig.keep_alive_timeout = float(main.get("keep_alive_timeout", 30))
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("zato.hypercorn")
    try:
        await serve(server.app, hconfig, shutdown_trigger=server._shutdown.wait, task_status=task_status)
    except OSError as exc:
        raise StartupError(f"cannot listen on {hconfig.bind[0]}: {exc}; is another server using the port? "
                           f"Change [main] port in {server.paths.server_conf}") from exc


async def _wait_for_stop(server: Server) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            async def on_signal() -> None:
                async for signum in signals:
                    logger.info("received %s, stopping (in-flight requests may finish within %ss)",
                                signal.Signals(signum).name, server.config.main.get("graceful_timeout", 10))
                    server.request_shutdown()
                    return
            nursery.start_soon(on_signal)
            await server._shutdown.wait()
            nursery.cancel_scope.cancel()


def _stop_intake(server: Server, lifetimes: Lifetimes) -> None:
    """ Step 1 of a stop: nothing new comes in. `server._shutdown` is set, so hypercorn stops
    accepting and gives requests in flight `[main] graceful_timeout`; the channel runtimes' `run`
    tasks are cancelled now (a runtime finishes an item it has taken under a shielded scope of
    its own). The intake nursery then ends by itself, at most a second after the graceful time. """
    graceful = float(server.config.main.get("graceful_timeout", 10))
    lifetimes.stop_started = trio.current_time()
    lifetimes.graceful_deadline = lifetimes.stop_started + graceful
    if lifetimes.channels is not None:
        lifetimes.channels.cancel_scope.cancel()
    lifetimes.intake.cancel_scope.deadline = lifetimes.graceful_deadline + 1  # past hypercorn's own limit


def _drain_background(server: Server, lifetimes: Lifetimes) -> None:
    """ Step 2: background work (invoke_async...) may finish within what is left of the graceful
    time; what is still running then is cancelled (`patterns.BackgroundCalls` logs each as lost). """
    logger.info("stopping %s: intake stopped in %.0f ms; %d background task(s) may finish within %.1f s",
                server.name, (trio.current_time() - lifetimes.stop_started) * 1000,
                len(lifetimes.background.child_tasks), max(0.0, lifetimes.graceful_deadline - trio.current_time()))
    lifetimes.background.cancel_scope.deadline = lifetimes.graceful_deadline
    server.outgoing_connections.stopping()  # replaced connections close now, not at the end of their delay


async def _stop(server: Server, lifetimes: Lifetimes) -> None:
    """ Steps 3 to 5, once intake and background work are over: plugins' `shutdown` hooks (in
    pluggy's order: last loaded, first shut down), then outgoing connections are closed, each
    step shielded and within `[main] graceful_timeout`; then plugin tasks and the notification
    transport are cancelled and the runtime file is removed. """
    graceful = float(server.config.main.get("graceful_timeout", 10))
    logger.info("stopping %s: background work over after %.0f ms; running shutdown hooks", server.name,
                (trio.current_time() - lifetimes.stop_started) * 1000)
    with trio.CancelScope(shield=True):
        with trio.move_on_after(graceful):
            for call in hook_calls(server.pm, "shutdown"):
                try:
                    await await_maybe(call(server=server))
                except Exception:
                    logger.exception("plugin %r failed to shut down cleanly", call.plugin_name)
        with trio.move_on_after(graceful):  # a shutdown hook that hangs does not keep connections open
            await server.outgoing_connections.close_all()
    lifetimes.longest.cancel_scope.cancel()
    if server.options.write_runtime_file and (read_runtime_file(server.paths) or {}).get("pid") == os.getpid():
        server.paths.runtime_file.unlink(missing_ok=True)  # nobody answers at that address any more
    logger.info("server %s stopped in %.0f ms (pid %d)", server.name,
                (trio.current_time() - lifetimes.stop_started) * 1000, os.getpid())


# ################################################################################################
# Deploying services


def deploy_internal_services(server: Server) -> None:
    started = time.perf_counter()
    # [deploy_internal] lines switched off leave their modules out, and the key: the cache is rebuilt
    modules = server.plugins.internal_service_modules()
    for module, line in sorted(server.plugins.modules_off.items()):
        logger.info("internal services of %s not deployed: %s in server.conf", module, line)
    server.services.enabled_plugins = frozenset(server.plugins.enabled_names())  # for the deploy log's warnings
    key = startup_cache.cache_key(server.plugins.fingerprint(), modules)
    entries, source = (None, "--sync-internal given") if server.options.sync_internal else \
        startup_cache.load(server.paths.startup_cache, key)
    if entries is not None:
        server.services.add_entries(entries)
        how = "cache"
    else:
        entries = []
        for module in modules:
            entries.extend(server.services.deploy_module(module, internal=True))
        startup_cache.save(server.paths.startup_cache, key, entries)
        how = "fresh"
        if source != "no cache yet":
            logger.info("start-up cache rebuilt: %s", source)
    server.internal_services_source = how
    logger.info("deployed %d internal services (%s) in %.1f ms", len(entries), how, (time.perf_counter() - started) * 1000)


def deploy_user_services(server: Server) -> None:
    """ Deploys pickup/*.py. A module that fails is logged and listed in `server.deploy_failures`
    and, by the first worker, in work/deploy-failures.json, which the runtime file carries to
    `zato start` so that it can say which modules did not deploy. """
    started = time.perf_counter()
    count = 0
    failures: list[dict[str, Any]] = []
    pickup = server.paths.pickup_dir
    for path in sorted(pickup.glob("*.py")) if pickup.is_dir() else ():
        try:
            count += len(server.services.deploy_file(path))
        except DeploymentError as exc:
            logger.error("%s", exc)
            failures.append({"file": exc.file or str(path), "line": exc.line, "error": str(exc)})
    server.deploy_failures = failures
    if server.options.worker_index == 0:  # every worker deploys the same files
        from zato.common.files import write_file
        try:
            write_file(deploy_failures_file(server.paths), json.dumps(failures))
        except OSError as exc:  # only `zato start`'s report needs it
            logger.warning("cannot write %s: %s", deploy_failures_file(server.paths), exc)
    logger.info("deployed %d user services from %s in %.1f ms", count, pickup, (time.perf_counter() - started) * 1000)


def deploy_failures_file(paths: ServerPaths) -> Path:
    return paths.work_dir / "deploy-failures.json"


def _read_deploy_failures(paths: ServerPaths) -> list[dict[str, Any]]:
    try:
        return json.loads(deploy_failures_file(paths).read_text("utf-8"))
    except (OSError, ValueError):
        return []


# ################################################################################################


def database_url(paths: ServerPaths, config: Bunch) -> str:
    return config.get("odb", {}).get("url") or sqlite_url(paths.database)


def write_runtime_file(paths: ServerPaths, address: str, pid: int, workers: int) -> None:
    from zato.common.files import make_dir, write_file
    make_dir(paths.work_dir)
    write_file(paths.runtime_file, json.dumps({"pid": pid, "address": address, "workers": workers,
                                               "started": time.time(),
                                               "deploy_failures": _read_deploy_failures(paths)}))


def write_cli_token(paths: ServerPaths) -> str:
    """ A new random token in work/cli-token (readable by this user only), with which the local
    `zato` CLI calls the admin API without knowing the admin password. """
    token = secrets.token_urlsafe(32)
    paths.work_dir.mkdir(parents=True, exist_ok=True)
    temp = paths.cli_token.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    os.replace(temp, paths.cli_token)
    return token


def read_cli_token(paths: ServerPaths) -> str:
    try:
        return paths.cli_token.read_text().strip()
    except OSError:
        return ""


def read_runtime_file(paths: ServerPaths) -> dict[str, Any] | None:
    try:
        return json.loads(paths.runtime_file.read_text())
    except (OSError, ValueError):
        return None
