""" The wsx plugin's test kit: a WebSocket client speaking Zato's WSX protocol over trio (wsproto
on a TCP stream), for tests of WebSocket channels and services, the plugin's and users' own.

```python
from zato_plugin_wsx.testing import WSXClient

async with await WSXClient.connect(server.address, "/api/ws") as client:
    await client.create_session("user", "secret", client_id="c1")
    reply = await client.invoke({"customer_id": 1})       # the zwsx.rspok (or rsperr) frame
    request = await client.next_request()                 # a zwsx.rqc the server sent
    await client.respond(request, {"ok": True})
```

It answers Pings with Pongs unless `answer_pings=False` (a client that stopped answering).
Needs wsproto: `pip install zato-plugin-wsx[test]`.
"""

from __future__ import annotations

import json
from collections import deque
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import trio

try:
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import (
        AcceptConnection, BytesMessage, CloseConnection, Ping, Pong, RejectConnection, Request, TextMessage,
    )
except ImportError as exc:  # pragma: no cover - a dev dependency
    raise ImportError("zato_plugin_wsx.testing needs wsproto: pip install zato-plugin-wsx[test]") from exc


class WSXClosed(Exception):
    """ The server closed the connection: `code` and `reason` of its Close frame (1006: none came). """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed by the server with {code} {reason!r}")
        self.code, self.reason = code, reason


class WSXRefused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"the WebSocket handshake was refused with {status}")
        self.status = status


class WSXClient:
    """ One client connection. Frames are dicts; `frames` keeps what arrived and was not yet taken. """

    def __init__(self, stream: trio.SocketStream, answer_pings: bool = True) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.answer_pings = answer_pings
        self.token: str | None = None
        self.client_id: str | None = None
        self.client_name: str | None = None
        self.pings: list[bytes] = []          # payloads of the Pings received
        self.close_code: int | None = None
        self.close_reason = ""
        self._events: deque = deque()
        self._frames: deque = deque()
        self._counter = 0

    @classmethod
    async def connect(cls, address: str, path: str, *, answer_pings: bool = True) -> "WSXClient":
        url = urlsplit(address)
        client = cls(await trio.open_tcp_stream(url.hostname, url.port), answer_pings)
        await client.stream.send_all(client.ws.send(Request(host=url.netloc, target=path)))
        event = await client._next_event()
        if isinstance(event, RejectConnection):
            await client.stream.aclose()
            raise WSXRefused(event.status_code)
        assert isinstance(event, AcceptConnection), event
        return client

    async def __aenter__(self) -> "WSXClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    # ############################################################################################

    async def _next_event(self) -> Any:
        while not self._events:
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            self.ws.receive_data(data or None)
            self._events.extend(self.ws.events())
            if not data and not self._events:
                raise WSXClosed(self.close_code or 1006, self.close_reason)
        return self._events.popleft()

    async def receive(self) -> dict[str, Any]:
        """ The next frame from the server; raises WSXClosed when it closed the connection. """
        if self._frames:
            return self._frames.popleft()
        text = ""
        while True:
            event = await self._next_event()
            if isinstance(event, Ping):
                self.pings.append(bytes(event.payload))
                if self.answer_pings:
                    await self._send(event.response())
            elif isinstance(event, TextMessage):
                text += event.data
                if event.message_finished:
                    return json.loads(text)
            elif isinstance(event, BytesMessage):
                raise AssertionError(f"the server sent a binary message: {event.data[:100]!r}")
            elif isinstance(event, CloseConnection):
                self.close_code, self.close_reason = event.code, event.reason or ""
                try:
                    await self._send(event.response())
                except Exception:
                    pass
                await self.stream.aclose()
                raise WSXClosed(event.code, event.reason or "")
            elif isinstance(event, Pong):
                continue

    async def receive_until(self, predicate: Any) -> dict[str, Any]:
        """ The first frame `predicate(frame)` is true of; the others stay for `receive`. """
        skipped = []
        try:
            while True:
                frame = await self.receive()
                if predicate(frame):
                    return frame
                skipped.append(frame)
        finally:
            self._frames.extendleft(reversed(skipped))

    async def _send(self, event: Any) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def send_text(self, text: str) -> None:
        await self._send(TextMessage(data=text))

    async def send_frame(self, action: str, data: Any = None, **meta: Any) -> str:
        """ Sends one client frame; returns its meta.id. """
        self._counter += 1
        msg_id = meta.pop("id", None) or f"test.{self._counter}"
        header = {"action": action, "id": msg_id, "timestamp": datetime.now(timezone.utc).isoformat(),
                  "token": meta.pop("token", self.token), "client_id": self.client_id,
                  "client_name": self.client_name, **meta}
        await self.send_text(json.dumps({"data": data if data is not None else {}, "meta": header}))
        return msg_id

    async def reply_to(self, msg_id: str) -> dict[str, Any]:
        return await self.receive_until(lambda frame: frame["meta"].get("in_reply_to") == msg_id)

    # ############################################################################################
    # The protocol

    async def create_session(self, username: str | None = None, secret: str | None = None, *,
                             client_id: str = "test-client", client_name: str = "Test client") -> dict[str, Any]:
        """ Opens a session; returns the server's reply (zwsx.rspa with data.token, or zwsx.merr). """
        self.client_id, self.client_name = client_id, client_name
        msg_id = await self.send_frame("create-session", {}, username=username, secret=secret, token=None)
        frame = await self.receive_until(lambda f: f["meta"].get("in_reply_to") == msg_id or
                                         f["meta"].get("msg_type") == "zwsx.merr")
        if frame["meta"].get("msg_type") == "zwsx.rspa":
            self.token = frame["data"]["token"]
        return frame

    async def invoke(self, data: Any) -> dict[str, Any]:
        """ invoke-service; returns the reply frame (zwsx.rspok or zwsx.rsperr). """
        return await self.reply_to(await self.send_frame("invoke-service", data))

    async def next_request(self) -> dict[str, Any]:
        """ The next request the server sent (zwsx.rqc or zwsx.psrq). """
        return await self.receive_until(lambda f: f["meta"].get("msg_type") in ("zwsx.rqc", "zwsx.psrq"))

    async def respond(self, request: dict[str, Any], answer: Any) -> None:
        """ client-response to a server's request, as zato-websocket-client sends it. """
        await self.send_frame("client-response", {"response": answer}, in_reply_to=request["meta"]["id"])

    async def aclose(self, code: int = 1000) -> None:
        if self.close_code is not None:
            return
        try:
            await self._send(CloseConnection(code=code))
            with trio.move_on_after(5):
                while True:
                    await self.receive()
        except (WSXClosed, trio.BrokenResourceError, trio.ClosedResourceError, Exception):
            pass
        await self.stream.aclose()
