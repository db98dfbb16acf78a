""" zato-plugin-enclog: the article's formatter, the server's encrypted log, `zato enclog`. """

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import textwrap
import threading
import time

import click
import httpx
import pytest
from click.testing import CliRunner

from zato.cli import add_plugin_commands, cli
from zato.plugin_api import ProcessExited, ServerProcess, admin_auth, create_test_server_dir, set_config_value

from zato.enclog import EncryptedLogFormatter, Reader, genkey

TOKEN = r"gAAAAA[A-Za-z0-9_\-=]+"
ARTICLE = '''
import logging
from zato.enclog import EncryptedLogFormatter, genkey

level = logging.INFO
format = '%(levelname)s - %(message)s'

key = genkey()
formatter = EncryptedLogFormatter(key, format)

handler = logging.StreamHandler()
handler.setFormatter(formatter)

logger = logging.getLogger('')
logger.addHandler(handler)
logger.setLevel(level)

logger.info('This will be encrypted')
print(key)
'''

SERVICE = '''
from logging import getLogger
from zato.server.service import Service

enclog = getLogger('enclog')

class EnclogDemo(Service):
    name = 'enclog.demo'

    def handle(self):
        enclog.info('This will be encrypted')
        enclog.info('Secret number %d of user %s', 7, 'Jane Xi')
        self.response.payload = {'ok': True}
'''


def zato(*args, env=None):
    """ `zato ...` in this process with the commands enabled plugins add (as `zato.cli.main`
    does), on a copy of the command group so that other tests see none. """
    argv = [str(arg) for arg in args]
    group = click.Group("zato", commands=dict(cli.commands), callback=cli.callback)
    add_plugin_commands(group, argv)
    return CliRunner().invoke(group, argv, env=env)


def write_log(path, key, messages, fmt="%(levelname)s - %(message)s"):
    import logging
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(EncryptedLogFormatter(key, fmt))
    log = logging.getLogger(f"enclog.test.{path.name}")
    log.propagate = False
    log.addHandler(handler)
    for message in messages:
        log.warning(message)
    handler.close()
    log.removeHandler(handler)


# ################################################################################################
# The formatter


def test_the_articles_example_runs_unchanged_and_its_line_decrypts():
    done = subprocess.run([sys.executable, "-c", ARTICLE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    line, = done.stderr.splitlines()
    assert re.fullmatch(r"INFO - enclogdata:" + TOKEN, line), line
    assert Reader(done.stdout.strip()).line(line) == ("INFO - This will be encrypted", None)


def test_the_formatter_keeps_the_record_and_puts_a_traceback_in_the_token():
    import logging
    key = genkey()
    formatter = EncryptedLogFormatter(key, "%(levelname)s %(name)s: %(message)s")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed for %s", ("Jane",), sys.exc_info())
    line = formatter.format(record)
    assert "\n" not in line and "boom" not in line and "Jane" not in line
    clear, problem = Reader(key).line(line)
    assert problem is None and clear.startswith("ERROR x: failed for Jane\nTraceback") and "ValueError: boom" in clear
    assert record.getMessage() == "failed for Jane"  # another handler still sees the record as it was


def test_a_malformed_key_is_refused_without_showing_it():
    with pytest.raises(ValueError) as info:
        EncryptedLogFormatter("not-a-key-at-all", "%(message)s")
    assert "not-a-key-at-all" not in str(info.value) and "Fernet key" in str(info.value)


# ################################################################################################
# zato enclog


def test_genkey_is_there_without_a_server_directory_and_makes_keys():
    first, second = zato("enclog", "genkey"), zato("enclog", "genkey")
    assert first.exit_code == 0, first.output
    assert re.fullmatch(r"[A-Za-z0-9_\-]{43}=\n", first.output) and first.output != second.output
    EncryptedLogFormatter(first.output.strip(), "%(message)s")


def test_open_decrypts_passes_clear_lines_and_reports_corrupt_ones(tmp_path):
    key = genkey()
    path = tmp_path / "enclog.log"
    write_log(path, key, ["first", "second", "third"])
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:-20]  # truncated
    lines.insert(0, "a clear line")
    path.write_text("\n".join(lines) + "\n")
    result = zato("enclog", "open", path, "--key", key)
    assert result.exit_code == 3
    assert "a clear line\nWARNING - first\nWARNING - third\n" in result.stdout
    assert f"{path}:3: truncated or corrupt token" in result.stderr and "second" not in result.output


def test_open_with_a_wrong_key_says_so_and_fails(tmp_path):
    path = tmp_path / "enclog.log"
    write_log(path, genkey(), ["secret"])
    result = zato("enclog", "open", path, "--key", genkey())
    assert result.exit_code == 1 and "wrong key" in result.stderr and "secret" not in result.output


def test_open_reads_keys_from_the_environment_and_rotated_keys(tmp_path):
    old, new = genkey(), genkey()
    path = tmp_path / "enclog.log"
    write_log(path, old, ["old line"])
    write_log(path, [new, old], ["new line"])
    env = {"ENCLOG_NEW": new, "ENCLOG_OLD": old}
    for args in (["--key-env", "ENCLOG_NEW", "--key-env", "ENCLOG_OLD"], ["--key", "$ENCLOG_NEW", "--key", old]):
        result = zato("enclog", "open", path, *args, env=env)
        assert result.exit_code == 0, result.output
        assert result.stdout == "WARNING - old line\nWARNING - new line\n"
    only_new = zato("enclog", "open", path, "--key-env", "ENCLOG_NEW", env=env)
    assert only_new.exit_code == 3 and f"{path}:1: the token does not decrypt" in only_new.stderr
    missing = zato("enclog", "open", path, "--key-env", "ENCLOG_NOT_SET")
    assert missing.exit_code == 2 and "ENCLOG_NOT_SET is not set" in missing.output
    bad = zato("enclog", "open", path, "--key", "short")
    assert bad.exit_code == 2 and "not a Fernet key" in bad.output and "short" not in bad.output.replace("--key", "")


class Lines:
    """ A process's stdout, line by line, from a thread. """

    def __init__(self, process):
        self.lines, self.process = [], process
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, count, timeout=15):
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.lines)


def test_tailf_follows_the_file_as_it_grows_is_replaced_and_truncated(tmp_path):
    key = genkey()
    path = tmp_path / "enclog.log"
    write_log(path, key, ["one"])
    zato_command = os.path.join(os.path.dirname(sys.executable), "zato")
    process = subprocess.Popen([zato_command, "enclog", "tailf", str(path), "--key-env", "K", "--interval", "0.05"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "K": key})
    try:
        out = Lines(process)
        assert out.wait_for(1) == ["WARNING - one"]
        write_log(path, key, ["two"])  # grows
        with open(path, "a") as f:
            f.write("clear text\n")
        assert out.wait_for(3) == ["WARNING - one", "WARNING - two", "clear text"]
        path.rename(tmp_path / "enclog.log.1")  # rotated: a new file in its place
        write_log(path, key, ["three"])
        assert out.wait_for(4)[3:] == ["WARNING - three"]
        time.sleep(0.3)
        path.write_text("")  # truncated: seen as such once tailf looks while it is smaller than what was read
        time.sleep(0.3)
        write_log(path, key, ["four"])
        assert out.wait_for(5)[4:] == ["WARNING - four"]
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(10)


def tailf_process(path, key, interval="0.05"):
    zato_command = os.path.join(os.path.dirname(sys.executable), "zato")
    return subprocess.Popen([zato_command, "enclog", "tailf", str(path), "--key-env", "K", "--interval", interval],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "K": key})


def test_tailf_prints_every_line_of_a_file_written_while_it_follows_it_once_and_in_order(tmp_path):
    # An append landing between tailf's read at the end of the file and its look at the file's
    # size was taken for a rewrite: the file was printed again from its start (37,098 lines for 20,000).
    import logging
    key = genkey()
    path = tmp_path / "enclog.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(EncryptedLogFormatter(key, "%(message)s"))
    log = logging.getLogger("enclog.test.continuous")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    count = 6000
    try:
        log.info("line 0")
        process = tailf_process(path, key, interval="0.001")
        try:
            out = Lines(process)
            assert out.wait_for(1) == ["line 0"]
            for number in range(1, count):
                log.info("line %d", number)
                if number % 5 == 0:
                    time.sleep(0.0005)
            lines = out.wait_for(count, timeout=60)
            time.sleep(0.5)  # nothing more comes
            assert len(out.lines) == count, f"{len(out.lines)} lines printed for {count} written"
            assert lines == [f"line {number}" for number in range(count)]
        finally:
            process.terminate()
            process.wait(10)
    finally:
        log.removeHandler(handler)
        handler.close()


def test_tailf_reports_a_corrupt_token_with_its_line_number_and_decrypts_the_rest(tmp_path):
    key = genkey()
    path = tmp_path / "enclog.log"
    write_log(path, key, ["first", "second", "third"])
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:-20]  # truncated token on line 2
    path.write_text("\n".join(lines) + "\n")
    process = tailf_process(path, key)
    try:
        out = Lines(process)
        assert out.wait_for(2) == ["WARNING - first", "WARNING - third"]
        path.rename(tmp_path / "enclog.log.1")  # a new file: its line numbers start again at 1
        write_log(path, key, ["fourth"])
        with open(path, "a") as f:
            f.write("WARNING - enclogdata:gAAAAAnot-a-token\n")
        write_log(path, key, ["fifth"])
        assert out.wait_for(4)[2:] == ["WARNING - fourth", "WARNING - fifth"]
        assert process.poll() is None  # a corrupt line does not stop it
    finally:
        process.terminate()
        process.wait(10)
    stderr = process.stderr.read()
    assert stderr.splitlines() == [f"{path}:2: truncated or corrupt token"] * 2, stderr
    assert "second" not in "".join(out.lines)


def test_tailf_with_a_wrong_key_says_so_and_exits(tmp_path):
    path = tmp_path / "enclog.log"
    write_log(path, genkey(), ["secret"])
    zato_command = os.path.join(os.path.dirname(sys.executable), "zato")
    done = subprocess.run([zato_command, "enclog", "tailf", str(path), "--key", genkey()], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 1 and "wrong key" in done.stderr and "secret" not in done.stdout


# ################################################################################################
# The server


def server_dir(tmp_path, key_value="$ENCLOG_KEY"):
    base = create_test_server_dir(tmp_path / "server")
    set_config_value(base, "enclog", "key", key_value)
    (base / "pickup" / "enclog_demo.py").write_text(textwrap.dedent(SERVICE))
    return base


def test_the_server_writes_getlogger_enclog_encrypted_to_its_own_file_only(tmp_path):
    key, old = genkey(), genkey()
    base = server_dir(tmp_path, "$ENCLOG_KEY, $ENCLOG_OLD")
    process = ServerProcess(base, env={"ENCLOG_KEY": key, "ENCLOG_OLD": old})
    process.start(60)
    try:
        invoke_demo(process)
    finally:
        process.stop()
    enclog_file = base / "logs" / "enclog.log"
    assert stat.S_IMODE(enclog_file.stat().st_mode) == 0o600
    lines = enclog_file.read_text().splitlines()
    assert len(lines) == 2 and all(re.search(r" INFO \d+ enclog: enclogdata:" + TOKEN + "$", line) for line in lines)
    everything = "".join(p.read_text(errors="replace") for p in (base / "logs").iterdir() if p.name != "enclog.log")
    for clear in ("This will be encrypted", "Jane Xi", key, old):
        assert clear not in everything and clear not in enclog_file.read_text()
    result = zato("enclog", "open", enclog_file, "--key", old, "--key", key)
    assert result.exit_code == 0, result.output
    assert [line.split(": ", 1)[1] for line in result.stdout.splitlines()] == [
        "This will be encrypted", "Secret number 7 of user Jane Xi"]
    assert zato("enclog", "open", enclog_file, "--key", old).exit_code == 1  # the first key encrypts


@pytest.mark.parametrize("value, env, expected", [
    ("LITERAL", {}, "a key written in clear in server.conf is refused"),
    ("$ENCLOG_KEY", {"ENCLOG_KEY": "too-short"}, "[enclog] key = $ENCLOG_KEY: the environment variable ENCLOG_KEY "
                                                 "does not hold a Fernet key"),
    ("$ENCLOG_UNSET", {}, "[enclog] key = $ENCLOG_UNSET: environment variable ENCLOG_UNSET is not set"),
    ("", {}, "[enclog] key is not set"),
])
def test_a_missing_literal_or_malformed_key_stops_start_up_naming_the_setting(tmp_path, value, env, expected):
    literal = genkey()
    base = server_dir(tmp_path, literal if value == "LITERAL" else value)
    process = ServerProcess(base, env={k: v for k, v in env.items()})
    os.environ.pop("ENCLOG_UNSET", None)
    with pytest.raises(ProcessExited) as info:
        process.start(60)
    process.stop()
    logs = str(info.value) + "".join(p.read_text(errors="replace") for p in (base / "logs").iterdir())
    assert expected in logs
    assert literal not in logs and "too-short" not in logs


def test_without_an_enclog_section_records_are_dropped_not_written_in_clear(tmp_path):
    base = create_test_server_dir(tmp_path / "server")
    (base / "pickup" / "enclog_demo.py").write_text(textwrap.dedent(SERVICE))
    process = ServerProcess(base).start(60)
    try:
        deadline = time.monotonic() + 30
        while True:
            reply = httpx.post(f"{process.address}/zato/api/invoke/enclog.demo", json={}, auth=admin_auth(), timeout=10)
            if reply.status_code != 404 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert reply.status_code == 200, reply.text
    finally:
        process.stop()
    everything = "".join(p.read_text(errors="replace") for p in (base / "logs").iterdir())
    assert "This will be encrypted" not in everything and "records of logger 'enclog' are dropped" in everything


def invoke_demo(process, times=1):
    for _ in range(times):
        deadline = time.monotonic() + 30
        while True:
            reply = httpx.post(f"{process.address}/zato/api/invoke/enclog.demo", json={}, auth=admin_auth(), timeout=10)
            if reply.status_code != 404 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert reply.status_code == 200, reply.text


@pytest.mark.parametrize("switch", [
    {"deploy_internal": {"zato_plugin_enclog": False}},
    {"plugins": {"enclog": False}},  # servers made before [deploy_internal]
])
def test_with_the_plugin_switched_off_records_are_dropped_with_one_warning_saying_how_to_switch_it_on(
        tmp_path, switch):
    # The plugin's code never runs: the core (zato.server.logs) keeps getLogger('enclog') from
    # propagating to server.log and the console.
    base = create_test_server_dir(tmp_path / "server", **switch)
    set_config_value(base, "enclog", "key", "$ENCLOG_KEY")  # set, but the plugin is off
    (base / "pickup" / "enclog_demo.py").write_text(textwrap.dedent(SERVICE))
    process = ServerProcess(base, env={"ENCLOG_KEY": genkey()}).start(60)
    try:
        invoke_demo(process, times=3)
    finally:
        process.stop()
    files = {p.name: p.read_text(errors="replace") for p in (base / "logs").iterdir()}
    assert "server.log" in files and "console.log" in files and "enclog.log" not in files
    for name, text in files.items():
        assert "This will be encrypted" not in text and "Jane Xi" not in text, name
    warning = [line for line in files["server.log"].splitlines() if "records of logger 'enclog' are dropped" in line]
    assert len(warning) == 1, warning
    assert " WARNING " in warning[0] and "the enclog plugin is not switched on" in warning[0]
    assert "[deploy_internal] zato_plugin_enclog = True" in warning[0] and "[enclog]" in warning[0]
    assert "key = $NAME" in warning[0]


def test_a_custom_log_file_gets_the_encrypted_lines_with_several_workers(tmp_path):
    key = genkey()
    base = create_test_server_dir(tmp_path / "server", workers=2)
    set_config_value(base, "enclog", "key", "$ENCLOG_KEY")
    set_config_value(base, "enclog", "log_file", "secret/audit.log")
    (base / "pickup" / "enclog_demo.py").write_text(textwrap.dedent(SERVICE))
    process = ServerProcess(base, env={"ENCLOG_KEY": key}).start(60)
    try:
        invoke_demo(process, times=4)
    finally:
        process.stop()
    custom = base / "secret" / "audit.log"
    assert not (base / "logs" / "enclog.log").exists()
    assert stat.S_IMODE(custom.stat().st_mode) == 0o600
    lines = custom.read_text().splitlines()
    assert len(lines) == 8 and all("enclogdata:" in line for line in lines), lines
    everything = "".join(p.read_text(errors="replace") for p in (base / "logs").iterdir())
    assert "This will be encrypted" not in everything and "records of logger 'enclog' are dropped" not in everything
    result = zato("enclog", "open", custom, "--key", key)
    assert result.exit_code == 0, result.output
    assert sorted(line.split(": ", 1)[1] for line in result.stdout.splitlines()) == sorted(
        ["This will be encrypted", "Secret number 7 of user Jane Xi"] * 4)
