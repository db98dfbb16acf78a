""" REST benchmark: a JSON echo service (SimpleIO, HTTP Basic Auth) through the whole pipeline,
as a plain `def handle` (sync, run in a worker thread) and as an `async def handle`, against a
bare hypercorn-trio ASGI hello world (bench/rest/baseline_app.py) run in the same session with
the same load tool (wrk), the same connections and interleaved rounds:

    .venv/bin/python bench/rest/run.py [--quick] [--rounds N] [--duration S] [--profile] [--zato DIR]

For each number of workers (1 and 2) and each number of connections (1: latency; 50: load),
rounds go baseline, ceiling, sync, async, baseline, ... and the table gives the medians of
req/s, p50 and p99 over the rounds, the ratio of req/s to the baseline and to the ceiling (a
hand-written trio + h11 hello world, bench/rest/h11_ceiling.py), the server's CPU time per
request, and the RSS of each server's processes. Goal: the full pipeline at 0.7x or better of
the bare hello world with the same number of workers. `--profile` also records where a
one-worker server spends its time under 50 connections (py-spy), for the sync and the async
service.

`--zato DIR` (a Zato 3.2 built by ../shared/peers/zato/build.sh) also runs Zato 3.2 in the same
interleaved rounds, with the same service code on both servers (that folder's peer_services.py:
GET hello, POST JSON echo with HTTP Basic Auth), and prints ours/Zato beside ours/bare.

Results go to bench/results/rest.json (git-ignored). See bench/rest/README.md.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from zato.testing import ExternalProcess, ProcessExited, process_tree

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = REPO / "bench" / "results" / "rest.json"
BASELINE_APP = HERE / "baseline_app.py"
CEILING_APP = HERE / "h11_ceiling.py"
PEER_SCRIPTS = REPO.parent / "shared" / "peers" / "zato"  # build.sh, start.sh, stop.sh, peer_services.py
PYTHON = sys.executable
HYPERCORN = str(Path(PYTHON).with_name("hypercorn"))

GOAL_RATIO = 0.7
# issue 20: ours at 1.5x Zato 3.2's req/s per process (50 connections), at most 2/3 of its CPU per request
ZATO_GOAL_RATIO = 1.5
ZATO_GOAL_CPU = 2 / 3
# The order of the rounds within a setting. The first three are the targets of the earlier
# versions of this script: their rows come first in the JSON's "summary", in the same order.
TARGETS = ("baseline", "ceiling", "sync", "async", "hello", "zato.hello", "echo", "zato.echo")
FIRST_TARGETS = ("baseline", "sync", "async")
BARE_TARGETS = ("baseline", "ceiling")  # no pipeline: what HTTP alone costs
PROFILED = ("baseline", "sync", "async")
OURS_VS_ZATO = {"hello": "zato.hello", "echo": "zato.echo"}  # our target -> Zato's with the same service
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

AUTH_USER = "bench.user"
AUTH_PASSWORD = "bench-rest-password"
SECURITY_NAME = "bench.basic"
# What start.sh gives Zato's /peer/echo-auth; ours gets the same user and password.
PEER_USER = "peer.user"
PEER_PASSWORD = "peer-password"
PEER_SECURITY_NAME = "peer.basic"
HELLO = {"hello": "world"}

REQUEST = {"name": "Zato", "count": 3, "is_active": True}
REQUEST_BODY = json.dumps(REQUEST)

ECHO_SERVICES = '''
from zato.server.service import Int, Service


class EchoSync(Service):
    """ Echoes its SimpleIO input; a plain def: runs in a worker thread. """
    name = "bench.echo.sync"

    class SimpleIO:
        input_required = "name", Int("count")
        input_optional = "is_active"
        output_required = "name", Int("count")
        output_optional = "is_active"

    def handle(self):
        request = self.request.input
        self.response.payload = {"name": request.name, "count": request.count, "is_active": request.is_active}


class EchoAsync(Service):
    """ The same as an async def: runs on the trio loop. """
    name = "bench.echo.async"

    class SimpleIO:
        input_required = "name", Int("count")
        input_optional = "is_active"
        output_required = "name", Int("count")
        output_optional = "is_active"

    async def handle(self):
        request = self.request.input
        self.response.payload = {"name": request.name, "count": request.count, "is_active": request.is_active}
'''

# wrk runs this for every request it sends, and `done` prints one JSON line at the end.
WRK_SCRIPT = '''
wrk.method = {method}
{body}
{auth}
done = function(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {{"requests": %d, "duration_us": %d, "bytes": %d, "errors_connect": %d, "errors_read": %d, ' ..
    '"errors_write": %d, "errors_status": %d, "errors_timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"mean_us": %.1f, "max_us": %d}}\\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
'''


class BenchError(Exception):
    """ The benchmark cannot go on; the message says why and what to do. """


# ################################################################################################
# The load tool


def ensure_wrk(install: bool) -> str:
    """ The path of wrk, installed from Debian's packages if missing and allowed (idempotent). """
    found = shutil.which("wrk")
    if found:
        return found
    how = "apt-get update && apt-get install -y wrk"
    if not install:
        raise BenchError(f"wrk is not installed; install it with `{how}` (as root), or run without --no-install-wrk")
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise BenchError(f"wrk is not installed and this script cannot install it (needs root and apt-get); "
                         f"run `{'sudo ' if os.geteuid() else ''}{how}`")
    print(f"wrk is missing; running `{how}` ...", flush=True)
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        result = subprocess.run(command, capture_output=True, text=True, env={**os.environ,
                                                                             "DEBIAN_FRONTEND": "noninteractive"})
        if result.returncode != 0:
            raise BenchError(f"`{' '.join(command)}` failed ({result.returncode}):\n{result.stderr[-2000:]}")
    found = shutil.which("wrk")
    if not found:
        raise BenchError(f"apt-get installed wrk but it is not on PATH ({os.environ.get('PATH')})")
    return found


def lua_string(text: str) -> str:
    """ A Lua string literal (JSON's escapes are Lua's for printable ASCII). """
    if not text.isascii():
        raise ValueError("only ASCII text goes into the wrk script")
    return json.dumps(text)


def write_wrk_script(path: Path, auth_header: str | None, method: str = "POST") -> Path:
    """ A wrk script sending `method` with the benchmark's JSON body (POST) or no body (GET). """
    auth = f'wrk.headers["Authorization"] = {lua_string(auth_header)}' if auth_header else ""
    body = (f'wrk.body = {lua_string(REQUEST_BODY)}\nwrk.headers["Content-Type"] = "application/json"'
            if method == "POST" else "")
    path.write_text(textwrap.dedent(WRK_SCRIPT).format(method=lua_string(method), body=body, auth=auth), "utf-8")
    return path


def run_wrk(wrk: str, url: str, script: Path, *, connections: int, duration: float) -> dict[str, Any]:
    # One wrk thread: on 2 cores the load tool competes with the server for CPU; one thread can
    # send far more than these servers answer, and takes the least from them.
    command = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s", "--latency",
               "-s", str(script), url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise BenchError(f"`{' '.join(command)}` failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    data = json.loads(line[len("WRK_JSON "):])
    seconds = data["duration_us"] / 1e6
    errors = sum(data[k] for k in data if k.startswith("errors_"))
    return {"rps": data["requests"] / seconds, "p50_ms": data["p50_us"] / 1000, "p90_ms": data["p90_us"] / 1000,
            "p99_ms": data["p99_us"] / 1000, "mean_ms": data["mean_us"] / 1000, "max_ms": data["max_us"] / 1000,
            "requests": data["requests"], "seconds": seconds, "errors": errors,
            "errors_detail": {k[7:]: data[k] for k in data if k.startswith("errors_") and data[k]}}


# ################################################################################################
# Processes: the tree of a server, its RSS and CPU time


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_by_process(pids).values())


def cpu_by_process(pids: list[int]) -> dict[int, float]:
    """ The CPU time (user + system, seconds) each process of `pids` used so far (0 if gone). """
    found = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b") ", 1)[1].split()
            found[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
        except (OSError, IndexError):
            found[pid] = 0.0
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_post(url: str, headers: dict[str, str], timeout: float = 5.0) -> tuple[int, bytes]:
    return http_request(url, "POST", headers, timeout)


def http_request(url: str, method: str, headers: dict[str, str], timeout: float = 5.0) -> tuple[int, bytes]:
    """ The benchmark's request (POST: with its JSON body; GET: none): the status and body. """
    body = REQUEST_BODY.encode() if method == "POST" else None
    content_type = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={**content_type, "Connection": "close", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def start_process(process: ExternalProcess, answers: Any, what: str, see: Any) -> None:
    """ Starts `process` and waits until `answers()` is true; BenchError (saying where its log is)
    if it exits first or does not answer within START_TIMEOUT seconds (it is stopped then). """
    try:
        process.start().wait_until(answers, START_TIMEOUT, interval=0.05)
    except ProcessExited:
        raise BenchError(f"{what} exited with {process.returncode}; see {see}") from None
    except TimeoutError:
        raise BenchError(f"{what} did not answer within {START_TIMEOUT:.0f} s; see {see}") from None


# ################################################################################################
# The two servers


@dataclass
class Baseline:
    """ `hypercorn -k trio -w N baseline_app.py:app` on a free port. """
    workers: int
    log_dir: Path
    process: ExternalProcess | None = None
    url: str = ""
    name: ClassVar[str] = "hypercorn"

    def command(self, port: int) -> list[str]:
        return [HYPERCORN, "-k", "trio", "-w", str(self.workers), "--bind", f"127.0.0.1:{port}", f"{BASELINE_APP}:app"]

    def start(self) -> "Baseline":
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/"
        log = self.log_dir / f"{self.name}-w{self.workers}.log"
        self.process = ExternalProcess(self.command(port), name=self.name, output=log, cwd=HERE)
        start_process(self.process, self._answers, self.name, log)
        return self

    def _answers(self) -> bool:
        try:
            return http_post(self.url, {}, timeout=1)[0] == 200 and len(self.pids()) >= self.workers + 1
        except OSError:
            return False

    def pids(self) -> list[int]:
        return process_tree(self.process.pid) if self.process else []

    def stop(self) -> None:
        if self.process:
            self.process.stop(STOP_TIMEOUT)


@dataclass
class Ceiling(Baseline):
    """ The hand-written trio + h11 hello world (h11_ceiling.py), N workers sharing one socket. """
    name: ClassVar[str] = "h11-ceiling"

    def command(self, port: int) -> list[str]:
        return [PYTHON, str(CEILING_APP), "--bind", f"127.0.0.1:{port}", "--workers", str(self.workers)]


def peer_path(kind: str, auth: bool) -> str:
    """ The URL path of the peer services' channel `kind` (hello, echo), the same on both servers:
    start.sh makes /peer/echo-auth (Basic Auth) and /peer/echo (none) for peer.echo. """
    if kind == "hello":
        return "/peer/hello"
    return "/peer/echo-auth" if auth else "/peer/echo"


@dataclass
class ZatoServer:
    """ Our server with `workers = N`, the echo services and their REST channels, started as
    `zato start` starts it (`python -m zato.server.main DIR`: logging to logs/server.log only).
    With `peer_services` (the file deployed to Zato 3.2 too), also those services, unchanged,
    behind the channels start.sh gives them on Zato 3.2. """
    workers: int
    base_dir: Path
    auth: bool
    peer_services: Path | None = None
    process: ExternalProcess | None = None
    address: str = ""

    def create(self) -> "ZatoServer":
        from zato.odb import ODB, sqlite_url
        from zato.testing import create_test_server_dir

        create_test_server_dir(self.base_dir, workers=self.workers)
        (self.base_dir / "pickup" / "bench_echo.py").write_text(textwrap.dedent(ECHO_SERVICES).lstrip(), "utf-8")
        odb = ODB(sqlite_url(self.base_dir / "work" / "zato.db"))
        try:
            if self.auth:
                store_basic_auth(odb)
            for kind in ("sync", "async"):
                channel = {"url_path": f"/bench/echo/{kind}", "service": f"bench.echo.{kind}", "methods": ["POST"],
                           "data_format": "json"}
                if self.auth:
                    channel["security"] = SECURITY_NAME
                odb.put_object("channel_rest", f"bench.echo.{kind}", channel)
            if self.peer_services is not None:
                self._add_peer_services(odb)
        finally:
            odb.close()
        return self

    def start(self) -> "ZatoServer":
        (self.base_dir / "work" / "server.json").unlink(missing_ok=True)
        # as `zato start` runs it: its log in logs/server.log; only what it prints before logging
        # is set up goes to start-output.log
        self.process = ExternalProcess([PYTHON, "-m", "zato.server.main", str(self.base_dir)], name="the Zato server",
                                       output=self.base_dir / "logs" / "start-output.log", cwd=self.base_dir)
        start_process(self.process, self._answers, "the Zato server", self.base_dir / "logs")
        return self

    def _answers(self) -> bool:
        try:
            info = json.loads((self.base_dir / "work" / "server.json").read_text())
            if info["pid"] == self.process.pid and len(self.pids()) >= (self.workers + 1 if self.workers > 1 else 1):
                self.address = info["address"]
                with urllib.request.urlopen(f"{self.address}/zato/ping", timeout=1) as reply:
                    return reply.status == 200
        except (OSError, ValueError, KeyError):
            pass
        return False

    def _add_peer_services(self, odb: Any) -> None:
        """ peer_services.py in the pickup directory as it is, and channels shaped as Zato's: no
        method restriction (neither start.sh's channels have one), JSON, and for the echo with
        auth a basic_auth definition with start.sh's user and password. """
        from zato.builtin.security import store_definition

        (self.base_dir / "pickup" / "peer_services.py").write_bytes(self.peer_services.read_bytes())
        odb.put_object("channel_rest", "peer.hello", {"url_path": peer_path("hello", self.auth),
                                                      "service": "peer.hello", "data_format": "json"})
        echo = {"url_path": peer_path("echo", self.auth), "service": "peer.echo", "data_format": "json"}
        if self.auth:
            store_definition(odb, PEER_SECURITY_NAME, type="basic_auth", username=PEER_USER, password=PEER_PASSWORD)
            echo["security"] = PEER_SECURITY_NAME
        odb.put_object("channel_rest", "peer.echo", echo)

    def url(self, kind: str) -> str:
        if kind in OURS_VS_ZATO:
            return self.address + peer_path(kind, self.auth)
        return f"{self.address}/bench/echo/{kind}"

    def pids(self) -> list[int]:
        return process_tree(self.process.pid) if self.process else []

    def stop(self) -> None:
        if self.process:
            self.process.stop(STOP_TIMEOUT)


@dataclass
class ZatoPeer:
    """ Zato 3.2 as built by `scripts`/build.sh into `build`, started by `scripts`/start.sh (one
    server of a quickstart cluster on 127.0.0.1, `gunicorn_workers = N`, peer_services.py deployed
    and its channels made on first use) and stopped by `scripts`/stop.sh. """
    workers: int
    build: Path
    scripts: Path
    log_dir: Path
    auth: bool
    master: int = 0  # the gunicorn master; its workers are its children
    address: str = ""
    ready_s: float = 0.0  # from `zato start` to the first 200 on /zato/ping, as start.sh measured it
    all_workers_s: float = 0.0  # until every worker logged that it started
    attempted: bool = False

    @staticmethod
    def check(build: Path, scripts: Path) -> None:
        """ BenchError saying what to do unless `build` is a Zato build and `scripts` has its scripts. """
        missing = [name for name in ("build.sh", "start.sh", "stop.sh", "peer_services.py")
                   if not (scripts / name).is_file()]
        if missing:
            raise BenchError(f"--zato-scripts {scripts}: no {', '.join(missing)} there; pass the folder that holds "
                             f"Zato's build.sh, start.sh, stop.sh and peer_services.py (default {PEER_SCRIPTS})")
        if not (build / "zato-src" / "code" / "bin" / "zato").exists():
            raise BenchError(f"--zato {build}: no Zato build there (no zato-src/code/bin/zato); build one with "
                             f"`ZATO_MIRROR=<a git copy of zatosource/zato> {scripts / 'build.sh'} {build}`")

    def env(self) -> dict[str, str]:
        return {**os.environ, "ZATO_BUILD": str(self.build)}

    def server_dir(self) -> Path:
        return Path(os.environ.get("ZATO_ENV") or self.build / "env") / "server1"

    def start(self) -> "ZatoPeer":
        pidfile = self.server_dir() / "pidfile"
        try:
            running = int(pidfile.read_text().strip())
            os.kill(running, 0)
        except (OSError, ValueError):
            pass
        else:  # not ours to stop: someone else's run, or a run of this script that was killed
            raise BenchError(f"a Zato server already runs in {self.server_dir()} (pid {running}); stop it with "
                             f"`ZATO_BUILD={self.build} {self.scripts / 'stop.sh'}` and run again")
        port = free_port()
        log = self.log_dir / f"zato-3.2-start-w{self.workers}.log"
        self.attempted = True
        try:
            result = subprocess.run(["bash", str(self.scripts / "start.sh"), str(port), str(self.workers)],
                                    capture_output=True, text=True, env=self.env(), timeout=600)
        except subprocess.TimeoutExpired:
            raise BenchError(f"Zato 3.2's start.sh did not finish in 600 s; see {self.server_dir() / 'logs'}") from None
        log.write_text(result.stdout + result.stderr, "utf-8")
        ready = next((ln.split() for ln in result.stdout.splitlines() if ln.startswith("READY ")), None)
        if result.returncode != 0 or ready is None:
            raise BenchError(f"Zato 3.2 did not start: start.sh exited with {result.returncode}:\n"
                             f"{(result.stdout + result.stderr)[-2000:]}\n(see {self.server_dir() / 'logs'})")
        # READY <seconds to the first 200> <gunicorn master pid> all_workers_started=<seconds>
        self.ready_s, self.master = float(ready[1]), int(ready[2])
        self.all_workers_s = float(ready[3].partition("=")[2]) if len(ready) > 3 else 0.0
        self.address = f"http://127.0.0.1:{port}"
        return self

    def url(self, kind: str) -> str:
        return self.address + peer_path(kind.removeprefix("zato."), self.auth)

    def pids(self) -> list[int]:
        return process_tree(self.master) if self.master else []

    def stop(self) -> None:
        if not self.attempted:
            return
        self.attempted = False
        result = subprocess.run(["bash", str(self.scripts / "stop.sh")], capture_output=True, text=True,
                                env=self.env(), timeout=120)
        if result.returncode != 0:
            print(f"warning: Zato 3.2's stop.sh exited with {result.returncode}: {result.stdout}{result.stderr}",
                  file=sys.stderr)
        self.master = 0


def basic_auth_available() -> bool:
    try:
        from zato.builtin.security import store_definition  # noqa: F401
    except ImportError:
        return False
    return True


def store_basic_auth(odb: Any) -> None:
    """ A basic_auth definition stored as the security plugin stores them (password hashed). """
    from zato.builtin.security import store_definition
    store_definition(odb, SECURITY_NAME, type="basic_auth", username=AUTH_USER, password=AUTH_PASSWORD)


def auth_header() -> str:
    return "Basic " + base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()


def peer_auth_header() -> str:
    return "Basic " + base64.b64encode(f"{PEER_USER}:{PEER_PASSWORD}".encode()).decode()


@dataclass
class Target:
    """ One thing measured: a URL of a server, the request wrk sends there (its script), and
    what the answer must be. """
    name: str
    url: str
    server: Any  # Baseline, Ceiling, ZatoServer or ZatoPeer: whose processes are measured
    script: Path
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    expected: Any = None
    refuses_without_credentials: bool = False


def check_answers(targets: list[Target]) -> None:
    """ Every target answers the benchmark's request correctly before anything is measured
    (a benchmark of 401s or 500s would be worthless), and refuses a request without credentials. """
    for target in targets:
        status, body = http_request(target.url, target.method, target.headers)
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if status != 200 or answer != target.expected:
            raise BenchError(f"{target.name} at {target.method} {target.url} answered {status} {body[:300]!r}, "
                             f"expected 200 {target.expected}")
        if target.refuses_without_credentials:
            status, body = http_request(target.url, target.method, {})
            if status != 401:
                raise BenchError(f"{target.name} at {target.url} answered {status} without credentials, expected 401")


# ################################################################################################
# Measuring


@dataclass
class Sample:
    workers: int
    connections: int
    target: str
    round: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    requests: int
    errors: int
    cpu_us_per_request: float
    errors_detail: dict[str, int] = field(default_factory=dict)
    restarted: bool = False  # a process of the server changed during the round: the numbers are not valid
    cpu_s_by_process: list[float] = field(default_factory=list)  # each process's CPU seconds in the round
    lopsided: bool = False  # several workers, but one used most of the CPU (Zato's gevent workers do that)


LOPSIDED_SHARE = 0.8  # of the server's CPU time in a round, taken by one process of several workers (conns > 1)


def measure(wrk: str, script: Path, url: str, server: Any, *, workers: int, connections: int, target: str,
            round_no: int, duration: float) -> Sample:
    pids = server.pids()
    cpu_before = cpu_by_process(pids)
    result = run_wrk(wrk, url, script, connections=connections, duration=duration)
    cpu_after = cpu_by_process(pids)
    by_process = [round(cpu_after[pid] - cpu_before[pid], 3) for pid in pids]
    cpu_used = sum(by_process)
    restarted = set(server.pids()) != set(pids)
    # One connection goes to one worker: only under several can the others be idle by mistake.
    lopsided = workers > 1 and connections > 1 and cpu_used > 0 and max(by_process) > LOPSIDED_SHARE * cpu_used
    return Sample(workers, connections, target, round_no, result["rps"], result["p50_ms"], result["p90_ms"],
                  result["p99_ms"], result["mean_ms"], result["max_ms"], result["requests"], result["errors"],
                  cpu_used / max(result["requests"], 1) * 1e6, result["errors_detail"], restarted, by_process,
                  lopsided)


def summarize(samples: list[Sample]) -> dict[str, Any]:
    rows = {}
    for sample in samples:
        rows.setdefault((sample.workers, sample.connections, sample.target), []).append(sample)
    summary = {}
    for (workers, connections, target), group in sorted(rows.items(), key=lambda item: (
            item[0][0], item[0][1], TARGETS.index(item[0][2]))):
        median = lambda attr: statistics.median(getattr(s, attr) for s in group)  # noqa: E731
        summary[(workers, connections, target)] = {
            "workers": workers, "connections": connections, "target": target, "rounds": len(group),
            "rps": median("rps"), "rps_min": min(s.rps for s in group), "rps_max": max(s.rps for s in group),
            "p50_ms": median("p50_ms"), "p99_ms": median("p99_ms"), "max_ms": max(s.max_ms for s in group),
            "cpu_us_per_request": median("cpu_us_per_request"), "errors": sum(s.errors for s in group),
            "rounds_with_restarts": sum(s.restarted for s in group),
            "rounds_lopsided": sum(s.lopsided for s in group),
        }
    for (workers, connections, target), row in summary.items():
        base = summary.get((workers, connections, "baseline"))
        row["ratio"] = row["rps"] / base["rps"] if base and base["rps"] else None
        ceiling = summary.get((workers, connections, "ceiling"))
        row["vs_ceiling"] = row["rps"] / ceiling["rps"] if ceiling and ceiling["rps"] else None
        # Per-round ratios (rounds are interleaved: round N of both ran within seconds): their
        # spread says how much the machine moved under the medians.
        for key, other in (("ratio", "baseline"), ("vs_ceiling", "ceiling"), ("vs_zato", OURS_VS_ZATO.get(target))):
            per_round = round_ratios(rows[(workers, connections, target)], rows.get((workers, connections, other), []))
            if per_round and target != other:
                row[f"{key}_min"], row[f"{key}_max"] = min(per_round), max(per_round)
        zato = summary.get((workers, connections, OURS_VS_ZATO.get(target)))
        if zato:
            row["vs_zato"] = row["rps"] / zato["rps"] if zato["rps"] else None
            row["cpu_vs_zato"] = (row["cpu_us_per_request"] / zato["cpu_us_per_request"]
                                  if zato["cpu_us_per_request"] else None)
            row["p50_vs_zato"] = row["p50_ms"] / zato["p50_ms"] if zato["p50_ms"] else None
    return summary


def round_ratios(ours: list[Sample], theirs: list[Sample]) -> list[float]:
    """ req/s of each round of `ours` over that of the same round of `theirs`. """
    by_round = {s.round: s.rps for s in theirs}
    return [s.rps / by_round[s.round] for s in ours if by_round.get(s.round)]


def json_summary(summary: dict) -> list[dict[str, Any]]:
    """ The rows for the JSON file: those of the first targets (baseline, sync, async) first, in
    the order earlier versions wrote them, so `summary[N]` (bench/compare.py's paths) still names
    the same row; the rows of the targets added since (ceiling, Zato 3.2...) after them. """
    first = [row for key, row in summary.items() if key[2] in FIRST_TARGETS]
    return first + [row for key, row in summary.items() if key[2] not in FIRST_TARGETS]


# ################################################################################################
# Profiling with py-spy


def find_py_spy(explicit: str | None) -> str | None:
    for candidate in (explicit, shutil.which("py-spy"), str(Path(PYTHON).with_name("py-spy"))):
        if candidate and Path(candidate).exists():
            return candidate
    return None


# py-spy names files relative to the sys.path entry they were found in ("trio/_run.py",
# "contextlib.py"); user services keep their absolute path.
LEAF_GROUPS = (
    ("user service", re.compile(r"/pickup/")),
    ("zato", re.compile(r"^zato/")),
    ("zato plugins", re.compile(r"^zato_plugin_")),
    ("hypercorn", re.compile(r"^hypercorn/")),
    ("h11", re.compile(r"^h11/")),
    ("trio", re.compile(r"^(trio|outcome|sniffio)/|trio\.")),
    ("logging", re.compile(r"^logging/")),
    ("json", re.compile(r"^json/")),
    ("threading", re.compile(r"^(threading|queue)\.py")),
    ("sqlalchemy", re.compile(r"^sqlalchemy/")),
)

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def frame_parts(frame: str) -> tuple[str, str]:
    match = FRAME.match(frame)
    if not match:
        return frame, ""
    return match["func"], match["file"]


def leaf_group(frame: str) -> str:
    func, path = frame_parts(frame)
    for name, pattern in LEAF_GROUPS:
        if pattern.search(path) or (name == "trio" and pattern.search(func)):
            return name
    if path.startswith("<frozen") or ("/" not in path and path.endswith(".py")) or \
            re.match(r"^(asyncio|collections|concurrent|email|http|importlib|urllib)/", path):
        return "stdlib (other)"
    return "other"


def is_python_frame(frame: str) -> bool:
    """ False for the C frames `--native` adds (their "file" is a shared object). """
    path = frame_parts(frame)[1]
    return not (".so" in path or path.endswith(")") or path == "")


def analyse_profile(raw_file: Path, top: int = 15) -> dict[str, Any]:
    """ From py-spy's collapsed stacks (`--format raw --threads --native`): samples per thread
    kind, the share spent in the cyclic garbage collector, samples per package of the innermost
    Python frame (self time), and the top Python functions by self and total time. """
    threads: collections.Counter[str] = collections.Counter()
    groups: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    total_time: collections.Counter[str] = collections.Counter()
    gc_triggers: collections.Counter[str] = collections.Counter()
    samples = gc_samples = 0
    for line in raw_file.read_text("utf-8", "replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        # --subprocesses and --threads put "process PID:"COMMAND"" (whose command may hold ';')
        # and "thread (TID): NAME" before the Python frames.
        marker = next((i for i, f in enumerate(frames) if f.startswith("thread (")), None)
        thread = ""
        if marker is not None:
            thread, frames = frames[marker].partition(": ")[2], frames[marker + 1:]
        in_gc = any(frame_parts(f)[0].startswith("gc_collect") for f in frames)
        frames = [f for f in frames if is_python_frame(f)]
        if not frames:
            continue
        samples += count
        threads["trio loop (MainThread)" if thread == "MainThread" else "worker threads (to_thread)"] += count
        func, path = frame_parts(frames[-1])
        if in_gc:
            gc_samples += count
            gc_triggers[f"{func} ({path})"] += count
            groups["garbage collector"] += count
        else:
            groups[leaf_group(frames[-1])] += count
            self_time[f"{func} ({path})"] += count
        for name in {"{} ({})".format(*frame_parts(f)) for f in frames}:
            total_time[name] += count
    share = lambda n: round(100.0 * n / samples, 1) if samples else 0.0  # noqa: E731
    # Frames on (nearly) every stack (the thread's entry point, trio.run...) say nothing.
    informative = [(name, n) for name, n in total_time.most_common() if n < 0.9 * samples]
    return {
        "samples": samples,
        "threads_pct": {k: share(v) for k, v in threads.most_common()},
        "gc_pct": share(gc_samples),
        "self_by_package_pct": {k: share(v) for k, v in groups.most_common()},
        "top_self_pct": [(name, share(n)) for name, n in self_time.most_common(top)],
        "top_total_pct": [(name, share(n)) for name, n in informative[:top]],
        "gc_triggered_in_pct": [(name, share(n)) for name, n in gc_triggers.most_common(5)],
    }


def profile_target(py_spy: str, wrk: str, script: Path, url: str, pid: int, name: str, duration: float,
                   out_dir: Path, *, subprocesses: bool = False) -> dict[str, Any]:
    """ py-spy samples (only threads holding the GIL: where the CPU goes) of process `pid` while
    wrk keeps 50 connections busy on `url`. Writes collapsed stacks (py-spy's raw format, which
    speedscope and inferno read) to `out_dir`. """
    raw = out_dir / f"profile-{name}.txt"
    load = subprocess.Popen([wrk, "-t1", "-c50", f"-d{int(duration + 4)}s", "--timeout", "10s", "-s", str(script),
                             url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)  # let the load settle
        command = [py_spy, "record", "--pid", str(pid), "--duration", str(int(duration)), "--rate", "200", "--gil",
                   "--threads", "--native", "--format", "raw", "--output", str(raw)] + ["--subprocesses"] * subprocesses
        result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
        if result.returncode != 0 and "--native" in result.stderr:  # a py-spy built without unwinding
            command.remove("--native")
            result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
        if result.returncode != 0:
            raise BenchError(f"py-spy failed ({result.returncode}): {result.stderr[-2000:]}\n"
                             "(py-spy needs ptrace: run as root, or with CAP_SYS_PTRACE)")
    finally:
        load.wait()
    report = analyse_profile(raw)
    report["raw_file"] = str(raw)
    return report


# ################################################################################################
# Output


def times(value: float | None, low: float | None = None, high: float | None = None) -> str:
    """ A ratio as `0.52x`, with its spread over the rounds as `0.52x (0.49-0.55)` when given. """
    if value is None:
        return "-"
    return f"{value:.2f}x" + (f" ({low:.2f}-{high:.2f})" if low is not None and high is not None else "")


def row_notes(row: dict) -> str:
    notes = []
    if row["rounds_with_restarts"]:
        notes.append(f"{row['rounds_with_restarts']} round(s) with restarted processes: not valid")
    if row.get("rounds_lopsided"):
        notes.append(f"{row['rounds_lopsided']} round(s) with one worker taking >{LOPSIDED_SHARE:.0%} of the CPU")
    return f"  ({'; '.join(notes)})" if notes else ""


def print_table(summary: dict, rss: dict[str, Any]) -> None:
    print(f"\n{'workers':>7} {'conns':>5}  {'target':<10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'vs base (spread)':>18} {'vs ceiling':>10} {'CPU us/req':>10} {'errors':>6}")
    last = None
    for key, row in summary.items():
        if last is not None and key[:2] != last:
            print()
        last = key[:2]
        ratio = times(row["ratio"], row.get("ratio_min"), row.get("ratio_max"))
        print(f"{row['workers']:>7} {row['connections']:>5}  {row['target']:<10} {row['rps']:>8.0f} "
              f"{row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {ratio:>18} {times(row['vs_ceiling']):>10} "
              f"{row['cpu_us_per_request']:>10.0f} {row['errors']:>6}" + row_notes(row))
    print("\nRSS after the load (MB; each process, then the sum):")
    for name, info in rss.items():
        print(f"  {name:<18} {' + '.join(f'{mb:.0f}' for mb in info['per_process'])} = {info['total']:.0f}")


def print_zato_table(summary: dict, rss: dict[str, Any], auth: bool) -> None:
    """ Ours against Zato 3.2, the same service (peer_services.py) behind the same channel. """
    print(f"\nSide by side with Zato 3.2: the same services (peer_services.py) on both; GET /peer/hello, POST "
          f"{peer_path('echo', auth)} ({'HTTP Basic Auth' if auth else 'no authentication'}); medians, "
          f"(min-max) of the per-round ratios")
    print(f"{'workers':>7} {'conns':>5}  {'endpoint':<6} {'ours req/s':>10} {'Zato req/s':>10} {'ours/Zato':>18} "
          f"{'ours/bare':>18} {'p50 ms ours/Zato':>17} {'p99 ms ours/Zato':>17} {'CPU us/req ours/Zato':>21}")
    for (workers, connections, target), row in summary.items():
        zato = summary.get((workers, connections, OURS_VS_ZATO.get(target)))
        if zato is None:
            continue
        print(f"{workers:>7} {connections:>5}  {target:<6} {row['rps']:>10.0f} {zato['rps']:>10.0f} "
              f"{times(row.get('vs_zato'), row.get('vs_zato_min'), row.get('vs_zato_max')):>18} "
              f"{times(row['ratio'], row.get('ratio_min'), row.get('ratio_max')):>18} "
              f"{row['p50_ms']:>7.2f} / {zato['p50_ms']:<7.2f} {row['p99_ms']:>7.1f} / {zato['p99_ms']:<7.1f} "
              f"{row['cpu_us_per_request']:>9.0f} / {zato['cpu_us_per_request']:<9.0f}"
              + row_notes(row) + row_notes(zato).replace("  (", "  (Zato: ", 1))
    for workers in sorted({key[0] for key in summary}):
        ours, theirs = rss.get(f"zato w{workers}"), rss.get(f"zato-3.2 w{workers}")
        if ours and theirs:
            print(f"  RSS with {workers} worker(s), all processes: ours {ours['total']:.0f} MB, Zato 3.2 "
                  f"{theirs['total']:.0f} MB")


def print_zato_goals(summary: dict) -> None:
    print(f"\nGoal (issue 20): {ZATO_GOAL_RATIO}x Zato 3.2's req/s or better at 50 connections, CPU per request at "
          f"most {ZATO_GOAL_CPU:.2f} of Zato's, single-connection p50 at or below Zato's.")
    for (workers, connections, target), row in summary.items():
        if row.get("vs_zato") is None:
            continue
        checks = []
        if connections == 1 and row.get("p50_vs_zato") is not None:
            checks.append(f"p50 {row['p50_vs_zato']:.2f} of Zato's: {'met' if row['p50_vs_zato'] <= 1 else 'NOT met'}")
        elif connections > 1:
            checks.append(f"{row['vs_zato']:.2f}x: {'met' if row['vs_zato'] >= ZATO_GOAL_RATIO else 'NOT met'}")
        if row.get("cpu_vs_zato") is not None:
            checks.append(f"CPU {row['cpu_vs_zato']:.2f} of Zato's: "
                          f"{'met' if row['cpu_vs_zato'] <= ZATO_GOAL_CPU else 'NOT met'}")
        print(f"  workers {workers}, {connections:>2} connection(s), {target:<5}: " + "; ".join(checks))


def print_goals(summary: dict) -> None:
    print(f"\nGoal: the full pipeline at {GOAL_RATIO}x or better of the bare hello world with the same workers.")
    for (workers, connections, target), row in summary.items():
        if target in BARE_TARGETS or target.startswith("zato.") or row["ratio"] is None:
            continue
        verdict = "met" if row["ratio"] >= GOAL_RATIO else "NOT met"
        if row["rounds_with_restarts"] or summary[(workers, connections, "baseline")]["rounds_with_restarts"]:
            verdict = "not valid: processes restarted during the rounds"
        print(f"  workers {workers}, {connections:>2} connection(s), {target:<5}: {row['ratio']:.2f}x  {verdict}")


def print_profile(kind: str, report: dict[str, Any]) -> None:
    print(f"\n== where a 1-worker server spends its time: {kind}, 50 connections "
          f"({report['samples']} samples holding the GIL) ==")
    print("  threads:  " + ", ".join(f"{k} {v}%" for k, v in report["threads_pct"].items()))
    print(f"  cyclic garbage collector: {report['gc_pct']}% (triggered in: "
          + ", ".join(f"{name} {pct}%" for name, pct in report["gc_triggered_in_pct"][:3]) + ")")
    print("  innermost Python frame by package:  " + ", ".join(f"{k} {v}%" for k, v in report["self_by_package_pct"].items()))
    print("  top functions by self time:")
    for name, pct in report["top_self_pct"]:
        print(f"    {pct:5.1f}%  {name}")
    print("  top functions by total time (below the entry points):")
    for name, pct in report["top_total_pct"]:
        print(f"    {pct:5.1f}%  {name}")
    print(f"  collapsed stacks: {report['raw_file']}")


def write_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    os.replace(temp, path)


# ################################################################################################


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 round of 4 s, no warm-up: a smoke run (~1 min)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per target (default 3)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measured round (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load per target and "
                                                                   "setting before its rounds (default 2)")
    parser.add_argument("--workers", default="1,2", help="numbers of workers, comma-separated (default 1,2)")
    parser.add_argument("--connections", default="1,50", help="numbers of connections (default 1,50)")
    parser.add_argument("--auth", choices=("on", "off"), default="on",
                        help="HTTP Basic Auth on the Zato channels (default on; needs the security plugin)")
    parser.add_argument("--profile", action="store_true", help="also profile the sync and async services with "
                                                                "py-spy (1 worker, 50 connections)")
    parser.add_argument("--profile-duration", type=float, default=12.0, help="seconds of load per profile")
    parser.add_argument("--py-spy", help="path of py-spy (default: on PATH or next to this Python)")
    parser.add_argument("--no-install-wrk", action="store_true", help="do not apt-get install wrk if missing")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON results (default {DEFAULT_OUTPUT})")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (server dirs, logs)")
    parser.add_argument("--zato", type=Path, metavar="DIR",
                        help="a Zato 3.2 build (../shared/peers/zato/build.sh DIR): also run it, side by side")
    parser.add_argument("--zato-scripts", type=Path, default=PEER_SCRIPTS, metavar="DIR",
                        help=f"where Zato's start.sh, stop.sh and peer_services.py are (default {PEER_SCRIPTS})")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 4.0, 0.0
        args.profile_duration = min(args.profile_duration, 6.0)
    if args.zato is not None:
        args.zato, args.zato_scripts = args.zato.resolve(), args.zato_scripts.resolve()
    args.workers = [int(n) for n in args.workers.split(",")]
    args.connections = [int(n) for n in args.connections.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the servers (Zato too)
    work_dir = Path(tempfile.mkdtemp(prefix="zato-bench-rest-"))
    servers: list[Any] = []
    try:
        wrk = ensure_wrk(not args.no_install_wrk)
        auth = args.auth == "on"
        if auth and not basic_auth_available():
            raise BenchError("--auth on needs zato.builtin.security.store_definition (the security plugin), which "
                             "is not installed here; run with --auth off to measure without authentication")
        py_spy = find_py_spy(args.py_spy) if args.profile else None
        if args.profile and py_spy is None:
            raise BenchError("--profile needs py-spy: `uv pip install --python .venv/bin/python py-spy` (or pip "
                             "install py-spy in any environment and pass --py-spy PATH); it is not a project "
                             "dependency")
        if args.zato:
            ZatoPeer.check(args.zato, args.zato_scripts)
        headers = {"Authorization": auth_header()} if auth else {}
        script = write_wrk_script(work_dir / "post.lua", headers.get("Authorization"))
        peer_headers = {"Authorization": peer_auth_header()} if auth else {}
        hello_script = write_wrk_script(work_dir / "hello.lua", None, method="GET")
        echo_script = write_wrk_script(work_dir / "peer-echo.lua", peer_headers.get("Authorization"))
        names = [t for t in TARGETS if args.zato or (t not in OURS_VS_ZATO and not t.startswith("zato."))]
        estimate = len(args.workers) * len(args.connections) * len(names) * (args.rounds * args.duration +
                                                                             args.warmup)
        print(f"REST benchmark: wrk {args.rounds} round(s) x {args.duration:.0f} s per target, workers "
              f"{args.workers}, connections {args.connections}, Basic Auth {'on' if auth else 'off'}; "
              f"about {estimate / 60:.1f} min of load{' + profiles' if args.profile else ''}")
        print(f"request: POST {REQUEST_BODY}  (baseline and ceiling answer {{\"hello\": \"world\"}})")
        if args.zato:
            print(f"with Zato 3.2 from {args.zato}: GET {peer_path('hello', auth)} and POST {peer_path('echo', auth)} "
                  f"on both servers ({args.zato_scripts / 'peer_services.py'})")
        print(f"targets, in this order in every round: {', '.join(names)}", flush=True)

        samples: list[Sample] = []
        rss: dict[str, Any] = {}
        profiles: dict[str, Any] = {}
        zato_starts: dict[str, Any] = {}
        for workers in args.workers:
            baseline = Baseline(workers, work_dir).start()
            servers.append(baseline)
            ceiling = Ceiling(workers, work_dir).start()
            servers.append(ceiling)
            zato = ZatoServer(workers, work_dir / f"zato-w{workers}", auth,
                              args.zato_scripts / "peer_services.py" if args.zato else None).create().start()
            servers.append(zato)
            by_name = {
                "baseline": Target("baseline", baseline.url, baseline, script, headers=headers, expected=HELLO),
                "ceiling": Target("ceiling", ceiling.url, ceiling, script, headers=headers, expected=HELLO),
                "sync": Target("sync", zato.url("sync"), zato, script, headers=headers, expected=REQUEST,
                               refuses_without_credentials=auth),
                "async": Target("async", zato.url("async"), zato, script, headers=headers, expected=REQUEST,
                                refuses_without_credentials=auth),
            }
            peer = None
            if args.zato:
                print(f"\nstarting Zato 3.2 with {workers} worker(s) ...", flush=True)
                peer = ZatoPeer(workers, args.zato, args.zato_scripts, work_dir, auth)
                servers.append(peer)
                peer.start()
                zato_starts[f"w{workers}"] = {"first_200_s": peer.ready_s, "all_workers_started_s": peer.all_workers_s}
                print(f"Zato 3.2 answered /zato/ping {peer.ready_s:.1f} s after `zato start`, all its workers had "
                      f"started after {peer.all_workers_s:.1f} s", flush=True)
                for kind, server in (("hello", zato), ("zato.hello", peer), ("echo", zato), ("zato.echo", peer)):
                    is_hello = kind.endswith("hello")
                    by_name[kind] = Target(kind, server.url(kind), server, hello_script if is_hello else echo_script,
                                           method="GET" if is_hello else "POST",
                                           headers={} if is_hello else peer_headers,
                                           expected=HELLO if is_hello else REQUEST,
                                           refuses_without_credentials=auth and not is_hello)
            targets = [by_name[name] for name in names]  # interleaved: baseline, ceiling, sync, ..., baseline, ...
            check_answers(targets)
            for connections in args.connections:
                print(f"\nworkers {workers}, {connections} connection(s):", flush=True)
                if args.warmup:
                    for target in targets:
                        run_wrk(wrk, target.url, target.script, connections=connections, duration=args.warmup)
                for round_no in range(1, args.rounds + 1):
                    line = []
                    for target in targets:
                        sample = measure(wrk, target.script, target.url, target.server, workers=workers,
                                         connections=connections, target=target.name, round_no=round_no,
                                         duration=args.duration)
                        samples.append(sample)
                        line.append(f"{target.name} {sample.rps:.0f} req/s p99 {sample.p99_ms:.1f} ms"
                                    + (f" ({sample.errors} errors: {sample.errors_detail})" if sample.errors else "")
                                    + (" (PROCESSES RESTARTED: not valid)" if sample.restarted else "")
                                    + (" (one worker took the load)" if sample.lopsided else ""))
                    print(f"  round {round_no}: " + " | ".join(line), flush=True)
            measured = [(f"baseline w{workers}", baseline), (f"ceiling w{workers}", ceiling),
                        (f"zato w{workers}", zato)] + ([(f"zato-3.2 w{workers}", peer)] if peer else [])
            for name, server in measured:
                per_process = [rss_mb(pid) for pid in server.pids()]
                rss[name] = {"per_process": per_process, "total": sum(per_process)}
            if args.profile and workers == 1:
                for name in PROFILED:
                    print(f"\nprofiling {name} under 50 connections ...", flush=True)
                    owner = baseline if name == "baseline" else zato
                    profiles[name] = profile_target(py_spy, wrk, script, by_name[name].url, owner.process.pid, name,
                                                    args.profile_duration, work_dir,
                                                    subprocesses=name == "baseline")  # hypercorn's worker is a child
            for server in (peer, zato, ceiling, baseline):
                if server is not None:
                    server.stop()

        summary = summarize(samples)
        print("\n" + "=" * 100)
        print(f"Results: medians over {args.rounds} round(s) of {args.duration:.0f} s; 'vs base' is req/s over the "
              f"bare hypercorn-trio hello world with the same workers and connections (with the min-max of the "
              f"per-round ratios), 'vs ceiling' over the trio + h11 hello world (h11_ceiling.py); CPU us/req is "
              f"the server's CPU time (all its processes) per request.")
        print_table(summary, rss)
        print_goals(summary)
        if args.zato:
            print_zato_table(summary, rss, auth)
            print_zato_goals(summary)
        for kind, report in profiles.items():
            print_profile(kind, report)
        write_results(args.output, {
            "benchmark": "rest", "when": datetime.now(timezone.utc).isoformat(), "machine": {
                "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                "load_average": os.getloadavg()},
            "settings": {"rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
                         "workers": args.workers, "connections": args.connections, "auth": auth,
                         "request": REQUEST, "wrk": "wrk -t1 -cN --latency, POST with a Lua script",
                         "targets": names, "zato": str(args.zato) if args.zato else None,
                         "peer_paths": {kind: peer_path(kind, auth) for kind in OURS_VS_ZATO} if args.zato else None},
            "summary": json_summary(summary), "rss_mb": rss, "profiles": profiles,
            "zato_3_2_start": zato_starts,
            "samples": [vars(s) for s in samples],
        })
        print(f"\nwritten to {args.output}")
        if args.keep or args.profile:
            print(f"kept {work_dir}" + (" (the profiles, as collapsed stacks, are there)" if args.profile else ""))
        return 0
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        for server in reversed(servers):
            server.stop()
        if not (args.keep or args.profile):
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
