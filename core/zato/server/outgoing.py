""" How services reach outgoing connections by name, with Zato's accessors:
`self.out.plain_http[name].conn`, `self.outgoing.sql.get(name)`, `self.email.smtp[name].conn`,
`self.cloud.dropbox[name].conn`, `self.kvdb.conn`.

Each outgoing connection type names its accessor path (`OutgoingConnectionType.accessor`, e.g.
`"out.plain_http"`): the first part is the namespace (`out` - also reachable as `outgoing` -,
`email`, `cloud`), the second the map of connections by name.
"""

from __future__ import annotations

import logging
import ssl
from functools import partial
from typing import Any, Callable, Iterator
from zato.registry import Kind

logger = logging.getLogger("zato.outgoing")


class ConnectionNotFound(LookupError):
    """ No outgoing connection of that name; the message lists the ones that exist. """


class ConnectionMap:
    """ Connections of one type by name: `[name]` and `.get(name)`. """

    def __init__(self, path: str) -> None:
        self.path = path
        self._items: dict[str, Any] = {}
        self.elsewhere = ""  # placement one_process: why this process has none of them (who holds them)
        self.errors: dict[str, str] = {}  # name -> why its definition could not be built

    def __getitem__(self, name: str) -> Any:
        try:
            return self._items[name]
        except KeyError:
            if self.elsewhere:
                raise ConnectionNotFound(f"outgoing connection {name!r} in {self.path} is not in this process: "
                                         f"{self.elsewhere}") from None
            known = ", ".join(repr(n) for n in sorted(self._items)) or "none are configured"
            why = (f"; {name!r} could not be built: {self.errors[name]} (correct its definition through the admin "
                   f"API or enmasse)") if name in self.errors else ""
            raise ConnectionNotFound(f"no outgoing connection {name!r} in {self.path}; known: {known}{why}") from None

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
        self._facades: dict[str, Any] = {}  # type -> what its accessor gives instead of the map

    def map(self, type_name: str) -> ConnectionMap:
        if type_name not in self._maps:
            self._maps[type_name] = ConnectionMap(f"{self._name}.{type_name}")
        return self._maps[type_name]

    def set_facade(self, type_name: str, facade: Any) -> None:
        self._facades[type_name] = facade

    def facade(self, type_name: str) -> Any:
        return self._facades.get(type_name)

    def share(self, type_name: str, connections: ConnectionMap, facade: Any) -> None:
        """ `type_name` gives another type's map (and facade): an accessor's alias. """
        self._maps[type_name] = connections
        if facade is not None:
            self._facades[type_name] = facade

    def __getattr__(self, type_name: str) -> Any:
        if type_name.startswith("_"):
            raise AttributeError(type_name)
        facade = self._facades.get(type_name)
        if facade is not None:
            return facade
        try:
            return self._maps[type_name]
        except KeyError:
            from zato.plugins import SERVICE_USES, plugin_not_enabled
            plugin = SERVICE_USES.get(f"{self._name}.{type_name}")
            if plugin is not None:  # one of Zato's connectors, whose plugin is not installed or is off
                also = f" (self.outgoing.{type_name})" if self._name == "out" else ""
                error = plugin_not_enabled(f"self.{self._name}.{type_name}{also}", plugin)
                raise type(error)(f"no outgoing connection type {self._name}.{type_name}: {error}") from None
            known = ", ".join(sorted(self._maps)) or "none (is the plugin providing it enabled?)"
            raise AttributeError(f"no outgoing connection type {self._name}.{type_name}; known: {known}") from None


class Outgoing:
    """ Every outgoing connection of a server, reachable through its accessor path. """

    def __init__(self) -> None:
        self.namespaces: dict[str, Namespace] = {}

    def namespace(self, name: str) -> Namespace:
        if name == "outgoing":
            name = "out"
        if name not in self.namespaces:
            self.namespaces[name] = Namespace(name)
        return self.namespaces[name]

    def map(self, accessor: str) -> ConnectionMap:
        """ `"out.plain_http"` -> the map of plain HTTP connections. """
        namespace, type_name = self._split(accessor)
        return self.namespace(namespace).map(type_name)

    def install_facade(self, accessor: str, make: Callable[[ConnectionMap], Any]) -> None:
        """ What `accessor` gives services from now on: `make(the map of its connections)`. """
        namespace, type_name = self._split(accessor)
        self.namespace(namespace).set_facade(type_name, make(self.map(accessor)))

    def alias(self, alias: str, accessor: str) -> None:
        """ `alias` gives what `accessor` gives: the same map of connections, and its facade. """
        namespace, type_name = self._split(accessor)
        alias_namespace, alias_name = self._split(alias)
        target = self.namespace(namespace)
        self.namespace(alias_namespace).share(alias_name, target.map(type_name), target.facade(type_name))

    @staticmethod
    def _split(accessor: str) -> tuple[str, str]:
        namespace, _, type_name = accessor.partition(".")
        if not type_name:
            raise ValueError(f"an accessor is `namespace.type`, e.g. out.plain_http, not {accessor!r}")
        return namespace, type_name


# ################################################################################################
# Building, rebuilding and closing connections


class OutgoingError(Exception):
    """ An outgoing connection failed; the message names the connection, what it did and why. """


class OutgoingConnections:
    """ Every outgoing connection of one worker, kept in step with the configuration objects.

    For each registered `OutgoingConnectionType`, each active object of its `object_type`
    becomes a connection: `create(server, definition)` runs in a worker thread (it may block),
    and its result is what services get from the type's accessor (`self.out.plain_http[name]`).
    When a definition changes the new connection is swapped in at once and the old one is
    closed after `[main] graceful_timeout` seconds, so calls in flight finish on it; a
    definition that fails to build is logged and the previous connection (if any) stays.
    A connection offers `ping()` and `close()`, plain (run in a worker thread) or `async def`.
    """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.current: dict[tuple[str, str], tuple[dict, Any]] = {}  # (type, name) -> (definition, connection)
        self.errors: dict[tuple[str, str], str] = {}  # (type, name) -> why it could not be built
        self.retiring: dict[int, tuple[Any, str]] = {}  # replaced or removed, closed after graceful_timeout
        self._stopping: Any = None  # a trio.Event, made on first use (in the trio thread)
        self.placements: dict[str, Any] = {}  # type name -> its Placement (placement one_process)

    def types(self) -> dict[str, Any]:
        return self.server.registry.items(Kind.OUTGOING_CONNECTION_TYPES)

    async def run_placements(self, *, task_status: Any) -> None:
        """ The leases of `one_process` connection types: while this process holds the lease
        `outgoing:<type>`, it builds that type's connections; when it loses it (or stops), they
        are closed here and built by the process that takes it over. Ready at once. """
        import trio
        from zato.server.placement import outgoing_lease_name, placement_of
        types = [t for t in self.types().values() if t.placement == "one_process"]
        async with trio.open_nursery() as nursery:
            for outconn_type in types:
                placement = self.placements[outconn_type.name] = placement_of(self.server,
                                                                              outgoing_lease_name(outconn_type.name))
                self._mark_elsewhere(outconn_type)
                nursery.start_soon(placement.run, partial(self._while_held, outconn_type))
            task_status.started()

    async def _while_held(self, outconn_type: Any, epoch: int) -> None:
        import trio
        self.server.outgoing.map(outconn_type.accessor).elsewhere = ""
        try:
            await self._apply_isolated(outconn_type)
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                self._mark_elsewhere(outconn_type)
                await self._apply_isolated(outconn_type)  # none are wanted here any more: closed

    def _builds_here(self, outconn_type: Any) -> bool:
        if outconn_type.placement != "one_process":
            return True
        placement = self.placements.get(outconn_type.name)
        return placement is not None and placement.holding and not self.server.outgoing.map(
            outconn_type.accessor).elsewhere

    def _mark_elsewhere(self, outconn_type: Any) -> None:
        self.server.outgoing.map(outconn_type.accessor).elsewhere = (
            f"{outconn_type.name} connections run in one process among all sharing the configuration database "
            f"(placement one_process, lease 'outgoing:{outconn_type.name}'), and this one does not hold it; "
            f"GET /zato/api/placements says which does")

    async def apply_all(self) -> None:
        for outconn_type in self.types().values():
            if outconn_type.facade is not None:
                try:
                    self.server.outgoing.install_facade(outconn_type.accessor, outconn_type.facade)
                except Exception:
                    logger.exception("outgoing %s connections: the facade of %s could not be made; services reach "
                                     "the connections by name instead", outconn_type.name, outconn_type.accessor)
            for alias in outconn_type.aliases:
                self.server.outgoing.alias(alias, outconn_type.accessor)
            await self._apply_isolated(outconn_type)

    async def apply_object_types(self, object_types: set[str]) -> None:
        for outconn_type in self.types().values():
            if outconn_type.object_type in object_types:
                await self._apply_isolated(outconn_type)

    async def _apply_isolated(self, outconn_type: Any) -> None:
        """ `apply`, a failure of one connection type never stopping the others (nor start-up). """
        try:
            await self.apply(outconn_type)
        except Exception:
            logger.exception("outgoing %s connections could not be applied; the ones that were built stay, the "
                             "other connection types are applied", outconn_type.name)

    async def apply(self, outconn_type: Any) -> None:
        import trio
        from zato.server.config_objects import with_references
        wanted = {name: with_references(self.server, outconn_type.object_type, definition)
                  for name, definition in self.server.config_objects.get(outconn_type.object_type, {}).items()
                  } if self._builds_here(outconn_type) else {}
        connections = self.server.outgoing.map(outconn_type.accessor)
        for name, definition in wanted.items():
            key = (outconn_type.name, name)
            old = self.current.get(key)
            if old is not None and old[0] == definition:
                continue
            try:  # whatever one definition holds, it never stops the others
                connection = await trio.to_thread.run_sync(outconn_type.create, self.server, definition)
            except Exception as exc:
                self.errors[key] = connections.errors[name] = f"{type(exc).__name__}: {exc}"
                kept = "the previous connection stays" if old else "it is not available"
                logger.error("outgoing %s %r could not be built: %s; %s", outconn_type.name, name, self.errors[key], kept)
                continue
            connections.set(name, connection)
            self.current[key] = (definition, connection)
            self.errors.pop(key, None)
            connections.errors.pop(name, None)
            logger.info("outgoing %s %r %s", outconn_type.name, name, "rebuilt" if old else "created")
            if old is not None:
                self._close_later(old[1], f"{outconn_type.name} {name!r}")
        for key in [k for k in self.current if k[0] == outconn_type.name and k[1] not in wanted]:
            connections.pop(key[1])
            self._close_later(self.current.pop(key)[1], f"{key[0]} {key[1]!r}")
            logger.info("outgoing %s %r removed", *key)
        for key in [k for k in self.errors if k[0] == outconn_type.name and k[1] not in wanted]:
            self.errors.pop(key)
            connections.errors.pop(key[1], None)

    def _close_later(self, connection: Any, what: str) -> None:
        delay = float(self.server.config.main.get("graceful_timeout", 10))
        nursery = self.server.background_nursery
        if nursery is None:
            return
        self.retiring[id(connection)] = (connection, what)
        nursery.start_soon(self._close_after, connection, what, delay)

    def _stop_event(self) -> Any:
        import trio
        if self._stopping is None:
            self._stopping = trio.Event()
        return self._stopping

    async def _close_after(self, connection: Any, what: str, delay: float) -> None:
        import trio
        with trio.move_on_after(delay):
            await self._stop_event().wait()
        if self.retiring.pop(id(connection), None) is not None:
            await self._close(connection, what)

    def stopping(self) -> None:
        """ The server is stopping: connections waiting to be closed are closed now, not after
        their delay (their calls in flight are over: intake has stopped). """
        self._stop_event().set()

    async def _close(self, connection: Any, what: str) -> None:
        close = getattr(connection, "close", None)
        if close is None:
            return
        try:
            await call_plain_or_async(close)
        except Exception:
            logger.exception("outgoing %s did not close cleanly", what)

    async def ping(self, type_name: str, name: str) -> dict[str, Any]:
        """ {"ok": True, "took_ms": ...} or {"ok": False, "error": "..."}. """
        import time
        types = self.types()
        if type_name not in types:
            raise ConnectionNotFound(f"no outgoing connection type {type_name!r}; known: {', '.join(sorted(types))}")
        found = self.current.get((type_name, name))
        if found is None:
            known = ", ".join(repr(n) for t, n in sorted(self.current) if t == type_name) or "none"
            error = self.errors.get((type_name, name))
            hint = f" (it could not be built: {error})" if error else ""
            raise ConnectionNotFound(f"no outgoing {type_name} connection {name!r}{hint}; known: {known}")
        started = time.perf_counter()
        try:
            await call_plain_or_async(found[1].ping)
        except Exception as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                    "took_ms": round((time.perf_counter() - started) * 1000, 2)}
        return {"ok": True, "took_ms": round((time.perf_counter() - started) * 1000, 2)}

    async def close_all(self) -> None:
        """ Closes every connection, those replaced and not closed yet included. """
        for key, (connection, what) in list(self.retiring.items()):
            if self.retiring.pop(key, None) is not None:
                await self._close(connection, what)
        for (type_name, name), (_, connection) in list(self.current.items()):
            await self._close(connection, f"{type_name} {name!r}")
        self.current.clear()


async def call_plain_or_async(fn: Any, *args: Any) -> Any:
    """ Awaits `fn(*args)` if it is `async def`, else runs it in a worker thread. """
    import inspect
    import trio
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    return await trio.to_thread.run_sync(fn, *args)


# ################################################################################################
# Blocking libraries in services: plain `def` blocks, `async def` gets an awaitable


class BlockingCallError(OutgoingError, RuntimeError):
    """ A method that blocks was called from the trio loop's own thread (an `async def handle`),
    where it would stop every other request of the server; the message names the connection and
    what to call instead. """


class BlockingCalls:
    """ The worker threads of one resource (a connection, a pool), for its methods that block.

        self._calls = BlockingCalls(f"outgoing smtp {name!r}", threads=10)

        def send(self, message):                           # what services call
            return self._calls.call(self._send, message)   # a plain def gets the result,
                                                           # an async def an awaitable
        def session(self):
            self._calls.refuse_on_loop(f"outgoing sql {name!r}: session()",
                                       "use `await ....run(fn, *args)`, which runs fn in a worker thread")
            ...

    `call(fn, *args)` runs `fn(*args)` at once when called from a worker thread (a plain
    `def handle` runs in one of its own), and from the trio loop returns an awaitable that runs it
    in a worker thread - at most `threads` at once for this resource (a slow backend ties up its
    own threads, not everybody's), the others waiting their turn in trio. `on_loop`, if given, is
    an `async def` doing the same without a thread (httpx's async client), awaited instead.
    """

    def __init__(self, what: str, threads: int | None = None) -> None:
        """ `what` names the resource in errors (`outgoing sql 'CRM'`); `threads`: at most that
        many of its calls in worker threads at once (None: trio's default limiter, shared). """
        self.what = what
        self.threads = threads
        self._limiter: Any = None

    def limiter(self) -> Any:
        """ This resource's `trio.CapacityLimiter`, made on first use, on the trio loop: a
        connection is built in a worker thread, outside any trio run. """
        if self.threads is None:
            return None
        if self._limiter is None:
            import trio
            self._limiter = trio.CapacityLimiter(self.threads)
        return self._limiter

    def call(self, fn: Any, *args: Any, on_loop: Any = None) -> Any:
        """ `fn(*args)` now from a worker thread; from the trio loop an awaitable of it (or of
        `on_loop(*args)`), run in a worker thread under this resource's limiter. """
        from zato.server.service import in_trio_thread
        if not in_trio_thread():
            return fn(*args)
        if on_loop is not None:
            return on_loop(*args)
        return self.in_thread(fn, *args)

    async def in_thread(self, fn: Any, *args: Any) -> Any:
        """ Awaits `fn(*args)` run in a worker thread under this resource's limiter. """
        import trio
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter())

    def refuse_on_loop(self, call: str, instead: str) -> None:
        """ Raises `BlockingCallError` if called from the trio loop: `call` says what was called,
        on what (`outgoing sql 'CRM': session()`), `instead` what to do (`use await ...`). """
        from zato.server.service import in_trio_thread
        if in_trio_thread():
            raise BlockingCallError(f"{call} blocks, and this is an async def handle on the trio loop; {instead}")


def client_tls_context(*, verify: bool, ca_file: str | None, peer: str) -> ssl.SSLContext:
    """ The TLS context of an outgoing connection: verifying the peer's certificate against
    `ca_file` only (a private CA) or, without one, the system's CAs; `verify=False` checks
    nothing. A `ca_file` that cannot be read raises ValueError saying what it must be (`peer`
    names the kind of server, e.g. "FTP"). """
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"tls_ca_file {ca_file!r} cannot be used ({exc}); it must be a readable PEM file with "
                         f"the certificate of the CA that signed the {peer} server's certificate") from None
