""" The ftp plugin in a server: services using `self.outgoing.ftp.get(name)` as Zato's article does
(listdir, getbytes, remove), an `async def` service with `run`, ping through the admin API and
`zato ping-connection`, Zato's enmasse key `outconn_ftp`, and the plugin switched off. """

from __future__ import annotations

import subprocess
import sys
import textwrap
from urllib.parse import quote

import httpx
import pytest
import trio
from click.testing import CliRunner

from ftp_fixtures import PASSWORD, USER, ftp_certificates, ftp_peer, ftps_peer  # noqa: F401
from zato.cli import cli
from zato.plugin_api import ServerProcess, admin_auth, create_test_server_dir, run_server

API = "/zato/api"

SERVICES = '''
from zato.server.service import Service


class ProcessIncoming(Service):
    """ As in Zato's cloud article: every file of a directory read, then deleted. """
    name = 'ftp.process-incoming'

    def handle(self):
        conn = self.outgoing.ftp.get('My FTP Connection')
        contents = {}
        for name in conn.listdir('/incoming'):
            path = '/incoming/' + name
            contents[name] = conn.getbytes(path).decode('utf8')
            conn.remove(path)
        self.response.payload = {'contents': contents, 'left': conn.listdir('/incoming'),
                                 'same': conn is self.out.ftp['My FTP Connection']}


class AsyncListing(Service):
    name = 'ftp.async-listing'

    async def handle(self):
        conn = self.outgoing.ftp.get('My FTP Connection')
        try:
            conn.listdir('/')
        except RuntimeError as exc:  # BlockingCallError: never block the server's event loop
            refused = str(exc)
        names = await conn.run(lambda conn: conn.listdir('/'))
        await conn.run(lambda conn: conn.settext('/from-async.txt', 'written by an async service'))
        self.response.payload = {'names': names, 'refused': refused}


class Missing(Service):
    name = 'ftp.missing'

    def handle(self):
        from zato_plugin_ftp import ResourceNotFound
        try:
            self.outgoing.ftp.get('My FTP Connection').getbytes('/no/such/file.txt')
        except ResourceNotFound as exc:
            self.response.payload = {'error': str(exc)}
'''


def ftp_server_dir(tmp_path, **config):
    base = create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 0.3}, plugins={"ftp": True},
                                  **config)
    (base / "pickup" / "ftp_services.py").write_text(SERVICES)
    return base


def admin_client(server) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                             headers={"content-type": "application/json"})


async def create_connection(client, definition) -> None:
    definition = dict(definition)
    password = definition.pop("password")
    reply = await client.post(f"{API}/objects/outgoing_ftp", json=definition)
    assert reply.status_code == 201, reply.text
    name = quote(definition["name"], safe="")
    reply = await client.put(f"{API}/objects/outgoing_ftp/{name}/secrets/password", json={"value": password})
    assert reply.status_code == 204, reply.text


async def test_the_articles_service_lists_reads_and_removes_files_over_ftps(ftps_peer, tmp_path, monkeypatch):
    (ftps_peer.home / "incoming").mkdir()
    (ftps_peer.home / "incoming" / "a.csv").write_text("1,2,3")
    (ftps_peer.home / "incoming" / "b.csv").write_text("4,5,6")
    monkeypatch.setenv("TEST_FTP_PORT", str(ftps_peer.port))
    async with run_server(ftp_server_dir(tmp_path)) as server:
        async with admin_client(server) as client:
            await create_connection(client, ftps_peer.definition("My FTP Connection", port="$TEST_FTP_PORT"))
            reply = await server.invoke("ftp.process-incoming")
            assert reply == {"contents": {"a.csv": "1,2,3", "b.csv": "4,5,6"}, "left": [], "same": True}
            assert list((ftps_peer.home / "incoming").iterdir()) == []

            reply = await server.invoke("ftp.async-listing")
            assert reply["names"] == ["incoming"]
            assert "listdir() blocks" in reply["refused"] and "await conn.run" in reply["refused"]
            assert (ftps_peer.home / "from-async.txt").read_text() == "written by an async service"

            reply = await server.invoke("ftp.missing")
            assert "outgoing ftp 'My FTP Connection': download '/no/such/file.txt'" in reply["error"]
            assert "550" in reply["error"]

            ping = (await client.post(f"{API}/outgoing/ftp/My%20FTP%20Connection/ping")).json()
            assert ping["ok"], ping
            reply = await client.get(f"{API}/objects/outgoing_ftp/My%20FTP%20Connection")
            assert reply.status_code == 200 and PASSWORD not in reply.text, reply.text


async def test_ping_reports_a_wrong_password_with_the_servers_530(ftp_peer, tmp_path):
    async with run_server(ftp_server_dir(tmp_path)) as server:
        async with admin_client(server) as client:
            await create_connection(client, ftp_peer.definition("wrong", password="not the password"))
            ping = (await client.post(f"{API}/outgoing/ftp/wrong/ping")).json()
            assert not ping["ok"] and "530" in ping["error"] and "check user and password" in ping["error"], ping


ENMASSE = """
outconn_ftp:
  - name: zato ftp
    is_active: true
    host: 127.0.0.1
    port: {port}
    user: {user}
    password: {password}
    acct: ""
    timeout: 5
    dircache: true
    default_directory: /incoming
"""


async def test_an_enmasse_file_with_zatos_key_creates_a_working_connection(ftp_peer, tmp_path):
    (ftp_peer.home / "incoming").mkdir()
    (ftp_peer.home / "incoming" / "x.txt").write_text("from enmasse")
    base = ftp_server_dir(tmp_path)
    config = tmp_path / "zato-export.yaml"
    config.write_text(textwrap.dedent(ENMASSE.format(port=ftp_peer.port, user=USER, password=PASSWORD)))
    result = await trio.to_thread.run_sync(
        lambda: CliRunner().invoke(cli, ["enmasse", "import", str(base), str(config)], catch_exceptions=False))
    assert result.exit_code == 0, result.output
    assert "1 created" in result.output, result.output
    async with run_server(base) as server:
        definition = server.config_objects["outgoing_ftp"]["zato ftp"]
        assert definition["default_directory"] == "/incoming" and definition["dircache"] is True
        conn = server.outgoing.map("out.ftp")["zato ftp"]
        assert await conn.run(lambda conn: conn.gettext("x.txt")) == "from enmasse"


def test_zato_ping_connection_pings_through_the_server(ftp_peer, tmp_path):
    import json
    base = ftp_server_dir(tmp_path)
    rows = {"outconn_ftp": [{"name": "cli ftp", "host": "127.0.0.1", "port": ftp_peer.port, "user": USER,
                             "password": PASSWORD}]}
    config = tmp_path / "cli.yaml"
    config.write_text(json.dumps(rows))  # JSON is YAML
    result = CliRunner().invoke(cli, ["enmasse", "import", str(base), str(config)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    zato = [sys.executable, "-c", "import sys; from zato.cli import main; sys.exit(main())"]
    with ServerProcess(base):
        result = subprocess.run([*zato, "ping-connection", str(base), "ftp", "cli ftp"], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0 and "answered in" in result.stdout, (result.stdout, result.stderr)
        ftp_peer.stop_sync()
        result = subprocess.run([*zato, "ping-connection", str(base), "ftp", "cli ftp"], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 1 and "cannot connect" in result.stdout, (result.stdout, result.stderr)


async def test_switched_off_the_object_type_is_unknown(tmp_path):
    base = create_test_server_dir(tmp_path / "off", plugins={"ftp": False})
    async with run_server(base) as server:
        async with admin_client(server) as client:
            reply = await client.post(f"{API}/objects/outgoing_ftp", json={"name": "x", "host": "127.0.0.1"})
            assert reply.status_code == 404, reply.text
        with pytest.raises(AttributeError, match="no outgoing connection type out.ftp"):
            server.outgoing.namespace("out").ftp
    async with run_server(create_test_server_dir(tmp_path / "default")) as server:  # on once installed
        async with admin_client(server) as client:
            reply = await client.post(f"{API}/objects/outgoing_ftp", json={"name": "x", "host": "127.0.0.1"})
            assert reply.status_code == 201, reply.text
