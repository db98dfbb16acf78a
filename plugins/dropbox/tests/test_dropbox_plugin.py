""" The plugin module itself: light to import (the SDK is imported when a connection is built),
and what it registers. """

from __future__ import annotations

import subprocess
import sys

from zato_plugin_dropbox import ACCESSOR, CLOUD_DROPBOX, CONNECTION_TYPE, register_connectors


def test_importing_the_plugin_does_not_import_the_sdk():
    code = "import sys, zato_plugin_dropbox; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('dropbox', 'requests', 'zato_plugin_dropbox.connection')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_it_registers_one_connector_for_cloud_dropbox():
    registered = []
    register_connectors(register=registered.append)
    (connector,) = registered
    assert connector.object_type is CLOUD_DROPBOX
    outconn = connector.connection_type
    assert (outconn.name, outconn.object_type, outconn.accessor) == (CONNECTION_TYPE, "cloud_dropbox", ACCESSOR)
    assert ACCESSOR == "cloud.dropbox"
    secrets = {field.name for field in CLOUD_DROPBOX.fields if field.secret}
    assert secrets == {"oauth2_access_token", "app_secret", "oauth2_refresh_token"}
    assert [field.name for field in CLOUD_DROPBOX.fields if field.required] == ["name", "user_agent"]
