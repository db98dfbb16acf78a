""" enmasse: configuration as code. Import (all or nothing, in dependency order, idempotent,
--dry-run, --delete-missing), export (stable, secrets never in clear), the round trip
(with a hypothesis property test), and a running server picking the changes up. """

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import httpx
import pytest
import trio
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

import all_hooks_plugin
from zato.cli import cli
from zato.enmasse import EnmasseError, ServerConfigStore, apply_plan, export_config, plan_import, secret_variable
from zato.odb import ODB, sqlite_url
from zato.registry import Kind
from zato.testing import ServerProcess, create_test_server_dir, run_server

ZATO = [sys.executable, "-c", "import sys; from zato.cli import main; sys.exit(main())"]

PASSWORD = "s3cr3t-pa55word"  # a Basic Auth password given in clear in the files below
TOKEN = "t0ken-in-clear-9f2"  # an encrypted secret (allhooks_thing.token) given in clear

FILE = f"""\
# channels first: the security definition they use comes later in the file
channel_rest:
  - name: /api/hello
    url_path: /api/hello
    service: demo.hello
    methods: [GET]
    security: my.user
  - name: open.hello
    url_path: /open/hello
    service: demo.hello
    methods: [GET, POST]
    timeout: $HELLO_TIMEOUT
  - name: parked
    url_path: /parked
    service: demo.hello
    is_active: false
security:
  - name: my.user
    type: basic_auth
    username: my.user
    password: {PASSWORD}
  - name: env.user
    type: basic_auth
    username: env.user
    password: $ENV_USER_PASSWORD
"""


# ################################################################################################
# Server directories: made once per session, copied per test (making one costs ~1.5 s)


@pytest.fixture(scope="session")
def templates(tmp_path_factory):
    root = tmp_path_factory.mktemp("enmasse-templates")
    quickstart = create_test_server_dir(root / "quickstart", main={"graceful_timeout": 3})
    empty = root / "empty"
    shutil.copytree(quickstart, empty)
    odb = ODB(sqlite_url(empty / "work" / "zato.db"))
    odb.delete_object("channel_rest", "demo.hello")  # an empty server: no objects at all
    odb.close()
    return {"quickstart": quickstart, "empty": empty}


@pytest.fixture
def new_dir(templates, tmp_path):
    made = []

    def make(kind: str = "quickstart") -> Path:
        target = tmp_path / f"{kind}-{len(made)}"
        shutil.copytree(templates[kind], target)
        made.append(target)
        return target
    return make


@pytest.fixture
def allhooks(plugin_site):
    """ A plugin whose object type `allhooks_thing` has an encrypted secret (`token`) and a
    reference to a security definition. """
    return all_hooks_plugin.install(plugin_site)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), "utf-8")
    return path


def zato(*args, env: dict[str, str] | None = None):
    """ The `zato` command line, in this process. """
    return CliRunner(env=env).invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def stored(server_dir: Path) -> dict[tuple[str, str], dict]:
    """ Every object in the database, as stored (ids, versions and secrets' stored forms included). """
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    try:
        return {(kind, obj["name"]): obj for kind, obj in odb.list_all(active_only=False)}
    finally:
        odb.close()


def contents(server_dir: Path, secrets: tuple[str, ...] = ("password", "token")) -> dict[tuple[str, str], dict]:
    """ The database's objects without ids, versions and the stored form of secrets (salted and
    encrypted values differ each time): only whether each secret is set, and `$NAME` as written. """
    result = {}
    for key, obj in stored(server_dir).items():
        data = {k: v for k, v in obj.items() if k != "_meta"}
        for secret in secrets:
            if secret in data and not str(data[secret]).startswith("$"):
                data[secret] = "<set>" if data[secret] else None
        result[key] = data
    return result


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()}


# ################################################################################################
# Import into a server that is not running, then start it


async def test_imported_objects_work_when_the_server_starts(new_dir, tmp_path, monkeypatch):
    server_dir = new_dir()
    result = zato("enmasse", "import", server_dir, write(tmp_path / "config.yaml", FILE))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert f"no server is running in {server_dir}" in result.stdout
    assert "imported: 5 created, 0 updated, 0 deleted, 0 unchanged" in result.stdout

    monkeypatch.setenv("HELLO_TIMEOUT", "7.5")
    monkeypatch.setenv("ENV_USER_PASSWORD", "from-the-environment")
    async with run_server(server_dir) as server:
        assert server.config_objects["channel_rest"]["open.hello"]["timeout"] == 7.5  # $NAME read at load
        async with httpx.AsyncClient(base_url=server.address, timeout=10) as client:
            assert (await client.get("/open/hello?name=enmasse")).json() == {"hello": "enmasse"}
            assert (await client.get("/demo/hello")).json() == {"hello": "world"}  # the quickstart's, untouched
            assert (await client.get("/parked")).status_code == 404  # inactive

            refused = await client.get("/api/hello")
            assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
            assert (await client.get("/api/hello", headers=basic("my.user", "wrong"))).status_code == 401
            reply = await client.get("/api/hello?name=secure", headers=basic("my.user", PASSWORD))
            assert reply.status_code == 200 and reply.json() == {"hello": "secure"}

    password = stored(server_dir)[("security", "my.user")]["password"]
    assert password.startswith("scrypt$") and PASSWORD not in password  # hashed at rest
    assert stored(server_dir)[("security", "env.user")]["password"] == "$ENV_USER_PASSWORD"  # kept as written


# ################################################################################################
# Import into a running server


async def run_zato(*args: str | Path) -> trio.CompletedProcess:
    """ The real `zato` command as a process, so the server in this test's trio loop keeps answering. """
    return await trio.run_process([*ZATO, *map(str, args)], capture_stdout=True, capture_stderr=True, check=False)


async def test_import_into_a_running_server_is_live_at_once(new_dir, tmp_path):
    server_dir = new_dir()
    config = write(tmp_path / "config.yaml", """\
        channel_rest:
          - name: live
            url_path: /live/v1
            service: demo.hello
    """)
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, timeout=10) as client:
            assert (await client.get("/live/v1")).status_code == 404

            done = await run_zato("enmasse", "import", server_dir, config)
            out = done.stdout.decode()
            assert done.returncode == 0, out + done.stderr.decode()
            assert f"the server running at {server.address} reloaded channel_rest (every worker is notified)" in out
            assert (await client.get("/live/v1?name=now")).json() == {"hello": "now"}

            config.write_text(config.read_text().replace("/live/v1", "/live/v2"))
            done = await run_zato("enmasse", "import", server_dir, config, "--delete-missing")
            out = done.stdout.decode()
            assert done.returncode == 0, out + done.stderr.decode()
            assert "update     channel_rest  live  (url_path)" in out
            assert "delete     channel_rest  demo.hello" in out
            assert (await client.get("/live/v1")).status_code == 404
            assert (await client.get("/live/v2")).status_code == 200
            assert (await client.get("/demo/hello")).status_code == 404

    # The stopped server removed its work/server.json. A stale one naming a living process (this
    # one) at an address nobody answers on: the import still succeeds, and says the server did not answer.
    runtime = server_dir / "work" / "server.json"
    assert not runtime.exists()
    import json as _json
    import os as _os
    import socket as _socket
    with _socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    runtime.write_text(_json.dumps({"pid": _os.getpid(), "address": f"http://127.0.0.1:{dead_port}", "workers": 1}))
    config.write_text(config.read_text().replace("/live/v2", "/live/v3"))
    result = zato("enmasse", "import", server_dir, config)
    assert result.exit_code == 0
    assert "did not answer" in result.stderr and "it uses the changes when it starts" in result.stderr


def test_a_server_with_two_workers_reloads_in_every_worker(new_dir, tmp_path):
    server_dir = new_dir()
    from zato.testing import set_config_value
    set_config_value(server_dir, "main", "workers", 2)
    config = write(tmp_path / "config.yaml", """\
        channel_rest:
          - name: both
            url_path: /both/workers
            service: demo.hello
    """)
    with ServerProcess(server_dir) as process:
        result = zato("enmasse", "import", server_dir, config)
        assert result.exit_code == 0, result.stdout + result.stderr
        assert "reloaded channel_rest (every worker is notified)" in result.stdout
        # The worker that took the call reloaded before answering; the other one within moments.
        # Then every new connection, whichever worker the kernel gives it to, finds the channel.
        deadline = time.monotonic() + 10
        answers = []
        while len(answers) < 30 and time.monotonic() < deadline:
            request = urllib.request.Request(f"{process.address}/both/workers", headers={"Connection": "close"})
            try:
                with urllib.request.urlopen(request, timeout=10) as reply:
                    answers.append(json.loads(reply.read()))
            except urllib.error.HTTPError as exc:
                assert exc.code == 404
                answers.clear()  # a worker that has not reloaded yet: start counting again
                time.sleep(0.05)
        assert answers == [{"hello": "world"}] * 30


# ################################################################################################
# The plan: dry run, idempotence, dependency order


def test_dry_run_prints_the_plan_and_changes_nothing(new_dir, tmp_path):
    server_dir = new_dir()
    assert zato("enmasse", "import", server_dir, write(tmp_path / "first.yaml", FILE)).exit_code == 0
    second = FILE.replace("url_path: /open/hello", "url_path: /open/hello2").replace(
        "  - name: parked\n    url_path: /parked\n    service: demo.hello\n    is_active: false\n", "") + """\
  - name: new.user
    type: basic_auth
    username: new.user
"""
    before = stored(server_dir)
    result = zato("enmasse", "import", server_dir, write(tmp_path / "second.yaml", second), "--dry-run",
                  "--delete-missing")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "delete     channel_rest  demo.hello",
        "delete     channel_rest  parked",
        "unchanged  security      env.user",
        "unchanged  security      my.user",
        "create     security      new.user",
        "unchanged  channel_rest  /api/hello",
        "update     channel_rest  open.hello  (url_path)",
        "dry run: 1 to create, 1 to update, 2 to delete, 3 unchanged; nothing was changed",
    ]
    assert stored(server_dir) == before  # same rows, same versions, same update times
    assert not (server_dir / "work" / "server.json").exists()

    result = zato("enmasse", "import", server_dir, tmp_path / "second.yaml", "--delete-missing")
    assert result.exit_code == 0 and "imported: 1 created, 1 updated, 2 deleted, 3 unchanged" in result.stdout
    after = stored(server_dir)
    assert ("channel_rest", "parked") not in after and ("security", "new.user") in after
    assert after[("channel_rest", "open.hello")]["url_path"] == "/open/hello2"
    assert after[("channel_rest", "open.hello")]["_meta"]["version"] == 2


def test_importing_the_same_file_twice_changes_nothing_the_second_time(new_dir, tmp_path, allhooks):
    server_dir = new_dir()
    config = write(tmp_path / "config.yaml", FILE + f"""\
allhooks_thing:
  - name: thing
    size: 3
    tags: [a, b]
    token: {TOKEN}
    security: my.user
""")
    first = zato("enmasse", "import", server_dir, config)
    assert first.exit_code == 0, first.stdout + first.stderr
    before = stored(server_dir)
    assert before[("allhooks_thing", "thing")]["token"].startswith("enc:v1:")  # encrypted at rest

    second = zato("enmasse", "import", server_dir, config)
    assert second.exit_code == 0, second.stdout + second.stderr
    assert "nothing to change: 0 created, 0 updated, 0 deleted, 6 unchanged" in second.stdout
    assert all(line.startswith("unchanged") for line in second.stdout.splitlines()[:-1])
    assert stored(server_dir) == before  # versions, hashes and encrypted tokens untouched

    # a changed secret (given in clear) is an update, found by verifying the hash / decrypting
    changed = config.read_text().replace(PASSWORD, "another-password").replace(TOKEN, "another-token")
    third = zato("enmasse", "import", server_dir, write(config, changed), "--dry-run")
    assert "update     security        my.user  (password)" in third.stdout
    assert "update     allhooks_thing  thing  (token)" in third.stdout

    # a secret left out of the file keeps its stored value
    omitted = FILE.replace(f"    password: {PASSWORD}\n", "")
    fourth = zato("enmasse", "import", server_dir, write(tmp_path / "omitted.yaml", omitted))
    assert "unchanged  security      my.user" in fourth.stdout
    assert stored(server_dir)[("security", "my.user")] == before[("security", "my.user")]


def test_objects_are_applied_in_dependency_order(new_dir, tmp_path, allhooks):
    server_dir = new_dir("empty")
    config = write(tmp_path / "config.yaml", """\
        allhooks_thing:
          - name: thing
            security: sec
        channel_rest:
          - name: ch
            url_path: /ch
            service: demo.hello
            security: sec
        security:
          - name: sec
            type: apikey
    """)
    with ServerConfigStore(server_dir) as store:
        plan = plan_import(store, config)
        order = [(s.action, s.object_type) for s in plan.steps]
        assert order.index(("create", "security")) < order.index(("create", "channel_rest"))
        assert order.index(("create", "security")) < order.index(("create", "allhooks_thing"))
        apply_plan(store, plan)
    assert set(stored(server_dir)) == {("allhooks_thing", "thing"), ("channel_rest", "ch"), ("security", "sec")}

    # deleting: what uses an object goes before it
    write(config, "channel_rest: []\nsecurity: []\nallhooks_thing: []\n")
    with ServerConfigStore(server_dir) as store:
        plan = plan_import(store, config, delete_missing=True)
        order = [(s.action, s.object_type) for s in plan.steps]
        assert order[-1] == ("delete", "security") and len(order) == 3
        apply_plan(store, plan)
    assert stored(server_dir) == {}


# ################################################################################################
# All or nothing


ERRORS = {
    "yaml syntax": ("channel_rest:\n  - name: x\n    url_path: [/a\n", 4,
                    "YAML syntax: while parsing a flow sequence (from line 3), expected ',' or ']', but got ':'"),
    "unknown key": ("security: []\nchanel_rest:\n  - name: x\n", 2,
                    "unknown key 'chanel_rest': not an object type of this server. Known keys: bst_definition, "
                    "channel_rest, "),
    "zato key without a plugin": ("outgoing_rest:\n  - name: crm\n", 1,
                                  "'outgoing_rest' is a Zato enmasse key, but no enabled plugin provides object type "
                                  "'outgoing_rest'"),
    "generic connection": ("zato_generic_connection:\n  - name: w\n    type_: outconn-wsx\n", 2,
                           "zato_generic_connection type_ 'outconn-wsx' is not supported on this server; it comes "
                           "with the wsx plugin: pip install zato-plugin-wsx"),
    "bad field": ("channel_rest:\n  - name: x\n    url_path: /x\n    service: s\n    timeout: soon\n", 5,
                  "channel_rest 'x': timeout: expected a number, got 'soon'"),
    "unknown field": ("channel_rest:\n  - name: x\n    url_path: /x\n    servce: s\n", 4,
                      "channel_rest 'x': servce: not a field of channel_rest; valid fields:"),
    "missing field": ("channel_rest:\n  - name: x\n    url_path: /x\n", 2,
                      "channel_rest 'x': service: missing (it is required)"),
    "missing reference": ("channel_rest:\n  - name: x\n    url_path: /x\n    service: s\n    security: nobody\n", 5,
                          "channel_rest 'x': security: security 'nobody' does not exist in the file or in the "
                          "database; add it under `security:` in the file"),
    "duplicate name": ("security:\n  - name: a\n    type: apikey\n  - name: a\n    type: basic_auth\n", 4,
                       "security 'a': name: duplicate name: the same name is used on line 2"),
    "duplicate key": ("security:\n  - name: a\n    type: apikey\n    type: basic_auth\n", 4,
                      "key 'type' is given twice in this mapping (first on line 3)"),
    "not a list": ("security:\n  name: a\n", 1, "security: must be a list of objects"),
    "name not text": ("security:\n  - name: 12\n    type: apikey\n", 2, "security '12': name: must be text"),
    "encrypted secret": ("security:\n  - name: a\n    type: apikey\n    password: enc:v1:gAAAA\n", 4,
                         "security 'a': password: is an encrypted value from a configuration database"),
}


def _object_type_names(server_dir) -> list[str]:
    """ The object types the plugins enabled in `server_dir` provide (the keys enmasse knows). """
    from zato.plugins import load_plugins, plugin_switches
    from zato.server.server import ServerPaths, read_server_config
    config = read_server_config(ServerPaths(server_dir))
    return list(load_plugins(plugin_switches(config.get("plugins"))).registry.items(Kind.OBJECT_TYPES))


@pytest.mark.parametrize("kind", list(ERRORS))
def test_every_error_names_file_line_and_object_and_changes_nothing(new_dir, tmp_path, kind):
    server_dir = new_dir()
    text, line, message = ERRORS[kind]
    if kind in ("zato key without a plugin", "generic connection"):
        from zato.testing import set_config_value
        # the plugins providing outgoing_rest and outgoing_wsx
        set_config_value(server_dir, "plugins", "outgoing_http" if kind.startswith("zato key") else "wsx", "False")
    # valid objects around the bad one: none of them may be written
    good = "security:\n  - name: good\n    type: apikey\n    password: k\n" if not text.startswith("security") else \
        "channel_rest:\n  - name: good\n    url_path: /good\n    service: demo.hello\n"
    path = write(tmp_path / "bad.yaml", text + good)
    before = stored(server_dir)
    result = zato("enmasse", "import", server_dir, path)
    assert result.exit_code == 1
    assert f"{path}:{line}: " in result.stderr and message in result.stderr, result.stderr
    assert result.stderr.rstrip().endswith("; nothing was changed")
    assert result.stdout == ""  # no plan printed
    assert stored(server_dir) == before


def test_all_problems_are_reported_at_once(new_dir, tmp_path):
    server_dir = new_dir()
    path = write(tmp_path / "bad.yaml", """\
        channel_rest:
          - name: a
            url_path: /a
            service: s
            security: nobody
          - name: b
            url_path: /b
            timeout: soon
          - name: a
            url_path: /a2
            service: s
        unknown_things:
          - name: x
    """)
    result = zato("enmasse", "import", server_dir, path, "--dry-run")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    known_keys = ", ".join(sorted(t for t in _object_type_names(server_dir)))
    assert lines == [
        f"{path}:5: channel_rest 'a': security: security 'nobody' does not exist in the file or in the database; "
        f"add it under `security:` in the file",
        f"{path}:6: channel_rest 'b': service: missing (it is required)",
        f"{path}:8: channel_rest 'b': timeout: expected a number, got 'soon'",
        f"{path}:9: channel_rest 'a': name: duplicate name: the same name is used on line 2; names are unique within "
        f"a type",
        f"{path}:12: unknown key 'unknown_things': not an object type of this server. Known keys: {known_keys}",
        "5 problems; nothing was changed",
    ]


def test_a_reference_to_an_object_in_the_database_is_fine(new_dir, tmp_path):
    server_dir = new_dir()
    zato("enmasse", "import", server_dir, write(tmp_path / "sec.yaml", "security:\n  - name: db.sec\n    type: apikey\n"))
    config = write(tmp_path / "ch.yaml", "channel_rest:\n  - name: c\n    url_path: /c\n    service: s\n"
                                         "    security: db.sec\n")
    assert zato("enmasse", "import", server_dir, config).exit_code == 0

    # ...unless --delete-missing deletes it, or it is still used by an object the file does not hold
    result = zato("enmasse", "import", server_dir, write(tmp_path / "none.yaml", "security: []\n"), "--delete-missing")
    assert result.exit_code == 1
    assert (f"{tmp_path / 'none.yaml'}:1: security 'db.sec': not in the file, so --delete-missing would delete it, "
            f"but channel_rest 'c' (in the database) uses it in 'security'") in result.stderr
    both = write(tmp_path / "both.yaml", "security: []\n" + config.read_text())
    result = zato("enmasse", "import", server_dir, both, "--delete-missing")
    assert result.exit_code == 1
    assert "security 'db.sec' is not in the file, and --delete-missing deletes it from the database" in result.stderr
    assert ("security", "db.sec") in stored(server_dir)


def test_a_database_failure_changes_nothing(new_dir, tmp_path):
    """ The plan says create; by the time it is applied another writer has created one of the
    objects. The database refuses the batch, and none of it is written. """
    server_dir = new_dir()
    assert zato("enmasse", "import", server_dir, write(tmp_path / "first.yaml", FILE)).exit_code == 0
    changed = FILE.replace("/open/hello", "/open/changed") + "  - name: late\n    type: apikey\n"
    config = write(tmp_path / "second.yaml", changed)
    with ServerConfigStore(server_dir) as store:
        plan = plan_import(store, config)
        assert [(s.action, s.name) for s in plan.changes] == [("create", "late"), ("update", "open.hello")]
        store.odb.put_object("security", "late", {"type": "basic_auth", "username": "other"})  # someone else
        before = stored(server_dir)
        with pytest.raises(EnmasseError) as caught:
            apply_plan(store, plan)
    assert "the configuration database refused the changes" in str(caught.value)
    assert "nothing was changed" in str(caught.value) and str(config) in str(caught.value)
    assert stored(server_dir) == before  # the update of open.hello was rolled back too
    assert stored(server_dir)[("channel_rest", "open.hello")]["url_path"] == "/open/hello"


# ################################################################################################
# Export


def test_export_then_import_into_an_empty_server_reproduces_the_configuration(new_dir, tmp_path, allhooks):
    first, second = new_dir(), new_dir("empty")
    config = write(tmp_path / "config.yaml", FILE + f"""\
allhooks_thing:
  - name: thing
    size: $THING_SIZE
    ratio: 0.25
    tags: [a, b]
    label: "multi\\nline: text # not a comment"
    security: $THING_SECURITY
    token: {TOKEN}
""")
    assert zato("enmasse", "import", first, config).exit_code == 0
    exported = zato("enmasse", "export", first, "--secrets", "env")
    assert exported.exit_code == 0, exported.stderr
    assert zato("enmasse", "export", first, "--secrets", "env").stdout == exported.stdout  # stable

    result = zato("enmasse", "import", second, write(tmp_path / "exported.yaml", exported.stdout))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert zato("enmasse", "export", second, "--secrets", "env").stdout == exported.stdout
    expected = contents(first)
    expected[("security", "my.user")]["password"] = "$ZATO_SECRET_SECURITY_MY_USER_PASSWORD"
    expected[("allhooks_thing", "thing")]["token"] = "$ZATO_SECRET_ALLHOOKS_THING_THING_TOKEN"
    expected[("channel_rest", "demo.hello")].pop("security")  # None in the quickstart's row: not exported
    assert contents(second) == expected

    # what the export looks like: grouped in dependency order, sorted by name, $NAME as written
    text = exported.stdout
    assert text.index("security:\n") < text.index("channel_rest:\n") and text.index("security:\n") < \
        text.index("allhooks_thing:\n")
    assert text.index("- name: env.user") < text.index("- name: my.user")
    assert "timeout: $HELLO_TIMEOUT" in text and "size: $THING_SIZE" in text and "security: $THING_SECURITY" in text
    assert "password: $ENV_USER_PASSWORD" in text  # a reference, not a secret value
    assert "is_active: false" in text and "is_active: true" not in text
    assert "_meta" not in text and "version" not in text and "id:" not in text


def test_secrets_are_never_exported_in_clear(new_dir, tmp_path, allhooks, monkeypatch):
    server_dir = new_dir()
    config = write(tmp_path / "config.yaml", FILE + f"allhooks_thing:\n  - name: thing\n    token: {TOKEN}\n")
    assert zato("enmasse", "import", server_dir, config).exit_code == 0

    omitted = zato("enmasse", "export", server_dir)
    env = zato("enmasse", "export", server_dir, "--secrets", "env")
    for result in (omitted, env):
        assert result.exit_code == 0
        for text in (result.stdout, result.stderr):
            assert PASSWORD not in text and TOKEN not in text
            assert "enc:v1:" not in text and "scrypt$" not in text

    assert "    # left out (secret): password" in omitted.stdout
    assert "    # left out (secret): token" in omitted.stdout
    assert "security 'my.user' password" in omitted.stderr and "allhooks_thing 'thing' token" in omitted.stderr

    variable = secret_variable("security", "my.user", "password")
    assert variable == "ZATO_SECRET_SECURITY_MY_USER_PASSWORD"
    assert f"password: ${variable}" in env.stdout
    assert f"token: $ZATO_SECRET_ALLHOOKS_THING_THING_TOKEN" in env.stdout
    assert f"  {variable}  (security 'my.user' password)" in env.stderr

    # another server imports the env export and reads the secrets from its environment
    other = new_dir("empty")
    assert zato("enmasse", "import", other, write(tmp_path / "env.yaml", env.stdout)).exit_code == 0
    assert stored(other)[("security", "my.user")]["password"] == f"${variable}"
    monkeypatch.setenv(variable, PASSWORD)
    monkeypatch.setenv("ZATO_SECRET_ALLHOOKS_THING_THING_TOKEN", TOKEN)
    monkeypatch.setenv("HELLO_TIMEOUT", "5")
    monkeypatch.setenv("ENV_USER_PASSWORD", "x")
    with ServerConfigStore(other) as store:
        assert not plan_import(store, tmp_path / "env.yaml").changes

    async def check() -> None:
        async with run_server(other) as server:
            assert server.config_objects["allhooks_thing"]["thing"]["token"] == TOKEN
            async with httpx.AsyncClient(base_url=server.address, timeout=10) as client:
                assert (await client.get("/api/hello", headers=basic("my.user", PASSWORD))).status_code == 200
                assert (await client.get("/api/hello", headers=basic("my.user", "nope"))).status_code == 401
    trio.run(check)


def test_secret_variable_names_are_sanitized_and_unique(new_dir, tmp_path):
    server_dir = new_dir("empty")
    config = write(tmp_path / "config.yaml", """\
        security:
          - {name: "a.b", type: apikey, password: one}
          - {name: "a b", type: apikey, password: two}
          - {name: "ünï-cödé/x", type: apikey, password: three}
    """)
    assert zato("enmasse", "import", server_dir, config).exit_code == 0
    with ServerConfigStore(server_dir) as store:
        result = export_config(store, secrets="env")
    assert [v for v, _ in result.variables] == [
        "ZATO_SECRET_SECURITY_A_B_PASSWORD", "ZATO_SECRET_SECURITY_A_B_PASSWORD_2",
        "ZATO_SECRET_SECURITY_N_C_D_X_PASSWORD"]


def test_stored_forms_of_secrets_in_a_file(new_dir, tmp_path):
    """ A scrypt hash is taken for a field stored hashed (a file need not hold clear passwords);
    an encrypted value (only its server's key opens it) is refused. """
    from zato.passwords import hash_password
    server_dir = new_dir()
    hashed = hash_password(PASSWORD)
    config = write(tmp_path / "config.yaml", FILE.replace(f"password: {PASSWORD}", f"password: {hashed}"))
    assert zato("enmasse", "import", server_dir, config).exit_code == 0
    assert stored(server_dir)[("security", "my.user")]["password"] == hashed
    assert "unchanged  security      my.user" in zato("enmasse", "import", server_dir, config).stdout
    assert "unchanged  security      my.user" in zato("enmasse", "import", server_dir,
                                                      write(tmp_path / "clear.yaml", FILE), "--dry-run").stdout

    bad = write(tmp_path / "bad.yaml", FILE.replace(f"password: {PASSWORD}", "password: scrypt$1$2$nope"))
    result = zato("enmasse", "import", server_dir, bad)
    assert result.exit_code == 1 and "looks like a scrypt hash but is not a valid one" in result.stderr


def test_the_zato_command_has_enmasse(new_dir, tmp_path):
    """ Through the installed entry point, as users run it. """
    import subprocess
    server_dir = new_dir()
    done = subprocess.run([*ZATO, "enmasse", "export", str(server_dir)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "channel_rest:\n  - name: demo.hello\n" in done.stdout
    done = subprocess.run([*ZATO, "enmasse", "import", str(server_dir), str(tmp_path / "missing.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "missing.yaml: cannot read the file" in done.stderr


# ################################################################################################
# The round trip, as a property


NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12).filter(
    lambda s: s.strip())
ENV = st.from_regex(r"\$[A-Z][A-Z0-9_]{0,8}", fullmatch=True)
METHODS = st.lists(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]), unique=True, max_size=6)


@st.composite
def configurations(draw):
    security = {}
    for name in draw(st.lists(NAMES, unique=True, max_size=3)):
        row = {"name": name, "type": draw(st.sampled_from(["basic_auth", "apikey"])), "username": draw(NAMES | ENV)}
        if draw(st.booleans()):
            row["password"] = draw(ENV)
        if draw(st.booleans()):
            row["is_active"] = False
        security[name] = row
    channels = []
    for name in draw(st.lists(NAMES, unique=True, max_size=4)):
        row = {"name": name, "url_path": draw(st.just("/") | ENV) + draw(NAMES), "service": draw(NAMES),
               "methods": draw(METHODS), "data_format": draw(st.sampled_from(["json", "text", "form"]) | ENV)}
        if security and draw(st.booleans()):
            row["security"] = draw(st.sampled_from(sorted(security)))
        timeout = draw(st.none() | ENV | st.floats(0.1, 1000, allow_nan=False))
        if timeout is not None:
            row["timeout"] = timeout
        if draw(st.booleans()):
            row["is_active"] = draw(st.booleans())
        channels.append(row)
    return {"security": list(security.values()), "channel_rest": channels}


def test_export_import_export_round_trip_property(templates):
    import yaml

    with ServerConfigStore(templates["empty"]) as store:
        registry = store.registry  # plugins loaded once for every example

    @settings(max_examples=int(os.environ.get("ZATO_ENMASSE_EXAMPLES", 40)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(configurations())
    def round_trip(config):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            first, second = tmp / "first", tmp / "second"
            shutil.copytree(templates["empty"], first)
            shutil.copytree(templates["empty"], second)
            source = tmp / "source.yaml"
            source.write_text(yaml.safe_dump(config, allow_unicode=True), "utf-8")

            with ServerConfigStore(first, registry=registry) as store:
                apply_plan(store, plan_import(store, source))
                exported = export_config(store).text
            (tmp / "exported.yaml").write_text(exported, "utf-8")
            with ServerConfigStore(second, registry=registry) as store:
                plan = plan_import(store, tmp / "exported.yaml")
                assert {s.action for s in plan.steps} <= {"create"}
                apply_plan(store, plan)
                assert export_config(store).text == exported
                assert not plan_import(store, tmp / "exported.yaml").changes  # and again: nothing to do
            assert contents(second) == contents(first)
            assert len(contents(first)) == len(config["security"]) + len(config["channel_rest"])

    round_trip()


def test_objects_of_types_no_plugin_provides_are_left_out_of_the_export_with_a_warning(new_dir):
    server_dir = new_dir()
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    odb.put_object("retired_thing", "old", {"x": 1})
    odb.close()
    result = zato("enmasse", "export", server_dir)
    assert result.exit_code == 0
    assert "retired_thing" not in result.stdout and "demo.hello" in result.stdout
    assert ("warning: left out 1 object(s) of type 'retired_thing': no enabled plugin provides that type"
            in result.stderr)


def test_an_unreadable_database_is_an_error_that_says_what_to_do(new_dir, tmp_path):
    server_dir = new_dir()
    (server_dir / "work" / "zato.db").unlink()
    result = zato("enmasse", "import", server_dir, write(tmp_path / "c.yaml", "security: []\n"))
    assert result.exit_code == 1
    assert "cannot read the configuration database sqlite:///" in result.stderr
    assert "start the server once (`zato start`) to create or migrate it" in result.stderr
    result = zato("enmasse", "export", server_dir)
    assert result.exit_code == 1 and "cannot read the configuration database" in result.stderr


def test_yaml_anchors_and_merge_keys_share_defaults(new_dir, tmp_path):
    server_dir = new_dir("empty")
    config = write(tmp_path / "c.yaml", """\
        channel_rest:
          - &defaults
            name: one
            url_path: /one
            service: demo.hello
            methods: [GET]
            data_format: text
          - <<: *defaults
            name: two
            url_path: /two
    """)
    result = zato("enmasse", "import", server_dir, config)
    assert result.exit_code == 0, result.stderr
    two = stored(server_dir)[("channel_rest", "two")]
    assert two["url_path"] == "/two" and two["methods"] == ["GET"] and two["data_format"] == "text"
