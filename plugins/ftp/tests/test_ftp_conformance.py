""" The shared conformance suite for outgoing connections (zato.testing.conformance), run against a
real FTPS server (explicit TLS, the certificate verified against the test CA, a password set
through the secrets call): connect and use, ping, an outage and the reconnect after it, a live
edit, delete and close, bad config, closing on shutdown. """

from __future__ import annotations

import uuid
from typing import Any

import pytest

from ftp_fixtures import PASSWORD, FTPPeer, ftp_certificates  # noqa: F401
from zato.plugin_api import OutgoingConnectionConformance
from zato_plugin_ftp import FTPError


class ConformancePeer(FTPPeer):
    """ The suite's `Peer`: each use writes, lists, reads and deletes a file of its own. """

    def definition(self, name: str = "conformance connection", **fields: Any) -> dict[str, Any]:
        definition = super().definition(name, **fields)
        del definition["password"]  # a secret: set through its own call
        definition.pop("name")
        return definition

    def secrets(self) -> dict[str, str]:
        return {"password": PASSWORD}

    def use(self, connection: Any) -> None:
        name = f"conformance-{uuid.uuid4().hex}.txt"
        connection.setbytes(name, b"conformance data")
        assert name in connection.listdir(".")
        assert connection.getbytes(name) == b"conformance data"
        connection.remove(name)
        assert not connection.exists(name)

    def edited(self, definition: dict[str, Any]) -> dict[str, Any]:
        (self.home / "edited").mkdir(exist_ok=True)
        return {**definition, "default_directory": "/edited"}

    def check_edit(self, connection: Any) -> None:
        connection.setbytes("after-edit.txt", b"edited")
        assert (self.home / "edited" / "after-edit.txt").read_bytes() == b"edited"

    def assert_closed(self, connection: Any) -> None:
        statistics = connection.statistics()
        assert statistics["closed"] and statistics["idle"] == 0 and statistics["in_use"] == 0, statistics
        with pytest.raises(FTPError, match="was closed"):
            connection.ping()  # refused before any socket is opened

    def bad_definitions(self) -> list[tuple[dict[str, Any], str]]:
        return [({"port": 21}, "host"),
                ({"host": "127.0.0.1", "port": "twenty-one"}, "port"),
                ({"host": "127.0.0.1", "port": 70000}, "port"),
                ({"host": "127.0.0.1", "timeout": "soon"}, "timeout"),
                ({"host": "127.0.0.1", "tls": "implicit"}, "tls"),
                ({"host": "127.0.0.1", "pool_size": 0}, "pool_size"),
                ({"host": "127.0.0.1", "passive": "perhaps"}, "passive"),
                ({"host": "127.0.0.1", "password": "in clear"}, "password")]  # secrets have their own call


@pytest.fixture
async def peer(tmp_path, ftp_certificates):  # noqa: F811
    peer = ConformancePeer(tmp_path / "conformance-home", certificates=ftp_certificates)
    await peer.start()
    yield peer
    await peer.stop()


class TestFTPConformance(OutgoingConnectionConformance):
    connection_type = "ftp"
    object_type = "outgoing_ftp"
