""" The shared conformance suite for outgoing connections (zato.testing.conformance), run against
a real SMTP server with STARTTLS and AUTH: connect and use, ping, an outage and the reconnect
after it, a live edit, delete and close, bad config, closing on shutdown. """

from __future__ import annotations

from typing import Any

import pytest

from smtp_fixtures import PASSWORD, USER, SMTPPeer, require_aiosmtpd, smtp_certificates, unique_subject  # noqa: F401
from zato.common.api import SMTPMessage
from zato.server.outgoing import OutgoingError
from zato.testing.conformance import OutgoingConnectionConformance

EDITED_FROM = "edited@example.com"


class ConformancePeer(SMTPPeer):
    """ The suite's `Peer`: each use sends a message and finds it on the server. """

    def secrets(self) -> dict[str, str]:
        return {"password": PASSWORD}

    def use(self, connection: Any) -> None:
        subject = unique_subject("conformance")
        message = SMTPMessage(to="ann@example.com", subject=subject, body="hello")
        message.attach("data.bin", b"\x00\x01\x02")
        assert connection.conn.send(message) is True
        received = self.with_subject(subject)
        assert received.tls and received.login == USER and received.rcpt_tos == ["ann@example.com"]
        (attachment,) = received.message.iter_attachments()
        assert attachment.get_payload(decode=True) == b"\x00\x01\x02"

    def edited(self, definition: dict[str, Any]) -> dict[str, Any]:
        return {**definition, "default_from": EDITED_FROM}

    def check_edit(self, connection: Any) -> None:
        subject = unique_subject("edited")
        connection.conn.send(SMTPMessage(to="ann@example.com", subject=subject, body="hello"))
        assert self.with_subject(subject).mail_from == EDITED_FROM

    def assert_closed(self, connection: Any) -> None:
        assert connection.statistics() == {"sessions_in_flight": 0, "closed": True}
        with pytest.raises(OutgoingError, match="was closed"):
            connection.ping()  # refused before any socket is opened

    def bad_definitions(self) -> list[tuple[dict[str, Any], str]]:
        return [({"port": 25}, "host"),
                ({"host": "127.0.0.1", "port": "twenty-five"}, "port"),
                ({"host": "127.0.0.1", "timeout": "soon"}, "timeout"),
                ({"host": "127.0.0.1", "tls_verify": "perhaps"}, "tls_verify"),
                ({"host": "127.0.0.1", "password": "in clear"}, "password"),  # secrets have their own call
                ({"host": "127.0.0.1", "tls": "starttls"}, "tls")]            # not a field


@pytest.fixture
async def peer(smtp_certificates):
    require_aiosmtpd()
    peer = ConformancePeer(smtp_certificates, tls="starttls", auth=True)
    await peer.start()
    yield peer
    await peer.stop()


class TestSMTPConformance(OutgoingConnectionConformance):
    connection_type = "smtp"
    object_type = "email_smtp"
