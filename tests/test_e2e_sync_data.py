""" The proof of the outgoing connections issue: the scheduler article's `SyncData` service
(shared/seeds/002_*.txt), as published with only its blanks filled in, fetches from a local HTTP
server, e-mails the data as an attachment through a real SMTP server (aiosmtpd) and stores it
in a real Redis. All three effects are asserted. """

from __future__ import annotations

import os
import threading

import httpx
import pytest

from core_test_helpers import handle_lifespan, serve_asgi
from zato.odb import ODB, sqlite_url
from zato.testing import admin_auth, run_server, set_config_value

# As published; the blanks the article's text lost are filled in and marked `# filled:`.
SYNC_DATA = '''
# -*- coding: utf-8 -*-

# Zato
from zato.common.api import SMTPMessage
from zato.server.service import Service

class SyncData(Service):
    name = 'api.scheduler.sync'

    def handle(self):

        # Which REST outgoing connection to use
        rest_out_name = 'My Data Source'

        # Which SMTP connection to send an email through
        smtp_out_name = 'My SMTP'

        # Who the recipient of the email will be
        smtp_to = 'hello@example.com'  # filled: the address

        # Who to put on CC
        smtp_cc = 'hello.cc@example.com'  # filled: the address

        # Now, let's get the new data from a remote endpoint ..

        # .. get a REST connection by name ..
        rest_conn = self.out.plain_http[rest_out_name].conn

        # .. download newest data ..
        data = rest_conn.get(self.cid).text

        # .. construct a new e-mail message ..
        message = SMTPMessage()
        message.subject = 'New data'
        message.body = 'Check attached data'

        # .. add recipients ..
        message.to = smtp_to  # filled: `message.` was lost
        message.cc = smtp_cc  # filled: `message.` was lost

        # .. attach the new data to the message ..
        message.attach('my.data.txt', data)  # filled: the file name

        # .. get an SMTP connection by name ..
        smtp_conn = self.email.smtp[smtp_out_name].conn  # filled: `self.email.smtp` was lost

        # .. send the e-mail message with newest data ..
        smtp_conn.send(message)  # filled: the call was lost

        # .. and now store the data in Redis.
        self.kvdb.conn.set('newest.data', data)  # filled: the key
'''

NEWEST_DATA = "id,amount\n1,10.5\n2,99.0\n"


@pytest.fixture
def smtp_server():
    try:
        from aiosmtpd.controller import Controller
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"aiosmtpd is required in CI: {exc}")
        pytest.skip(f"aiosmtpd is not installed: {exc}")

    class Collect:
        def __init__(self) -> None:
            self.envelopes = []
            self.received = threading.Event()

        async def handle_DATA(self, server, session, envelope):
            self.envelopes.append(envelope)
            self.received.set()
            return "250 OK"

    import socket
    with socket.socket() as probe:  # the controller checks readiness by connecting to the port it was given
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handler = Collect()
    handler.port = port
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler
    controller.stop()


@pytest.fixture
def redis_server():
    try:
        from zato_plugin_redis.testing import RedisServer, RedisUnavailable
    except ImportError as exc:
        pytest.fail(f"zato-plugin-redis must be installed (scripts/install): {exc}")
    try:
        server = RedisServer().start()
    except RedisUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"redis-server is required in CI: {exc}")
        pytest.skip(str(exc))
    yield server
    server.stop()


async def data_source(scope, receive, send):
    if scope["type"] == "lifespan":
        return await handle_lifespan(receive, send)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/csv")]})
    await send({"type": "http.response.body", "body": NEWEST_DATA.encode()})


async def test_sync_data_fetches_emails_and_stores(server_dir, smtp_server, redis_server):
    import email
    import redis
    (server_dir / "pickup" / "sync_data.py").write_text(SYNC_DATA)
    set_config_value(server_dir, "kvdb", "host", "127.0.0.1")
    set_config_value(server_dir, "kvdb", "port", str(redis_server.port))
    async with serve_asgi(data_source) as address:
        odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
        odb.put_object("outgoing_rest", "My Data Source", {"address": address, "url_path": "/data.csv",
                                                           "data_format": "text"})
        odb.put_object("email_smtp", "My SMTP", {"host": "127.0.0.1", "port": smtp_server.port, "tls_mode": "none",
                                                 "default_from": "zato@example.com"})
        odb.close()
        async with run_server(server_dir) as server:
            async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30) as client:
                reply = await client.post("/zato/api/invoke/api.scheduler.sync")
            assert reply.status_code == 200, reply.text

    # 1. e-mailed, with the data attached
    assert smtp_server.received.is_set()
    envelope = smtp_server.envelopes[0]
    assert sorted(envelope.rcpt_tos) == ["hello.cc@example.com", "hello@example.com"]
    message = email.message_from_bytes(envelope.content)
    assert message["Subject"] == "New data" and message["To"] == "hello@example.com"
    assert message["Cc"] == "hello.cc@example.com"
    attachments = [part for part in message.walk() if part.get_filename()]
    assert [a.get_filename() for a in attachments] == ["my.data.txt"]
    assert attachments[0].get_payload(decode=True).decode() == NEWEST_DATA
    # 2. stored in Redis; 3. fetched from the HTTP server (the same bytes reached both)
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, decode_responses=True)
    assert client.get("newest.data") == NEWEST_DATA
    client.close()
