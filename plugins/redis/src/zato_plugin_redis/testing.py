""" A real Redis server for tests: `redis-server` started on 127.0.0.1 on a free port, in a
temporary directory, with no persistence, stopped and removed afterwards. It can be stopped
and started again on the same port (an outage), and optionally asks for a password, listens on
a Unix socket or speaks TLS only (with a certificate authority it makes itself).

    with RedisServer(password="s3cret") as redis_server:
        redis_server.port, redis_server.client(db=0).get("key")

`RedisUnavailable` is raised when no `redis-server` binary is installed (Debian:
`apt-get install redis-server`); tests skip on it locally and fail in CI.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import tempfile
from pathlib import Path
from typing import Any

from zato.plugin_api import ExternalProcess, ProcessExited, make_test_certificates

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


class RedisUnavailable(Exception):
    """ No redis-server binary here (Debian: apt-get install redis-server). """


def find_redis_server() -> str:
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    if not found:
        raise RedisUnavailable("redis-server is not installed (not on PATH nor /usr/bin/redis-server); "
                               "on Debian: apt-get install redis-server")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """ One redis-server process; `start()` after `stop()` listens on the same port again. """

    def __init__(self, *, password: str | None = None, unix_socket: bool = False, tls: bool = False) -> None:
        self.binary = find_redis_server()
        self.password = password
        self.tls = tls
        self.host = "127.0.0.1"
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="zato-redis-"))
        self.unix_socket_path = str(self.dir / "redis.sock") if unix_socket else ""
        self.log_file = self.dir / "redis.log"
        self.process: ExternalProcess | None = None
        self.ca_file = self.cert_file = self.key_file = ""
        self._started_once = False
        if tls:
            certificates = make_test_certificates(self.dir, "Zato Redis test CA")
            self.ca_file, self.cert_file, self.key_file = (str(certificates.ca_file), str(certificates.cert_file),
                                                           str(certificates.key_file))

    # ############################################################################################

    def command(self) -> list[str]:
        command = [self.binary, "--bind", self.host, "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                   "--logfile", str(self.log_file), "--daemonize", "no"]
        if self.tls:
            command += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", self.cert_file,
                        "--tls-key-file", self.key_file, "--tls-ca-cert-file", self.ca_file, "--tls-auth-clients", "no"]
        else:
            command += ["--port", str(self.port)]
        if self.password is not None:
            command += ["--requirepass", self.password]
        if self.unix_socket_path:
            command += ["--unixsocket", self.unix_socket_path, "--unixsocketperm", "700"]
        return command

    def start(self) -> "RedisServer":
        """ Starts the server and waits until it answers. On the first start a port someone else
        took in the meantime is replaced by another free one; later starts keep the port. """
        first = not self._started_once
        for attempt in range(3):
            try:
                self._start_once()
                self._started_once = True
                return self
            except ProcessExited as exc:
                if first and attempt < 2 and "in use" in str(exc).lower():
                    self.port = free_port()
                    continue
                raise
        return self

    def _start_once(self) -> None:
        if self.running:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        self.log_file.write_text("")  # redis-server writes its own log (--logfile); errors show its end
        self.process = ExternalProcess(self.command(), name=f"redis-server on port {self.port}", log=self.log_file,
                                       cwd=self.dir).start()
        try:
            self.process.wait_until(self._answers, START_TIMEOUT)
        except TimeoutError:
            self.process = None  # wait_until stopped it
            raise

    def _answers(self) -> bool:
        """ True once the server replies to PING (`+PONG`, or `-NOAUTH` when it wants a password). """
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as raw:
                sock: Any = raw
                if self.tls:
                    context = ssl.create_default_context(cafile=self.ca_file)
                    sock = context.wrap_socket(raw, server_hostname=self.host)
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
                return reply.startswith((b"+PONG", b"-NOAUTH"))
        except (OSError, ssl.SSLError):
            return False

    def stop(self) -> None:
        """ Stops the server (SIGTERM, then SIGKILL); the directory and port are kept for `start()`. """
        process, self.process = self.process, None
        if process is not None:
            process.stop(STOP_TIMEOUT)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def close(self) -> None:
        """ Stops the server and removes its directory. """
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.log_file.read_text("utf-8", "replace")[-4000:]
        except OSError:
            return ""

    # ############################################################################################

    def client(self, db: int = 0, **options: Any) -> Any:
        """ A redis-py client of this server (text replies), for checks made beside Zato. """
        import redis
        if self.tls:
            options.setdefault("ssl", True)
            options.setdefault("ssl_ca_certs", self.ca_file)
        return redis.Redis(host=self.host, port=self.port, db=db, password=self.password, decode_responses=True,
                           socket_timeout=5, **options)

    def __enter__(self) -> "RedisServer":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RedisServer 127.0.0.1:{self.port}{' tls' if self.tls else ''} {'running' if self.running else 'stopped'}>"
