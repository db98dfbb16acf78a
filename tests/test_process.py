""" The server as a real process: graceful stop with a request in flight, the CLI's start,
status and stop, and `[main] workers = N` under a supervisor (restarts, no orphans,
notifications between workers). """

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from base64 import b64encode

import pytest

from zato.testing import ADMIN_PASSWORD, ServerProcess, create_test_server_dir, set_config_value

SLOW_SERVICE = '''
import time
from zato.server.service import Service

class Slow(Service):
    name = "test.slow"
    def handle(self):
        time.sleep(self.request.payload["seconds"])
        self.response.payload = {"slept": self.request.payload["seconds"]}
'''

ZATO = [sys.executable, "-c", "import sys; from zato.cli import main; sys.exit(main())"]


def admin_post(address: str, service: str, payload=None, timeout: float = 10.0, close: bool = True) -> dict:
    request = urllib.request.Request(f"{address}/zato/api/invoke/{service}", data=json.dumps(payload or {}).encode(),
                                     method="POST")
    request.add_header("Authorization", "Basic " + b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode())
    request.add_header("Content-Type", "application/json")  # urllib would send a form type, which is refused
    if close:
        request.add_header("Connection", "close")
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours is not alive
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@pytest.fixture
def process_server_dir(tmp_path):
    base = create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 5})
    (base / "pickup" / "slow.py").write_text(textwrap.dedent(SLOW_SERVICE))
    return base


def test_sigterm_lets_the_request_in_flight_finish(process_server_dir):
    server = ServerProcess(process_server_dir).start()
    result = {}

    def call():
        result["reply"] = admin_post(server.address, "test.slow", {"seconds": 1.5})

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.5)
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    caller.join(10)
    assert result["reply"] == {"slept": 1.5}
    assert server.wait(10) == 0
    assert time.monotonic() - started < 5
    assert not (process_server_dir / "pidfile").exists()
    assert "received SIGTERM" in server.output()
    log = (process_server_dir / "logs" / "server.log").read_text()
    assert "stopped" in log and "ready at" in log


def test_cli_start_status_stop(process_server_dir):
    run = lambda *args: subprocess.run([*ZATO, *args], capture_output=True, text=True, timeout=60)
    assert run("status", str(process_server_dir)).returncode == 3
    started = run("start", str(process_server_dir))
    assert started.returncode == 0, started.stdout + started.stderr
    assert "started" in started.stdout
    try:
        again = run("start", str(process_server_dir))
        assert again.returncode != 0 and "already running" in again.stderr
        status = run("status", str(process_server_dir))
        assert status.returncode == 0 and "answering" in status.stdout
        pid = int((process_server_dir / "pidfile").read_text())
        address = json.loads((process_server_dir / "work" / "server.json").read_text())["address"]
        with urllib.request.urlopen(f"{address}/demo/hello?name=cli") as reply:
            assert json.loads(reply.read()) == {"hello": "cli"}
    finally:
        stopped = run("stop", str(process_server_dir))
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert wait_until(lambda: not pid_alive(pid), 5)
    assert run("status", str(process_server_dir)).returncode == 3


def test_cli_start_reports_a_start_up_error(process_server_dir, monkeypatch):
    monkeypatch.delenv("ZATO_TEST_UNSET_PORT", raising=False)
    set_config_value(process_server_dir, "main", "port", "$ZATO_TEST_UNSET_PORT")
    result = subprocess.run([*ZATO, "start", str(process_server_dir)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "ZATO_TEST_UNSET_PORT is not set" in result.stderr and "[main] port" in result.stderr


def test_cli_on_a_directory_that_is_not_a_server(tmp_path):
    result = subprocess.run([*ZATO, "start", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "not a server directory" in result.stderr and "quickstart" in result.stderr


def test_quickstart_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "x").write_text("keep me")
    result = subprocess.run([*ZATO, "quickstart", "create", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "not empty" in result.stderr
    assert (tmp_path / "x").read_text() == "keep me"


def test_help_everywhere():
    for args in ([], ["quickstart", "create"], ["start"], ["stop"], ["status"], ["plugins", "list"],
                 ["set-admin-password"]):
        result = subprocess.run([*ZATO, *args, "--help"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "Usage:" in result.stdout, args


# ################################################################################################
# Several workers


@pytest.fixture
def two_workers(tmp_path):
    base = create_test_server_dir(tmp_path / "server", workers=2, main={"graceful_timeout": 3})
    (base / "pickup" / "slow.py").write_text(textwrap.dedent(SLOW_SERVICE))
    server = ServerProcess(base).start(timeout=60)
    yield server
    server.stop()


def worker_pids(address: str, want: int = 2, timeout: float = 10) -> set[int]:
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < want and time.monotonic() < deadline:
        seen.add(admin_post(address, "zato.server.get-info")["pid"])
    return seen


def test_two_workers_share_the_port_under_one_supervisor(two_workers):
    pids = worker_pids(two_workers.address)
    assert len(pids) == 2 and two_workers.process.pid not in pids
    info = json.loads((two_workers.base_dir / "work" / "server.json").read_text())
    assert info["pid"] == two_workers.process.pid and info["workers"] == 2


def test_a_change_through_one_worker_reaches_every_worker_within_a_second(two_workers):
    admin_post(two_workers.address, "zato.cache.builtin.create", {"name": "shared.cache"})
    started = time.monotonic()
    seen: dict[int, bool] = {}
    while len(seen) < 2 or not all(seen.values()):
        info = admin_post(two_workers.address, "zato.server.get-info")
        caches = admin_post(two_workers.address, "zato.cache.builtin.get-list")
        seen[info["pid"]] = any(c["name"] == "shared.cache" for c in caches)
        assert time.monotonic() - started < 5, seen
    # both workers had the cache within a second of the create (plus the time two HTTP calls per
    # poll take on this machine)
    assert time.monotonic() - started < 2.0, seen


def test_a_dead_worker_is_restarted(two_workers):
    pids = worker_pids(two_workers.address)
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: len(worker_pids(two_workers.address, timeout=2) - {victim}) == 2, 20)
    log = (two_workers.base_dir / "logs" / "server.log").read_text()
    assert f"(pid {victim}) exited with code -9; restarting it" in log


def test_no_worker_outlives_the_supervisor(two_workers):
    pids = worker_pids(two_workers.address)
    os.kill(two_workers.process.pid, signal.SIGKILL)
    two_workers.process.wait(10)
    assert wait_until(lambda: not any(_not_zombie(pid) for pid in pids), 10), pids


def test_sigterm_to_the_supervisor_stops_workers_gracefully(two_workers):
    pids = worker_pids(two_workers.address)
    result = {}
    caller = threading.Thread(target=lambda: result.setdefault("r", admin_post(two_workers.address, "test.slow",
                                                                               {"seconds": 1.0})))
    caller.start()
    time.sleep(0.3)
    two_workers.signal(signal.SIGTERM)
    caller.join(10)
    assert result["r"] == {"slept": 1.0}
    assert two_workers.wait(15) == 0
    assert wait_until(lambda: not any(_not_zombie(pid) for pid in pids), 5)


def test_a_worker_failing_at_start_up_stops_the_supervisor(tmp_path):
    base = create_test_server_dir(tmp_path / "server", workers=2)
    set_config_value(base, "misc", "startup_callable", "json.no_such_function")
    server = ServerProcess(base).start(wait=False)
    assert server.wait(60) == 1
    assert "no_such_function" in server.output()


def test_a_channel_created_through_one_worker_answers_on_every_worker(two_workers):
    request = urllib.request.Request(
        f"{two_workers.address}/zato/api/objects/channel_rest", method="POST",
        data=json.dumps({"name": "everywhere", "url_path": "/everywhere", "service": "zato.server.get-info"}).encode())
    request.add_header("Authorization", "Basic " + b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode())
    request.add_header("Content-Type", "application/json")
    request.add_header("Connection", "close")
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 201
    created = time.monotonic()
    answered_by: dict[int, float] = {}
    refused_by_a_worker = 0
    while len(answered_by) < 2 and time.monotonic() - created < 10:
        request = urllib.request.Request(f"{two_workers.address}/everywhere", headers={"Connection": "close"})
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                answered_by.setdefault(json.loads(reply.read())["pid"], time.monotonic() - created)
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
            refused_by_a_worker += 1
    assert len(answered_by) == 2, answered_by
    assert max(answered_by.values()) < 1.0 + 1.0  # within a second, plus the time polling takes here


def test_idle_workers_keep_running(two_workers):
    """ Regression: workers forked from one of trio's pool threads were stopped by
    PR_SET_PDEATHSIG when that thread exited after 10 idle seconds. """
    before = worker_pids(two_workers.address)
    time.sleep(12)
    assert worker_pids(two_workers.address) == before
    log = (two_workers.base_dir / "logs" / "server.log").read_text()
    assert "restarting it" not in log


def test_worker_log_lines_reach_the_log_file_once(two_workers):
    admin_post(two_workers.address, "zato.ping")
    log_file = two_workers.base_dir / "logs" / "server.log"

    def ping_lines() -> list[str]:  # the line is written just after the reply is sent
        return [line for line in log_file.read_text().splitlines() if "service=zato.ping status=200" in line]

    assert wait_until(lambda: ping_lines(), 5)
    time.sleep(0.5)
    assert len(ping_lines()) == 1, ping_lines()
