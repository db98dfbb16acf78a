""" Fixtures of the dropbox plugin's tests: the Dropbox stand-in (zato_plugin_dropbox.testing),
with the SDK pointed at it, and connections built from definitions as the server builds them. """

from __future__ import annotations

from typing import Any

import pytest

from zato_plugin_dropbox.connection import create_outgoing
from zato_plugin_dropbox.testing import ACCESS_TOKEN, DropboxStandIn

USER_AGENT = "ACME-Tests/1.0"


@pytest.fixture
def standin():
    """ A running stand-in; clients built during the test talk to it. """
    with DropboxStandIn() as server, server.pointed_at():
        yield server


def definition(standin: DropboxStandIn, **fields: Any) -> dict[str, Any]:
    """ A cloud_dropbox definition (secrets included, as runtimes see them) reaching `standin`. """
    return {"name": "My Connection", "user_agent": USER_AGENT, "oauth2_access_token": ACCESS_TOKEN,
            "tls_ca_file": str(standin.ca_file), "is_active": True, **fields}


def connect(standin: DropboxStandIn, **fields: Any) -> Any:
    return create_outgoing(None, definition(standin, **fields))
