""" enmasse and Zato 3.2's files: a file exactly as Zato 3.2 exports it imports unchanged (every
key and field mapped onto ours, Zato-only fields reported as ignored, twice changes nothing),
`export --format zato` writes what Zato imports (and imports back into a fresh server as the same
objects), Zato's CLI spelling (`zato enmasse DIR --import --input FILE`), and `$NAME` references
to unset variables reported when an object is saved, by enmasse and by the admin API. """

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from zato.cli import cli
from zato.enmasse import ServerConfigStore, comparable
from zato.odb import ODB, sqlite_url
from zato.testing import admin_auth, create_test_server_dir, run_server

FIXTURE = Path(__file__).parent / "data" / "zato32_enmasse.yaml"

# The environment-variables article's example, verbatim (shared/seeds: "If you use enmasse for
# DevOps automation, the same can be done in your YAML configuration files")
ARTICLE_EXAMPLE = """\
  - connection: outgoing
    name: CRM
    address: "$CRM_ADDRESS"
    url_path: /api
"""

# What the fixture holds, in our names: type -> name -> fields that must be stored so
EXPECTED = {
    "security": {
        "crm.user": {"type": "basic_auth", "username": "crm.user", "realm": "CRM", "is_active": True},
        "partner.key": {"type": "apikey", "username": "X-Partner-Key", "direction": "inbound"},
        # only an outgoing connection uses it: outgoing here (its password stored to be sent)
        "billing.client": {"type": "basic_auth", "username": "zato.billing", "direction": "outgoing"},
    },
    "channel_rest": {
        "/api/crm/user": {"url_path": "/api/crm/user", "service": "crm.user.get", "security": "crm.user",
                          "methods": ["GET"], "data_format": "json"},
        "/api/partner/order": {"service": "partner.order.create", "security": "partner.key"},
        "/api/status": {"url_path": "/api/status", "service": "status.get"},
    },
    "outgoing_rest": {
        "Billing": {"address": "https://billing.example.com", "url_path": "/api/invoice/{invoice_id}", "timeout": 20,
                    "pool_size": 5, "security": "billing.client"},
        "CRM": {"address": "$CRM_ADDRESS", "url_path": "/api"},
        "Status page": {"address": "http://127.0.0.1:8088", "url_path": "/status"},
    },
    "scheduler": {
        "crm.sync": {"job_type": "interval_based", "service": "crm.sync", "minutes": 5, "extra": '{"source": "crm"}'},
        "reports.daily": {"job_type": "cron_style", "service": "reports.daily", "cron_definition": "0 6 * * *"},
    },
    "pubsub_topic": {"/orders/new": {"has_gd": True, "max_depth_gd": 999, "max_depth_non_gd": 333}},
    "pubsub_endpoint": {"orders.processor": {"endpoint_type": "service", "service_name": "orders.process",
                                             "topic_patterns": "sub=/orders/*"}},
    "pubsub_subscription": {"Subscription.000000001": {"endpoint_name": "orders.processor", "endpoint_type": "service",
                                                       "topic_list": ["/orders/new"], "max_attempts": 5}},
    "outgoing_sql": {"CRM database": {"engine": "postgresql", "host": "127.0.0.1", "port": 5432, "db_name": "crm",
                                      "username": "crm", "pool_size": 5, "extra": "echo=False"}},
    "email_smtp": {"Mail": {"host": "smtp.example.com", "port": 587, "tls_mode": "starttls", "username": "zato",
                            "timeout": 30},
                   "Mail (plain)": {"tls_mode": "none", "port": 25}},
    "outgoing_redis": {"Cache": {"host": "127.0.0.1", "port": 6379, "db": 1}},
    # Zato's web_socket rows (service and security by name, Zato's sec_def)
    "channel_web_socket": {
        "orders.wsx": {"address": "ws://0.0.0.0:17010/ws/orders", "service": "orders.wsx.handle",
                       "security": "crm.user", "data_format": "json", "new_token_wait_time": 7, "token_ttl": 600,
                       "ping_interval": 45, "pings_missed_threshold": 3, "is_active": True},
        "status.wsx": {"address": "ws://0.0.0.0:17010/ws/status", "service": "status.get", "token_ttl": 3600,
                       "new_token_wait_time": 5, "ping_interval": 30, "pings_missed_threshold": 2, "is_active": False},
    },
    # zato_generic_connection rows, told apart by type_
    "outgoing_wsx": {"Cluster 2": {"address": "ws://cluster2.example.com:17010/ws/gateway", "is_zato": True,
                                   "has_auto_reconnect": False, "on_connect_service_name": "cluster2.connected",
                                   "on_message_service_name": "cluster2.message",
                                   "on_close_service_name": "cluster2.closed", "subscription_list": "/orders/new",
                                   "ping_interval": 40, "pings_missed_threshold": 3, "is_active": True}},
    "cloud_dropbox": {"Reports": {"user_agent": "ACME-Reports/1.0", "default_directory": "/reports",
                                  "http_headers": "X-Request-Source: zato", "max_retries_on_error": 5,
                                  "max_retries_on_rate_limit": 2, "timeout": 60, "is_active": True}},
    "outgoing_ftp": {"Partner FTP": {"host": "ftp.example.com", "port": 2121, "user": "partner", "acct": "",
                                     "timeout": 45, "dircache": True, "default_directory": "/incoming",
                                     "is_active": True}},
    # IBM MQ (opt-in plugin): def_jms_wmq, channel_jms_wmq and outconn_jms_wmq, joined by def_name
    "definition_ibm_mq": {"QM1": {"host": "mq.example.com", "port": 1414, "queue_manager": "QM1",
                                  "channel": "DEV.APP.SVRCONN", "username": "app", "ssl": False,
                                  "max_chars_printed": 200, "use_jms": False}},
    "channel_ibm_mq": {"Orders from MQ": {"definition": "QM1", "queue": "DEV.QUEUE.1", "service": "orders.mq.handle",
                                          "data_format": "json", "is_active": True}},
    "outgoing_ibm_mq": {"Orders to MQ": {"definition": "QM1", "delivery_mode": 1, "priority": 3, "expiration": 60000,
                                         "is_active": True}},
}
ZATO_OBJECTS = sum(len(by_name) for by_name in EXPECTED.values())  # every row of the fixture


@pytest.fixture(scope="session")
def template(tmp_path_factory):
    """ A server directory without objects (quickstart's demo channel deleted), made once, with
    the opt-in IBM MQ plugin switched on as its article says, for the fixture's `*_jms_wmq` rows. """
    base = create_test_server_dir(tmp_path_factory.mktemp("enmasse-zato") / "server",
                                  component_enabled={"ibm_mq": True})
    odb = ODB(sqlite_url(base / "work" / "zato.db"))
    odb.delete_object("channel_rest", "demo.hello")
    odb.close()
    return base


@pytest.fixture
def new_server(template, tmp_path):
    made = []

    def make() -> Path:
        target = tmp_path / f"server{len(made)}"
        shutil.copytree(template, target)
        made.append(target)
        return target
    return make


@pytest.fixture
def crm_address(monkeypatch):
    monkeypatch.setenv("CRM_ADDRESS", "http://crm.example.com")


def zato(*args: str):
    result = CliRunner().invoke(cli, ["enmasse", *map(str, args)], catch_exceptions=False)
    return result


def stored(base: Path) -> dict[str, dict[str, dict]]:
    with ServerConfigStore(base) as store:
        return store.read_objects()


def test_plugins_of_the_fixture_are_installed():
    """ The fixture covers SQL, SMTP, Redis, WebSockets, Dropbox, FTP and IBM MQ: their plugins are
    in this venv (else the fixture would need those sections left out). """
    import zato_plugin_dropbox, zato_plugin_ftp, zato_plugin_ibm_mq, zato_plugin_redis, zato_plugin_smtp  # noqa: F401
    import zato_plugin_sql, zato_plugin_wsx  # noqa: F401
    assert ZATO_OBJECTS == 26


def test_zato32_export_imports_unchanged(new_server, crm_address):
    base = new_server()
    result = zato("import", base, FIXTURE)
    assert result.exit_code == 0, result.output
    assert f"imported: {ZATO_OBJECTS} created, 0 updated, 0 deleted, 0 unchanged" in result.output
    objects = stored(base)
    for type_name, by_name in EXPECTED.items():
        assert set(objects.get(type_name, {})) == set(by_name), type_name
        for name, fields in by_name.items():
            got = objects[type_name][name]
            for field, value in fields.items():
                assert got.get(field) == value, (type_name, name, field, got)
    # Zato's "no security" and an empty method are no value here, not a name or a method
    assert "security" not in objects["outgoing_rest"]["Status page"]
    assert len(objects["channel_rest"]["/api/partner/order"]["methods"]) == 6  # every method, as in Zato
    # secrets given in clear are stored as their fields say: inbound passwords hashed
    assert objects["security"]["crm.user"]["password"].startswith("scrypt$")
    assert objects["security"]["billing.client"]["password"].startswith("enc:")
    assert objects["outgoing_rest"]["Status page"]["is_active"] is False
    # Zato's "no security" of a WSX channel and of a generic connection (ZATO_NONE): none here
    assert "security" not in objects["channel_web_socket"]["status.wsx"]
    assert "security" not in objects["outgoing_wsx"]["Cluster 2"]
    # Zato exports no secrets (its encrypted ones as null): none stored, the fields Zato left null keep our defaults
    assert "oauth2_access_token" not in objects["cloud_dropbox"]["Reports"]
    assert "password" not in objects["definition_ibm_mq"]["QM1"]
    assert objects["outgoing_wsx"]["Cluster 2"]["timeout"] == 10  # Zato's timeout: null
    assert objects["definition_ibm_mq"]["QM1"]["ssl_cipher_spec"] == ""  # Zato's null
    # Zato-only fields are not stored
    assert not {"id", "cluster_id", "type_", "pool_size", "is_outconn", "socket_read_timeout", "client_id"} & \
        set(objects["outgoing_wsx"]["Cluster 2"])
    assert not {"def_id", "def_name", "def_name_full_text"} & set(objects["outgoing_ibm_mq"]["Orders to MQ"])
    assert not {"cache_open_send_queues", "needs_mcd", "use_shared_connections"} & set(objects["definition_ibm_mq"]["QM1"])


def test_zato_only_fields_are_reported_one_line_each(new_server, crm_address):
    result = zato("import", base := new_server(), FIXTURE)
    assert result.exit_code == 0, result.output
    notes = [line[len("note: "):].split(": ") for line in result.output.splitlines() if line.startswith("note: ")]
    assert ["security 'billing.client'", "direction", "set to 'outgoing'"] in [note[1:4] for note in notes]
    ignored = [note for note in notes if note[-1] == "Zato's field, which means nothing here; ignored"]
    assert len(ignored) == len(notes) - 1
    lines = FIXTURE.read_text().splitlines()
    for where, _, field, message in ignored:  # each: the file's line of the field, the object, the field
        number = int(where.rsplit(":", 1)[1])
        assert lines[number - 1].strip().startswith(f"{field}:"), (where, field)
    by_field = {(what, field) for _, what, field, _ in ignored}
    assert ("channel_rest '/api/crm/user'", "ping_method") in by_field
    assert ("channel_rest '/api/crm/user'", "id") in by_field
    assert ("pubsub_topic '/orders/new'", "task_sync_interval") in by_field
    assert ("email_smtp 'Mail'", "ping_address") in by_field
    assert ("channel_web_socket 'orders.wsx'", "opaque1") in by_field
    assert ("outgoing_wsx 'Cluster 2'", "socket_read_timeout") in by_field
    assert ("cloud_dropbox 'Reports'", "pool_size") in by_field
    assert ("outgoing_ftp 'Partner FTP'", "id") in by_field
    assert ("definition_ibm_mq 'QM1'", "cache_open_send_queues") in by_field
    assert ("channel_ibm_mq 'Orders from MQ'", "def_id") in by_field
    assert ("outgoing_ibm_mq 'Orders to MQ'", "def_name_full_text") in by_field
    # fields that choose the type, and empty or false ones, are not worth a line
    assert not {field for _, field in by_field} & {"connection", "transport", "type", "content_type", "has_rbac",
                                                   "type_", "client_id", "default_scope", "security_def", "is_internal"}
    assert len(ignored) == len(by_field)  # one line each
    assert stored(base)


def test_the_same_file_twice_changes_nothing(new_server, crm_address):
    base = new_server()
    assert zato("import", base, FIXTURE).exit_code == 0
    before = stored(base)
    result = zato("import", base, FIXTURE)
    assert result.exit_code == 0, result.output
    assert f"nothing to change: 0 created, 0 updated, 0 deleted, {ZATO_OBJECTS} unchanged" in result.output
    after = stored(base)
    assert {t: {n: o.get("_meta", {}).get("version") for n, o in objs.items()} for t, objs in after.items()} == \
           {t: {n: o.get("_meta", {}).get("version") for n, o in objs.items()} for t, objs in before.items()}


def test_article_example_imports_as_printed(new_server, tmp_path, monkeypatch):
    """ The env-variable article's rows, under Zato's `http_soap` and the newer `outgoing_rest`;
    without CRM_ADDRESS set, the import warns naming the object, field and variable. """
    monkeypatch.delenv("CRM_ADDRESS", raising=False)
    for key in ("http_soap", "outgoing_rest", "outconn_plain_http"):
        base = new_server()
        path = tmp_path / f"{key}.yaml"
        path.write_text(f"{key}:\n{ARTICLE_EXAMPLE}")
        result = CliRunner().invoke(cli, ["enmasse", "import", str(base), str(path)])
        assert result.exit_code == 0, (result.stdout, result.stderr)
        assert "create     outgoing_rest  CRM" in result.stdout
        assert ("warning: outgoing_rest 'CRM': field 'address': environment variable CRM_ADDRESS is not set"
                in result.stderr)
        crm = stored(base)["outgoing_rest"]["CRM"]
        assert (crm["address"], crm["url_path"]) == ("$CRM_ADDRESS", "/api")


def test_set_variable_gives_no_warning(new_server, tmp_path, crm_address):
    path = tmp_path / "crm.yaml"
    path.write_text(f"http_soap:\n{ARTICLE_EXAMPLE}")
    result = CliRunner().invoke(cli, ["enmasse", "import", str(new_server()), str(path)])
    assert result.exit_code == 0 and "warning" not in result.stderr, result.stderr


@pytest.mark.parametrize("rows, expected", [
    ("http_soap:\n  - name: x\n    connection: channel\n    transport: soap\n    url_path: /x\n    service: s\n",
     "http_soap 'x' (connection 'channel', transport 'soap') has no counterpart on this server; supported rows: "
     "channel_rest: connection 'channel' or left out, transport 'plain_http' or left out; outgoing_rest: "
     "connection 'outgoing' or left out, transport 'plain_http' or left out"),
    ("http_soap:\n  - name: x\n    url_path: /x\n",
     "http_soap 'x' (connection left out, transport left out) could be any of channel_rest, outgoing_rest; say which"),
    ("def_sec:\n  - name: j\n    type: jwt\n    username: u\n",
     "def_sec 'j' (type 'jwt') has no counterpart on this server; supported rows: security: type 'basic_auth' or "
     "'apikey'"),
    ("http_soap:\n  - name: y\n    connection: channel\n    url_path: /y\n    service_name: s\n    data_format: xml\n",
     "channel_rest 'y': data_format: 'xml' is not one of: json, text, form"),
])
def test_rows_without_a_counterpart_are_refused_saying_why(new_server, tmp_path, rows, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(rows)
    base = new_server()
    result = zato("import", base, path)
    assert result.exit_code == 1
    line = 6 if "data_format" in expected else 2  # a row's own problem names the field's line
    assert f"{path}:{line}: {expected}" in result.output, result.output
    assert "nothing was changed" in result.output
    assert not stored(base)


def test_export_zato_format_imports_into_a_fresh_server(new_server, tmp_path, crm_address):
    source = new_server()
    assert zato("import", source, FIXTURE).exit_code == 0
    result = CliRunner().invoke(cli, ["enmasse", "export", str(source), "--format", "zato"])
    assert result.exit_code == 0, result.stderr
    exported = yaml.safe_load(result.stdout)
    # Zato's keys (the three Zato 3.2 reads unconditionally first), Zato's field names and values
    assert list(exported)[:3] == ["security", "channel_rest", "outgoing_rest"]
    assert set(exported) == {"security", "channel_rest", "outgoing_rest", "scheduler", "pubsub_topic",
                             "pubsub_endpoint", "pubsub_subscription", "outconn_sql", "email_smtp", "outconn_redis",
                             "web_socket", "zato_generic_connection", "outconn_ftp", "def_jms_wmq", "channel_jms_wmq",
                             "outconn_jms_wmq"}
    rows = {key: {row["name"]: row for row in value} for key, value in exported.items()}
    wsx = rows["web_socket"]["orders.wsx"]
    assert (wsx["service_name"], wsx["sec_def"], wsx["address"]) == \
           ("orders.wsx.handle", "crm.user", "ws://0.0.0.0:17010/ws/orders")
    assert "sec_def" not in rows["web_socket"]["status.wsx"]
    generic = rows["zato_generic_connection"]
    assert (generic["Cluster 2"]["type_"], generic["Reports"]["type_"]) == ("outconn-wsx", "cloud-dropbox")
    assert generic["Cluster 2"]["on_message_service_name"] == "cluster2.message"
    assert rows["outconn_ftp"]["Partner FTP"]["user"] == "partner"
    assert rows["channel_jms_wmq"]["Orders from MQ"]["def_name"] == "QM1"
    assert rows["channel_jms_wmq"]["Orders from MQ"]["service_name"] == "orders.mq.handle"
    assert (rows["outconn_jms_wmq"]["Orders to MQ"]["def_name"], rows["def_jms_wmq"]["QM1"]["queue_manager"]) == \
           ("QM1", "QM1")
    channel = rows["channel_rest"]["/api/crm/user"]
    assert (channel["service_name"], channel["security_name"], channel["method"]) == \
           ("crm.user.get", "crm.user", "GET")
    assert "method" not in rows["channel_rest"]["/api/partner/order"]  # every method: Zato's default
    assert rows["outgoing_rest"]["Billing"]["host"] == "https://billing.example.com"
    assert "address" not in rows["outgoing_rest"]["Billing"]
    assert rows["email_smtp"]["Mail"]["mode"] == "starttls" and rows["email_smtp"]["Mail (plain)"]["mode"] == "plain"
    assert rows["pubsub_endpoint"]["orders.processor"]["endpoint_type"] == "srv"
    assert rows["pubsub_subscription"]["Subscription.000000001"]["topic_list_json"] == ["/orders/new"]
    assert rows["scheduler"]["crm.sync"]["service_name"] == "crm.sync"
    assert rows["security"]["crm.user"]["type"] == "basic_auth"
    assert "password" not in rows["security"]["crm.user"]  # secrets never in clear

    path = tmp_path / "zato-format.yaml"
    path.write_text(result.stdout)
    target = new_server()
    imported = zato("import", target, path)
    assert imported.exit_code == 0, imported.output
    assert "note:" not in imported.output  # our own export holds no Zato-only fields
    with ServerConfigStore(source) as store:
        types = store.object_types
    before, after = stored(source), stored(target)
    assert set(before) == set(after)
    for type_name, objects in before.items():
        assert set(objects) == set(after[type_name]), type_name
        for name, obj in objects.items():
            assert comparable(types[type_name], after[type_name][name]) == comparable(types[type_name], obj), \
                (type_name, name)
    assert "nothing to change" in zato("import", target, path).output


def test_export_zato_format_leaves_out_types_zato_lacks(new_server, tmp_path):
    base = new_server()
    path = tmp_path / "bst.yaml"
    path.write_text(textwrap.dedent("""\
        bst_definition:
          - name: Orders
            text: |
              Orders
              ------
              Objects: Order
              New: Submitted
    """))
    result = zato("import", base, path)
    assert result.exit_code == 0, result.output
    exported = CliRunner().invoke(cli, ["enmasse", "export", str(base), "--format", "zato"])
    assert exported.exit_code == 0
    assert "bst_definition" not in yaml.safe_load(exported.stdout)
    assert "left out 1 object(s) of type 'bst_definition': Zato 3.2's enmasse has no counterpart" in exported.stderr
    ours = CliRunner().invoke(cli, ["enmasse", "export", str(base)])
    assert "bst_definition" in yaml.safe_load(ours.stdout)  # the default format stays ours


# ################################################################################################
# Zato's command line


def test_zato_cli_spelling_imports_and_exports(new_server, tmp_path, crm_address, monkeypatch):
    base = new_server()
    result = zato(base, "--import", "--input", FIXTURE)
    assert result.exit_code == 0, result.output
    assert f"imported: {ZATO_OBJECTS} created" in result.output
    # the same file again: nothing to change, no --replace-odb-objects needed
    assert "nothing to change" in zato(base, "--import", "--input", FIXTURE).output

    changed = tmp_path / "changed.yaml"
    changed.write_text(FIXTURE.read_text().replace("minutes: 5", "minutes: 10"))
    refused = zato(base, "--import", "--input", changed)
    assert refused.exit_code == 1
    assert "scheduler 'crm.sync' already exists and differs (minutes)" in refused.output
    assert "add --replace-odb-objects to update them" in refused.output
    assert stored(base)["scheduler"]["crm.sync"]["minutes"] == 5
    replaced = zato(base, "--import", "--input", changed, "--replace-odb-objects")
    assert replaced.exit_code == 0, replaced.output
    assert stored(base)["scheduler"]["crm.sync"]["minutes"] == 10

    output = tmp_path / "export.yml"
    exported = zato(base, "--export", "--output", output)
    assert exported.exit_code == 0, exported.output
    assert yaml.safe_load(output.read_text())["outgoing_rest"][0]["host"] == "https://billing.example.com"
    monkeypatch.chdir(tmp_path)
    assert zato(base, "--export-odb").exit_code == 0  # Zato's default name, in the current directory
    assert len(list(tmp_path.glob("zato-export-*.yml"))) == 1


@pytest.mark.parametrize("options, expected", [
    (["--clean-odb", "--import", "--input", "x.yaml"], "--clean-odb is Zato's and not supported here; "
                                                        "`zato enmasse import DIR FILE --delete-missing`"),
    (["--export", "--include-type", "rest"], "--include-type is Zato's and not supported here"),
    (["--export", "--format", "json"], "--format json is Zato's and not supported here"),
    (["--import"], "--import needs --input FILE"),
    (["--import", "--input", "missing.yaml"], "--input missing.yaml: no such file"),
    (["--env-file", "env.ini", "--import", "--input", "x.yaml"], "--env-file is Zato's and not supported here"),
    ([], "give one of --import (with --input FILE) or --export"),
])
def test_zato_only_options_say_so_and_name_ours(new_server, options, expected):
    result = zato(new_server(), *options)
    assert result.exit_code == 2
    assert expected in result.output, result.output


def test_exit_on_missing_file_as_in_zato(new_server):
    result = zato(new_server(), "--import", "--input", "missing.yaml", "--exit-on-missing-file")
    assert result.exit_code == 0 and "nothing to import" in result.output


def test_our_spelling_is_unchanged(new_server):
    result = zato("export", new_server())
    assert result.exit_code == 0 and "Zato configuration objects, written by" in result.output


# ################################################################################################
# The admin API: the same warning when an object is saved


async def test_admin_api_warns_of_unset_variables(new_server, monkeypatch):
    monkeypatch.delenv("ZATO_TEST_UNSET_ADDRESS", raising=False)
    monkeypatch.setenv("ZATO_TEST_SET_PATH", "/api")
    async with run_server(new_server()) as server:
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=10,
                                     headers={"content-type": "application/json"}) as client:
            created = await client.post("/zato/api/objects/outgoing_rest", json={
                "name": "CRM", "address": "$ZATO_TEST_UNSET_ADDRESS", "url_path": "$ZATO_TEST_SET_PATH"})
            assert created.status_code == 201, created.text
            assert created.json()["warnings"] == [
                "outgoing_rest 'CRM': field 'address': environment variable ZATO_TEST_UNSET_ADDRESS is not set; set "
                "it where the server runs, or the server cannot use $ZATO_TEST_UNSET_ADDRESS"]
            assert created.json()["address"] == "$ZATO_TEST_UNSET_ADDRESS"  # saved all the same

            patched = await client.patch("/zato/api/objects/outgoing_rest/CRM", json={"timeout": 5})
            assert patched.status_code == 200 and len(patched.json()["warnings"]) == 1

            fixed = await client.patch("/zato/api/objects/outgoing_rest/CRM", json={"address": "http://127.0.0.1:1"})
            assert fixed.status_code == 200 and "warnings" not in fixed.json()


# Zato 3.2's outconn-wsx gives its security as `<security type>/<database id>`, the select of its
# web-admin form (`security_def: basic_auth/15`): the id of a def_sec row, here after the row using it
ZATO_ID_REFERENCE_FILE = """\
zato_generic_connection:
  - name: Cluster 3
    type_: outconn-wsx
    id: 21
    address: ws://cluster3.example.com:17010/ws/gateway
    is_zato: true
    security_def: {security_def}
def_sec:
  - name: partner.key
    type: apikey
    username: X-Partner-Key
    password: partner-key-9f2
    id: 14
  - name: cluster3.client
    type: basic_auth
    username: cluster3
    password: cluster3-pa55word
    id: 15
"""


def test_security_given_as_zato_type_and_id_is_read_as_the_name(new_server, tmp_path):
    path = tmp_path / "wsx.yaml"
    path.write_text(ZATO_ID_REFERENCE_FILE.format(security_def="basic_auth/15"))
    base = new_server()
    result = zato("import", base, path)
    assert result.exit_code == 0, result.output
    assert (f"{path}:7: outgoing_wsx 'Cluster 3': security_def: 'basic_auth/15' is Zato's security type and "
            f"database id: read as 'cluster3.client', the security row of this file with `id: 15`") in result.output
    objects = stored(base)
    assert objects["outgoing_wsx"]["Cluster 3"]["security"] == "cluster3.client"
    # only the outgoing connection uses it, once resolved: outgoing, its password stored to be sent
    client = objects["security"]["cluster3.client"]
    assert client["direction"] == "outgoing" and client["password"].startswith("enc:")
    assert objects["security"]["partner.key"]["direction"] == "inbound"
    again = zato("import", base, path)
    assert "nothing to change: 0 created, 0 updated, 0 deleted, 3 unchanged" in again.output, again.output


@pytest.mark.parametrize("security_def, why", [
    ("basic_auth/99", "no `security` or `def_sec` row of this file has `id: 99`; add that row (with `id: 99`) to "
                      "the file"),
    ("basic_auth/14", "the row with `id: 14` is 'partner.key', of type 'apikey'; correct the type or the id"),
])
def test_security_given_as_zato_id_of_no_row_is_refused_saying_why(new_server, tmp_path, security_def, why):
    path = tmp_path / "wsx.yaml"
    path.write_text(ZATO_ID_REFERENCE_FILE.format(security_def=security_def))
    base = new_server()
    result = zato("import", base, path)
    assert result.exit_code == 1
    assert (f"{path}:7: outgoing_wsx 'Cluster 3': security_def: {security_def!r} is Zato's security type and "
            f"database id, but {why}, or write the name of the security definition instead (`security_def: NAME`)"
            in result.output), result.output
    assert "does not exist" not in result.output  # reported once, not again as a missing name
    assert "nothing was changed" in result.output
    assert not stored(base)
