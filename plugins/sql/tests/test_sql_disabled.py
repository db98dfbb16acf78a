""" `[deploy_internal] zato_plugin_sql = False` in server.conf: the server starts (with an outgoing_sql object in its
database) without a trace of the plugin: its module is never imported, its object type is
unknown to the admin API and services get no `out.sql`. Checked in a real server process,
since this test process has imported the plugin already; the same server with the plugin
enabled shows that the probe sees it when it is there. """

from __future__ import annotations

import textwrap

import httpx

from zato.odb import ODB, sqlite_url
from zato.testing import ServerProcess, admin_auth, create_test_server_dir, set_config_value

PROBE = '''
import sys
from zato.server.service import Service


class Probe(Service):
    name = "t.sql.probe"

    def handle(self):
        try:
            found = sorted(self.outgoing.sql)
        except AttributeError as exc:
            found = str(exc)
        self.response.payload = {"imported": sorted(m for m in sys.modules if m.startswith("zato_plugin_sql")),
                                 "out.sql": found}
'''


def probe(base_dir) -> tuple[dict, int, dict, str]:
    with ServerProcess(base_dir) as process:
        with httpx.Client(base_url=process.address, auth=admin_auth(), timeout=30) as client:
            payload = client.post("/zato/api/invoke/t.sql.probe", json={}).json()
            object_type = client.get("/zato/api/objects/outgoing_sql")
            types = {t["name"] for t in client.get("/zato/api/objects").json()}
            return payload, object_type.status_code, types, process.output()


def test_a_disabled_plugin_leaves_no_trace(tmp_path):
    base_dir = create_test_server_dir(tmp_path / "server")
    (base_dir / "pickup" / "probe.py").write_text(textwrap.dedent(PROBE))
    odb = ODB(sqlite_url(base_dir / "work" / "zato.db"))
    odb.put_object("outgoing_sql", "orders", {"engine": "sqlite", "db_name": str(tmp_path / "orders.db")})
    odb.close()

    set_config_value(base_dir, "deploy_internal", "zato_plugin_sql", "False")
    payload, status, types, output = probe(base_dir)
    assert payload["imported"] == []
    assert payload["out.sql"].startswith("no outgoing connection type out.sql")
    assert status == 404 and "outgoing_sql" not in types
    # the one mention: the deploy log saying what the probe needs, and which line switches it on
    output = "\n".join(line for line in output.splitlines() if "[deploy_internal] zato_plugin_sql = True" not in line)
    assert "zato_plugin_sql" not in output and "outgoing sql" not in output

    set_config_value(base_dir, "deploy_internal", "zato_plugin_sql", "True")
    payload, status, types, output = probe(base_dir)
    assert "zato_plugin_sql" in payload["imported"] and payload["out.sql"] == ["orders"]
    assert status == 200 and "outgoing_sql" in types
    assert "outgoing sql 'orders' created" in output
