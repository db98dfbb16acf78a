""" The baseline of bench/memory: a bare ASGI app served by hypercorn's trio worker
(`hypercorn -k trio -w 1 bench/memory/baseline_app.py:app`) that answers what the quickstart's
demo service answers, `{"hello": "world"}`, in the two ways our server runs services:

- `/sync`: the body is made in a worker thread (`trio.to_thread.run_sync`, with a
  `CapacityLimiter` of 64 like `[main] sync_service_threads`), as for a plain `def handle`;
- any other path: on the trio loop, as for an `async def handle`;
- `POST /__probe__` (a JSON object, optionally with `"snapshot": PATH`): `probe.heap_stats()`.

So memory that hypercorn, trio or its thread cache take under the same load shows here too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe  # noqa: E402

BODY = json.dumps({"hello": "world"}).encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
SYNC_LIMITER: trio.CapacityLimiter | None = None


def make_body() -> bytes:
    return json.dumps({"hello": "world"}).encode()


async def app(scope, receive, send):
    global SYNC_LIMITER
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    chunks, more_body = [], True
    while more_body:
        message = await receive()
        chunks.append(message.get("body", b""))
        more_body = message.get("more_body", False)
    path = scope["path"]
    if path == "/__probe__":
        request = json.loads(b"".join(chunks) or b"{}")
        body = json.dumps(probe.heap_stats(request.get("snapshot"))).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    elif path == "/sync":
        if SYNC_LIMITER is None:
            SYNC_LIMITER = trio.CapacityLimiter(64)
        body, headers = await trio.to_thread.run_sync(make_body, limiter=SYNC_LIMITER), HEADERS
    else:
        body, headers = BODY, HEADERS
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
