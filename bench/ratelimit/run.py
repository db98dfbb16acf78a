""" Rate-limit benchmark: what the rate-limit checks cost per request in the REST pipeline, as a
ratio to the same pipeline without limits, measured in the same run:

    .venv/bin/python bench/ratelimit/run.py [--quick] [--rounds N] [--requests N] [--mode inprocess|wrk]

Targets (each its own REST channel, HTTP Basic Auth user and JSON echo service with SimpleIO):

    off             no object in the server has limits: the plugin is idle (the baseline)
    none            this channel, user and service have none, others in the server do
    approx-channel  APPROXIMATE limits on the channel only
    approx-user     APPROXIMATE limits on the security definition only
    approx-service  APPROXIMATE limits on the service only
    approx-all      APPROXIMATE limits on all three (the goal: under 5 % over `off`)
    exact-all       EXACT limits on all three (counters in the configuration database)

Every definition has three lines (two networks the caller is not in, then `*`) with limits
no run reaches, so every request is counted and passes.

`--mode inprocess` (the default) runs one server in this process and sends each request
straight into its ASGI application (routing, the REST channel, Basic Auth, the rate-limit
checks, SimpleIO, the service, the JSON reply and the observer): no sockets, no HTTP parsing.
Rounds interleave the targets; `off` is measured by swapping in the plugin's idle state between
batches. `--mode wrk` sends real HTTP with wrk to two server processes started side by side,
one with the limits and one without, in interleaved rounds. See bench/ratelimit/README.md.

Results go to bench/results/ratelimit.json (git-ignored).
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = REPO / "bench" / "results" / "ratelimit.json"
GOAL = 1.05  # approx-all at most 5 % slower than off

TARGETS = ("off", "none", "approx-channel", "approx-user", "approx-service", "approx-all", "exact-all")
# which objects of each target carry limits, and of which type
LIMITED = {
    "none": {}, "approx-channel": {"channel": "APPROXIMATE"}, "approx-user": {"security": "APPROXIMATE"},
    "approx-service": {"service": "APPROXIMATE"},
    "approx-all": {"channel": "APPROXIMATE", "security": "APPROXIMATE", "service": "APPROXIMATE"},
    "exact-all": {"channel": "EXACT", "security": "EXACT", "service": "EXACT"},
}
DEFINITION = "10.0.0.0/8 = 1000000/m\n192.168.0.0/16 = 1000000/m\n* = 2000000000/d"
PASSWORD = "bench-ratelimit-password"
REQUEST = {"name": "Zato", "count": 3, "is_active": True}
BODY = json.dumps(REQUEST).encode()

SERVICE_TEMPLATE = '''
class Echo_{ident}(Service):
    name = "bench.echo.{target}"

    class SimpleIO:
        input_required = "name", Int("count")
        input_optional = "is_active"
        output_required = "name", Int("count")
        output_optional = "is_active"

    {asynchronous}def handle(self):
        request = self.request.input
        self.response.payload = {{"name": request.name, "count": request.count, "is_active": request.is_active}}
'''


class BenchError(Exception):
    """ The benchmark cannot go on; the message says why and what to do. """


def channel_path(target: str) -> str:
    return f"/bench/{target}"


def user_of(target: str) -> str:
    return f"bench.{target}"


def auth_header(target: str) -> str:
    return "Basic " + base64.b64encode(f"{user_of(target)}:{PASSWORD}".encode()).decode()


def limits_of(kind: str | None) -> dict[str, Any]:
    if kind is None:
        return {}
    return {"is_rate_limit_active": True, "rate_limit_type": kind, "rate_limit_def": DEFINITION}


def create_server_dir(path: Path, *, with_limits: bool, service_kind: str, odb_url: str | None) -> Path:
    """ A server directory with one channel, user and service per target (`off` shares `none`'s
    objects: it is the same path measured with the plugin idle). """
    from zato.builtin.security import store_definition
    from zato.odb import ODB, sqlite_url
    from zato.testing import create_test_server_dir, set_config_value

    server_dir = create_test_server_dir(path, main={"graceful_timeout": 3})
    if odb_url:
        set_config_value(server_dir, "odb", "url", odb_url)
    targets = [t for t in TARGETS if t != "off"]
    source = "from zato.server.service import Int, Service\n" + "".join(
        SERVICE_TEMPLATE.format(ident=t.replace("-", "_"), target=t,
                                asynchronous="async " if service_kind == "async" else "") for t in targets)
    (server_dir / "pickup" / "bench_echo.py").write_text(source, "utf-8")
    odb = ODB(odb_url or sqlite_url(server_dir / "work" / "zato.db"))
    try:
        odb.upgrade()
        for target in targets:
            limited = LIMITED[target] if with_limits else {}
            store_definition(odb, user_of(target), type="basic_auth", username=user_of(target), password=PASSWORD,
                             **limits_of(limited.get("security")))
            odb.put_object("channel_rest", channel_path(target), {
                "url_path": channel_path(target), "service": f"bench.echo.{target}", "methods": ["POST"],
                "data_format": "json", "security": user_of(target), **limits_of(limited.get("channel"))})
            if limited.get("service"):
                odb.put_object("service_settings", f"bench.echo.{target}", limits_of(limited["service"]))
    finally:
        odb.close()
    return server_dir


def machine() -> dict[str, Any]:
    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


# ################################################################################################
# In-process: requests straight into the ASGI application


def scope_of(target: str) -> dict[str, Any]:
    path = channel_path("none" if target == "off" else target)
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(BODY)).encode()),
                    (b"authorization", auth_header("none" if target == "off" else target).encode())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 17010),
    }


async def call_app(app: Any, scope: dict[str, Any]) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], sent[1]["body"]


async def measure_in_process(args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    import trio

    from zato.builtin.rate_limit import RateLimits, rate_limits
    from zato.testing import run_server

    server_dir = create_server_dir(work_dir / "server", with_limits=True, service_kind=args.service,
                                   odb_url=args.odb_url)
    samples: dict[str, list[float]] = {target: [] for target in TARGETS}  # CPU µs per request
    wall: dict[str, list[float]] = {target: [] for target in TARGETS}  # elapsed µs per request
    async with run_server(server_dir) as server:
        app = server.app
        active = rate_limits(server)
        idle = RateLimits(server, active.resolver, active.backend_names)  # nothing has limits

        def use(target: str) -> None:
            off = target == "off"
            server.plugin_state["rate_limit"] = idle if off else active
            server.rate_limits = idle if off else active

        # correctness first: every target answers the echo, and counts what it should
        for target in TARGETS:
            use(target)
            status, body = await call_app(app, scope_of(target))
            if status != 200 or json.loads(body) != REQUEST:
                raise BenchError(f"target {target} answered {status} {body[:200]!r}, not the echo")
        for target, limited in LIMITED.items():
            expected = {{"channel": "channel_rest", "security": "security", "service": "service_settings"}[k]: v
                        for k, v in limited.items()}
            found = {}
            for object_type, name in (("channel_rest", channel_path(target)), ("security", user_of(target)),
                                      ("service_settings", f"bench.echo.{target}")):
                limits = active.by_type[object_type].get(name)
                if limits is not None:
                    found[object_type] = limits.kind
            if found != expected:
                raise BenchError(f"target {target}: limits on {found}, expected {expected}")

        print(f"in-process: {args.rounds} round(s) x {args.requests} requests per target, {args.service} service, "
              f"request log {'on' if args.request_log else 'off'}", flush=True)
        for _ in range(args.warmup):
            for target in TARGETS:
                use(target)
                scope = scope_of(target)
                for _ in range(min(args.requests, 300)):
                    await call_app(app, dict(scope))
        for round_no in range(1, args.rounds + 1):
            order = TARGETS[round_no % len(TARGETS):] + TARGETS[:round_no % len(TARGETS)]  # rotate the order
            for target in order:
                use(target)
                scope = scope_of(target)
                gc.collect()
                started, started_cpu = time.perf_counter(), time.process_time()
                for _ in range(args.requests):
                    status, _ = await call_app(app, dict(scope))
                    if status != 200:
                        raise BenchError(f"target {target} answered {status} during the measurement")
                samples[target].append((time.process_time() - started_cpu) / args.requests * 1e6)
                wall[target].append((time.perf_counter() - started) / args.requests * 1e6)
            print(f"  round {round_no}: " + ", ".join(f"{t} {samples[t][-1]:.1f}" for t in TARGETS) +
                  " CPU µs/request", flush=True)
        direct = await measure_checks(server, use, args)
        use("none")
        await trio.sleep(0)
    return {"unit": "CPU µs per request (this process, every thread)", "samples": samples, "wall": wall,
            "checks": direct}


async def measure_checks(server: Any, use: Any, args: argparse.Namespace) -> dict[str, list[float]]:
    """ The rate-limit calls alone, as the REST channel and `invoke_service` make them, many times
    over: a precise cost per request where the whole pipeline's is noisy. CPU µs per request. """
    from zato.server.http import HTTPRequest

    iterations = max(200, args.requests * 5)
    costs: dict[str, list[float]] = {target: [] for target in TARGETS}
    print(f"the checks alone: {args.rounds} round(s) x {iterations} per target", flush=True)
    for round_no in range(args.rounds):
        order = TARGETS[round_no % len(TARGETS):] + TARGETS[:round_no % len(TARGETS)]
        for target in order:
            use(target)
            name = "none" if target == "off" else target
            channel, security, service = channel_path(name), user_of(name), f"bench.echo.{name}"
            request = HTTPRequest("POST", channel, b"", {}, b"", ("127.0.0.1", 50000), "cid", scope={"headers": []},
                                  server=server)
            count = iterations // 20 if target == "exact-all" else iterations  # 1000x slower: fewer suffice
            started = time.process_time()
            for _ in range(count):
                # what RESTChannels' handler does after authentication ...
                rate_limits = server.rate_limits
                if rate_limits.is_active:
                    await rate_limits.check_http(request, "channel_rest", channel, security)
                # ... and what Server.invoke_service does before running the service
                check_rate_limit = rate_limits.service_checks.get(service)
                if check_rate_limit is not None:
                    await check_rate_limit("cid", channel)
            costs[target].append((time.process_time() - started) / count * 1e6)
    return costs


# ################################################################################################
# wrk: real HTTP to two server processes, with and without limits


WRK_SCRIPT = '''
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = {auth}
done = function(summary, latency, requests)
  io.write(string.format('WRK_JSON {{"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration, summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.status + summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
'''


def ensure_wrk(install: bool) -> str:
    found = shutil.which("wrk")
    if found:
        return found
    how = "apt-get update && apt-get install -y wrk"
    if not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        raise BenchError(f"wrk is not installed; install it with `{how}` (as root)")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        result = subprocess.run(command, capture_output=True, text=True,
                                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if result.returncode != 0:
            raise BenchError(f"`{' '.join(command)}` failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return shutil.which("wrk") or "wrk"


def run_wrk(wrk: str, url: str, script: Path, connections: int, duration: float) -> dict[str, Any]:
    command = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s", "-s",
               str(script), url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise BenchError(f"`{' '.join(command)}` failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    data = json.loads(line[len("WRK_JSON "):])
    if data["errors"]:
        raise BenchError(f"{url}: {data['errors']} errors (non-2xx replies or socket errors) under wrk")
    return {"rps": data["requests"] / (data["duration_us"] / 1e6), "p50_ms": data["p50_us"] / 1000,
            "p99_ms": data["p99_us"] / 1000}


def measure_wrk(args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    from zato.testing import ServerProcess

    wrk = ensure_wrk(not args.no_install_wrk)
    limited_dir = create_server_dir(work_dir / "limited", with_limits=True, service_kind=args.service, odb_url=None)
    plain_dir = create_server_dir(work_dir / "plain", with_limits=False, service_kind=args.service, odb_url=None)
    scripts = {}
    for target in TARGETS:
        user_target = "none" if target == "off" else target
        script = work_dir / f"{target}.lua"
        script.write_text(textwrap.dedent(WRK_SCRIPT).format(body=json.dumps(BODY.decode()),
                                                             auth=json.dumps(auth_header(user_target))), "utf-8")
        scripts[target] = script
    samples: dict[str, list[dict[str, Any]]] = {target: [] for target in TARGETS}
    with ServerProcess(limited_dir) as limited, ServerProcess(plain_dir) as plain:
        urls = {target: (plain.address if target == "off" else limited.address) +
                channel_path("none" if target == "off" else target) for target in TARGETS}
        print(f"wrk: {args.rounds} round(s) x {args.duration:.0f} s per target, {args.connections} connections, "
              f"{args.service} service; `off` is a second server without limits", flush=True)
        for target in TARGETS:
            run_wrk(wrk, urls[target], scripts[target], args.connections, 1)  # warm-up and a check of no errors
        for round_no in range(1, args.rounds + 1):
            order = TARGETS[round_no % len(TARGETS):] + TARGETS[:round_no % len(TARGETS)]
            for target in order:
                samples[target].append(run_wrk(wrk, urls[target], scripts[target], args.connections, args.duration))
            print(f"  round {round_no}: " + ", ".join(f"{t} {samples[t][-1]['rps']:.0f}" for t in TARGETS) +
                  " req/s", flush=True)
    return {"unit": "req/s", "samples": samples}


# ################################################################################################


def summarise(mode: str, result: dict[str, Any]) -> dict[str, Any]:
    samples = result["samples"]
    if mode == "inprocess":
        median = {t: statistics.median(samples[t]) for t in TARGETS}
        ratio = {t: median[t] / median["off"] for t in TARGETS}  # time per request: above 1 is slower
        overhead = {t: median[t] - median["off"] for t in TARGETS}
        spread = {t: (min(samples[t]), max(samples[t])) for t in TARGETS}
        wall = {t: statistics.median(result["wall"][t]) for t in TARGETS}
        checks = {t: statistics.median(result["checks"][t]) for t in TARGETS}
        return {"median": median, "ratio": ratio, "overhead_us": overhead, "spread": spread, "wall_median": wall,
                "wall_ratio": {t: wall[t] / wall["off"] for t in TARGETS}, "checks_us": checks,
                # the checks' added cost over a pipeline without limits (the off target's CPU per request)
                "checks_ratio": {t: (median["off"] + checks[t] - checks["off"]) / median["off"] for t in TARGETS}}
    else:
        median = {t: statistics.median(s["rps"] for s in samples[t]) for t in TARGETS}
        ratio = {t: median["off"] / median[t] for t in TARGETS}  # the same sense: time per request vs off
        overhead = {t: (1 / median[t] - 1 / median["off"]) * 1e6 for t in TARGETS}
        spread = {t: (min(s["rps"] for s in samples[t]), max(s["rps"] for s in samples[t])) for t in TARGETS}
    return {"median": median, "ratio": ratio, "overhead_us": overhead, "spread": spread}


def print_table(mode: str, summary: dict[str, Any]) -> None:
    if mode == "wrk":
        print(f"\n{'target':<16} {'median req/s':>14} {'min..max':>16} {'x off (time)':>13} {'+ µs/req':>9}")
        for target in TARGETS:
            low, high = summary["spread"][target]
            print(f"{target:<16} {summary['median'][target]:>14.0f} {f'{low:.0f}..{high:.0f}':>16} "
                  f"{summary['ratio'][target]:>13.3f} {summary['overhead_us'][target]:>9.1f}")
        verdict = "met" if summary["ratio"]["approx-all"] <= GOAL else "NOT met"
        print(f"\ngoal: approx-all within {GOAL:.2f}x of off: {summary['ratio']['approx-all']:.3f}x, {verdict}")
        return
    print(f"\n{'':<16} {'--- whole pipeline, CPU ---':^38} {'-- pipeline, wall --':^21} {'-- the checks alone --':^22}")
    print(f"{'target':<16} {'µs/req':>9} {'min..max':>12} {'x off':>7} {'+ µs':>7} {'µs/req':>11} {'x off':>8} "
          f"{'µs/req':>9} {'x off':>11}")
    for target in TARGETS:
        low, high = summary["spread"][target]
        print(f"{target:<16} {summary['median'][target]:>9.1f} {f'{low:.0f}..{high:.0f}':>12} "
              f"{summary['ratio'][target]:>7.3f} {summary['overhead_us'][target]:>7.1f} "
              f"{summary['wall_median'][target]:>11.1f} {summary['wall_ratio'][target]:>8.3f} "
              f"{summary['checks_us'][target]:>9.2f} {summary['checks_ratio'][target]:>11.4f}")
    measured, pipeline = summary["checks_ratio"]["approx-all"], summary["ratio"]["approx-all"]
    verdict = "met" if measured <= GOAL else "NOT met"
    print(f"\ngoal: approx-all within {GOAL:.2f}x of off: the checks alone add {measured:.4f}x, {verdict} "
          f"(whole pipeline, noisier: {pipeline:.3f}x)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("inprocess", "wrk"), default="inprocess")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds: a smoke run")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=1000, help="inprocess: requests per target per round")
    parser.add_argument("--warmup", type=int, default=1, help="inprocess: unmeasured rounds of 300 requests first")
    parser.add_argument("--duration", type=float, default=5.0, help="wrk: seconds per target per round")
    parser.add_argument("--connections", type=int, default=10, help="wrk: connections")
    parser.add_argument("--service", choices=("async", "sync"), default="async",
                        help="async def handle (on the loop) or def handle (in a worker thread)")
    parser.add_argument("--request-log", action="store_true",
                        help="inprocess: write the request log line to a file as a server does (off: cheaper "
                             "pipeline, so a higher ratio)")
    parser.add_argument("--odb-url", help="inprocess: the configuration database (default: SQLite in the server "
                                          "directory); EXACT counters live there")
    parser.add_argument("--no-install-wrk", action="store_true")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.requests, args.duration, args.warmup = 3, 500, 2.0, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work_dir = Path(tempfile.mkdtemp(prefix="zato-bench-ratelimit-"))
    try:
        if args.mode == "inprocess":
            import logging

            import trio
            if args.request_log:
                logging.basicConfig(filename=work_dir / "server.log", level=logging.INFO,
                                    format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
            else:
                logging.basicConfig(level=logging.WARNING)
            result = trio.run(measure_in_process, args, work_dir)
        else:
            result = measure_wrk(args, work_dir)
        summary = summarise(args.mode, result)
        print_table(args.mode, summary)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({
            "mode": args.mode, "machine": machine(), "targets": list(TARGETS), "definition": DEFINITION,
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "summary": summary, **result}, indent=2), "utf-8")
        print(f"results: {args.output}")
        return 0
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"kept {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
