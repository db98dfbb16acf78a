""" hypercorn's trio worker, made cheaper per request without forking it (issue 20).

hypercorn 0.18 serves each HTTP/1.1 request of a keep-alive connection with about sixteen trio
scheduler steps and two or three socket writes; a hand-written trio+h11 server needs two steps
and one write. The difference is in a few places of hypercorn's trio worker, which this module
replaces with subclasses that keep hypercorn's behaviour:

* `ZatoTCPServer` (hypercorn.trio.tcp_server.TCPServer): the keep-alive idle timeout is one
  long-lived watchdog task per connection whose deadline is moved, instead of a task cancelled
  and another `nursery.start()`ed on each request (about 57 µs a request); the send lock does
  not yield when nobody else holds it; a read is not wrapped in `fail_after(inf)` when no
  `read_timeout` is set; the watchdog ends with the reading, so a connection closed by its
  client does not linger for the rest of its keep-alive time.
* `ZatoTaskGroup` (hypercorn.trio.task_group.TaskGroup): an ASGI application receives its events
  from a deque that wakes the waiting task directly, instead of a trio memory channel
  (the same bound, `max_app_queue_size`, holds back the connection's reader when it is full).
* `ZatoH11Protocol` (hypercorn.protocol.h11.H11Protocol): the head of a response is held until
  its first body bytes or its end, so that a small response is one write; the empty write that
  ends a Content-Length body is skipped. It also sends a reason phrase on each status line and
  the Server header of the ASGIApp it serves (zato.server.http).

`install()` puts them where hypercorn's `serve` looks for them; the server calls it before it
serves. They are written against hypercorn 0.18 (the pin in pyproject.toml); another version
stops the start with a message saying what to install, since subclasses of internals that
changed could break HTTP in ways only a load shows.
"""

from __future__ import annotations

from collections import deque
from math import inf
from typing import Any

import trio

from zato.server.startup_callable import StartupError

SUPPORTED_HYPERCORN = (0, 18)  # the minor version the subclasses are written for
COALESCE_LIMIT = 65536  # a body larger than this is not copied to join the head of its response

_installed = False


class UnsupportedHypercornError(StartupError):
    """ The installed hypercorn is not the version this module's subclasses are written for
    (a start-up error: `zato start` prints it as it is). """


def hypercorn_version() -> str:
    from importlib.metadata import version
    return version("hypercorn")


def check_hypercorn_version(installed: str | None = None) -> None:
    """ Raises `UnsupportedHypercornError`, saying what to install, unless hypercorn is 0.18.x. """
    installed = installed or hypercorn_version()
    parts = tuple(int(part) for part in installed.split(".")[:2] if part.isdigit())
    if parts != SUPPORTED_HYPERCORN:
        wanted = ".".join(map(str, SUPPORTED_HYPERCORN))
        raise UnsupportedHypercornError(
            f"hypercorn {installed} is installed, but zato.server.http_transport subclasses the internals of "
            f"hypercorn {wanted}.x; install that version (pip install 'hypercorn>={wanted},<0.{SUPPORTED_HYPERCORN[1] + 1}'), "
            f"as pyproject.toml pins it, or port the subclasses in {__file__} to {installed}")


# ################################################################################################
# Small trio primitives that do not yield when they need not


class SendLock:
    """ A lock for one connection's writes that takes no scheduler step when it is free (trio's
    Lock checkpoints even then). A waiter is handed the lock directly on release, in order. """

    __slots__ = ("_held", "_waiters")

    def __init__(self) -> None:
        self._held = False
        self._waiters = trio.lowlevel.ParkingLot()

    async def __aenter__(self) -> None:
        if self._held:
            await self._waiters.park()  # on return the lock is ours: __aexit__ passed it on
        else:
            self._held = True

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._waiters:
            self._waiters.unpark()  # still held: it passes to the first waiter
        else:
            self._held = False

    def locked(self) -> bool:
        return self._held


class AppEvents:
    """ What the connection's reader gives an ASGI application (`receive`): a deque; `put`
    reschedules the one task waiting in `receive` directly. At most `max_size` events wait;
    a `put` past that waits until the application takes one, as a memory channel's send would. """

    __slots__ = ("_events", "_max_size", "_receiver", "_putters")

    def __init__(self, max_size: int) -> None:
        self._events: deque[Any] = deque()
        self._max_size = max(1, int(max_size))
        self._receiver: Any = None  # the task waiting in receive()
        self._putters = trio.lowlevel.ParkingLot()

    async def put(self, event: Any) -> None:
        while len(self._events) >= self._max_size:
            await self._putters.park()
        self._events.append(event)
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            trio.lowlevel.reschedule(receiver)

    async def receive(self) -> Any:
        if not self._events:
            if self._receiver is not None:
                raise trio.BusyResourceError("another task is already waiting for this ASGI application's events")
            self._receiver = trio.lowlevel.current_task()

            def abort(_raise_cancel: Any) -> Any:
                self._receiver = None
                return trio.lowlevel.Abort.SUCCEEDED
            await trio.lowlevel.wait_task_rescheduled(abort)
        event = self._events.popleft()
        if self._putters:
            self._putters.unpark()
        return event

    def statistics(self) -> dict[str, Any]:
        return {"events": len(self._events), "max_size": self._max_size,
                "receiver_waiting": self._receiver is not None, "putters_waiting": len(self._putters)}


# ################################################################################################
# The subclasses


def _subclasses() -> tuple[type, type, type]:
    """ (TCP server, task group, HTTP/1.1 protocol); made on first use, so that importing this
    module does not import hypercorn. """
    import h11
    from hypercorn.events import Closed, RawData, Updated
    from hypercorn.protocol.h11 import H11Protocol
    from hypercorn.protocol.events import Data
    from hypercorn.trio.task_group import TaskGroup, _handle
    from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
    from hypercorn.protocol import ProtocolWrapper
    from hypercorn.typing import ConnectionState
    from hypercorn.utils import parse_socket_addr

    from zato.server.http import REASON_PHRASES, _use_server_header

    class ZatoTaskGroup(TaskGroup):
        """ hypercorn's task group of a connection; ASGI events go through `AppEvents`. """

        async def spawn_app(self, app: Any, config: Any, scope: Any, send: Any) -> Any:
            events = AppEvents(config.max_app_queue_size)
            self._nursery.start_soon(_handle, app, config, scope, events.receive, send,
                                     trio.to_thread.run_sync, trio.from_thread.run)
            return events.put

    class IdleWatchdog:
        """ The keep-alive idle timeout of one connection: one task for the connection's life.
        `restart` (the connection is idle) and `stop` (a request came) only move its deadline,
        taking no scheduler step. As hypercorn's idle task, an idle connection is closed at
        `keep_alive_timeout` or when the worker terminates (a graceful stop), a busy one never. """

        def __init__(self, server: "ZatoTCPServer") -> None:
            self._server = server
            self._idle = False
            self._deadline = inf
            self._scope: trio.CancelScope | None = None
            self.cancel_scope = trio.CancelScope()  # ends the watchdog with the connection

        async def restart(self, _task_group: Any = None, _action: Any = None) -> None:
            self._idle = True
            self._deadline = trio.current_time() + self._server.config.keep_alive_timeout
            scope = self._scope
            if scope is not None:
                scope.deadline = self._deadline
                if self._server.context.terminated.is_set():
                    scope.cancel()  # the worker is stopping: an idle connection closes now

        async def stop(self) -> None:
            self._idle = False
            self._deadline = inf
            if self._scope is not None:
                self._scope.deadline = inf

        async def run(self) -> None:
            terminated = self._server.context.terminated
            with self.cancel_scope:
                while True:
                    with trio.CancelScope(deadline=self._deadline) as scope:
                        self._scope = scope
                        if terminated.is_set():
                            if self._idle:
                                break
                            await trio.sleep_forever()  # until the response is over: restart()
                        else:
                            await terminated.wait()
                    self._scope = None
                    # woken by the deadline, by the worker terminating, or by restart(): only an
                    # idle connection past its deadline or in a stopping worker is closed
                    if self._idle and (terminated.is_set() or trio.current_time() >= self._deadline):
                        break
                self._scope = None
                with trio.CancelScope(shield=True):
                    await self._server._initiate_server_close()

    class ZatoTCPServer(TCPServer):
        """ hypercorn's trio TCP connection, with the cheaper watchdog, lock, reads and task group. """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.send_lock = SendLock()
            self.idle_task = IdleWatchdog(self)  # type: ignore[assignment]

        async def run(self) -> None:
            # TCPServer.run with our task group and a watchdog started once
            try:
                try:
                    with trio.fail_after(self.config.ssl_handshake_timeout):
                        await self.stream.do_handshake()
                except (trio.BrokenResourceError, trio.TooSlowError):
                    return  # handshake failed
                alpn_protocol = self.stream.selected_alpn_protocol()
                socket = self.stream.transport_stream.socket
                ssl = True
            except AttributeError:  # not TLS
                alpn_protocol = "http/1.1"
                socket = self.stream.socket
                ssl = False

            try:
                client = parse_socket_addr(socket.family, socket.getpeername())
                server = parse_socket_addr(socket.family, socket.getsockname())
                async with ZatoTaskGroup() as task_group:
                    self._task_group = task_group
                    self.protocol = ProtocolWrapper(self.app, self.config, self.context, task_group,
                                                    ConnectionState(self.state), ssl, client, server,
                                                    self.protocol_send, alpn_protocol)
                    await self.protocol.initiate()
                    await self.idle_task.restart()
                    task_group._nursery.start_soon(self.idle_task.run)
                    try:
                        await self._read_data()
                    finally:
                        # nothing more comes in: the responses in flight end the connection
                        # (their streams see Closed), the watchdog has nothing left to watch
                        self.idle_task.cancel_scope.cancel()
            except OSError:
                pass
            finally:
                await self._close()

        async def protocol_send(self, event: Any) -> None:
            kind = type(event)
            if kind is RawData:
                async with self.send_lock:
                    try:
                        # shielded as in hypercorn: a write cut half way would corrupt the stream
                        with trio.CancelScope(shield=True):
                            await self.stream.send_all(event.data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        await self.protocol.handle(Closed())
            elif kind is Updated:
                if event.idle:
                    await self.idle_task.restart()
                else:
                    await self.idle_task.stop()
            else:
                await super().protocol_send(event)

        async def _read_data(self) -> None:
            read_timeout = self.config.read_timeout
            receive_some = self.stream.receive_some
            handle = self.protocol.handle
            while True:
                try:
                    if read_timeout:
                        with trio.fail_after(read_timeout):
                            data = await receive_some(MAX_RECV)
                    else:
                        data = await receive_some(MAX_RECV)
                except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                    break
                await handle(RawData(data))
                if not data:
                    break
            await self.protocol.handle(Closed())

    send_h11_event = H11Protocol._send_h11_event
    response_types = (h11.Response, h11.InformationalResponse)

    class ZatoH11Protocol(H11Protocol):
        """ hypercorn's HTTP/1.1 protocol: a response's head goes out with its first body bytes;
        reason phrases; our Server header. """

        def __init__(self, app: Any, config: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(app, config, *args, **kwargs)
            self._pending_head = b""  # a response's head, written with what follows it
            if "_zato_server_header" not in config.__dict__:
                _use_server_header(config, getattr(app, "app", None))

        async def _send_h11_event(self, event: Any) -> None:
            kind = type(event)
            if kind in response_types and not event.reason:
                # h11's events are frozen; this is how h11 itself sets their fields
                object.__setattr__(event, "reason", REASON_PHRASES.get(event.status_code, b""))
            if kind is not h11.Response:
                if kind is h11.Data or kind is h11.EndOfMessage:
                    return await self._send_with_head(event)
                await self._flush_head()
                return await send_h11_event(self, event)
            try:
                self._pending_head += self.connection.send(event)
            except h11.LocalProtocolError:
                if self.connection.their_state != h11.ERROR:
                    raise

        async def _send_with_head(self, event: Any) -> None:
            try:
                data = self.connection.send(event)
            except h11.LocalProtocolError:
                if self.connection.their_state != h11.ERROR:
                    raise
                return await self._flush_head()
            head = self._pending_head
            if head:
                self._pending_head = b""
                if len(data) > COALESCE_LIMIT:
                    await self.send(RawData(data=head))
                else:
                    data = head + data
            if data:  # the end of a Content-Length body is b"": nothing to write
                await self.send(RawData(data=data))

        async def _flush_head(self) -> None:
            head = self._pending_head
            if head:
                self._pending_head = b""
                await self.send(RawData(data=head))

        async def stream_send(self, event: Any) -> None:
            if self._pending_head and type(event) is Data:
                await self._flush_head()  # WebSocket bytes passing through: the head goes first
            await super().stream_send(event)

        async def _maybe_recycle(self) -> None:
            await self._flush_head()  # a response that ended without its body still has its head sent
            await super()._maybe_recycle()

    return ZatoTCPServer, ZatoTaskGroup, ZatoH11Protocol


def install() -> None:
    """ Makes hypercorn's trio `serve` in this process use the subclasses above (idempotent).
    Raises `UnsupportedHypercornError` if hypercorn is not 0.18.x. """
    global _installed, ZatoTCPServer, ZatoTaskGroup, ZatoH11Protocol
    if _installed:
        return
    check_hypercorn_version()
    import hypercorn.protocol
    import hypercorn.trio.run
    ZatoTCPServer, ZatoTaskGroup, ZatoH11Protocol = _subclasses()
    for cls in (ZatoTCPServer, ZatoTaskGroup, ZatoH11Protocol):
        cls.__qualname__ = cls.__name__  # reprs name them as this module's
    hypercorn.trio.run.TCPServer = ZatoTCPServer  # what worker_serve makes for each connection
    hypercorn.protocol.H11Protocol = ZatoH11Protocol  # what ProtocolWrapper makes for each connection
    _installed = True


def installed() -> bool:
    return _installed


ZatoTCPServer: Any = None  # set by install()
ZatoTaskGroup: Any = None
ZatoH11Protocol: Any = None
