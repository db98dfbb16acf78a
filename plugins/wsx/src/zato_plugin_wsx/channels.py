""" The runtime of WebSocket channels in one worker: each active `channel_web_socket` is a
WebSocket endpoint at its address's path on the server's own port, and every connection open
through it is known here (for the admin API and for services' `self.wsx`). """

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import trio

from zato_plugin_wsx import protocol
from zato_plugin_wsx.connection import ChannelSettings, ClientRequestFailed, Pinger, WSXConnection

logger = logging.getLogger("zato.wsx")

OWNER = "wsx"
CLOSE_CHANNEL_CHANGED = 1012  # "service restart": the definition changed, the client reconnects


def address_problem(address: Any) -> str | None:
    """ Why `address` cannot be a channel's address (None if it can). """
    if not isinstance(address, str) or address.startswith("$"):
        return None
    parts = urlsplit(address)
    if parts.scheme not in ("ws", "wss"):
        return f"{address!r} is not a ws:// or wss:// URL; give e.g. ws://0.0.0.0:17010/my/channel"
    if not parts.path or parts.path == "/":
        return f"{address!r} has no path; give the path clients connect to, e.g. ws://0.0.0.0:17010/my/channel"
    if parts.path == "/zato" or parts.path.startswith("/zato/"):
        return f"{address!r}: paths under /zato/ belong to the admin API; choose another path"
    if parts.query or parts.fragment:
        return f"{address!r} has a query or fragment; a channel is one path"
    return None


def path_of(address: str) -> str:
    return urlsplit(address).path


class WSXChannels:
    """ `apply(objects)` serves each active definition; `connections` holds what is open. """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.settings: dict[str, ChannelSettings] = {}  # channel name -> what its connections use
        self.paths: dict[str, str] = {}  # path -> channel name
        self.connections: dict[str, dict[str, WSXConnection]] = {}  # channel name -> pub_client_id -> connection
        self.errors: dict[str, str] = {}
        self.listener_endpoints: dict[str, dict[str, Any]] = {}  # host:port -> path -> endpoint
        self.listener_errors: dict[str, str] = {}  # host:port -> why it could not listen
        self._listeners: dict[str, trio.CancelScope] = {}
        self.pinger = Pinger()  # pings every connection with a session (run by `run`)
        self._nursery: trio.Nursery | None = None

    # ############################################################################################
    # Definitions

    def apply(self, objects: list[dict[str, Any]]) -> None:
        wanted: dict[str, ChannelSettings] = {}
        paths: dict[str, str] = {}
        errors: dict[str, str] = {}
        for definition in objects:
            name = definition.get("name")
            if not definition.get("is_active", True):
                continue
            address = definition.get("address")
            problem = address_problem(address)
            if problem is None and path_of(address) in paths:
                problem = f"its path {path_of(address)} is the path of channel {paths[path_of(address)]!r} too"
            if problem is not None:
                errors[name] = problem
                logger.error("WebSocket channel %r is not served: %s; correct it through the admin API or enmasse",
                             name, problem)
                continue
            settings = ChannelSettings.from_definition(definition, path_of(address), self._listener_of(address))
            wanted[name] = self.settings.get(name) if self.settings.get(name) == settings else settings
            paths[wanted[name].path] = name
        for name, settings in self.settings.items():
            if wanted.get(name) != settings:  # deleted, switched off or changed: its clients reconnect
                self._set_endpoint(settings, None)
                self._close_all(name, CLOSE_CHANNEL_CHANGED, "the channel's definition changed; reconnect")
        for name, settings in wanted.items():
            if self.settings.get(name) != settings:
                self._set_endpoint(settings, self._endpoint(settings))
                logger.info("WebSocket channel %r serves %s%s (service %s%s)", name,
                            f"ws://{settings.listen_on}" if settings.listen_on else "", settings.path,
                            settings.service, f", security {settings.security}" if settings.security else "")
        self.settings, self.paths, self.errors = wanted, paths, errors
        self._sync_listeners()

    def validate(self, definition: dict[str, Any]) -> list[str]:
        if not definition.get("is_active", True):
            return []
        problem = address_problem(definition.get("address"))
        if problem:
            return [problem]
        path = path_of(definition["address"]) if isinstance(definition.get("address"), str) else None
        owner = self.paths.get(path) if path else None
        if owner is not None and owner != definition.get("name"):
            return [f"the path {path} is served by WebSocket channel {owner!r} already"]
        return []

    def _listener_of(self, address: str) -> str:
        """ "" for an address on the server's own port (or naming none); else the host:port of a
        listener of its own. """
        parts = urlsplit(address)
        own = int(self.server.config.main.get("port", 17010) or 0) or urlsplit(self.server.address or "").port
        if not parts.port or not own or parts.port == own:
            return ""
        return f"{parts.hostname}:{parts.port}"

    def _set_endpoint(self, settings: ChannelSettings, app: Any) -> None:
        if not settings.listen_on:
            return self.server.set_websocket_endpoint(settings.path, app, OWNER)
        endpoints = self.listener_endpoints.setdefault(settings.listen_on, {})
        if app is None:
            endpoints.pop(settings.path, None)
        else:
            endpoints[settings.path] = app

    # ############################################################################################
    # Listeners of their own, for channels whose address names another port

    def _sync_listeners(self) -> None:
        if self._nursery is None:
            return  # run() starts them
        wanted = {listen_on for listen_on, endpoints in self.listener_endpoints.items() if endpoints}
        for listen_on in wanted - set(self._listeners):
            self._listeners[listen_on] = trio.CancelScope()
            self._nursery.start_soon(self._listen, listen_on, self._listeners[listen_on])
        for listen_on in set(self._listeners) - wanted:
            self._listeners.pop(listen_on).cancel()

    async def _listen(self, listen_on: str, scope: trio.CancelScope) -> None:
        from hypercorn.config import Config
        from hypercorn.trio import serve
        config = Config()
        config.bind = [listen_on]
        config.accesslog = None
        config.errorlog = logging.getLogger("zato.hypercorn")
        config.graceful_timeout = 1.0
        with scope:
            try:
                logger.info("WebSocket channels listen on %s", listen_on)
                await serve(self._listener_app(listen_on), config, shutdown_trigger=trio.sleep_forever)
            except Exception as exc:  # hypercorn raises an address it cannot bind to inside exception groups
                reason = exc
                while isinstance(reason, BaseExceptionGroup) and reason.exceptions:
                    reason = reason.exceptions[0]
                self.listener_errors[listen_on] = f"{type(reason).__name__}: {reason}"
                logger.error("WebSocket channels on %s are not served: cannot listen there (%s: %s); check the host "
                             "and port of the channels' address (a name this machine resolves, a port no other "
                             "program uses)", listen_on, type(reason).__name__, reason)
        if self._listeners.get(listen_on) is scope:
            self._listeners.pop(listen_on)

    def _listener_app(self, listen_on: str) -> Any:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
                return
            endpoint = self.listener_endpoints.get(listen_on, {}).get(scope["path"])
            if scope["type"] == "websocket" and endpoint is not None:
                return await endpoint(scope, receive, send)
            if scope["type"] == "websocket":
                await receive()
                await send({"type": "websocket.close", "code": 1008})
                return
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            await send({"type": "http.response.body", "body": f"no WebSocket channel at {scope['path']}\n".encode()})
        return app

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """ Runs while the server takes requests, with the listeners of channels on ports of their
        own; when it stops, every client gets a Close frame at once instead of holding the stop
        up until the graceful timeout. """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.pinger.run)
            self._sync_listeners()
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await self.close_all()
                self._nursery = None
                nursery.cancel_scope.cancel()

    # ############################################################################################
    # Connections

    def _endpoint(self, settings: ChannelSettings) -> Any:
        channels = self

        async def endpoint(scope: dict[str, Any], receive: Any, send: Any) -> None:
            message = await receive()
            if message["type"] != "websocket.connect":
                return
            if channels.settings.get(settings.name) is not settings:  # replaced while connecting
                await send({"type": "websocket.close", "code": 1012})
                return
            await send({"type": "websocket.accept"})
            connection = WSXConnection(channels.server, settings, scope, send, channels._opened, channels._closed,
                                       channels.pinger)
            await connection.serve(receive)
        return endpoint

    def _opened(self, connection: WSXConnection) -> None:
        from zato_plugin_wsx.registry import REGISTRY
        self.connections.setdefault(connection.channel.name, {})[connection.pub_client_id] = connection
        registry = REGISTRY.get(self.server)
        if registry is not None:  # its row is written in the background, for the other processes
            registry.opened(connection)

    def _closed(self, connection: WSXConnection) -> None:
        from zato_plugin_wsx.registry import REGISTRY
        self.connections.get(connection.channel.name, {}).pop(connection.pub_client_id, None)
        registry = REGISTRY.get(self.server)
        if registry is not None:
            registry.closed(connection)

    def _close_all(self, name: str, code: int, reason: str) -> None:
        nursery = self.server.background_nursery
        for connection in list(self.connections.get(name, {}).values()):
            if nursery is not None:
                nursery.start_soon(connection.close, code, reason)

    def all_connections(self) -> list[WSXConnection]:
        return [c for by_id in self.connections.values() for c in by_id.values()]

    def find(self, pub_client_id: str) -> WSXConnection | None:
        return next((c for c in self.all_connections() if c.pub_client_id == pub_client_id), None)

    async def close_all(self) -> None:
        """ At stop: every client gets a Close frame (1001, going away). """
        async with trio.open_nursery() as nursery:
            for connection in self.all_connections():
                nursery.start_soon(connection.close, protocol.CLOSE_SERVER_STOPPING, "the server is stopping")


class ChannelFacade:
    """ `self.wsx.channel[name]` in services: the connections of one channel. """

    def __init__(self, channels: WSXChannels, name: str) -> None:
        if name not in channels.settings:
            known = ", ".join(repr(n) for n in sorted(channels.settings)) or "none"
            raise KeyError(f"no active WebSocket channel {name!r}; known: {known}")
        self._channels, self.name = channels, name

    def connections(self) -> list[WSXConnection]:
        return list(self._channels.connections.get(self.name, {}).values())

    def broadcast(self, data: Any) -> int:
        """ Sends `data` (zwsx.rqc, no answer awaited) to every client of the channel with a session,
        in every worker of this server and of the servers sharing its database; returns how many
        clients of this worker it was sent to (the other processes send to theirs as the request
        reaches them). From a plain `def` service (a worker thread). """
        return trio.from_thread.run(self.broadcast_async, data)

    async def broadcast_async(self, data: Any) -> int:
        """ As `broadcast`, from an `async def` service. """
        from zato_plugin_wsx.registry import REGISTRY
        sent = await self.send_to_local_clients(data)
        registry = REGISTRY.get(self._channels.server)
        if registry is not None:  # the other processes send to theirs
            await registry.broadcast(self.name, data)
        return sent

    async def send_to_local_clients(self, data: Any) -> int:
        sent = 0
        for connection in self.connections():
            try:
                await connection.send_to_client(data)
                sent += 1
            except (ClientRequestFailed, trio.BrokenResourceError, trio.ClosedResourceError):
                continue
        return sent

    def invoke(self, pub_client_id: str, data: Any, timeout: float = 5.0) -> Any:
        """ Sends `data` to one client and returns its answer (plain `def` services). """
        return trio.from_thread.run(self.invoke_async, pub_client_id, data, timeout)

    async def invoke_async(self, pub_client_id: str, data: Any, timeout: float = 5.0) -> Any:
        """ As `invoke`, from an `async def` service; a client of another process (a worker of this
        server or of another sharing the database) is reached through it (zato_plugin_wsx.registry). """
        connection = self._channels.connections.get(self.name, {}).get(pub_client_id)
        if connection is not None:
            return await connection.invoke_client(data, timeout)
        from zato_plugin_wsx.registry import INVOKE, REGISTRY, REPLY_GRACE_SECONDS, holder_of
        registry = REGISTRY.get(self._channels.server)
        row = await registry.find(pub_client_id) if registry is not None else None
        if row is None or row.get("channel_name") != self.name:
            raise ClientRequestFailed(f"no WebSocket connection {pub_client_id!r} is open on channel {self.name!r}")
        answer = await registry.ask(row, INVOKE, {"pub_client_id": pub_client_id, "data": data, "timeout": timeout},
                                    timeout + REPLY_GRACE_SECONDS)
        if answer is None:
            raise ClientRequestFailed(f"WebSocket connection {pub_client_id!r} is held by process {row.get('server_pid')} "
                                      f"of {holder_of(row)}, which did not answer within {timeout:g} s")
        status, body = answer
        if status != 200:
            raise ClientRequestFailed(str(body))
        return body


class WSXFacade:
    """ `self.wsx` in services. """

    def __init__(self, channels: WSXChannels) -> None:
        self.channel = _ChannelMap(channels)


class _ChannelMap:
    def __init__(self, channels: WSXChannels) -> None:
        self._channels = channels

    def __getitem__(self, name: str) -> ChannelFacade:
        return ChannelFacade(self._channels, name)
