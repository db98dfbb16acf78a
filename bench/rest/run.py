""" REST benchmark: a JSON echo service (SimpleIO, HTTP Basic Auth) through the whole pipeline,
as a plain `def handle` (sync, run in a worker thread) and as an `async def handle`, against a
bare hypercorn-trio ASGI hello world (bench/rest/baseline_app.py) run in the same session with
the same load tool (wrk), the same connections and interleaved rounds:

    .venv/bin/python bench/rest/run.py [--quick] [--rounds N] [--duration S] [--profile]

For each number of workers (1 and 2) and each number of connections (1: latency; 50: load),
rounds go baseline, sync, async, baseline, ... and the table gives the medians of req/s, p50
and p99 over the rounds, the ratio of req/s to the baseline, the server's CPU time per request,
and the RSS of each server's processes. Goal: the full pipeline at 0.7x or better of the bare
hello world with the same number of workers. `--profile` also records where a one-worker server
spends its time under 50 connections (py-spy), for the sync and the async service.

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
from typing import Any

from zato.testing import ExternalProcess, ProcessExited, process_tree

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = REPO / "bench" / "results" / "rest.json"
BASELINE_APP = HERE / "baseline_app.py"
PYTHON = sys.executable
HYPERCORN = str(Path(PYTHON).with_name("hypercorn"))

GOAL_RATIO = 0.7
TARGETS = ("baseline", "sync", "async")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

AUTH_USER = "bench.user"
AUTH_PASSWORD = "bench-rest-password"
SECURITY_NAME = "bench.basic"

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
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
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


def write_wrk_script(path: Path, auth_header: str | None) -> Path:
    auth = f'wrk.headers["Authorization"] = {lua_string(auth_header)}' if auth_header else ""
    path.write_text(textwrap.dedent(WRK_SCRIPT).format(body=lua_string(REQUEST_BODY), auth=auth), "utf-8")
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
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b") ", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError):
            pass
    return total / CLOCK_TICKS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_post(url: str, headers: dict[str, str], timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=REQUEST_BODY.encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Connection": "close", **headers})
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

    def start(self) -> "Baseline":
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/"
        log = self.log_dir / f"hypercorn-w{self.workers}.log"
        self.process = ExternalProcess(
            [HYPERCORN, "-k", "trio", "-w", str(self.workers), "--bind", f"127.0.0.1:{port}", f"{BASELINE_APP}:app"],
            name="hypercorn", output=log, cwd=HERE)
        start_process(self.process, self._answers, "hypercorn", log)
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
class ZatoServer:
    """ Our server with `workers = N`, the echo services and their REST channels, started as
    `zato start` starts it (`python -m zato.server.main DIR`: logging to logs/server.log only). """
    workers: int
    base_dir: Path
    auth: bool
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

    def url(self, kind: str) -> str:
        return f"{self.address}/bench/echo/{kind}"

    def pids(self) -> list[int]:
        return process_tree(self.process.pid) if self.process else []

    def stop(self) -> None:
        if self.process:
            self.process.stop(STOP_TIMEOUT)


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


def check_answers(targets: dict[str, str], headers: dict[str, str], auth: bool) -> None:
    """ Every target answers the benchmark's request correctly before anything is measured
    (a benchmark of 401s or 500s would be worthless), and refuses a request without credentials. """
    for name, url in targets.items():
        status, body = http_post(url, headers)
        expected = {"hello": "world"} if name == "baseline" else REQUEST
        if status != 200 or json.loads(body) != expected:
            raise BenchError(f"{name} at {url} answered {status} {body[:300]!r}, expected 200 {expected}")
        if auth and name != "baseline":
            status, body = http_post(url, {})
            if status != 401:
                raise BenchError(f"{name} at {url} answered {status} without credentials, expected 401")


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


def measure(wrk: str, script: Path, url: str, server: Any, *, workers: int, connections: int, target: str,
            round_no: int, duration: float) -> Sample:
    pids = server.pids()
    cpu_before = cpu_seconds(pids)
    result = run_wrk(wrk, url, script, connections=connections, duration=duration)
    cpu_used = cpu_seconds(pids) - cpu_before
    restarted = set(server.pids()) != set(pids)
    return Sample(workers, connections, target, round_no, result["rps"], result["p50_ms"], result["p90_ms"],
                  result["p99_ms"], result["mean_ms"], result["max_ms"], result["requests"], result["errors"],
                  cpu_used / max(result["requests"], 1) * 1e6, result["errors_detail"], restarted)


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
        }
    for (workers, connections, target), row in summary.items():
        base = summary.get((workers, connections, "baseline"))
        row["ratio"] = row["rps"] / base["rps"] if base and base["rps"] else None
    return summary


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


def print_table(summary: dict, rss: dict[str, Any]) -> None:
    print(f"\n{'workers':>7} {'conns':>5}  {'target':<9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'vs base':>8} {'CPU us/req':>10} {'errors':>6}")
    last = None
    for key, row in summary.items():
        if last is not None and key[:2] != last:
            print()
        last = key[:2]
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-"
        print(f"{row['workers']:>7} {row['connections']:>5}  {row['target']:<9} {row['rps']:>8.0f} "
              f"{row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {ratio:>8} {row['cpu_us_per_request']:>10.0f} "
              f"{row['errors']:>6}" + (f"  ({row['rounds_with_restarts']} round(s) with restarted processes: "
                                       f"not valid)" if row["rounds_with_restarts"] else ""))
    print("\nRSS after the load (MB; each process, then the sum):")
    for name, info in rss.items():
        print(f"  {name:<18} {' + '.join(f'{mb:.0f}' for mb in info['per_process'])} = {info['total']:.0f}")


def print_goals(summary: dict) -> None:
    print(f"\nGoal: the full pipeline at {GOAL_RATIO}x or better of the bare hello world with the same workers.")
    for (workers, connections, target), row in summary.items():
        if target == "baseline" or row["ratio"] is None:
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
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 4.0, 0.0
        args.profile_duration = min(args.profile_duration, 6.0)
    args.workers = [int(n) for n in args.workers.split(",")]
    args.connections = [int(n) for n in args.connections.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
        headers = {"Authorization": auth_header()} if auth else {}
        script = write_wrk_script(work_dir / "post.lua", headers.get("Authorization"))
        estimate = len(args.workers) * len(args.connections) * len(TARGETS) * (args.rounds * args.duration +
                                                                               args.warmup)
        print(f"REST benchmark: wrk {args.rounds} round(s) x {args.duration:.0f} s per target, workers "
              f"{args.workers}, connections {args.connections}, Basic Auth {'on' if auth else 'off'}; "
              f"about {estimate / 60:.1f} min of load{' + profiles' if args.profile else ''}")
        print(f"request: POST {REQUEST_BODY}  (baseline answers {{\"hello\": \"world\"}})", flush=True)

        samples: list[Sample] = []
        rss: dict[str, Any] = {}
        profiles: dict[str, Any] = {}
        for workers in args.workers:
            baseline = Baseline(workers, work_dir).start()
            servers.append(baseline)
            zato = ZatoServer(workers, work_dir / f"zato-w{workers}", auth).create().start()
            servers.append(zato)
            targets = {"baseline": baseline.url, "sync": zato.url("sync"), "async": zato.url("async")}
            owners = {"baseline": baseline, "sync": zato, "async": zato}
            check_answers(targets, headers, auth)
            for connections in args.connections:
                print(f"\nworkers {workers}, {connections} connection(s):", flush=True)
                if args.warmup:
                    for target, url in targets.items():
                        run_wrk(wrk, url, script, connections=connections, duration=args.warmup)
                for round_no in range(1, args.rounds + 1):
                    line = []
                    for target, url in targets.items():  # interleaved: baseline, sync, async, baseline, ...
                        sample = measure(wrk, script, url, owners[target], workers=workers, connections=connections,
                                         target=target, round_no=round_no, duration=args.duration)
                        samples.append(sample)
                        line.append(f"{target} {sample.rps:7.0f} req/s p99 {sample.p99_ms:6.1f} ms"
                                    + (f" ({sample.errors} errors: {sample.errors_detail})" if sample.errors else "")
                                    + (" (PROCESSES RESTARTED: not valid)" if sample.restarted else ""))
                    print(f"  round {round_no}: " + " | ".join(line), flush=True)
            for name, server in ((f"baseline w{workers}", baseline), (f"zato w{workers}", zato)):
                per_process = [rss_mb(pid) for pid in server.pids()]
                rss[name] = {"per_process": per_process, "total": sum(per_process)}
            if args.profile and workers == 1:
                for name in TARGETS:
                    print(f"\nprofiling {name} under 50 connections ...", flush=True)
                    owner = baseline if name == "baseline" else zato
                    profiles[name] = profile_target(py_spy, wrk, script, targets[name], owner.process.pid, name,
                                                    args.profile_duration, work_dir,
                                                    subprocesses=name == "baseline")  # hypercorn's worker is a child
            baseline.stop()
            zato.stop()

        summary = summarize(samples)
        print("\n" + "=" * 100)
        print(f"Results: medians over {args.rounds} round(s) of {args.duration:.0f} s; 'vs base' is req/s over the "
              f"bare hypercorn-trio hello world with the same workers and connections; CPU us/req is the server's "
              f"CPU time (all its processes) per request.")
        print_table(summary, rss)
        print_goals(summary)
        for kind, report in profiles.items():
            print_profile(kind, report)
        write_results(args.output, {
            "benchmark": "rest", "when": datetime.now(timezone.utc).isoformat(), "machine": {
                "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                "load_average": os.getloadavg()},
            "settings": {"rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
                         "workers": args.workers, "connections": args.connections, "auth": auth,
                         "request": REQUEST, "wrk": "wrk -t1 -cN --latency, POST with a Lua script"},
            "summary": list(summary.values()), "rss_mb": rss, "profiles": profiles,
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
