""" One WebSocket connection to a `channel_web_socket`: the session, its token and timeouts, the
pings, the client's requests (each an invocation of the channel's service) and the server's
requests to the client.

Timeouts, as Zato's WebSocket timeouts article describes them (all on trio's clock, so tests
run them with `trio.testing.MockClock`):
* no session within `new_token_wait_time` seconds of connecting: `zwsx.merr` 403, then closed;
* the token is valid for `token_ttl` seconds from the client's last request, response to a
  server request, or Pong; a frame with an expired token gets `zwsx.merr` 403, then closed;
* every `ping_interval` seconds a WebSocket Ping; a Ping still unanswered at the next one is
  missed, a Pong resets the count, and `pings_missed_threshold` missed in a row close the
  connection with 4002.
"""

from __future__ import annotations

import heapq
import json
import logging
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import trio

from zato_plugin_wsx import protocol
from zato_plugin_wsx.protocol import BadFrame, ClientFrame

logger = logging.getLogger("zato.wsx")

PING = "zato.websocket.ping"
PONG = "zato.websocket.pong"
MAX_IN_FLIGHT = 8  # a client's requests running at once; past them its frames wait (back-pressure)
CLOSE_SEND_SECONDS = 2.0  # how long a Close frame may wait to be sent before the connection is dropped


@dataclass(frozen=True)
class ChannelSettings:
    """ What a connection needs of its channel's definition. """
    name: str
    path: str
    service: str
    security: str | None = None
    new_token_wait_time: float = 5.0
    token_ttl: float = 3600.0
    ping_interval: float = 30.0
    pings_missed_threshold: int = 2
    max_message_size: int = 1024 * 1024
    hook_service: str | None = None
    listen_on: str = ""  # host:port of a listener of its own; "" on the server's own port

    @classmethod
    def from_definition(cls, definition: dict[str, Any], path: str, listen_on: str = "") -> "ChannelSettings":
        return cls(name=definition["name"], path=path, service=definition["service"], listen_on=listen_on,
                   security=definition.get("security") or None,
                   new_token_wait_time=float(definition.get("new_token_wait_time") or 5),
                   token_ttl=float(definition.get("token_ttl") or 3600),
                   ping_interval=float(definition.get("ping_interval") or 30),
                   pings_missed_threshold=int(definition.get("pings_missed_threshold") or 2),
                   max_message_size=int(definition.get("max_message_size") or 1024 * 1024),
                   hook_service=definition.get("hook_service") or None)


class ClientRequestFailed(Exception):
    """ A request the server sent to a client got no answer in time, or the client went away. """


@dataclass
class WSXRequestInfo:
    """ `self.request.wsx` in services invoked through a WebSocket channel. """
    channel_name: str
    pub_client_id: str           # this connection's id, new at each connect ("ws.<hex>")
    ext_client_id: str | None    # what the client said it is in create-session
    ext_client_name: str | None
    peer_address: str
    connection_time: str
    user: str | None             # the user name (or API key definition) the session was opened with
    connection: "WSXConnection" = field(repr=False)

    def invoke_client(self, data: Any, timeout: float = 5.0) -> Any:
        """ From a plain `def` service: sends `data` to this client and returns its answer. """
        return trio.from_thread.run(self.connection.invoke_client, data, timeout)


class Pinger:
    """ Pings the connections of a process that have a session, every `ping_interval` of each:
    one task for all of them (a task per connection would cost about 3 kB each), sleeping until
    the next one is due. Each Ping is sent from a task of its own that lives as long as the send,
    so a client that does not read holds up only its own Ping. `run` it in a nursery. """

    def __init__(self) -> None:
        self._due: list[tuple[float, int, WSXConnection]] = []  # a heap of (when, order, connection)
        self._order = 0
        self._changed = trio.Event()

    def add(self, connection: "WSXConnection") -> None:
        """ Pings `connection` from `ping_interval` seconds from now on, until it closes. """
        self._push(connection, trio.current_time() + connection.channel.ping_interval)
        self._changed.set()

    def _push(self, connection: "WSXConnection", when: float) -> None:
        self._order += 1
        heapq.heappush(self._due, (when, self._order, connection))

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                self._changed = trio.Event()
                if not self._due:
                    await self._changed.wait()
                    continue
                when = self._due[0][0]
                if when > trio.current_time():
                    with trio.move_on_at(when):
                        await self._changed.wait()
                    continue
                _, _, connection = heapq.heappop(self._due)
                if connection.closed:
                    continue
                self._push(connection, when + connection.channel.ping_interval)
                nursery.start_soon(connection.ping_due)


class WSXConnection:
    """ One client. `serve(receive)` runs it until it goes away or is closed. """

    __slots__ = ("server", "channel", "raw_send", "pub_client_id", "peer_host", "peer_port", "local_host",
                 "local_port", "forwarded_for", "peer_fqdn", "connection_time", "ext_client_id", "ext_client_name",
                 "user", "token", "expires_at", "pings_missed", "outstanding_ping", "subscriptions", "closed",
                 "_on_open", "_on_close", "_pinger", "_send_lock", "_in_flight", "_waiting", "_cancel", "_nursery",
                 "_session_opened")

    def __init__(self, server: Any, channel: ChannelSettings, scope: dict[str, Any], send: Callable,
                 on_open: Callable[["WSXConnection"], None], on_close: Callable[["WSXConnection"], None],
                 pinger: Pinger) -> None:
        self.server = server
        self.channel = channel
        self.raw_send = send
        self.pub_client_id = "ws." + protocol.new_id()
        client, local = scope.get("client") or ("", 0), scope.get("server") or ("", 0)
        self.peer_host, self.peer_port = str(client[0]), int(client[1] or 0)
        self.local_host, self.local_port = str(local[0]), int(local[1] or 0)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or ()}
        self.forwarded_for = headers.get("x-forwarded-for")
        self.peer_fqdn = self.peer_host  # until it is looked up (after the session opens)
        self.connection_time = datetime.now(timezone.utc).isoformat()
        self.ext_client_id: str | None = None
        self.ext_client_name: str | None = None
        self.user: str | None = None
        self.token: str | None = None
        self.expires_at = 0.0
        self.pings_missed = 0
        self.outstanding_ping: bytes | None = None
        self.subscriptions: dict[str, str] = {}  # topic -> subscription time (pub/sub)
        self.closed = False
        self._on_open, self._on_close = on_open, on_close
        self._pinger = pinger
        self._send_lock = trio.Lock()
        # Made on first use, and the session's event dropped once it opened: thousands of idle
        # connections are held at a time, each byte of each counts
        self._in_flight: trio.Semaphore | None = None  # the client's requests running (MAX_IN_FLIGHT)
        self._waiting: dict[str, tuple[trio.Event, list[Any]]] | None = None  # server request id -> (answered, [data])
        self._cancel: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._session_opened: trio.Event | None = trio.Event()

    # ############################################################################################
    # Running

    async def serve(self, receive: Callable) -> None:
        with trio.CancelScope() as self._cancel:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._wait_for_session)
                try:
                    while True:
                        message = await receive()
                        kind = message["type"]
                        if kind == "websocket.receive":
                            await self._on_message(message, nursery)
                        elif kind == PONG:
                            self._on_pong(message.get("bytes") or b"")
                        elif kind == "websocket.disconnect":
                            break
                finally:
                    self.closed = True
                    nursery.cancel_scope.cancel()
        self._finish()

    def _finish(self) -> None:
        self.closed = True
        for event, _ in (self._waiting or {}).values():
            event.set()
        if self.token is not None:
            self._on_close(self)
            self._run_hook("disconnected")

    async def close(self, code: int = protocol.CLOSE_NORMAL, reason: str = "") -> None:
        """ Sends a Close frame and ends the connection (its tasks are cancelled). """
        if not self.closed:
            self.closed = True
            try:
                with trio.move_on_after(CLOSE_SEND_SECONDS):  # a client that stopped reading is not waited for
                    async with self._send_lock:
                        await self.raw_send({"type": "websocket.close", "code": code, "reason": reason[:120]})
            except Exception:  # the peer is gone already
                pass
        if self._cancel is not None:
            self._cancel.cancel()

    async def send_text(self, text: str) -> None:
        if self.closed:
            raise ClientRequestFailed(f"WebSocket connection {self.pub_client_id} is closed")
        async with self._send_lock:
            await self.raw_send({"type": "websocket.send", "text": text})

    # ############################################################################################
    # Frames from the client

    async def _on_message(self, message: dict[str, Any], nursery: trio.Nursery) -> None:
        text = message.get("text")
        if text is None:
            raw = message.get("bytes") or b""
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                return await self._notice(400, "a binary message that is not UTF-8 text; send JSON text frames")
        size = len(text.encode("utf-8")) if len(text) * 4 > self.channel.max_message_size else len(text)
        if size > self.channel.max_message_size:
            logger.warning("%s: a message of %d bytes refused (max_message_size = %d)", self.describe(), size,
                           self.channel.max_message_size)
            return await self._notice(413, f"the message is {size} bytes, over this channel's max_message_size "
                                           f"of {self.channel.max_message_size}; send smaller messages")
        try:
            frame = protocol.parse_client_frame(text)
        except BadFrame as exc:
            logger.info("%s: %s", self.describe(), exc)
            if exc.msg_id is not None and self.token is not None:
                return await self.send_text(protocol.error_response(exc.msg_id, exc.status, str(exc), protocol.new_id()))
            return await self._notice(exc.status, str(exc))
        if self.token is None:
            if frame.action != protocol.CREATE_SESSION:
                return await self._forbid(f"sent {frame.action} before create-session")
            return await self._create_session(frame)
        if frame.token != self.token:
            return await self._forbid("sent no token" if frame.token is None else "sent an invalid token")
        now = trio.current_time()
        if now > self.expires_at:
            return await self._forbid(f"used a token that expired {now - self.expires_at:.1f} s ago")
        self.expires_at = now + self.channel.token_ttl  # a request or a response extends the token
        if frame.action == protocol.CREATE_SESSION:
            return await self._create_session(frame)
        if frame.action == protocol.CLIENT_RESPONSE:
            return self._on_client_response(frame)
        if self._in_flight is None:
            self._in_flight = trio.Semaphore(MAX_IN_FLIGHT)
        await self._in_flight.acquire()  # past MAX_IN_FLIGHT, this client's next frames wait
        nursery.start_soon(self._invoke, frame)

    async def _notice(self, status: int, message: str) -> None:
        """ An error about a frame that names no request: zwsx.merr with the status; the
        connection goes on. """
        await self.send_text(protocol.forbidden(protocol.new_id(), status, message))

    async def _forbid(self, reason: str) -> None:
        logger.warning("%s %s; closing the connection", self.describe(), reason)
        try:
            await self.send_text(protocol.forbidden(protocol.new_id()))
        except ClientRequestFailed:
            pass
        await self.close(protocol.CLOSE_POLICY, protocol.NOT_AUTHORIZED)

    # ############################################################################################
    # Sessions

    async def _wait_for_session(self) -> None:
        opened = self._session_opened
        assert opened is not None
        with trio.move_on_after(self.channel.new_token_wait_time):
            await opened.wait()
            return
        await self._forbid(f"did not create a session within {self.channel.new_token_wait_time:g} s")

    async def _create_session(self, frame: ClientFrame) -> None:
        meta = frame.meta
        cid = protocol.new_id()
        user = None
        if self.channel.security:
            user = await self._authenticate(cid, meta.get("username"), meta.get("secret"))
            if user is None:
                return await self._forbid(f"sent credentials that security definition {self.channel.security!r} "
                                          f"refused")
        first = self.token is None
        if first:
            self.ext_client_id = _text(meta.get("client_id"))
            self.ext_client_name = _client_name(meta.get("client_name"))
            self.user = user
            await self._load_subscriptions()  # before the client hears of its session: it is listed with them
            self.token = protocol.new_token()
        self.expires_at = trio.current_time() + self.channel.token_ttl
        await self.send_text(protocol.auth_response(frame.id, self.token))
        if first:
            assert self._session_opened is not None
            self._session_opened.set()
            self._session_opened = None
            self.peer_fqdn = _FQDNS.get(self.peer_host, self.peer_fqdn)
            self._on_open(self)
            assert self._nursery is not None
            self._pinger.add(self)
            self._nursery.start_soon(self._resolve_peer_fqdn)
            self._run_hook("connected")
            logger.info("%s opened a session", self.describe())

    async def _load_subscriptions(self) -> None:
        """ A client reconnecting with its client id lists the topics it subscribed to before, with
        their subscription times (zato_plugin_wsx.pubsub), before its row is written. """
        from zato_plugin_wsx.pubsub import subscriptions_at_open
        try:
            self.subscriptions.update(await subscriptions_at_open(self.server, self))
        except Exception:
            logger.exception("%s: its pub/sub subscriptions could not be read; they are not listed", self.describe())

    async def _authenticate(self, cid: str, username: Any, secret: Any) -> str | None:
        from zato.plugin_api import HTTPError
        try:
            return await self.server.authenticate_credentials(
                self.channel.security, username, secret, cid=cid, client=(self.peer_host, self.peer_port),
                path=self.channel.path)
        except HTTPError:
            return None

    async def _resolve_peer_fqdn(self) -> None:
        """ The peer's domain name, for the admin API: looked up in a worker thread, given up on
        after 2 s (the address stays). """
        if self.peer_host in _FQDNS:
            self.peer_fqdn = _FQDNS[self.peer_host]
            return
        with trio.move_on_after(2):
            try:
                name = await trio.to_thread.run_sync(socket.getfqdn, self.peer_host, abandon_on_cancel=True)
            except OSError:
                return
            self.peer_fqdn = _FQDNS[self.peer_host] = name
            if name != self.peer_host and not self.closed:  # other processes list it at once, not at the heartbeat
                from zato_plugin_wsx.registry import REGISTRY
                registry = REGISTRY.get(self.server)
                if registry is not None:
                    registry.rewrite(self)

    # ############################################################################################
    # Pings

    async def ping_due(self) -> None:
        """ Its next Ping is due (the Pinger calls this every ping_interval): the one before it,
        if still unanswered, is missed; past the threshold the connection is closed. """
        if self.closed:
            return
        if self.outstanding_ping is not None:
            self.pings_missed += 1
            logger.info("%s missed a ping (%d in a row, threshold %d)", self.describe(), self.pings_missed,
                        self.channel.pings_missed_threshold)
            if self.pings_missed >= self.channel.pings_missed_threshold:
                logger.warning("%s missed %d pings in a row; closing the connection", self.describe(),
                               self.pings_missed)
                return await self.close(protocol.CLOSE_PINGS_MISSED, "Pings missed")
        self.outstanding_ping = payload = protocol.ping_payload(protocol.new_id())
        try:
            with trio.move_on_after(self.channel.ping_interval):
                async with self._send_lock:
                    await self.raw_send({"type": PING, "bytes": payload})
        except Exception:
            await self.close(protocol.CLOSE_PINGS_MISSED, "Pings missed")

    def _on_pong(self, payload: bytes) -> None:
        if self.outstanding_ping is not None and payload == self.outstanding_ping:
            self.outstanding_ping = None
            self.pings_missed = 0
            if self.token is not None:
                self.expires_at = trio.current_time() + self.channel.token_ttl

    # ############################################################################################
    # Requests from the client

    async def _invoke(self, frame: ClientFrame) -> None:
        from zato.plugin_api import HTTPError
        cid = protocol.new_id()
        try:
            response = await self.server.invoke_service(
                self.channel.service, frame.data if frame.data is not None else {}, cid=cid,
                channel=self.channel.name, channel_type="web-socket", attributes={"wsx": self.request_info()},
                timeout=self.server.service_timeout)
            reply = protocol.ok_response(frame.id, response.payload, cid)
        except Exception as exc:
            status, message = _error_status(exc)
            if status >= 500:
                logger.error("cid=%s %s: service %r failed: %s", cid, self.describe(), self.channel.service,
                             exc, exc_info=not isinstance(exc, (HTTPError, trio.TooSlowError)))
            reply = protocol.error_response(frame.id, status, message, cid)
        finally:
            assert self._in_flight is not None
            self._in_flight.release()
        try:
            await self.send_text(reply)
        except ClientRequestFailed:
            logger.info("cid=%s %s went away before its response was sent", cid, self.describe())

    def request_info(self) -> WSXRequestInfo:
        return WSXRequestInfo(self.channel.name, self.pub_client_id, self.ext_client_id, self.ext_client_name,
                              f"{self.peer_host}:{self.peer_port}", self.connection_time, self.user, self)

    # ############################################################################################
    # Requests from the server

    async def invoke_client(self, data: Any, timeout: float = 5.0) -> Any:
        """ Sends `data` as zwsx.rqc and returns the client's answer (its client-response's data),
        or raises ClientRequestFailed after `timeout` seconds. """
        msg_id = protocol.new_id()
        answered, box = trio.Event(), []
        if self._waiting is None:
            self._waiting = {}
        self._waiting[msg_id] = (answered, box)
        try:
            await self.send_text(protocol.server_request(msg_id, data))
            with trio.move_on_after(timeout):
                await answered.wait()
            if not box:
                raise ClientRequestFailed(
                    f"{self.describe()} did not answer within {timeout:g} s" if not self.closed else
                    f"{self.describe()} closed before it answered")
            return box[0]
        finally:
            self._waiting.pop(msg_id, None)
            if not self._waiting:
                self._waiting = None

    async def send_to_client(self, data: Any) -> None:
        """ Sends `data` as zwsx.rqc without waiting for an answer (broadcasts). """
        await self.send_text(protocol.server_request(protocol.new_id(), data))

    def _on_client_response(self, frame: ClientFrame) -> None:
        in_reply_to = frame.meta.get("in_reply_to")
        waiting = self._waiting.get(in_reply_to) if isinstance(in_reply_to, str) and self._waiting else None
        if waiting is None:
            logger.info("%s answered %r, which no request is waiting for (it timed out, or was never sent)",
                        self.describe(), in_reply_to)
            return
        answered, box = waiting
        box.append(frame.data)
        answered.set()

    # ############################################################################################

    def _run_hook(self, event: str) -> None:
        hook = self.channel.hook_service
        if not hook or self.server.background_nursery is None:
            return
        payload = {"event": event, "channel_name": self.channel.name, "pub_client_id": self.pub_client_id,
                   "ext_client_id": self.ext_client_id, "ext_client_name": self.ext_client_name,
                   "peer_address": f"{self.peer_host}:{self.peer_port}", "connection_time": self.connection_time}

        async def run() -> None:
            try:
                await self.server.invoke_service(hook, payload, channel=self.channel.name)
            except Exception:
                logger.exception("%s: hook service %r failed on %s", self.describe(), hook, event)
        self.server.background_nursery.start_soon(run)

    def describe(self) -> str:
        who = f" {self.ext_client_id}" if self.ext_client_id else ""
        return f"WebSocket {self.pub_client_id}{who} from {self.peer_host}:{self.peer_port} on channel {self.channel.name!r}"

    def as_dict(self) -> dict[str, Any]:
        """ What the admin API lists. """
        return {"pub_client_id": self.pub_client_id, "channel_name": self.channel.name,
                "ext_client_id": self.ext_client_id, "ext_client_name": self.ext_client_name,
                "peer_address": f"{self.peer_host}:{self.peer_port}", "peer_fqdn": self.peer_fqdn,
                "forwarded_for": self.forwarded_for, "local_address": f"{self.local_host}:{self.local_port}",
                "user": self.user, "connection_time": self.connection_time,
                "pings_missed": self.pings_missed, "subscriptions": dict(self.subscriptions)}


_FQDNS: dict[str, str] = {}  # peer address -> its domain name, looked up once per process


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _client_name(value: Any) -> str | None:
    if isinstance(value, dict):  # as Zato: a dict is flattened to "key: value; key: value"
        return "; ".join(f"{key}: {value[key]}" for key in sorted(value))
    return _text(value)


def _error_status(exc: BaseException) -> tuple[int, str]:
    """ What a failed invocation answers: (status, message), never a traceback. """
    from zato.plugin_api import HTTPError, InputError, ServiceNotFound
    if isinstance(exc, ServiceNotFound):
        return 404, f"service {exc.args[0] if exc.args else ''!r} is not deployed"
    if isinstance(exc, InputError):
        return 400, f"Bad request: {exc}"
    if isinstance(exc, HTTPError):
        return exc.status, str(exc.details or "") or json.dumps(exc.status)
    if isinstance(exc, trio.TooSlowError):
        return 504, "the service did not finish in time"
    from zato.common.exception import ClientHTTPError
    if isinstance(exc, ClientHTTPError):  # raised by the service on purpose: its message is for the caller
        return exc.status, str(exc.msg or "")
    return 500, "Internal server error"
