""" Services from the product articles (/work/shared/seeds/), as published, deployed from a
server's pickup directory and called over HTTP through REST channels.

The article text lost what stood inside web links (service names, `self.logger.info`...) and
the lines that closed a docstring or a call; those gaps are filled minimally, and each fill is
marked with a `# filled:` comment. Nothing else in the services is changed.
"""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path

import httpx
import pytest

from zato.odb import ODB, sqlite_url
from zato.testing import run_server

# ################################################################################################
# 002, the rate-limiting article: the sample service, exactly as published.

RATE_LIMITING_SAMPLE = '''
# -*- coding: utf-8 -*-

# Zato
from zato.server.service import Service

class Sample(Service):
    name = 'api.sample'

    def handle(self):

        # Return a simple string on response
        self.response.payload = 'Hello there!\\n'
'''

# 002, the Dropbox article: the REST channel service that hands an uploaded file to the connector
# (docs/examples/cloud_dropbox/rest_upload.py, the article's code with its blanks filled).
DROPBOX_REST_CHANNEL = (Path(__file__).resolve().parents[1] / "docs" / "examples" / "cloud_dropbox" /
                        "rest_upload.py").read_text("utf-8")

# A local stand-in for the article's Dropbox connector: the same name and SimpleIO; instead of
# `client.files_upload` it writes the file where the test can read it, with the type it got.
DROPBOX_CONNECTOR_STANDIN = '''
import base64, json, os
from zato.server.service import Service

class DropboxConnectorStandIn(Service):
    """ Receives data to be uploaded to Dropbox (here: to a local directory). """
    name = 'api.connector.dropbox'

    class SimpleIO:
        input_required = 'file_name', 'data'

    def handle(self):
        data = self.request.input.data
        raw = data if isinstance(data, bytes) else data.encode('utf-8')
        record = {'file_name': self.request.input.file_name, 'type': type(data).__name__,
                  'data_b64': base64.b64encode(raw).decode('ascii')}
        with open(os.path.join(self.server.base_dir, 'dropbox-uploads.jsonl'), 'a') as f:
            f.write(json.dumps(record) + '\\n')
'''

# 004, the WebSocket timeouts article: the simplest service, which only logs its input.
WSX_ARTICLE_SERVICE = '''
# -*- coding: utf-8 -*-

# Zato
from zato.server.service import Service

class MyService(Service):
    def handle(self):
        self.logger.info('My request is %s', self.request.input) # filled: `self.logger.info(` was stripped
'''

# The article's service has no `name`: Zato derives it from the module and the class.
WSX_SERVICE_NAME = "wsx_article.my-service"


@pytest.fixture
def seeded_server_dir(server_dir: Path) -> Path:
    pickup = server_dir / "pickup"
    for file_name, source in (("rate_limiting_sample.py", RATE_LIMITING_SAMPLE),
                              ("dropbox_rest_channel.py", DROPBOX_REST_CHANNEL),
                              ("dropbox_connector_standin.py", DROPBOX_CONNECTOR_STANDIN),
                              ("wsx_article.py", WSX_ARTICLE_SERVICE)):
        (pickup / file_name).write_text(textwrap.dedent(source).lstrip(), "utf-8")
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    try:
        odb.put_object("channel_rest", "api.sample", {"url_path": "/api/sample", "service": "api.sample",
                                                      "methods": ["GET"], "data_format": "text"})
        # The upload body is a file, not JSON: the channel passes it on as it came.
        odb.put_object("channel_rest", "api.upload", {"url_path": "/api/upload", "service": "api.channel.rest.upload",
                                                      "methods": ["POST"], "data_format": "text"})
        odb.put_object("channel_rest", "wsx.article", {"url_path": "/api/my-service", "service": WSX_SERVICE_NAME,
                                                       "methods": ["POST"]})
    finally:
        odb.close()
    return server_dir


def uploads(server_dir: Path) -> list[dict]:
    path = server_dir / "dropbox-uploads.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


async def test_rate_limiting_article_sample_says_hello(seeded_server_dir):
    async with run_server(seeded_server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            reply = await client.get("/api/sample")
    assert reply.status_code == 200
    assert reply.text == "Hello there!\n"
    assert reply.headers["content-type"].startswith("text/plain")
    assert len(reply.headers["x-zato-cid"]) == 24


async def test_dropbox_article_rest_channel_hands_a_text_file_to_the_connector(seeded_server_dir):
    text = "Invoice 42\nTotal: 100 €\n"
    async with run_server(seeded_server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            reply = await client.post("/api/upload", params={"file_name": "invoice-42.txt"},
                                      content=text.encode("utf-8"))
    assert reply.status_code == 200, reply.text
    # A body that decodes as UTF-8 reaches the service as `str` in raw_request.
    assert uploads(seeded_server_dir) == [{"file_name": "invoice-42.txt", "type": "str",
                                           "data_b64": base64.b64encode(text.encode("utf-8")).decode("ascii")}]


async def test_dropbox_article_rest_channel_hands_a_binary_file_to_the_connector(seeded_server_dir):
    binary = b"%PDF-1.4\n\x00\xff\xfe\x80 binary \xc3\x28 body\n"
    with pytest.raises(UnicodeDecodeError):
        binary.decode("utf-8")
    async with run_server(seeded_server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            reply = await client.post("/api/upload?file_name=report.pdf", content=binary)
    assert reply.status_code == 200, reply.text
    [upload] = uploads(seeded_server_dir)
    assert upload["file_name"] == "report.pdf"
    assert base64.b64decode(upload["data_b64"]) == binary, "the connector must get the uploaded bytes unchanged"
    assert upload["type"] == "bytes"


async def test_dropbox_article_upload_without_file_name_is_a_500_and_uploads_nothing(seeded_server_dir, caplog):
    # The article's service reads `self.request.http.params.file_name` with no check: without the
    # query parameter it raises, the caller gets Zato's JSON error, and the log says why.
    async with run_server(seeded_server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address) as client:
            reply = await client.post("/api/upload", content=b"data")
    assert reply.status_code == 500
    assert reply.json()["cid"] == reply.headers["x-zato-cid"]
    assert uploads(seeded_server_dir) == []
    assert "file_name" in caplog.text and f"cid={reply.headers['x-zato-cid']}" in caplog.text


async def test_websocket_article_service_logs_its_input(seeded_server_dir, caplog):
    async with run_server(seeded_server_dir) as server:
        assert WSX_SERVICE_NAME in server.services
        async with httpx.AsyncClient(base_url=server.address) as client:
            reply = await client.post("/api/my-service", json={"customer": "Jane", "order_id": 17})
    assert reply.status_code == 200
    records = [r for r in caplog.records if r.name == f"zato.service.{WSX_SERVICE_NAME}"]
    assert [r.getMessage() for r in records] == ["My request is {'customer': 'Jane', 'order_id': 17}"]
