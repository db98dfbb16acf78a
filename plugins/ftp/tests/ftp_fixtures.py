""" A real FTP server for the ftp plugin's tests: pyftpdlib on 127.0.0.1, port 0, in a thread of its
own, plain FTP or explicit FTPS (AUTH TLS, certificates from a private CA made here with
`cryptography`, TLS required on the control and the data connections), one user with a home
directory in a temporary directory. It can stop and start again on the same port (an outage, and
every control connection dropped), and it counts the control connections open at once.
"""

from __future__ import annotations

import datetime
import ipaddress
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

USER = "zato-ftp"
PASSWORD = "s3cret-ftp-password"


# ################################################################################################
# Certificates


@dataclass(frozen=True)
class Certificates:
    ca_file: Path           # the private CA's certificate: what a client trusts (tls_ca_file)
    cert_file: Path         # the server's certificate (localhost, 127.0.0.1), signed by the CA
    key_file: Path
    other_ca_file: Path     # a CA that did not sign the server's certificate


def _name(common_name: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_certificates(directory: Path) -> Certificates:
    """ A private CA and a server certificate it signed, for `localhost` and `127.0.0.1`. """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("Zato FTP test CA")
    _, other_ca_cert = _ca("Some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = Certificates(directory / "ca.pem", directory / "server.pem", directory / "server.key",
                         directory / "other-ca.pem")
    paths.ca_file.write_bytes(ca_cert.public_bytes(pem))
    paths.other_ca_file.write_bytes(other_ca_cert.public_bytes(pem))
    paths.cert_file.write_bytes(cert.public_bytes(pem))
    paths.key_file.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    return paths


@pytest.fixture(scope="session")
def ftp_certificates(tmp_path_factory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("ftp-certificates"))


# ################################################################################################
# The server


class FTPPeer:
    """ pyftpdlib serving `home` (USER/PASSWORD, every permission) on 127.0.0.1. `certificates`
    makes it explicit FTPS with TLS required on control and data connections; `idle_timeout`
    is how long it keeps an idle control connection before it says `421` and closes it. """

    def __init__(self, home: Path, certificates: Certificates | None = None, idle_timeout: float = 300,
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


@pytest.fixture
def ftp_peer(tmp_path):
    with FTPPeer(tmp_path / "ftp-home") as peer:
        yield peer


@pytest.fixture
def ftps_peer(tmp_path, ftp_certificates):
    with FTPPeer(tmp_path / "ftps-home", certificates=ftp_certificates) as peer:
        yield peer
