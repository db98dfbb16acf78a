""" A real SMTP server for the smtp plugin's tests: aiosmtpd on 127.0.0.1, with STARTTLS or
implicit TLS (certificates from the core test kit's private CA) and AUTH (one user),
recording every message it accepts. It can stop and start again on the same port, for the
conformance suite's outage test.

aiosmtpd runs its own asyncio loop in a thread of its own (its `Controller`); starting and
stopping it block, so async tests call them through `trio.to_thread.run_sync`.
"""

from __future__ import annotations

import email
import email.policy
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest
import trio

from zato.plugin_api import TestCertificates, make_test_certificates

USER = "zato-sender"
PASSWORD = "s3cret-smtp-password"
SENDER = "zato@example.com"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ################################################################################################
# Certificates


@pytest.fixture(scope="session")
def smtp_certificates(tmp_path_factory) -> TestCertificates:
    return make_test_certificates(tmp_path_factory.mktemp("smtp-certificates"), "Zato SMTP test CA")


# ################################################################################################
# The server


@dataclass
class Received:
    """ One message the server accepted. """
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    login: str | None       # the user that authenticated, if any
    tls: bool               # whether the session was encrypted

    @property
    def message(self) -> EmailMessage:
        # SMTP carries lines ending in CRLF; parsed with the default policy's "\n" line ends.
        return email.message_from_bytes(self.data.replace(b"\r\n", b"\n"), policy=email.policy.default)


class SMTPPeer:
    """ aiosmtpd on a fixed port. `tls` is "starttls" (offered, required before AUTH), "ssl" (TLS
    from the first byte) or "none"; `auth` requires a login as USER/PASSWORD before MAIL. """

    def __init__(self, certificates: TestCertificates, *, tls: str = "starttls", auth: bool = True,
                 data_delay: float = 0.0) -> None:
        self.certificates = certificates
        self.tls = tls
        self.auth = auth
        self.data_delay = data_delay  # seconds the server takes to accept a message
        self.port = free_port()
        self.received: list[Received] = []
        self.data_started = threading.Event()  # set when a message's DATA has arrived, before it is accepted
        self._lock = threading.Lock()
        self._controller: Any = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start_blocking(self) -> None:
        from aiosmtpd.controller import Controller
        kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": self.port, "ready_timeout": 30}
        if self.tls == "starttls":
            kwargs.update(tls_context=self.certificates.server_context(), require_starttls=False)
        elif self.tls == "ssl":
            kwargs.update(ssl_context=self.certificates.server_context())
        if self.auth:
            # AUTH only over TLS, and no MAIL without it. aiosmtpd knows TLS only by STARTTLS having
            # happened, so with TLS from the first byte ("ssl") both checks are off - the whole session
            # is encrypted there anyway; each `Received` records the login and whether TLS was on.
            required = self.tls != "ssl"
            kwargs.update(authenticator=_authenticate, auth_required=required, auth_require_tls=required)
        controller = Controller(_Recorder(self), **kwargs)
        deadline = time.monotonic() + 10
        while True:  # the port was free a moment ago; after a stop it may take a moment to be again
            try:
                controller.start()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._controller = controller

    def stop_blocking(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    async def start(self) -> None:
        await trio.to_thread.run_sync(self.start_blocking)

    async def stop(self) -> None:
        await trio.to_thread.run_sync(self.stop_blocking)

    def record(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)

    def with_subject(self, subject: str) -> Received:
        with self._lock:
            found = [r for r in self.received if r.message["Subject"] == subject]
        assert len(found) == 1, f"expected one message with subject {subject!r}, got {len(found)}"
        return found[0]

    def definition(self, name: str | None = None, **changes: Any) -> dict[str, Any]:
        """ An email_smtp definition (without its name and password) that reaches this server. """
        definition: dict[str, Any] = {"host": "127.0.0.1", "port": self.port, "tls_mode": self.tls, "timeout": 5,
                                      "default_from": SENDER, "tls_ca_file": str(self.certificates.ca_file)}
        if self.auth:
            definition["username"] = USER
        definition.update(changes)
        return definition


class _Recorder:
    """ aiosmtpd handler: keeps every message it accepts. """

    def __init__(self, peer: SMTPPeer) -> None:
        self.peer = peer

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.peer.data_started.set()
        if self.peer.data_delay:
            import asyncio
            await asyncio.sleep(self.peer.data_delay)
        auth_data = getattr(session, "auth_data", None)
        login = getattr(auth_data, "login", None)
        self.peer.record(Received(
            mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(envelope.original_content or envelope.content),
            login=login.decode() if isinstance(login, bytes) else login,
            tls=server.transport.get_extra_info("ssl_object") is not None))
        return "250 2.0.0 Message accepted for delivery"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
    from aiosmtpd.smtp import AuthResult, LoginPassword
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode()
          and auth_data.password == PASSWORD.encode())
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


def unique_subject(prefix: str = "test") -> str:
    return f"{prefix} {uuid.uuid4().hex[:12]}"


def require_aiosmtpd() -> None:
    """ The SMTP server the tests talk to is a Python package (in the root dev group and this
    plugin's `test` extra): a skip with the reason locally, a failure in CI. """
    try:
        import aiosmtpd  # noqa: F401
    except ImportError as exc:
        reason = f"the smtp plugin's tests need aiosmtpd (pip install 'zato-plugin-smtp[test]'): {exc}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def smtp_peer_fixture(**options: Any):
    """ A pytest fixture yielding a started `SMTPPeer`, stopped at the end. """
    @pytest.fixture
    async def fixture(smtp_certificates):
        require_aiosmtpd()
        peer = SMTPPeer(smtp_certificates, **options)
        await peer.start()
        try:
            yield peer
        finally:
            await peer.stop()
    return fixture
