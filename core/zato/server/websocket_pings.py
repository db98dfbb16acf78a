""" WebSocket pings for ASGI applications. ASGI has no message for a WebSocket Ping frame, so an
application cannot tell a live peer from a dead one whose TCP connection has not yet failed.
Zato's WebSocket channels do exactly that (a Ping every `ping_interval`, the connection closed
after `pings_missed_threshold` Pings without a Pong), so this server's hypercorn streams take
two more messages, advertised as `scope["extensions"]["zato"]["websocket_ping"]`:

* the application sends `{"type": "zato.websocket.ping", "bytes": b"..."}`: a Ping frame with
  that payload (at most 125 bytes, as RFC 6455 says) goes to the peer;
* from its first Ping on, the application receives `{"type": "zato.websocket.pong", "bytes":
  b"..."}` for each Pong frame the peer sends (an application that never pings never sees one).

`install()` puts the stream class into hypercorn's HTTP/1.1 and HTTP/2 protocols; the server
calls it before it serves.
"""

from __future__ import annotations

from typing import Any

PING = "zato.websocket.ping"
PONG = "zato.websocket.pong"
MAX_PAYLOAD = 125

_installed = False


def _stream_class() -> type:
    from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
    from wsproto.events import Ping, Pong

    class PingingWSStream(WSStream):
        """ hypercorn's WebSocket stream, plus Pings the application sends and Pongs it receives. """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.zato_pinging = False  # the application sent a Ping: it wants the Pongs
            self.zato_pongs: list[bytes] = []

        async def app_send(self, message: Any) -> None:
            if message is not None and message.get("type") == PING:
                payload = bytes(message.get("bytes") or b"")
                if len(payload) > MAX_PAYLOAD:
                    raise ValueError(f"a WebSocket Ping carries at most {MAX_PAYLOAD} bytes, not {len(payload)}")
                if not self.closed and self.state == ASGIWebsocketState.CONNECTED:
                    self.zato_pinging = True
                    await self._send_wsproto_event(Ping(payload=payload))
                return
            await super().app_send(message)

        async def _accept(self, message: Any) -> None:
            await super()._accept(message)
            events = self.connection.events

            def events_without_pongs() -> Any:
                for event in events():
                    if isinstance(event, Pong):
                        if self.zato_pinging:
                            self.zato_pongs.append(bytes(event.payload))
                    else:
                        yield event
            self.connection.events = events_without_pongs  # type: ignore[method-assign]

        async def _handle_events(self) -> None:
            await super()._handle_events()
            while self.zato_pongs and not self.closed and self.app_put is not None:
                await self.app_put({"type": PONG, "bytes": self.zato_pongs.pop(0)})

    return PingingWSStream


def install() -> None:
    """ Makes hypercorn's HTTP/1.1 and HTTP/2 connections use the stream with pings. """
    global _installed
    if _installed:
        return
    import hypercorn.protocol.h11 as h11
    import hypercorn.protocol.h2 as h2
    stream = _stream_class()
    h11.WSStream = stream
    h2.WSStream = stream
    _installed = True
