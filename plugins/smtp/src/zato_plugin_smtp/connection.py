""" One SMTP outgoing connection: what `self.email.smtp[name]` (and its `.conn`) is.

    conn = self.email.smtp["My SMTP"].conn
    conn.send(message)              # in a plain `def handle`: blocks its worker thread
    await conn.send(message)        # in an `async def handle`: smtplib runs in a worker thread

Each `send` and `ping` opens its own SMTP session (connect, EHLO, STARTTLS or implicit TLS,
AUTH), does its work and QUITs. Nothing stays open between messages: SMTP servers drop idle
sessions after a few minutes anyway, an smtplib session cannot be shared between threads, and a
server that went away and came back needs no reconnect logic - the next message simply opens a
new session. `close()` therefore only has sessions still in flight to end (their sockets are shut
down) and refuses new ones.
"""

from __future__ import annotations

import copy
import logging
import smtplib
import socket
import ssl
import threading
from email.utils import parseaddr
from typing import Any

from zato.common.api import SMTPMessage
from zato.plugin_api import BlockingCalls, OutgoingError, as_bool, client_tls_context

logger = logging.getLogger("zato.outgoing.smtp")

TLS_NONE, TLS_STARTTLS, TLS_SSL = "none", "starttls", "ssl"
TLS_MODES = (TLS_NONE, TLS_STARTTLS, TLS_SSL)
DEFAULT_TLS_MODE = TLS_STARTTLS
DEFAULT_PORT = 25
DEFAULT_TIMEOUT = 10.0

# Sessions one connection may have open at once for async services (each takes a worker thread);
# plain services already run in worker threads of their own.
MAX_CONCURRENT_SENDS = 10


class SMTPConnection:
    """ An outgoing SMTP connection built from an `email_smtp` definition (its fields:
    `zato_plugin_smtp.EMAIL_SMTP`). Never logs the password or a message's body. """

    def __init__(self, server: Any, definition: dict[str, Any]) -> None:
        self.name = definition["name"]
        self.host = str(definition.get("host") or "").strip()
        if not self.host:
            raise ValueError("host is empty; set it to the SMTP server's host name or address")
        self.port = int(definition.get("port") or DEFAULT_PORT)
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is not a TCP port (1-65535)")
        self.tls_mode = str(definition.get("tls_mode") or DEFAULT_TLS_MODE).strip().lower()
        if self.tls_mode not in TLS_MODES:
            raise ValueError(f"tls_mode {self.tls_mode!r} is not one of {', '.join(TLS_MODES)} (none: plain SMTP, "
                             f"starttls: upgrade a plain session, ssl: TLS from the first byte, usually port 465)")
        self.timeout = float(definition.get("timeout") or DEFAULT_TIMEOUT)
        if self.timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {self.timeout}")
        self.username = str(definition.get("username") or "")
        self._password = str(definition.get("password") or "")
        if self._password and not self.username:
            raise ValueError("a password is set but username is empty; set username too (or clear the password)")
        self.default_from = str(definition.get("default_from") or "").strip() or None
        if self.default_from and "@" not in parseaddr(self.default_from)[1]:
            raise ValueError(f"default_from {self.default_from!r} is not an e-mail address (user@domain)")
        tls_verify = definition.get("tls_verify")
        self.tls_verify = True if tls_verify is None else as_bool(tls_verify)  # verify unless told not to
        self.tls_ca_file = str(definition.get("tls_ca_file") or "").strip() or None
        self._tls_context = client_tls_context(verify=self.tls_verify, ca_file=self.tls_ca_file, peer="SMTP") \
            if self.tls_mode != TLS_NONE else None
        if self.username and self.tls_mode == TLS_NONE:
            logger.warning("outgoing smtp %r: tls_mode is none, so the password of %r would cross the network in "
                           "clear; use starttls or ssl unless the server is on this machine", self.name, self.username)

        self.closed = False
        self._sessions: set[smtplib.SMTP] = set()  # open right now (in flight), so close() can end them
        self._lock = threading.Lock()
        self._calls = BlockingCalls(f"outgoing smtp {self.name!r}", threads=MAX_CONCURRENT_SENDS)

    @property
    def conn(self) -> "SMTPConnection":
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"<SMTPConnection {self.name!r} {self.address} tls_mode={self.tls_mode}>"

    # ############################################################################################
    # Sending

    def send(self, message: SMTPMessage, from_: str | None = None) -> Any:
        """ Sends `message`; returns True once the server accepted it. `from_` (or the message's
        `from_`, or the connection's `default_from`) is the sender. From an async service this
        returns an awaitable. Failures raise `OutgoingError` naming the connection, the server and
        what to do. """
        return self._calls.call(self._send, message, from_)

    def _send(self, message: SMTPMessage, from_: str | None) -> bool:
        if not isinstance(message, SMTPMessage):
            raise TypeError(f"outgoing smtp {self.name!r}: send() takes an SMTPMessage "
                            f"(from zato.common.api import SMTPMessage), not {type(message).__name__}")
        if from_:
            message = copy.copy(message)
            message.from_ = from_
        try:
            sender = message.sender(self.default_from)
            recipients = message.recipients()
            email_message = message.as_email_message(self.default_from)
        except (TypeError, ValueError) as exc:
            raise OutgoingError(f"outgoing smtp {self.name!r}: the message cannot be sent: {exc}") from exc

        session = self._open()
        try:
            refused = session.send_message(email_message, from_addr=sender, to_addrs=recipients)
        except (smtplib.SMTPException, OSError) as exc:
            raise self._error(exc) from exc
        finally:
            self._end(session)
        if refused:
            logger.warning("outgoing smtp %r: %s accepted %s but refused %s", self.name, self.address,
                           email_message["Message-ID"], _refusals(refused))
        logger.info("outgoing smtp %r: %s accepted %s for %d recipient(s), %d attachment(s)", self.name,
                    self.address, email_message["Message-ID"], len(recipients) - len(refused),
                    len(message.attachments))
        return True

    def ping(self) -> None:
        """ Connects, says EHLO, starts TLS and authenticates as configured, then NOOP and QUIT. """
        session = self._open()
        try:
            session.noop()
        except (smtplib.SMTPException, OSError) as exc:
            raise self._error(exc) from exc
        finally:
            self._end(session)

    def close(self) -> None:
        """ Refuses new sessions and shuts down the sockets of any still in flight. """
        with self._lock:
            self.closed = True
            in_flight = list(self._sessions)
        for session in in_flight:
            sock = getattr(session, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked on it; it closes the session
                except OSError:
                    pass

    def statistics(self) -> dict[str, Any]:
        with self._lock:
            return {"sessions_in_flight": len(self._sessions), "closed": self.closed}

    # ############################################################################################
    # Sessions

    def _open(self) -> smtplib.SMTP:
        """ A new session, past TLS and AUTH as configured. """
        self._refuse_if_closed()
        try:
            if self.tls_mode == TLS_SSL:
                session = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self._tls_context)
            else:
                session = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        except (smtplib.SMTPException, OSError) as exc:
            raise self._error(exc) from exc
        with self._lock:
            self._sessions.add(session)
        try:
            self._refuse_if_closed()
            session.ehlo()
            if self.tls_mode == TLS_STARTTLS:
                if not session.has_extn("starttls"):
                    raise OutgoingError(
                        f"outgoing smtp {self.name!r}: {self.address} does not offer STARTTLS; set tls_mode to ssl "
                        f"if it expects TLS from the first byte, or to none to send in clear")
                session.starttls(context=self._tls_context)
                session.ehlo()
            if self.username:
                if not session.has_extn("auth"):
                    hint = " before TLS (set tls_mode to starttls or ssl)" if self.tls_mode == TLS_NONE else ""
                    raise OutgoingError(
                        f"outgoing smtp {self.name!r}: {self.address} does not offer AUTH{hint}, so user "
                        f"{self.username!r} cannot log in; clear username and password if it needs no login")
                session.login(self.username, self._password)
            # close() may have come during the TLS handshake, when the socket it shuts down is
            # being swapped for the TLS one
            self._refuse_if_closed()
        except OutgoingError:
            self._end(session, quit=False)
            raise
        except (smtplib.SMTPException, OSError) as exc:
            self._end(session, quit=False)
            raise self._error(exc) from exc
        except BaseException:
            self._end(session, quit=False)
            raise
        return session

    def _end(self, session: smtplib.SMTP, quit: bool = True) -> None:
        """ QUITs (if the session is still usable) and closes it. A failed QUIT after the server
        accepted a message does not fail the send. """
        try:
            if quit and session.sock is not None:
                session.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            session.close()
            with self._lock:
                self._sessions.discard(session)

    def _refuse_if_closed(self) -> None:
        if self.closed:
            raise OutgoingError(f"outgoing smtp {self.name!r} was closed (its definition was changed or deleted, or "
                                f"the server is stopping); look it up again through self.email.smtp[name]")

    # ############################################################################################

    def _error(self, exc: BaseException) -> OutgoingError:
        if self.closed and isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPResponseException):
            return OutgoingError(f"outgoing smtp {self.name!r} was closed during a session with {self.address} (its "
                                 f"definition was changed or deleted, or the server is stopping); a message in flight "
                                 f"may or may not have been delivered")
        return OutgoingError(f"outgoing smtp {self.name!r}: {self._explain(exc)}")

    def _explain(self, exc: BaseException) -> str:
        """ What went wrong, where, and what to do, from an smtplib, ssl or socket exception. """
        where = self.address
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return (f"{where} refused the credentials of user {self.username!r} ({_reply(exc)}); "
                    f"check username and password")
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            return f"{where} refused every recipient: {_refusals(exc.recipients)}"
        if isinstance(exc, smtplib.SMTPSenderRefused):
            return f"{where} refused the sender {exc.sender!r} ({_reply(exc)})"
        if isinstance(exc, smtplib.SMTPDataError):
            return f"{where} refused the message ({_reply(exc)})"
        if isinstance(exc, smtplib.SMTPConnectError):
            return f"{where} refused the session ({_reply(exc)})"
        if isinstance(exc, smtplib.SMTPServerDisconnected) and isinstance(exc.__context__, TimeoutError):
            exc = exc.__context__  # smtplib reports a read that timed out as a disconnection
        elif isinstance(exc, smtplib.SMTPServerDisconnected):
            return (f"{where} closed the session ({exc or 'no reason given'}); is it an SMTP server, and is tls_mode "
                    f"{self.tls_mode!r} right?")
        if isinstance(exc, smtplib.SMTPResponseException):
            return f"{where} answered {_reply(exc)}"
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return f"{where}: {exc}"
        if isinstance(exc, smtplib.SMTPException):
            return f"{where}: {type(exc).__name__}: {exc}"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (f"the TLS certificate of {where} could not be verified ({exc.verify_message}); set tls_ca_file to "
                    f"the certificate of the CA that signed it (or, for tests only, tls_verify to false)")
        if isinstance(exc, ssl.SSLError):
            return (f"TLS with {where} failed ({exc.reason or exc}); check tls_mode {self.tls_mode!r}: ssl is TLS from "
                    f"the first byte (usually port 465), starttls upgrades a plain session (ports 25 and 587)")
        if isinstance(exc, (TimeoutError, socket.timeout)):
            hint = " (if it expects TLS from the first byte, set tls_mode to ssl)" if self.tls_mode != TLS_SSL else ""
            return f"no answer from {where} within {self.timeout} s{hint}"
        if isinstance(exc, OSError):
            return (f"cannot connect to {where} ({exc.strerror or exc}); is the SMTP server running, and are host "
                    f"and port right?")
        return f"{where}: {type(exc).__name__}: {exc}"


def _reply(exc: smtplib.SMTPResponseException) -> str:
    message = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
    return f"{exc.smtp_code} {message}".strip()


def _refusals(refused: dict[str, tuple[int, bytes]]) -> str:
    return ", ".join(f"{address} ({code} {reply.decode('utf-8', 'replace') if isinstance(reply, bytes) else reply})"
                     for address, (code, reply) in refused.items())
