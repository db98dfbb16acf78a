""" The shared conformance suite for outgoing connections (zato.testing.conformance), run with the
real SDK against the Dropbox stand-in: connect and use, ping, an outage and the reconnect after
it, a live edit, delete and close, bad config, closing on shutdown. """

from __future__ import annotations

import itertools
from typing import Any

import pytest
import trio

from dropbox_fixtures import USER_AGENT, standin  # noqa: F401
from zato.plugin_api import OutgoingError
from zato.testing.conformance import OutgoingConnectionConformance
from zato_plugin_dropbox.testing import ACCESS_TOKEN, DropboxStandIn

_numbers = itertools.count()


class ConformancePeer:
    """ The suite's `Peer`: each use uploads a file, finds it in the stand-in and downloads it. """

    def __init__(self, server: DropboxStandIn) -> None:
        self.server = server

    def definition(self, name: str) -> dict[str, Any]:
        return {"user_agent": USER_AGENT, "tls_ca_file": str(self.server.ca_file), "default_directory": "/conformance",
                "timeout": 5}

    def secrets(self) -> dict[str, str]:
        return {"oauth2_access_token": ACCESS_TOKEN}

    def upload(self, connection: Any) -> tuple[str, bytes]:
        name, data = f"file-{next(_numbers)}.bin", f"data {next(_numbers)} ż".encode("utf-8")
        meta = connection.conn.upload(name, data)
        return meta.path_display, data

    def use(self, connection: Any) -> None:
        path, data = self.upload(connection)
        assert self.server.files[path] == data
        assert connection.conn.client.files_download(path)[1].content == data

    def edited(self, definition: dict[str, Any]) -> dict[str, Any]:
        return {**definition, "default_directory": "/edited"}

    def check_edit(self, connection: Any) -> None:
        path, data = self.upload(connection)
        assert path.startswith("/edited/") and self.server.files[path] == data

    def assert_closed(self, connection: Any) -> None:
        assert connection.closed
        assert not connection.session.adapters["https://"].poolmanager.pools  # its sockets were released
        with pytest.raises(OutgoingError, match="was closed"):
            connection.ping()  # refused before any socket is opened

    def bad_definitions(self) -> list[tuple[dict[str, Any], str]]:
        return [({"timeout": 5}, "user_agent"),
                ({"user_agent": "a", "timeout": "soon"}, "timeout"),
                ({"user_agent": "a", "max_retries_on_rate_limit": -1}, "max_retries_on_rate_limit"),
                ({"user_agent": "a", "oauth2_access_token": "in clear"}, "oauth2_access_token"),  # its own call
                ({"user_agent": "a", "http_headers": "no colon"}, "http_headers"),
                ({"user_agent": "a", "default_directory": "reports"}, "default_directory"),
                ({"user_agent": "a", "token": "x"}, "token")]  # not a field

    async def stop(self) -> None:
        await trio.to_thread.run_sync(self.server.stop)

    async def start(self) -> None:
        await trio.to_thread.run_sync(self.server.start)


@pytest.fixture
def peer(standin):  # noqa: F811
    return ConformancePeer(standin)


class TestDropboxConformance(OutgoingConnectionConformance):
    connection_type = "dropbox"
    object_type = "cloud_dropbox"
