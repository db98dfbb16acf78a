""" Files and configuration (issue 11): what the server and the CLI write that holds secrets or
code is 0600 (logs 0640) whatever the umask, and every server.conf value is range-checked, a bad
one stopping `zato start` with the file, section, key and allowed values, never a traceback. """

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from zato.config import ConfigError, apply_schema, read_ini
from zato.odb import ODB, sqlite_url
from zato.registry import Kind, ServerConfigSection, Setting
from zato.server.logs import RotatingLogFile, WatchedLogFile, feature_log_file
from zato.testing import ServerProcess, create_test_server_dir, set_config_value

ZATO = [sys.executable, "-c", "import sys; from zato.cli import main; sys.exit(main())"]


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o000, 0o022], ids=["umask0", "umask022"])
def umask(request):
    """ The process's umask for the test (subprocesses inherit it). """
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


# ################################################################################################
# File modes


def test_database_and_its_wal_and_shm_files_are_0600_after_writes(tmp_path, umask):
    database = tmp_path / "work" / "zato.db"
    database.parent.mkdir()
    odb = ODB(sqlite_url(database))
    try:
        odb.upgrade()
        odb.put_object("channel_rest", "one", {"url_path": "/one", "service": "demo.hello"})
        with odb.engine.connect() as conn:  # an open connection keeps -wal and -shm in place
            conn.exec_driver_sql("SELECT 1")
            files = {path.name: mode_of(path) for path in database.parent.iterdir()}
    finally:
        odb.close()
    assert {"zato.db", "zato.db-wal", "zato.db-shm"} <= set(files)
    assert files == {name: 0o600 for name in files}


def test_an_existing_database_left_open_is_tightened_with_a_log_line(tmp_path, caplog):
    database = tmp_path / "zato.db"
    ODB(sqlite_url(database)).close()
    for path in (database, Path(f"{database}-wal")):
        path.touch()
        os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="zato.files"):
        odb = ODB(sqlite_url(database))
        odb.upgrade()
        odb.close()
    assert mode_of(database) == 0o600
    assert any(str(database) in record.getMessage() and "0644" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("handler_class", [RotatingLogFile, WatchedLogFile])
def test_log_files_are_0640_also_after_a_rotation(tmp_path, umask, handler_class):
    log_file = tmp_path / "server.log"
    kwargs = {"maxBytes": 300, "backupCount": 2} if handler_class is RotatingLogFile else {}
    handler = handler_class(log_file, encoding="utf-8", **kwargs)
    logger = logging.getLogger(f"zato.test.modes.{handler_class.__name__}")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for n in range(30):
            logger.warning("line %d %s", n, "x" * 40)
        if handler_class is WatchedLogFile:  # another process rotates it
            log_file.rename(tmp_path / "server.log.1")
            logger.warning("after the rotation")
    finally:
        logger.removeHandler(handler)
        handler.close()
    files = {path.name: mode_of(path) for path in tmp_path.iterdir()}
    assert {"server.log", "server.log.1"} <= set(files)
    assert files == {name: 0o640 for name in files}


def test_a_feature_log_file_moves_with_the_server_and_closes_the_old_file(tmp_path, umask):
    # two servers in one process (as in tests) each have their own logs/; the feature's logger
    # writes to the newest one alone and lets go of the file before
    first, second = tmp_path / "one" / "feature.log", tmp_path / "two" / "feature.log"
    logger = feature_log_file("zato.test.feature", first)
    try:
        logger.info("to the first")
        files = [h for h in logger.handlers if isinstance(h, WatchedLogFile)]
        assert feature_log_file("zato.test.feature", first) is logger and len(files) == 1
        feature_log_file("zato.test.feature", second).info("to the second")
        now = [h for h in logger.handlers if isinstance(h, WatchedLogFile)]
        assert len(now) == 1 and now[0] is not files[0] and files[0].stream is None  # the first one closed
        assert "to the first" in first.read_text() and "to the second" not in first.read_text()
        assert "to the second" in second.read_text() and mode_of(second) == 0o640
    finally:
        for handler in [h for h in logger.handlers if isinstance(h, WatchedLogFile)]:
            logger.removeHandler(handler)
            handler.close()


def test_a_log_file_left_open_is_tightened(tmp_path):
    log_file = tmp_path / "server.log"
    log_file.write_text("old\n")
    os.chmod(log_file, 0o666)
    handler = RotatingLogFile(log_file, maxBytes=1000, backupCount=1, encoding="utf-8")
    handler.close()
    assert mode_of(log_file) == 0o640


def test_quickstart_and_set_admin_password_write_secrets_0600(tmp_path, umask):
    base = create_test_server_dir(tmp_path / "server")
    assert mode_of(base / "config" / "server.conf") == 0o600
    assert mode_of(base / "config" / "user.conf") == 0o600
    assert mode_of(base / "config" / "secret.key") == 0o600
    assert mode_of(base / "work" / "zato.db") == 0o600
    assert mode_of(base / "pickup" / "demo.py") == 0o600
    assert mode_of(base / "config") == 0o700 and mode_of(base / "work") == 0o700
    assert mode_of(base / "logs") == 0o750

    os.chmod(base / "config" / "server.conf", 0o644)
    result = subprocess.run([*ZATO, "set-admin-password", str(base), "--password", "new-secret-1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert mode_of(base / "config" / "server.conf") == 0o600
    assert "password_hash = scrypt$" in (base / "config" / "server.conf").read_text()


def test_a_running_server_writes_its_files_private_under_umask_0(tmp_path, umask):
    base = create_test_server_dir(tmp_path / "server")
    shutil.rmtree(base / "work")  # the server makes work/ and the database itself
    server = ServerProcess(base).start(timeout=60)
    try:
        work = {path.relative_to(base).as_posix(): mode_of(path) for path in (base / "work").rglob("*")
                if path.is_file() and "metrics" not in path.parts}
        logs = mode_of(base / "logs" / "server.log")
        pidfile = mode_of(base / "pidfile")
        work_dir = mode_of(base / "work")
    finally:
        assert server.stop() == 0
    assert {"work/zato.db", "work/zato.db-wal", "work/zato.db-shm", "work/server.json", "work/cli-token",
            "work/deployed/demo.py"} <= set(work), work
    assert work == {name: 0o600 for name in work}
    assert logs == 0o640
    assert pidfile == 0o644  # readable by anyone, writable by its owner alone (`zato stop` kills that pid)
    assert work_dir == 0o700


# ################################################################################################
# Setting: the API plugins declare allowed values with


def schema_check(tmp_path, text: str, keys: dict) -> dict:
    path = tmp_path / "server.conf"
    path.write_text(text)
    config = read_ini(path)
    apply_schema(config, [ServerConfigSection("main", keys)])
    return config.main


def test_setting_types_checks_and_describes_what_it_allows(tmp_path):
    keys = {"workers": Setting(1, minimum=1, maximum=8), "timeout": Setting(1.0, exclusive_minimum=0),
            "level": Setting("INFO", choices=("DEBUG", "INFO")), "name": Setting("x", non_empty=True),
            "plain": 5}
    main = schema_check(tmp_path, "[main]\nworkers = 8\ntimeout = 0.5\nlevel = debug\nplain = -3\n", keys)
    assert main == {"workers": 8, "timeout": 0.5, "level": "DEBUG", "name": "x", "plain": -3}

    for line, message in [("workers = 9", "[main] workers = '9': too large; allowed: an integer from 1 to 8"),
                          ("workers = 1.5", "[main] workers = '1.5': not an integer; allowed: an integer from 1 to 8"),
                          ("timeout = 0", "[main] timeout = '0': too small; allowed: a number > 0"),
                          ("timeout = nan", "[main] timeout = 'nan': not a finite number; allowed: a number > 0"),
                          ("level = LOUD", "[main] level = 'LOUD': not one of the allowed values; allowed: one of: "
                                           "DEBUG, INFO"),
                          ("name =", "[main] name = '': must not be empty; allowed: a non-empty text")]:
        with pytest.raises(ConfigError) as info:
            schema_check(tmp_path, f"[main]\n{line}\n", keys)
        assert str(info.value) == f"{tmp_path / 'server.conf'}: {message}"


def test_a_secret_setting_is_not_shown_in_the_error(tmp_path):
    def check(value):
        raise ValueError("not a database URL")
    with pytest.raises(ConfigError) as info:
        schema_check(tmp_path, "[main]\nurl = x://user:hunter2@host\n",
                     {"url": Setting("", secret=True, check=check, allowed="an SQLAlchemy URL")})
    assert "hunter2" not in str(info.value)
    assert str(info.value).endswith("[main] url = (not shown: a secret): not a database URL; "
                                    "allowed: an SQLAlchemy URL")


# ################################################################################################
# Bad server.conf values stop `zato start` with file, section, key and allowed values


BAD_VALUES = [
    # the values accepted silently before
    ("main", "workers", "0", "an integer from 1 to 256"),
    ("main", "workers", "-2", "an integer from 1 to 256"),
    ("main", "sync_service_threads", "0", "an integer from 1 to 10000"),
    ("main", "max_body_size", "-1", "an integer from 1 to"),
    ("main", "max_body_size", "0", "an integer from 1 to"),
    ("main", "keep_alive_timeout", "0", "a number > 0"),
    ("main", "graceful_timeout", "-1", "a number from 0 to 3600"),
    ("main", "graceful_timeout", "nan", "a number from 0 to 3600"),
    ("main", "gc_threshold", "-1", "an integer from 0 to"),
    ("main", "host", "", "an IP address or a host name"),
    ("main", "name", "", "a non-empty text"),
    ("logging", "level", "LOUD", "one of: CRITICAL, ERROR, WARNING, INFO, DEBUG"),
    ("admin", "username", "", "a non-empty text"),
    ("hot_deploy", "poll_interval", "0", "a number > 0"),
    ("scheduler", "lease_seconds", "0", "a number from 0.3 to 3600"),
    ("scheduler", "history_size", "-1", "an integer from 0 to"),
    ("pubsub", "claim_batch", "0", "an integer from 1 to 100000"),
    ("pubsub", "poll_interval", "-1", "a number > 0"),
    ("rate_limit", "prune_interval", "0", "a number > 0"),
    # the values that stopped start-up with a raw exception naming no key
    ("main", "workers", "abc", "an integer from 1 to 256"),
    ("main", "port", "70000", "an integer from 0 to 65535"),
    ("main", "port", "-1", "an integer from 0 to 65535"),
    ("main", "host", "no-such-host.invalid", "an IP address or a host name that resolves"),
    ("main", "sync_service_threads", "-1", "an integer from 1 to 10000"),
    ("main", "skip_broken_plugins", "maybe", "true or false"),
    ("odb", "url", "not a url", "an SQLAlchemy URL"),
    ("odb", "url", "nosuchdb://x", "an SQLAlchemy URL"),
    ("odb", "url", "sqlite:////no/such/dir/zato.db", "an SQLAlchemy URL"),
    ("scheduler", "poll_seconds", "-1", "a number > 0"),
    # values stopped with a message in another form (no file, no allowed values)
    ("main", "port", "abc", "an integer from 0 to 65535"),
    ("plugins", "scheduler", "maybe", "True or False"),
    ("admin", "password_hash", "scrypt$not-a-hash", "a hash written by `zato set-admin-password DIR`"),
    ("rate_limit", "trusted_proxies", "not-an-ip", "IP addresses or CIDR networks"),
    ("rate_limit", "forwarded_for_header", "X: Y", "an HTTP header name"),
]


@pytest.fixture(scope="module")
def template_dir(tmp_path_factory):
    return create_test_server_dir(tmp_path_factory.mktemp("template") / "server")


def zato_start(base: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([*ZATO, "start", str(base), "--timeout", "60"], capture_output=True, text=True,
                            timeout=120)
    if result.returncode == 0:  # started although it should not have
        subprocess.run([*ZATO, "stop", str(base)], capture_output=True, timeout=60)
    return result


@pytest.mark.parametrize("section, key, value, allowed", BAD_VALUES,
                         ids=[f"{s}.{k}={v!r}" for s, k, v, _ in BAD_VALUES])
def test_a_bad_value_stops_zato_start_naming_file_section_key_and_allowed_values(
        tmp_path, template_dir, section, key, value, allowed):
    base = tmp_path / "server"
    shutil.copytree(template_dir, base)
    set_config_value(base, section, key, value)
    result = zato_start(base)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"{base / 'config' / 'server.conf'}: [{section}] {key} = " in output, output
    assert "; allowed: " in output and allowed in output.split("; allowed: ", 1)[1], output
    assert "Traceback" not in output, output
    log = base / "logs" / "server.log"
    assert "Traceback" not in (log.read_text() if log.exists() else ""), log.read_text()


def test_an_unreachable_database_names_odb_url_and_hides_its_password(tmp_path, template_dir):
    base = tmp_path / "server"
    shutil.copytree(template_dir, base)
    set_config_value(base, "odb", "url", "postgresql+psycopg://zato:hunter2@127.0.0.1:1/zato")
    result = zato_start(base)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "cannot open the configuration database" in output and "[odb] url" in output, output
    assert "hunter2" not in output and "Traceback" not in output, output
    assert "hunter2" not in (base / "logs" / "server.log").read_text()


def test_several_workers_check_values_before_binding(tmp_path, template_dir):
    # with workers > 1 the supervisor read [main] port before any check
    base = tmp_path / "server"
    shutil.copytree(template_dir, base)
    set_config_value(base, "main", "workers", "2")
    set_config_value(base, "main", "port", "abc")
    result = zato_start(base)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"{base / 'config' / 'server.conf'}: [main] port = 'abc': not an integer; allowed: an integer from 0 " \
           f"to 65535" in output, output
    assert "Traceback" not in output, output


# ################################################################################################
# docs/configuration.md lists every key with what it allows


def documented_keys() -> dict[tuple[str, str], str]:
    """ (section, key) -> the "allowed" column of docs/configuration.md's tables. """
    text = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text("utf-8")
    rows, section = {}, None
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not line.startswith("|") or cells[0] in ("section", "---"):
            continue
        section = cells[0].strip("`[]") or section
        rows[(section, cells[1].strip("`"))] = cells[3]
    return rows


def test_every_declared_key_is_documented_with_its_allowed_values():
    from zato.plugins import load_plugins
    from zato.registry import as_setting
    loaded = load_plugins()
    documented = documented_keys()
    missing, different = [], []
    for section in loaded.registry.values(Kind.SERVER_CONFIG):
        if loaded.registry.plugin_of(Kind.SERVER_CONFIG, section.name) not in (
                "apispec", "essentials", "hot_deploy", "metrics", "pubsub", "rate_limit", "scheduler"):
            continue  # other plugins document theirs in their README
        for key, declared in section.keys.items():
            allowed = as_setting(declared).describe()
            if (section.name, key) not in documented:
                missing.append(f"[{section.name}] {key}")
            elif documented[(section.name, key)] != allowed:
                different.append(f"[{section.name}] {key}: docs say {documented[(section.name, key)]!r}, "
                                 f"the declaration {allowed!r}")
    assert not missing and not different, "docs/configuration.md: " + "; ".join(missing + different)
