""" Carrying notifications between the worker processes of one server.

The default transport links each worker to its supervisor through a socket pair that the
supervisor creates and hands down (its file descriptor is in `ZATO_NOTIFY_FD`); the
supervisor's hub forwards each line to every other worker. Messages are single-line JSON,
newline-terminated. A single-process server uses `LocalTransport`, which has no one to tell.
Plugins may replace the transport through the `notification_transport` hook.
"""

from __future__ import annotations

import logging
import socket
from typing import Awaitable, Callable

import trio

logger = logging.getLogger("zato.notify")

Deliver = Callable[[bytes], Awaitable[None]]


class LocalTransport:
    """ One process: the sender already handled its own notification, nobody else to tell. """

    async def publish(self, message: bytes) -> None:
        return None

    async def run(self, deliver: Deliver, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()


async def read_lines(stream: trio.abc.ReceiveStream, max_line: int = 16 * 1024 * 1024):
    """ Yields newline-terminated lines (without the newline) until the stream closes. """
    buffer = bytearray()
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return
        buffer += chunk
        while True:
            index = buffer.find(b"\n")
            if index < 0:
                break
            line = bytes(buffer[:index])
            del buffer[:index + 1]
            yield line
        if len(buffer) > max_line:
            raise ValueError(f"notification line over {max_line} bytes")


class SupervisorLinkTransport:
    """ A worker's end of the socket pair to its supervisor. """

    def __init__(self, fd: int, on_closed: Callable[[], None] | None = None) -> None:
        sock = socket.socket(fileno=fd)
        self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self._send_lock = trio.Lock()
        self.on_closed = on_closed  # the supervisor is gone (even after kill -9, the kernel closes its end)

    async def publish(self, message: bytes) -> None:
        async with self._send_lock:
            await self.stream.send_all(message + b"\n")

    async def run(self, deliver: Deliver, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for line in read_lines(self.stream):
            try:
                await deliver(line)
            except Exception:
                logger.exception("could not handle a notification: %.200r", line)
        logger.warning("the link to the supervisor closed: the supervisor is gone; this worker stops")
        if self.on_closed is not None:
            self.on_closed()


class Hub:
    """ The supervisor's side: forwards every line a worker sends to all the other workers. """

    def __init__(self) -> None:
        self.links: dict[int, trio.SocketStream] = {}
        self.on_control: Callable[[int, bytes], None] | None = None

    def new_link(self, worker_index: int) -> socket.socket:
        """ Makes a socket pair for a worker; returns the end to hand to the worker process. """
        ours, theirs = socket.socketpair()
        theirs.set_inheritable(True)
        old = self.links.pop(worker_index, None)
        if old is not None:
            old.socket.close()
        self.links[worker_index] = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        return theirs

    async def serve_link(self, worker_index: int) -> None:
        stream = self.links[worker_index]
        try:
            async for line in read_lines(stream):
                if line.startswith(b'{"action": "__'):
                    if self.on_control:
                        self.on_control(worker_index, line)
                    continue
                for index, other in list(self.links.items()):
                    if index != worker_index:
                        try:
                            await other.send_all(line + b"\n")
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            pass  # that worker is gone; it is restarted with a new link
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
