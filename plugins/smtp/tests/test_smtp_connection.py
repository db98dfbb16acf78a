""" The SMTP connection against a real SMTP server (aiosmtpd on 127.0.0.1): STARTTLS and TLS
from the first byte with certificates from a private CA, AUTH, what the server receives (headers,
envelope, body, HTML, attachments), and the errors for wrong credentials, a server that is down,
TLS that does not fit, and bad definitions. """

from __future__ import annotations

import logging
import threading
import time

import pytest
import trio

from smtp_fixtures import PASSWORD, SENDER, USER, SMTPPeer, smtp_certificates, smtp_peer_fixture, unique_subject  # noqa: F401
from zato.common.api import SMTPMessage
from zato.server.outgoing import OutgoingError
from zato_plugin_smtp import SMTPConnection

starttls_peer = smtp_peer_fixture(tls="starttls")
ssl_peer = smtp_peer_fixture(tls="ssl")
plain_relay = smtp_peer_fixture(tls="none", auth=False)
slow_peer = smtp_peer_fixture(tls="starttls", data_delay=1.5)


def connection(peer: SMTPPeer, **changes) -> SMTPConnection:
    definition = {"name": "My SMTP", "password": PASSWORD if peer.auth else None, **peer.definition(**changes)}
    return SMTPConnection(None, definition)


def full_message(subject: str) -> tuple[SMTPMessage, bytes]:
    binary = bytes(range(256)) * 8
    message = SMTPMessage()
    message.subject = subject
    message.body = "Check attached data"
    message.html_body = "<p>Check <i>attached</i> data</p>"
    message.to = "ann@example.com, Bob <bob@example.com>"
    message.cc = ["carol@example.com"]
    message.bcc = "hidden@example.com"
    message.attach("data.txt", "zażółć\n")
    message.attach("image.png", binary)
    return message, binary


def check_full_message(peer: SMTPPeer, subject: str, binary: bytes, sender: str = SENDER) -> None:
    received = peer.with_subject(subject)
    assert received.mail_from == sender
    assert received.rcpt_tos == ["ann@example.com", "bob@example.com", "carol@example.com", "hidden@example.com"]
    got = received.message
    assert got["From"] == sender and got["To"] == "ann@example.com, Bob <bob@example.com>"
    assert got["Cc"] == "carol@example.com" and "Bcc" not in got
    assert b"hidden@example.com" not in received.data
    assert got.get_body(("plain",)).get_content() == "Check attached data\n"
    assert got.get_body(("html",)).get_content() == "<p>Check <i>attached</i> data</p>\n"
    text, image = got.iter_attachments()
    assert (text.get_filename(), text.get_content_type(), text.get_payload(decode=True)) == \
        ("data.txt", "text/plain", "zażółć\n".encode())
    assert (image.get_filename(), image.get_content_type(), image.get_payload(decode=True)) == \
        ("image.png", "image/png", binary)


# ################################################################################################


async def test_starttls_with_a_private_ca_and_auth_delivers_headers_envelope_body_and_attachments(starttls_peer):
    conn = connection(starttls_peer).conn
    subject = unique_subject()
    message, binary = full_message(subject)
    assert await trio.to_thread.run_sync(conn.send, message) is True
    check_full_message(starttls_peer, subject, binary)
    received = starttls_peer.with_subject(subject)
    assert received.tls and received.login == USER


async def test_tls_from_the_first_byte(ssl_peer):
    conn = connection(ssl_peer, port=ssl_peer.port).conn
    subject = unique_subject("ssl")
    message, binary = full_message(subject)
    message.from_ = "Sender <own@example.com>"
    assert await trio.to_thread.run_sync(conn.send, message) is True
    received = ssl_peer.with_subject(subject)
    assert received.tls and received.login == USER and received.mail_from == "own@example.com"
    assert received.message["From"] == "Sender <own@example.com>"


async def test_the_from_argument_overrides_the_message_and_the_default(starttls_peer):
    conn = connection(starttls_peer).conn
    subject = unique_subject()
    message = SMTPMessage(from_="message@example.com", to="a@example.com", subject=subject, body="b")
    await trio.to_thread.run_sync(conn.send, message, "argument@example.com")
    assert starttls_peer.with_subject(subject).mail_from == "argument@example.com"
    assert message.from_ == "message@example.com"  # the caller's message is left as it was


async def test_a_plain_relay_without_tls_or_auth(plain_relay):
    conn = connection(plain_relay, tls_mode="none", username=None).conn
    subject = unique_subject("relay")
    await trio.to_thread.run_sync(conn.send, SMTPMessage(to="a@example.com", subject=subject, body="hi",
                                                         is_html=True))
    received = plain_relay.with_subject(subject)
    assert not received.tls and received.login is None
    assert received.message.get_content_type() == "text/html"


async def test_verification_can_be_switched_off_for_tests(starttls_peer):
    conn = connection(starttls_peer, tls_verify=False, tls_ca_file=None).conn
    subject = unique_subject()
    await trio.to_thread.run_sync(conn.send, SMTPMessage(to="a@example.com", subject=subject, body="b"))
    assert starttls_peer.with_subject(subject).tls


async def test_ping_goes_through_tls_and_auth(starttls_peer):
    await trio.to_thread.run_sync(connection(starttls_peer).ping)
    with pytest.raises(OutgoingError, match="refused the credentials"):
        await trio.to_thread.run_sync(connection(starttls_peer, password="wrong").ping)


# ################################################################################################
# Errors


async def test_wrong_credentials_name_the_connection_server_user_and_smtp_code(starttls_peer):
    conn = SMTPConnection(None, {"name": "My SMTP", **starttls_peer.definition(), "password": "not-the-password"})
    with pytest.raises(OutgoingError) as info:
        await trio.to_thread.run_sync(conn.send, SMTPMessage(to="a@example.com", subject="s", body="b"))
    assert str(info.value) == (f"outgoing smtp 'My SMTP': 127.0.0.1:{starttls_peer.port} refused the credentials of "
                               f"user {USER!r} (535 5.7.8 Authentication credentials invalid); check username and "
                               f"password")
    assert not starttls_peer.received


async def test_a_server_that_is_down_and_comes_back(starttls_peer):
    conn = connection(starttls_peer).conn
    await starttls_peer.stop()
    message = SMTPMessage(to="a@example.com", subject=unique_subject(), body="b")
    with pytest.raises(OutgoingError, match=rf"^outgoing smtp 'My SMTP': cannot connect to 127.0.0.1:{starttls_peer.port} "
                                            r"\(Connection refused\); is the SMTP server running"):
        await trio.to_thread.run_sync(conn.send, message)
    with pytest.raises(OutgoingError, match="cannot connect"):
        await conn.send(message)  # from async code: the same error
    await starttls_peer.start()
    assert await conn.send(message)  # a new session per message: nothing to reconnect
    starttls_peer.with_subject(message.subject)


@pytest.mark.parametrize(("changes", "error"), [
    ({"tls_ca_file": None}, r"the TLS certificate of 127.0.0.1:\d+ could not be verified \(unable to get local "
                            r"issuer certificate\); set tls_ca_file"),
    ({"tls_ca_file": "OTHER"}, "the TLS certificate of .* could not be verified"),
    ({"tls_mode": "ssl"}, r"TLS with 127.0.0.1:\d+ failed \(WRONG_VERSION_NUMBER\); check tls_mode 'ssl'"),
    ({"tls_mode": "none"}, r"127.0.0.1:\d+ does not offer AUTH before TLS \(set tls_mode to starttls or ssl\)"),
])
async def test_tls_that_does_not_fit_is_a_clear_error(starttls_peer, changes, error):
    if changes.get("tls_ca_file") == "OTHER":
        changes = {"tls_ca_file": str(starttls_peer.certificates.other_ca_file)}
    conn = connection(starttls_peer, **changes)
    with pytest.raises(OutgoingError, match="^outgoing smtp 'My SMTP': " + error):
        await trio.to_thread.run_sync(conn.send, SMTPMessage(to="a@example.com", subject="s", body="b"))
    assert not starttls_peer.received


async def test_starttls_against_a_server_speaking_tls_from_the_first_byte_times_out_with_a_hint(ssl_peer):
    conn = connection(ssl_peer, tls_mode="starttls", timeout=0.5)
    with pytest.raises(OutgoingError, match=r"no answer from 127.0.0.1:\d+ within 0.5 s \(if it expects TLS from the "
                                            r"first byte, set tls_mode to ssl\)"):
        await trio.to_thread.run_sync(conn.ping)


async def test_starttls_is_required_when_asked_for(plain_relay):
    conn = connection(plain_relay, tls_mode="starttls", username=None)
    with pytest.raises(OutgoingError, match=r"127.0.0.1:\d+ does not offer STARTTLS; set tls_mode to ssl if it "
                                            r"expects TLS from the first byte, or to none to send in clear"):
        await trio.to_thread.run_sync(conn.ping)


async def test_a_message_that_cannot_be_sent_is_refused_before_connecting(starttls_peer):
    conn = connection(starttls_peer, default_from=None)
    with pytest.raises(OutgoingError, match="'My SMTP': the message cannot be sent: the message has no sender"):
        await trio.to_thread.run_sync(conn.send, SMTPMessage(to="a@example.com"))
    with pytest.raises(TypeError, match=r"send\(\) takes an SMTPMessage \(from zato.common.api import SMTPMessage\)"):
        await trio.to_thread.run_sync(conn.send, {"to": "a@example.com"})
    assert not starttls_peer.received


@pytest.mark.parametrize(("changes", "error"), [
    ({"host": " "}, "host is empty"),
    ({"port": 70000}, "port 70000 is not a TCP port"),
    ({"tls_mode": "tls"}, "tls_mode 'tls' is not one of none, starttls, ssl"),
    ({"timeout": -1}, "timeout must be a positive number"),
    ({"username": None, "password": "x"}, "a password is set but username is empty"),
    ({"default_from": "nobody"}, "default_from 'nobody' is not an e-mail address"),
    ({"tls_ca_file": "/no/such/ca.pem"}, "tls_ca_file '/no/such/ca.pem' cannot be used"),
])
def test_definitions_that_cannot_work_are_refused_when_built(smtp_certificates, changes, error):
    peer = SMTPPeer(smtp_certificates)  # never started: nothing is contacted when building
    with pytest.raises(ValueError, match=error):
        connection(peer, **changes)


# ################################################################################################
# Async services, close, logs


async def test_from_async_code_the_send_runs_in_a_worker_thread_and_the_loop_keeps_running(slow_peer):
    conn = connection(slow_peer).conn
    subject = unique_subject("async")
    ticks = 0
    result = []

    async def send():
        result.append(await conn.send(SMTPMessage(to="a@example.com", subject=subject, body="b")))

    async def tick():
        nonlocal ticks
        while not result:
            ticks += 1
            await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        nursery.start_soon(tick)
    assert result == [True] and slow_peer.with_subject(subject)
    assert ticks >= 10, ticks  # the server took 1.5 s; a blocked loop would have ticked once or twice


async def test_close_refuses_new_sessions_and_ends_the_ones_in_flight(slow_peer):
    await trio.to_thread.run_sync(close_while_a_message_is_in_flight, slow_peer, connection(slow_peer))


def close_while_a_message_is_in_flight(peer: SMTPPeer, conn: SMTPConnection) -> None:
    errors: list[BaseException] = []

    def send():
        try:
            conn.send(SMTPMessage(to="a@example.com", subject="in flight", body="b"))
        except BaseException as exc:
            errors.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    assert peer.data_started.wait(10), "the message never reached the server"
    assert conn.statistics() == {"sessions_in_flight": 1, "closed": False}
    started = time.monotonic()
    conn.close()  # the sender waits for the server's reply to DATA, which takes 1.5 s
    sender.join(10)
    assert not sender.is_alive() and time.monotonic() - started < peer.data_delay
    assert len(errors) == 1 and "'My SMTP' was closed during a session with 127.0.0.1" in str(errors[0]), errors
    assert conn.statistics() == {"sessions_in_flight": 0, "closed": True}
    with pytest.raises(OutgoingError, match="'My SMTP' was closed .* look it up again through self.email.smtp"):
        conn.ping()


async def test_neither_the_password_nor_the_body_is_logged(starttls_peer, caplog):
    caplog.set_level(logging.DEBUG)
    body, attachment = "the-body-text-4711", "attachment-text-0815"
    message = SMTPMessage(to="a@example.com", subject=unique_subject(), body=body)
    message.attach("a.txt", attachment)
    await connection(starttls_peer).send(message)
    with pytest.raises(OutgoingError):
        await connection(starttls_peer, password="wrong-" + PASSWORD).send(message)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("zato"))
    assert "accepted <" in ours  # it did log the send
    for secret in (PASSWORD, body, attachment):
        assert secret not in ours
    assert PASSWORD not in repr(connection(starttls_peer))
