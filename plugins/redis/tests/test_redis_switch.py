""" `[deploy_internal] zato_plugin_redis = False`: the server starts without a trace of the plugin - never imported,
nothing in the log, its object type unknown to the admin API - and `self.kvdb` says which plugin
it needs. The same server with the plugin on shows each of those traces, so the checks can fail.
Real server processes (other tests import the plugin into this one). """

from __future__ import annotations

import textwrap

import httpx

from zato.testing import ServerProcess, admin_auth, create_test_server_dir, set_config_value

PROBE = '''
import sys

from zato.server.service import Service


class Probe(Service):
    name = "t.switch.probe"

    def handle(self):
        try:
            kvdb = repr(self.kvdb)
        except AttributeError as exc:
            kvdb = f"error: {exc}"
        self.response.payload = {"imported": sorted(m for m in sys.modules if m.startswith("zato_plugin_redis")),
                                 "kvdb": kvdb}
'''


def probe(base_dir):
    with ServerProcess(base_dir) as process:
        with httpx.Client(base_url=process.address, auth=admin_auth(), timeout=30) as admin:
            result = admin.post("/zato/api/invoke/t.switch.probe", json={}).json()
            object_type = admin.get("/zato/api/objects/outgoing_redis")
            types = [item["name"] for item in admin.get("/zato/api/objects").json()]
    log = (base_dir / "logs" / "server.log").read_text("utf-8") + process.output()
    return result, object_type, types, log


def test_switched_off_it_leaves_no_trace_and_self_kvdb_names_the_plugin(tmp_path):
    base_dir = create_test_server_dir(tmp_path / "server")
    (base_dir / "pickup" / "probe.py").write_text(textwrap.dedent(PROBE))

    result, object_type, types, log = probe(base_dir)  # on (the default): every trace is there
    assert "zato_plugin_redis" in result["imported"] and result["kvdb"].startswith("<RedisConnection self.kvdb")
    assert object_type.status_code == 200 and "outgoing_redis" in types
    assert "self.kvdb.conn is Redis at redis://127.0.0.1:6379 db 0" in log

    set_config_value(base_dir, "deploy_internal", "zato_plugin_redis", False)
    (base_dir / "logs" / "server.log").unlink()
    result, object_type, types, log = probe(base_dir)
    assert result["imported"] == []
    assert result["kvdb"] == ("error: self.kvdb needs the redis plugin (zato-plugin-redis), which is switched off in "
                              "this server: set [deploy_internal] zato_plugin_redis = True in server.conf and restart "
                              "the server")
    assert object_type.status_code == 404 and "no object type 'outgoing_redis'" in object_type.text
    assert "outgoing_redis" not in types
    own_requests = "/zato/api/objects/outgoing_redis"  # this test's request, in the request log
    switch_on = "[deploy_internal] zato_plugin_redis = True"  # the deploy log saying what the probe needs
    traces = [line for line in log.splitlines() if ("redis" in line.lower() or "kvdb" in line.lower())
              and own_requests not in line and switch_on not in line]
    assert not traces, traces
    assert "(plugins: essentials, " in log  # the log is the server's (the list of enabled plugins has no redis)
