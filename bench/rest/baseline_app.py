""" The baseline of bench/rest: a bare ASGI hello world, served by hypercorn's trio worker
(`hypercorn -k trio -w N bench/rest/baseline_app.py:app`). It reads the request body, as any
app answering a POST must, and answers a small JSON document. No routing, no parsing, no
authentication, no logging: what HTTP costs on this machine with this server and this loop.
"""

BODY = b'{"hello": "world"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    more_body = True
    while more_body:
        message = await receive()
        more_body = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
