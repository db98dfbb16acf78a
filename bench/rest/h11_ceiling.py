""" The ceiling of bench/rest: a minimal hand-written trio + h11 hello world server, the upper
bound of what a trio server can do on this machine for this request.

    python bench/rest/h11_ceiling.py --bind 127.0.0.1:PORT [--workers N]

One task per connection (`trio.serve_listeners`), one `h11.Connection` per task, keep-alive,
and every response (headers, body and end of message) written with one `send_all`: two
scheduler steps and one `sendto` per request, where stock hypercorn-trio takes about sixteen
steps and two sends. It reads each request's body (as any server answering a POST must) and
answers `{"hello": "world"}` to any method and path, like baseline_app.py. No ASGI, no routing,
no logging, no timeouts: nothing a real server could go without is measured beyond HTTP/1.1.

With `--workers N` the parent binds and listens, then forks N workers that accept on the same
socket (as `hypercorn -w N` shares its sockets with its workers) and only waits: the same
process layout as the baseline, so CPU time and RSS are comparable. SIGTERM or SIGINT to the
parent stops the workers.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys

import h11
import trio

BODY = json.dumps({"hello": "world"}).encode()
HEADERS = [("content-type", "application/json"), ("content-length", str(len(BODY)))]
RECEIVE_SIZE = 65536


async def handle_connection(stream: trio.SocketStream) -> None:
    """ Answers every request on one connection until the client closes it (or breaks HTTP). """
    connection = h11.Connection(h11.SERVER)
    try:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(RECEIVE_SIZE))  # b"" at EOF: ConnectionClosed next
            elif isinstance(event, h11.EndOfMessage):
                # One write per response: headers, body and the (empty) end of message together.
                await stream.send_all(connection.send(h11.Response(status_code=200, headers=HEADERS, reason=b"OK"))
                                      + connection.send(h11.Data(data=BODY)) + connection.send(h11.EndOfMessage()))
                if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                    break  # Connection: close, or HTTP/1.0 without keep-alive
                connection.start_next_cycle()
            elif isinstance(event, (h11.ConnectionClosed, h11.PAUSED)):
                break
            # h11.Request and h11.Data: nothing to do until the end of the message
    except h11.RemoteProtocolError as exc:
        if connection.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = f"bad request: {exc}\n".encode()
            try:
                await stream.send_all(connection.send(h11.Response(status_code=exc.error_status_hint, headers=[
                    ("content-type", "text/plain"), ("content-length", str(len(body))), ("connection", "close")]))
                    + connection.send(h11.Data(data=body)) + connection.send(h11.EndOfMessage()))
            except (trio.BrokenResourceError, h11.LocalProtocolError):
                pass
    except trio.BrokenResourceError:
        pass  # the client went away
    finally:
        await stream.aclose()


async def serve(sock: socket.socket) -> None:
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    await trio.serve_listeners(handle_connection, [listener])


def run_worker(sock: socket.socket) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # nothing to clean up: a worker just ends
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        trio.run(serve, sock)
    finally:
        os._exit(0)


def parse_bind(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"--bind {text!r}: expected HOST:PORT, for instance 127.0.0.1:8080")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", required=True, help="HOST:PORT to listen on")
    parser.add_argument("--workers", type=int, default=1, help="worker processes sharing the socket (default 1)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: at least 1")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(parse_bind(args.bind))
    sock.listen(1024)
    sock.setblocking(False)
    workers = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            run_worker(sock)
        workers.append(pid)
    sock.close()

    def stop(signum: int, frame: object) -> None:
        for pid in workers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    for pid in workers:
        while True:
            try:
                _, code = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        if os.WIFEXITED(code) and os.WEXITSTATUS(code):
            status = os.WEXITSTATUS(code)
    return status


if __name__ == "__main__":
    sys.exit(main())
