""" The article's Dropbox connector service (`api.connector.dropbox`) in a running server, with
the real SDK against the stand-in: the connection created through the admin API (its token
through the secrets call), the service uploading through `self.cloud.dropbox[name].conn`, an
`async def` variant, an expired token reported to the caller, and the plugin left off. """

from __future__ import annotations

import textwrap

import httpx
import pytest

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
    async with await start(tmp_path, {}) as server:
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                                     headers={"content-type": "application/json"}) as admin:
            reply = await admin.post("/zato/api/objects/cloud_dropbox", json={"name": "x", "user_agent": "a"})
            assert reply.status_code == 404 and "no object type 'cloud_dropbox'" in reply.text, reply.text
        with pytest.raises(AttributeError, match=r"no outgoing connection type cloud\.dropbox.*plugin"):
            await server.invoke("api.connector.dropbox", {"file_name": "a.txt", "data": "x"})
    assert standin.files == {}
