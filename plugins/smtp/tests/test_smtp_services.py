""" Services sending e-mail through a running server: the scheduler article's `SyncData` service
(seed 002: download data over REST, mail it as an attachment) from a plain `def handle` and an
`async def handle`, definitions the server cannot build, and the plugin switched off in
server.conf leaving no trace. """

from __future__ import annotations

import textwrap

import httpx
import pytest

from smtp_fixtures import PASSWORD, SENDER, USER, SMTPPeer, smtp_certificates, smtp_peer_fixture  # noqa: F401
from zato.objects import SecretBox
from zato.odb import ODB, sqlite_url
from zato.testing import (
    ServerProcess, admin_auth, create_test_server_dir, run_server, serve_asgi, set_config_value, text_app,
)

starttls_peer = smtp_peer_fixture(tls="starttls")

DATA = "id;name\n1;Zażółć gęślą jaźń\n"

# The article's service as published, save for its last line (`self.kvdb.conn.set(...)`, Redis:
# the redis plugin's business) and the recipients it left for the reader to fill in.
SEED_SERVICE = '''
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
        smtp_to = 'hello@example.com'

        # Who to put on CC
        smtp_cc = 'hello.cc@example.com'

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
        message.to = smtp_to
        message.cc = smtp_cc

        # .. attach the new data to the message ..
        message.attach('data.txt', data)

        # .. get an SMTP connection by name ..
        smtp_conn = self.email.smtp[smtp_out_name].conn

        # .. send the e-mail message with newest data ..
        smtp_conn.send(message)
'''

ASYNC_SERVICE = '''
from zato.common.api import SMTPMessage
from zato.server.service import Service

class SyncDataAsync(Service):
    name = 'api.scheduler.sync.async'

    async def handle(self):
        data = (await self.out.plain_http['My Data Source'].conn.get(self.cid)).text
        message = SMTPMessage()
        message.subject = 'New data (async)'
        message.body = 'Check attached data'
        message.to = ['hello@example.com']
        message.bcc = ['audit@example.com']
        message.attach('data.txt', data)
        message.attach('raw.bin', bytes(range(256)), mime_type='application/x-raw')
        sent = await self.email.smtp['My SMTP'].conn.send(message)
        self.response.payload = {'sent': sent}


class UsesBad(Service):
    name = 'api.smtp.bad'

    def handle(self):
        self.email.smtp['Bad']
'''


def data_source(text: str):
    """ The article's REST data source: a real HTTP server answering every request with `text`. """
    return serve_asgi(text_app(text, b"text/plain; charset=utf-8"))


def put_objects(server_dir, *objects) -> None:
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    for object_type, name, data in objects:
        odb.put_object(object_type, name, data)
    odb.close()


@pytest.fixture
async def sending_server(tmp_path, starttls_peer, monkeypatch):
    server_dir = create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 1})
    (server_dir / "pickup" / "sync_data.py").write_text(textwrap.dedent(SEED_SERVICE))
    (server_dir / "pickup" / "sync_data_async.py").write_text(textwrap.dedent(ASYNC_SERVICE))
    monkeypatch.setenv("ZATO_TEST_SMTP_HOST", "127.0.0.1")
    password = SecretBox(server_dir / "config" / "secret.key").encrypt(PASSWORD)  # as the admin API stores it
    async with data_source(DATA) as address:
        put_objects(server_dir,
                    ("outgoing_rest", "My Data Source", {"address": address, "data_format": "text"}),
                    ("email_smtp", "My SMTP", starttls_peer.definition(host="$ZATO_TEST_SMTP_HOST", password=password)),
                    ("email_smtp", "Bad", starttls_peer.definition(tls_mode="tls")))
        async with run_server(server_dir) as server:
            yield server


async def test_the_seed_service_mails_the_downloaded_data_from_a_plain_handle(sending_server, starttls_peer):
    await sending_server.invoke("api.scheduler.sync", {})
    received = starttls_peer.with_subject("New data")
    assert received.tls and received.login == USER
    assert received.mail_from == SENDER and received.rcpt_tos == ["hello@example.com", "hello.cc@example.com"]
    got = received.message
    assert (got["From"], got["To"], got["Cc"]) == (SENDER, "hello@example.com", "hello.cc@example.com")
    assert got.get_body(("plain",)).get_content() == "Check attached data\n"
    (attachment,) = got.iter_attachments()
    assert attachment.get_filename() == "data.txt" and attachment.get_content_type() == "text/plain"
    assert attachment.get_payload(decode=True) == DATA.encode("utf-8")


async def test_an_async_service_awaits_the_same_connection(sending_server, starttls_peer):
    assert await sending_server.invoke("api.scheduler.sync.async", {}) == {"sent": True}
    received = starttls_peer.with_subject("New data (async)")
    assert received.rcpt_tos == ["hello@example.com", "audit@example.com"] and "Bcc" not in received.message
    text, raw = received.message.iter_attachments()
    assert text.get_payload(decode=True) == DATA.encode("utf-8")
    assert (raw.get_filename(), raw.get_content_type(), raw.get_payload(decode=True)) == \
        ("raw.bin", "application/x-raw", bytes(range(256)))


async def test_a_definition_the_server_cannot_build_is_reported_and_not_offered(sending_server):
    error = sending_server.outgoing_connections.errors[("smtp", "Bad")]
    assert "tls_mode 'tls' is not one of none, starttls, ssl" in error
    with pytest.raises(LookupError, match=r"no outgoing connection 'Bad' in email.smtp; known: 'My SMTP'"):
        await sending_server.invoke("api.smtp.bad", {})
    async with httpx.AsyncClient(base_url=sending_server.address, auth=admin_auth()) as client:
        reply = await client.post("/zato/api/outgoing/smtp/Bad/ping", headers={"content-type": "application/json"})
    assert reply.status_code == 404 and "tls_mode 'tls'" in reply.text


# ################################################################################################

PROBE = '''
import sys
from zato.server.service import Service

class Probe(Service):
    name = "t.smtp.probe"

    def handle(self):
        try:
            smtp = sorted(self.email.smtp)
        except AttributeError as exc:
            smtp = str(exc)
        self.response.payload = {"modules": sorted(m for m in sys.modules if m.startswith("zato_plugin_smtp")),
                                 "smtp": smtp}
'''


def probe(address: str) -> tuple[dict, int, list[str]]:
    """ What the server process has loaded, whether the admin API knows email_smtp, and its types. """
    with httpx.Client(base_url=address, auth=admin_auth(), timeout=30) as client:
        loaded = client.post("/zato/api/invoke/t.smtp.probe", json={}).json()
        status = client.get("/zato/api/objects/email_smtp").status_code
        types = [t["name"] for t in client.get("/zato/api/objects").json()]
    return loaded, status, types


def test_switched_off_in_server_conf_it_leaves_no_trace(tmp_path, smtp_certificates):
    server_dir = create_test_server_dir(tmp_path / "server")
    (server_dir / "pickup" / "probe.py").write_text(textwrap.dedent(PROBE))
    peer = SMTPPeer(smtp_certificates)  # a stored definition, never contacted
    put_objects(server_dir, ("email_smtp", "My SMTP", peer.definition()))

    set_config_value(server_dir, "deploy_internal", "zato_plugin_smtp", "False")
    with ServerProcess(server_dir) as server:
        loaded, status, types = probe(server.address)
        output = server.output()
    assert loaded["modules"] == []
    assert loaded["smtp"].startswith("no outgoing connection type email.smtp")
    assert status == 404 and "email_smtp" not in types
    startup = output.split(" ready at ")[0]
    # the one mention: the deploy log saying what the probe needs, and which line switches it on
    startup = "\n".join(line for line in startup.splitlines() if "[deploy_internal] zato_plugin_smtp = True" not in line)
    assert " ready at " in output and "smtp" not in startup.lower()  # not even the stored email_smtp object

    # The same server with the plugin on: the probe sees it, so the checks above can fail.
    set_config_value(server_dir, "deploy_internal", "zato_plugin_smtp", "True")
    with ServerProcess(server_dir) as server:
        loaded, status, types = probe(server.address)
    assert "zato_plugin_smtp" in loaded["modules"] and loaded["smtp"] == ["My SMTP"]
    assert status == 200 and "email_smtp" in types
