""" The baseline of bench/wsx: a bare ASGI WebSocket echo served by `hypercorn.trio.serve` in its
own process. It accepts every WebSocket and sends each message back as it came: no routing, no
sessions, no parsing, no authentication, no logging: what a WebSocket costs on this machine with
this server and this loop.

    python bench/wsx/echo_app.py ADDRESS_FILE [--ping-interval SECONDS]

It binds 127.0.0.1 on a free port and writes `host:port` to ADDRESS_FILE once it listens. With
`--ping-interval`, hypercorn itself pings every WebSocket peer that often
(`websocket_ping_interval`), as the baseline of the cost of pings.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import trio
from hypercorn.config import Config
from hypercorn.trio import serve


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.receive":
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
        elif message["type"] == "websocket.disconnect":
            return


async def main(address_file: Path, ping_interval: float | None) -> None:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.websocket_ping_interval = ping_interval
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: serve(app, config, task_status=task_status))
        address = binds[0].split("://", 1)[-1]
        partial = address_file.with_suffix(".partial")
        partial.write_text(address)
        os.replace(partial, address_file)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("address_file", type=Path)
    parser.add_argument("--ping-interval", type=float, default=None)
    args = parser.parse_args()
    trio.run(main, args.address_file, args.ping_interval)
