""" The client side of a WebSocket connection, for outgoing WSX connections (zato_plugin_wsx.outgoing):
wsproto over a trio TCP stream (TLS for wss://), one reader task dispatching what arrives.

    remote = await RemoteEndpoint.open("ws://host:17010/ws/gateway", name="crm", tls_context=None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(remote.read_frames, on_frame)       # until the remote end closes
        token = await remote.create_session(username, secret, client_id, client_name, timeout)
        data = await remote.invoke({"service": "...", "request": {...}}, timeout)

* A Zato remote end (`is_zato`): `create_session`, `invoke` (invoke-service, answered by
  zwsx.rspok/rsperr matched on `in_reply_to`) and `respond` (client-response to a zwsx.rqc).
  Frames the remote end sends on its own (zwsx.rqc, zwsx.psrq) go to `on_frame(frame)`.
* Any other end: `send_text`, and `on_frame` gets what arrives (JSON parsed when it is JSON).
* Pings from the remote end are answered; `ping()` sends one and `pongs` counts the answers.

Errors say which connection and why: `RemoteError` for what the remote end answered (a refused
handshake, 403 for the session, a service's error status), `RemoteGone` for a closed or broken
connection.
"""

from __future__ import annotations

import json
import ssl
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection, BytesMessage, CloseConnection, Ping, Pong, RejectConnection, Request, TextMessage,
)

from zato_plugin_wsx import protocol

RECEIVE_BYTES = 65536


class RemoteError(Exception):
    """ The remote end answered with an error: `status` (HTTP-like) and its message. """

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class RemoteGone(Exception):
    """ The connection closed or broke; `code` of the Close frame (1006: none came). """

    def __init__(self, message: str, code: int = 1006) -> None:
        super().__init__(message)
        self.code = code


class RemoteEndpoint:
    """ One open WebSocket connection to a remote end. `name` goes into every error message. """

    def __init__(self, stream: trio.abc.Stream, name: str, address: str) -> None:
        self.stream, self.name, self.address = stream, name, address
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.token: str | None = None
        self.client_id: str | None = None
        self.client_name: str | None = None
        self.closed: RemoteGone | None = None
        self.pongs = 0
        self._send_lock = trio.Lock()
        self._waiting: dict[str, tuple[trio.Event, list[dict[str, Any]]]] = {}  # our request id -> (answered, [frame])

    def describe(self) -> str:
        return f"outgoing WebSocket connection {self.name!r} ({self.address})"

    # ############################################################################################
    # Opening

    @classmethod
    async def open(cls, address: str, *, name: str, tls_context: ssl.SSLContext | None, timeout: float,
                   headers: list[tuple[bytes, bytes]] | None = None) -> "RemoteEndpoint":
        """ Connects and completes the handshake, or raises RemoteError / OSError saying why. """
        url = urlsplit(address)
        port = url.port or (443 if url.scheme == "wss" else 80)
        where = f"outgoing WebSocket connection {name!r} ({address})"
        with trio.fail_after(timeout):
            try:
                stream: trio.abc.Stream = await trio.open_tcp_stream(url.hostname or "127.0.0.1", port)
            except OSError as exc:
                raise OSError(f"{where}: cannot connect to {url.hostname}:{port} ({exc.strerror or exc})") from None
            if url.scheme == "wss":
                stream = trio.SSLStream(stream, tls_context or ssl.create_default_context(),
                                        server_hostname=url.hostname)
                try:
                    await stream.do_handshake()
                except (trio.BrokenResourceError, ssl.SSLError) as exc:
                    await stream.aclose()
                    cause = exc.__cause__ or exc
                    raise OSError(f"{where}: the TLS handshake failed ({cause}); check the remote end's certificate "
                                  f"and tls_ca_file") from None
            remote = cls(stream, name, address)
            target = (url.path or "/") + (f"?{url.query}" if url.query else "")
            await remote._send(Request(host=url.netloc, target=target, extra_headers=headers or []))
            event = await remote._next_event()
        if isinstance(event, RejectConnection):
            await remote.stream.aclose()
            raise RemoteError(f"{where}: the remote end refused the WebSocket handshake with HTTP "
                              f"{event.status_code}; check the address's path", event.status_code)
        if not isinstance(event, AcceptConnection):
            await remote.stream.aclose()
            raise RemoteError(f"{where}: the remote end did not complete the WebSocket handshake ({event!r})")
        return remote

    # ############################################################################################
    # Reading

    async def _next_event(self) -> Any:
        while True:
            for event in self.ws.events():
                return event
            try:
                data = await self.stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise RemoteGone(f"{self.describe()}: the connection broke ({exc})") from None
            if not data:
                raise RemoteGone(f"{self.describe()}: the remote end closed the connection without a Close frame")
            self.ws.receive_data(data)

    async def read_frames(self, on_frame: Callable[[Any], Awaitable[None]]) -> None:
        """ Reads until the connection ends (then raises RemoteGone): answers Pings, hands each
        response to the request waiting for it and every other message to `on_frame`. """
        text: list[str] = []
        try:
            while True:
                event = await self._next_event()
                if isinstance(event, TextMessage):
                    text.append(event.data)
                    if event.message_finished:
                        message, text = "".join(text), []
                        await self._dispatch(message, on_frame)
                elif isinstance(event, BytesMessage):
                    if event.message_finished:
                        await on_frame(bytes(event.data))
                elif isinstance(event, Ping):
                    await self._send(event.response())
                elif isinstance(event, Pong):
                    self.pongs += 1
                elif isinstance(event, CloseConnection):
                    try:
                        await self._send(event.response())
                    except Exception:
                        pass
                    raise RemoteGone(f"{self.describe()}: the remote end closed the connection with {event.code} "
                                     f"{event.reason or ''}".rstrip(), event.code)
        except RemoteGone as exc:
            self.closed = exc
            for answered, _ in self._waiting.values():
                answered.set()
            raise

    async def _dispatch(self, text: str, on_frame: Callable[[Any], Awaitable[None]]) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            return await on_frame(text)
        meta = frame.get("meta") if isinstance(frame, dict) else None
        in_reply_to = meta.get("in_reply_to") if isinstance(meta, dict) else None
        waiting = self._waiting.get(in_reply_to) if isinstance(in_reply_to, str) else None
        if waiting is not None:
            answered, box = waiting
            box.append(frame)
            answered.set()
            return
        if isinstance(meta, dict) and meta.get("msg_type") == protocol.FORBIDDEN and self._waiting:
            for answered, box in self._waiting.values():  # a refusal names no request: it answers them all
                box.append(frame)
                answered.set()
            return
        await on_frame(frame)

    # ############################################################################################
    # Writing

    async def _send(self, event: Any) -> None:
        data = self.ws.send(event)
        async with self._send_lock:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise RemoteGone(f"{self.describe()}: the connection broke while sending ({exc})") from None

    async def send_text(self, text: str) -> None:
        if self.closed is not None:
            raise RemoteGone(str(self.closed), self.closed.code)
        await self._send(TextMessage(data=text))

    async def ping(self, payload: bytes) -> None:
        await self._send(Ping(payload=payload))

    def _frame(self, action: str, data: Any, **meta: Any) -> tuple[str, str]:
        msg_id = protocol.new_id()
        header = {"action": action, "id": msg_id, "timestamp": datetime.now(timezone.utc).isoformat(),
                  "token": self.token, "client_id": self.client_id, "client_name": self.client_name, **meta}
        return msg_id, json.dumps({"data": data if data is not None else {}, "meta": header})

    async def request(self, action: str, data: Any, timeout: float, **meta: Any) -> dict[str, Any]:
        """ Sends a request and returns the frame answering it; RemoteGone if the connection
        ended first, TooSlowError past `timeout`. """
        msg_id, text = self._frame(action, data, **meta)
        answered, box = trio.Event(), []
        self._waiting[msg_id] = (answered, box)
        try:
            await self.send_text(text)
            with trio.fail_after(timeout):
                await answered.wait()
        finally:
            self._waiting.pop(msg_id, None)
        if not box:
            assert self.closed is not None
            raise RemoteGone(f"{self.describe()}: the connection ended before the answer came ({self.closed})",
                             self.closed.code)
        return box[0]

    # ############################################################################################
    # Zato's protocol

    async def create_session(self, username: str | None, secret: str | None, *, client_id: str, client_name: str,
                             timeout: float) -> str:
        """ Opens a session; returns its token, or raises RemoteError (403: the credentials). """
        self.client_id, self.client_name = client_id, client_name
        frame = await self.request(protocol.CREATE_SESSION, {}, timeout, username=username, secret=secret, token=None)
        meta = frame.get("meta") or {}
        if meta.get("msg_type") != protocol.AUTH_RESPONSE or not isinstance(frame.get("data"), dict):
            status = int(meta.get("status") or 0)
            raise RemoteError(f"{self.describe()}: the remote end refused the session with {status} "
                              f"({frame.get('data')!r}); check the credentials of the connection's security "
                              f"definition against the remote channel's", status)
        self.token = frame["data"].get("token")
        return self.token or ""

    async def invoke(self, data: Any, timeout: float) -> Any:
        """ invoke-service with `data`; returns the remote service's response, or raises
        RemoteError with the remote status and message. """
        frame = await self.request(protocol.INVOKE_SERVICE, data, timeout)
        meta = frame.get("meta") or {}
        if meta.get("msg_type") == protocol.OK_RESPONSE:
            return frame.get("data")
        status = int(meta.get("status") or 0)
        message = meta.get("error_message") or frame.get("data")
        cid = (frame.get("data") or {}).get("cid") if isinstance(frame.get("data"), dict) else None
        raise RemoteError(f"{self.describe()}: the remote end answered {status}: {message}"
                          + (f" (remote cid {cid})" if cid else ""), status)

    async def respond(self, in_reply_to: str, response: Any) -> None:
        """ client-response to a request of the remote end (zwsx.rqc). """
        _, text = self._frame(protocol.CLIENT_RESPONSE, {"response": response}, in_reply_to=in_reply_to)
        await self.send_text(text)

    async def aclose(self, code: int = protocol.CLOSE_NORMAL, reason: str = "") -> None:
        """ A Close frame (at most a second to send it), then the stream is closed. """
        if self.closed is None:
            with trio.move_on_after(1):
                try:
                    await self._send(CloseConnection(code=code, reason=reason))
                except Exception:
                    pass
        with trio.CancelScope(shield=True):
            try:
                await self.stream.aclose()
            except Exception:
                pass
