""" The `zato` command line as a Zato 3.2 user types it (`zato service invoke`, `zato
create-rest-channel`, `zato check-config`, `zato quickstart create DIR sqlite ...`, `zato
--version`), and the errors it prints: why a server did not start (the file and key to fix),
what a service raised (`zato invoke`), which user modules did not deploy (`zato start`).
Every test runs the real CLI in a subprocess against real server processes. """

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from base64 import b64encode

import pytest

from zato import __version__
from zato.testing import ADMIN_PASSWORD, create_test_server_dir, set_config_value

ZATO = [sys.executable, "-c", "import sys; from zato.cli import main; sys.exit(main())"]

SERVICES = '''
from zato.server.service import Service

class Fail(Service):
    name = "test.fail"
    def handle(self):
        raise ValueError("boom: the order has no lines")

class Headers(Service):
    name = "test.headers"
    def handle(self):
        headers = {key.lower(): value for key, value in self.request.http.headers.items()}
        self.response.payload = {"x-test": headers.get("x-test"), "x-other": headers.get("x-other")}
'''

BROKEN = '''
from zato.server.service import Service

class Broken(Service)
    name = "test.broken"
'''


def zato(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([*ZATO, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def address_of(base_dir) -> str:
    return json.loads((base_dir / "work" / "server.json").read_text())["address"]


def http(url: str, *, method: str = "GET", body: bytes | None = None, headers: dict | None = None,
         auth: tuple[str, str] | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method=method)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    if auth:
        request.add_header("Authorization", "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def busy_port():
    """ A port some other program listens on. """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


# ################################################################################################
# Zato's spellings


def test_version():
    result = zato("--version")
    assert result.returncode == 0 and __version__ in result.stdout


def test_help_of_zatos_commands():
    for args in (["service", "invoke"], ["create-rest-channel"], ["check-config"], ["quickstart", "create"]):
        result = zato(*args, "--help")
        assert result.returncode == 0 and "Usage:" in result.stdout, args


def test_quickstart_create_takes_zatos_positional_arguments(tmp_path):
    base = tmp_path / "server"
    result = zato("quickstart", "create", base, "sqlite", "localhost", "6379", "--port", "0",
                  "--threads-per-server", "2", "--cluster-name", "quickstart-123", "--admin-password", ADMIN_PASSWORD)
    assert result.returncode == 0, result.stderr
    assert "note: KVDB_HOST/KVDB_PORT: ignored" in result.stderr
    assert "note: --cluster-name: ignored" in result.stderr
    from zato.server.server import ServerPaths, read_server_config
    assert read_server_config(ServerPaths(base)).main.workers == 2  # Zato's threads per server: our workers


@pytest.mark.parametrize("args, says", [
    (["postgresql", "localhost", "6379"], "set [odb] url"),
    (["sqlite", "--servers", "2"], "--workers N"),
    (["--odb-type", "mysql"], "creates a SQLite configuration database"),
    (["--scheduler-only"], "--scheduler-only"),
])
def test_quickstart_refuses_what_it_cannot_keep(tmp_path, args, says):
    base = tmp_path / "server"
    result = zato("quickstart", "create", base, *args)
    assert result.returncode == 2 and says in result.stderr, result.stderr
    assert not base.exists()


def test_check_config_of_a_good_server_directory(tmp_path):
    base = create_test_server_dir(tmp_path / "server")
    result = zato("check-config", base)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no problems found" in result.stdout and "✗" not in result.stdout


def test_check_config_names_the_file_and_key(tmp_path):
    base = create_test_server_dir(tmp_path / "server")
    set_config_value(base, "main", "workers", "two")
    result = zato("check-config", base)
    assert result.returncode == 1
    assert f"{base / 'config' / 'server.conf'}: [main] workers = 'two'" in result.stdout


def test_check_config_finds_a_port_in_use(tmp_path, busy_port):
    base = create_test_server_dir(tmp_path / "server", main={"port": busy_port})
    result = zato("check-config", base)
    assert result.returncode == 1
    assert f"[main] port = {busy_port}" in result.stdout and "Address already in use" in result.stdout


def test_check_config_finds_a_database_it_cannot_read(tmp_path):
    base = create_test_server_dir(tmp_path / "server")
    (tmp_path / "not-a.db").write_bytes(b"this is not a SQLite database" * 40)
    set_config_value(base, "odb", "url", f"sqlite:///{tmp_path / 'not-a.db'}")
    result = zato("check-config", base)
    assert result.returncode == 1 and "[odb] url" in result.stdout, result.stdout


# ################################################################################################
# Why a server did not start


def _assert_says_what_to_fix(result, *expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    for text in expected:
        assert text in output, output
    assert "Traceback" not in output


def test_start_with_workers_not_a_number(tmp_path):
    base = create_test_server_dir(tmp_path / "server")
    set_config_value(base, "main", "workers", "two")
    for args in ([], ["--fg"]):
        _assert_says_what_to_fix(zato("start", base, *args), "server.conf: [main] workers = 'two': not an integer")


def test_start_on_a_port_in_use(tmp_path, busy_port):
    base = create_test_server_dir(tmp_path / "server", main={"port": busy_port})
    _assert_says_what_to_fix(zato("start", base), f"cannot listen on 127.0.0.1:{busy_port}", "Address already in use",
                             "Change [main] port")
    # in the foreground the cause is the log's last line on the console, with no traceback
    _assert_says_what_to_fix(zato("start", base, "--fg"), "start-up failed: cannot listen on", "Change [main] port")
    set_config_value(base, "main", "workers", 2)  # the supervisor binds the port
    _assert_says_what_to_fix(zato("start", base), "Address already in use", "Change [main] port")


def test_start_with_a_database_that_cannot_be_opened(tmp_path):
    base = create_test_server_dir(tmp_path / "server")
    (tmp_path / "not-a.db").write_bytes(b"this is not a SQLite database" * 40)
    set_config_value(base, "odb", "url", f"sqlite:///{tmp_path / 'not-a.db'}")
    _assert_says_what_to_fix(zato("start", base), "cannot open the configuration database", "[odb] url")


def test_start_says_why_a_worker_did_not_start(tmp_path):
    base = create_test_server_dir(tmp_path / "server", workers=2)
    (base / "lib" / "license_check.py").write_text(textwrap.dedent('''
        def check(ctx):
            if ctx.phase == "AFTER_POST_FORK":  # in each worker, not in the supervisor
                raise RuntimeError("no license file")
    '''))
    set_config_value(base, "misc", "startup_callable", "license_check.check")
    _assert_says_what_to_fix(zato("start", base), "did not start: start-up callable license_check.check raised in "
                                                  "phase AFTER_POST_FORK: RuntimeError: no license file")


# ################################################################################################
# A running server


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    base = create_test_server_dir(tmp_path_factory.mktemp("cli") / "server")
    (base / "pickup" / "tests.py").write_text(SERVICES)
    (base / "pickup" / "broken.py").write_text(BROKEN)
    started = zato("start", base)
    try:
        yield base, started
    finally:
        zato("stop", base)


def test_start_reports_modules_that_did_not_deploy(running):
    base, started = running
    assert started.returncode == 0, started.stderr
    assert "did not deploy" in started.stdout and "✓ started" not in started.stdout
    reported = [line for line in started.stdout.splitlines() if line.startswith("  ")]  # one line per module
    assert reported == [f"  {base / 'pickup' / 'broken.py'}:4: syntax error: expected ':'; the file was not deployed"]


def test_start_of_a_clean_server_says_started(tmp_path):
    base = create_test_server_dir(tmp_path / "server")
    (base / "pickup" / "tests.py").write_text(SERVICES)
    try:
        started = zato("start", base)
        assert started.returncode == 0 and "✓ started" in started.stdout and "did not deploy" not in started.stdout
        assert json.loads((base / "work" / "server.json").read_text())["deploy_failures"] == []
    finally:
        zato("stop", base)


def test_invoke_shows_what_the_service_raised(running):
    base, _ = running
    for command in (["invoke", base, "test.fail"], ["service", "invoke", base, "test.fail", "--payload", "{}"]):
        result = zato(*command)
        assert result.returncode == 1
        assert "service test.fail raised ValueError: boom: the order has no lines" in result.stderr
        assert f"at {base / 'pickup' / 'tests.py'}:7" in result.stderr
        cid = result.stderr.split("cid ", 1)[1].split()[0]
        assert f"cid={cid}" in (base / "logs" / "server.log").read_text()  # the traceback is there under it


def test_http_callers_still_get_only_the_cid(running):
    base, _ = running
    created = zato("create-rest-channel", base, "--name", "fail", "--url-path", "/test/fail", "--service", "test.fail")
    assert created.returncode == 0, created.stderr
    address = address_of(base)
    ask = {"X-Zato-Error-Details": "true", "Content-Type": "application/json"}
    status, body = http(f"{address}/test/fail", headers=ask)
    assert status == 500 and set(body) == {"result", "cid", "details"} and "ValueError" not in json.dumps(body)
    # the admin API too, unless an administrator asks
    status, body = http(f"{address}/zato/api/invoke/test.fail", method="POST", body=b"{}",
                        headers={"Content-Type": "application/json"}, auth=("admin", ADMIN_PASSWORD))
    assert status == 500 and set(body) == {"result", "cid", "details"}
    status, body = http(f"{address}/zato/api/invoke/test.fail", method="POST", body=b"{}", headers=ask,
                        auth=("admin", "not-the-password"))
    assert status == 401 and "exception" not in body
    status, body = http(f"{address}/zato/api/invoke/test.fail", method="POST", body=b"{}", headers=ask,
                        auth=("admin", ADMIN_PASSWORD))
    assert status == 500 and body["exception"]["type"] == "ValueError" and body["cid"]


def test_service_invoke_in_zatos_spelling(running):
    base, _ = running
    result = zato("service", "invoke", base, "test.headers", "--payload", "{}", "--headers", "X-Test=1; X-Other=two",
                  "--transport", "plain_http", "--channel", "http", "--verbose")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"x-test": "1", "x-other": "two"}
    assert "note: --transport: ignored" in result.stderr and "note: --channel: ignored" in result.stderr
    assert "cid: " in result.stderr  # --verbose


@pytest.mark.parametrize("option", [["--is-async"], ["--data-format", "xml"]])
def test_service_invoke_refuses_what_it_cannot_keep(running, option):
    base, _ = running
    result = zato("service", "invoke", base, "zato.ping", *option)
    assert result.returncode == 2 and option[0] in result.stderr and "Traceback" not in result.stderr


def test_create_rest_channel_with_generated_basic_auth(running):
    base, _ = running
    result = zato("create-rest-channel", "--path", base, "--name", "ping.basic", "--url-path", "/test/ping-basic",
                  "--basic-auth", "true", "--store-requests", "10")
    assert result.returncode == 0, result.stderr
    assert "note: --store-requests: ignored" in result.stderr
    created = json.loads(result.stdout)
    assert created["service"] == "zato.ping" and created["password"].startswith("api.password.")
    url = f"{address_of(base)}/test/ping-basic"
    assert http(url, auth=(created["username"], created["password"])) == (200, {"pong": "zato"})
    assert http(url, auth=(created["username"], "wrong"))[0] == 401
    assert http(url)[0] == 401


def test_create_rest_channel_with_a_given_api_key(running):
    base, _ = running
    result = zato("create-rest-channel", base, "--url-path", "/test/ping-key", "--service", "pub.zato.ping",
                  "--api-key", "X-My-Key, key-123")
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["name"].startswith("auto.rest.channel.") and created["header"] == "X-My-Key"
    url = f"{address_of(base)}/test/ping-key"
    assert http(url, headers={"X-My-Key": "key-123"}) == (200, {"pong": "zato"})
    assert http(url, headers={"X-My-Key": "nope"})[0] == 401


def _security_names(base) -> set[str]:
    from zato.odb import ODB, sqlite_url
    odb = ODB(sqlite_url(base / "work" / "zato.db"))
    try:
        return {obj["name"] for object_type, obj in odb.list_all() if object_type == "security"}
    finally:
        odb.close()


def test_create_rest_channel_says_what_is_wrong(running):
    base, _ = running
    before = _security_names(base)
    result = zato("create-rest-channel", base, "--name", "bad.path", "--url-path", "no-slash", "--basic-auth", "true")
    assert result.returncode == 1 and "a URL path must start with '/': 'no-slash'" in result.stderr, result.stderr
    assert _security_names(base) == before  # the definition made for it is not left behind
