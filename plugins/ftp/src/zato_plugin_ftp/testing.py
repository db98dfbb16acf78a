""" The ftp plugin's test kit: a real FTP server for tests of FTP services, the plugin's and users'
own. `FTPPeer` is pyftpdlib on 127.0.0.1 (port 0 first, the same port after a restart) in a thread
of its own, plain FTP or explicit FTPS (AUTH TLS, TLS required on the control and the data
connections, certificates from `zato.plugin_api.make_test_certificates`), one user (`USER`,
`PASSWORD`) with a home directory of the test's choice. It can stop and start again (an outage:
every control connection dropped) and counts the control connections open at once.

Needs pyftpdlib (and pyopenssl for FTPS): `pip install zato-plugin-ftp[test]`.

```python
from zato_plugin_ftp.testing import FTPPeer

with FTPPeer(tmp_path / "home") as peer:
    (peer.home / "incoming.csv").write_bytes(b"...")
    definition = peer.definition("My FTP Connection")   # host, port, user, password (and TLS)
```
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from zato.plugin_api import TestCertificates

USER = "zato-ftp"
PASSWORD = "s3cret-ftp-password"


class FTPPeer:
    """ pyftpdlib serving `home` (USER/PASSWORD, every permission) on 127.0.0.1. `certificates`
    makes it explicit FTPS with TLS required on control and data connections; `idle_timeout`
    is how long it keeps an idle control connection before it says `421` and closes it. """

    def __init__(self, home: Path, certificates: TestCertificates | None = None, idle_timeout: float = 300,
                 mlst: bool = True) -> None:
        self.home = home
        self.home.mkdir(parents=True, exist_ok=True)
        self.certificates = certificates
        self.idle_timeout = idle_timeout
        self.mlst = mlst
        self.port = 0  # 0 until the first start; the same port after a restart
        self.open_now = 0  # control connections open right now
        self.peak = 0  # the most open at once since reset_peak()
        self.logins = 0
        self._counter_lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _handler(self) -> type:
        from pyftpdlib.authorizers import DummyAuthorizer
        from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
        authorizer = DummyAuthorizer()
        authorizer.add_user(USER, PASSWORD, str(self.home), perm="elradfmwMT")
        peer = self
        base = TLS_FTPHandler if self.certificates else FTPHandler

        class Handler(base):  # type: ignore[misc, valid-type]
            def on_connect(self) -> None:
                with peer._counter_lock:
                    peer.open_now += 1
                    peer.peak = max(peer.peak, peer.open_now)

            def on_disconnect(self) -> None:
                with peer._counter_lock:
                    peer.open_now -= 1

            def on_login(self, username: str) -> None:
                with peer._counter_lock:
                    peer.logins += 1

        Handler.authorizer = authorizer
        Handler.timeout = self.idle_timeout
        Handler.banner = "Zato test FTP server ready."
        Handler.auth_failed_timeout = 0.05  # not 3 s before answering a bad password
        if not self.mlst:  # an older server: no MLST/MLSD, listings with NLST, facts with SIZE/MDTM
            Handler.proto_cmds = {name: spec for name, spec in base.proto_cmds.items()
                                  if name not in ("MLST", "MLSD")}
        if self.certificates:
            Handler.certfile = str(self.certificates.cert_file)
            Handler.keyfile = str(self.certificates.key_file)
            Handler.tls_control_required = True
            Handler.tls_data_required = True
            Handler.ssl_context = None  # made from certfile and keyfile on first use
        return Handler

    # ############################################################################################

    def start_sync(self) -> None:
        import logging
        from pyftpdlib.servers import FTPServer
        logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
        self._server = FTPServer(("127.0.0.1", self.port), self._handler())
        self._server.max_cons = 256
        self.port = self._server.address[1]
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, args=(self._server,), name=f"ftp-{self.port}",
                                        daemon=True)
        self._thread.start()

    def _serve(self, server: Any) -> None:
        try:
            while not self._stop.is_set():
                server.ioloop.loop(0.05, blocking=False)
        finally:
            server.close_all()  # in this thread: pyftpdlib's loop is not thread-safe
            with self._counter_lock:
                self.open_now = 0  # close_all does not call on_disconnect

    def stop_sync(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    async def start(self) -> None:
        import trio
        await trio.to_thread.run_sync(self.start_sync)

    async def stop(self) -> None:
        import trio
        await trio.to_thread.run_sync(self.stop_sync)

    def reset_peak(self) -> None:
        with self._counter_lock:
            self.peak = self.open_now

    def wait_for_open(self, count: int, timeout: float = 5) -> None:
        """ Waits until exactly `count` control connections are open (the server's side of a close). """
        deadline = time.monotonic() + timeout
        while self.open_now != count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.open_now} control connections open, not {count}")
            time.sleep(0.01)

    def definition(self, name: str = "test ftp", **fields: Any) -> dict[str, Any]:
        """ A definition reaching this server (with the password: for FTPConnection directly). """
        definition: dict[str, Any] = {"name": name, "host": "127.0.0.1", "port": self.port, "user": USER,
                                      "password": PASSWORD, "timeout": 5}
        if self.certificates:
            definition.update(tls="explicit", tls_ca_file=str(self.certificates.ca_file))
        definition.update(fields)
        return definition

    def __enter__(self) -> "FTPPeer":
        self.start_sync()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop_sync()
