""" The baseline of bench/rest and bench/memory: a bare ASGI hello world, served by hypercorn's
trio worker (`hypercorn -k trio -w N bench/rest/baseline_app.py:app`). It reads the request
body, as any app answering a POST must, and answers a small JSON document, `{"hello": "world"}`
(what the quickstart's demo service answers). No routing beyond the paths below, no parsing, no
authentication, no logging: what HTTP costs on this machine with this server and this loop.

- any path not below: the body is answered on the trio loop, as for an `async def handle`
  (bench/rest uses `/`, bench/memory `/async`);
- `/sync`: the body is made in a worker thread (`trio.to_thread.run_sync`, with a
  `CapacityLimiter` of 64 like `[main] sync_service_threads`), as for a plain `def handle`
  (bench/memory);
- `POST /__probe__` (a JSON object, optionally with `"snapshot": PATH`): the heap statistics of
  bench/memory/probe.py (`heap_stats()`), so that memory hypercorn, trio or its thread cache
  take under the same load shows in bench/memory too.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import trio

PROBE_FILE = Path(__file__).resolve().parent.parent / "memory" / "probe.py"
_spec = importlib.util.spec_from_file_location("bench_memory_probe", PROBE_FILE)
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)  # at start, as in the server measured beside it: not counted as growth

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
    path = scope["path"]
    keep = path == "/__probe__"  # only the probe reads what was sent
    chunks, more_body = [], True
    while more_body:
        message = await receive()
        if keep:
            chunks.append(message.get("body", b""))
        more_body = message.get("more_body", False)
    if keep:
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
