""" Real HTTP peers for tests: an ASGI app served by hypercorn on 127.0.0.1, port 0. """

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import trio


@asynccontextmanager
async def serve_asgi(app: Any, certificates: Any = None) -> AsyncIterator[str]:
    """ Serves `app` with hypercorn on 127.0.0.1, port 0; yields its address (http://..., or
    https://... with `certificates`, a `TestCertificates`: TLS with its server certificate). """
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    if certificates is not None:
        config.certfile, config.keyfile = str(certificates.cert_file), str(certificates.key_file)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: serve(app, config, shutdown_trigger=stop.wait,
                                                              task_status=task_status))
        try:
            yield binds[0]
        finally:
            stop.set()


async def handle_lifespan(receive: Any, send: Any) -> None:
    """ The ASGI lifespan protocol for test peers: start-up and shutdown complete at once. """
    while True:
        message = await receive()
        await send({"type": message["type"] + ".complete"})
        if message["type"] == "lifespan.shutdown":
            return


def text_app(text: str, content_type: bytes = b"text/plain") -> Any:
    """ An ASGI app answering every request with `text`. """
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await handle_lifespan(receive, send)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
        await send({"type": "http.response.body", "body": text.encode("utf-8")})
    return app
