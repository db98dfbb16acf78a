""" The article's Dropbox connector service (`api.connector.dropbox`) in a running server, with
the real SDK against the stand-in: the connection created through the admin API (its token
through the secrets call), the service uploading through `self.cloud.dropbox[name].conn`, an
`async def` variant, an expired token reported to the caller, and the plugin left off. """

from __future__ import annotations

import textwrap

import httpx
import pytest
import trio

from dropbox_fixtures import USER_AGENT, standin  # noqa: F401
from zato.plugin_api import admin_auth, create_test_server_dir, run_server

# The article's service as published; the lines it leaves blank are marked `# filled:`.
SEED_SERVICE = '''
# -*- coding: utf-8 -*-

# Zato
from zato.server.service import Service

# Code completion imports
if 0:
    from dropbox import Dropbox
    from zato.server.generic.api.cloud_dropbox import CloudDropbox

class DropboxConnector(Service):
    """ Receives data to be uploaded to Dropbox.
    """
    name = 'api.connector.dropbox'

    class SimpleIO:
        input_required = 'file_name', 'data'

    def handle(self):

        # Connection to use
        conn_name = 'My Connection'

        # Get the connection object
        conn = self.cloud.dropbox[conn_name].conn # type: CloudDropbox  # filled: self.cloud.dropbox

        # Get the underlying Dropbox client
        client = conn.client # type: Dropbox

        # Upload the file received
        data = self.request.input.data  # filled: the upload itself
        data = data.encode('utf-8') if isinstance(data, str) else data  # filled
        conn.upload(self.request.input.file_name, data)  # filled
'''

ASYNC_SERVICE = '''
from zato.server.service import Service

class DropboxConnectorAsync(Service):
    name = 'api.connector.dropbox.async'

    class SimpleIO:
        input_required = 'file_name', 'data'

    async def handle(self):
        conn = self.cloud.dropbox['My Connection'].conn
        await conn.upload(self.request.input.file_name, self.request.input.data.encode('utf-8'))
        listing = await conn.run(lambda client: client.files_list_folder('/incoming'))
        self.response.payload = {'names': sorted(entry.name for entry in listing.entries)}
'''


async def start(tmp_path, plugins):
    base_dir = create_test_server_dir(tmp_path / "server", plugins=plugins)
    (base_dir / "pickup" / "dropbox_connector.py").write_text(textwrap.dedent(SEED_SERVICE))
    (base_dir / "pickup" / "dropbox_connector_async.py").write_text(textwrap.dedent(ASYNC_SERVICE))
    return run_server(base_dir)


async def create_connection(server, standin) -> None:  # noqa: F811
    async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                                 headers={"content-type": "application/json"}) as admin:
        reply = await admin.post("/zato/api/objects/cloud_dropbox", json={
            "name": "My Connection", "user_agent": USER_AGENT, "default_directory": "/incoming",
            "tls_ca_file": str(standin.ca_file)})
        assert reply.status_code == 201, reply.text
        reply = await admin.put("/zato/api/objects/cloud_dropbox/My%20Connection/secrets/oauth2_access_token",
                                json={"value": "test-access-token"})
        assert reply.status_code == 204, reply.text
        reply = await admin.get("/zato/api/objects/cloud_dropbox/My%20Connection")
        assert reply.status_code == 200 and "test-access-token" not in reply.text  # never shown again


async def test_the_article_service_uploads_through_the_connection(tmp_path, standin):  # noqa: F811
    async with await start(tmp_path, {"dropbox": True}) as server:
        await create_connection(server, standin)
        await server.invoke("api.connector.dropbox", {"file_name": "my-file.txt", "data": "Zażółć gęślą jaźń\n"})
        assert standin.files == {"/incoming/my-file.txt": "Zażółć gęślą jaźń\n".encode("utf-8")}
        assert await server.invoke("api.connector.dropbox.async", {"file_name": "b.txt", "data": "async"}) == \
            {"names": ["b.txt", "my-file.txt"]}
        assert standin.files["/incoming/b.txt"] == b"async"
        # the same name again: Dropbox's conflict reaches the caller, saying what to do
        with pytest.raises(Exception, match=r"409 path/conflict/file.*overwrite=True"):
            await server.invoke("api.connector.dropbox", {"file_name": "my-file.txt", "data": "again"})
        standin.expire()
        with pytest.raises(Exception, match=r"expired_access_token.*set a new token with PUT "
                                            r"/zato/api/objects/cloud_dropbox/My%20Connection/secrets/"
                                            r"oauth2_access_token"):
            await server.invoke("api.connector.dropbox", {"file_name": "late.txt", "data": "x"})


async def test_with_the_plugin_off_there_is_no_cloud_dropbox(tmp_path, standin):  # noqa: F811
    async with await start(tmp_path, {"dropbox": False}) as server:
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                                     headers={"content-type": "application/json"}) as admin:
            reply = await admin.post("/zato/api/objects/cloud_dropbox", json={"name": "x", "user_agent": "a"})
            assert reply.status_code == 404 and "no object type 'cloud_dropbox'" in reply.text, reply.text
        with pytest.raises(AttributeError, match=r"no outgoing connection type cloud\.dropbox.*plugin"):
            await server.invoke("api.connector.dropbox", {"file_name": "a.txt", "data": "x"})
    assert standin.files == {}


ZATO_EXPORT = """
zato_generic_connection:
  - name: My Connection
    type_: cloud-dropbox
    id: 7
    cluster_id: 1
    is_active: true
    is_internal: false
    is_channel: false
    is_outconn: true
    pool_size: 1
    sec_use_rbac: false
    user_agent: ACME-Article/1.0
    default_directory: /incoming
    max_retries_on_error: 2
    max_retries_on_rate_limit: 1
    timeout: 10
    http_headers: ""
    secret: {token}
    tls_ca_file: {ca_file}
  - name: Mongo
    type_: outconn-mongodb
"""


async def test_zatos_generic_connection_rows_of_type_cloud_dropbox_import(tmp_path, standin):  # noqa: F811
    from click.testing import CliRunner
    from zato.cli import cli
    base_dir = create_test_server_dir(tmp_path / "server", plugins={"dropbox": True})
    export = tmp_path / "zato-export.yaml"
    export.write_text(ZATO_EXPORT.format(token="test-access-token", ca_file=standin.ca_file))
    runner = CliRunner()
    result = await trio.to_thread.run_sync(
        lambda: runner.invoke(cli, ["enmasse", "import", str(base_dir), str(export)], catch_exceptions=False))
    # the row of a kind no plugin provides is refused with its line, and nothing is imported
    assert result.exit_code != 0 and "zato-export.yaml:21: " in result.output, result.output
    assert "type_ 'outconn-mongodb' is not supported on this server" in result.output, result.output
    assert "cloud-dropbox (cloud_dropbox)" in result.output, result.output
    export.write_text(ZATO_EXPORT.split("  - name: Mongo")[0].format(token="test-access-token",
                                                                        ca_file=standin.ca_file))
    result = await trio.to_thread.run_sync(
        lambda: runner.invoke(cli, ["enmasse", "import", str(base_dir), str(export)], catch_exceptions=False))
    assert result.exit_code == 0 and "1 created" in result.output, result.output
    async with run_server(base_dir) as server:
        definition = server.config_objects["cloud_dropbox"]["My Connection"]
        assert definition["max_retries_on_error"] == 2 and definition["default_directory"] == "/incoming"
        conn = server.outgoing.map("cloud.dropbox")["My Connection"].conn
        await conn.upload("from-enmasse.txt", b"token from Zato's secret field")
    assert standin.files == {"/incoming/from-enmasse.txt": b"token from Zato's secret field"}
