""" Start-up benchmark: wall time from `zato start DIR --fg` to the first 200 from GET /zato/ping,
for a fresh start (start-up cache deleted) and a cached one, with every plugin of the workspace
enabled, beside a baseline measured in the same run: the bare import of the core's dependencies,
`python -c "import trio, hypercorn, sqlalchemy, pluggy"`.

    .venv/bin/python bench/startup/run.py [--rounds N] [--mode both|as-configured|bytecode]

Each mode runs in interleaved rounds (baseline, fresh, cached, baseline, ...) after warm-up rounds
that are not counted. Results are printed as a table and written to bench/results/startup.json.
See bench/startup/README.md for what the two bytecode modes mean.

Only the standard library is used; the `zato` command is the one next to this interpreter.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
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
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from importlib import metadata
from typing import Any, Iterator, Mapping

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = REPO / "bench" / "results" / "startup.json"

PYTHON = sys.executable
ZATO = str(Path(PYTHON).with_name("zato"))
BASELINE_CODE = "import trio, hypercorn, sqlalchemy, pluggy"
ADMIN_PASSWORD = "bench-startup-password"

POLL_INTERVAL = 0.005  # seconds between looks at work/server.json and pings
GOAL_READY_MS = 1000.0
GOAL_CACHED_VS_BASELINE = 2.0

KINDS = ("baseline", "fresh", "cached")
MODES = ("as-configured", "bytecode")
MODE_TITLES = {
    "as-configured": "as configured",
    "bytecode": "with bytecode",
}

READY_LOG_LINE = re.compile(r" ready at \S+ in (\d+(?:\.\d+)?) ms")


class BenchError(Exception):
    """ The benchmark cannot go on (a server that does not start, a broken plugin, ...). """


# ################################################################################################
# The environment each mode runs in


@dataclass
class Mode:
    """ One bytecode set-up: the environment every measured process gets. """
    name: str
    env: dict[str, str]
    description: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return MODE_TITLES[self.name]


def interpreter_paths() -> tuple[list[Path], list[Path]]:
    """ The child interpreter's import path split in two: the Python installation's own (stdlib)
    and the project's (the venv's site-packages, the editable core and plugins). """
    out = subprocess.run([PYTHON, "-c", "import json, sys; print(json.dumps([sys.base_prefix, sys.path]))"],
                         check=True, capture_output=True, text=True, env=without_pycache_prefix(os.environ)).stdout
    base_prefix, entries = json.loads(out)
    stdlib, project = [], []
    for entry in entries:
        path = Path(entry)
        if not entry or not path.is_dir():
            continue
        (stdlib if path.is_relative_to(base_prefix) else project).append(path)
    return stdlib, nest_free(project)


def nest_free(paths: list[Path]) -> list[Path]:
    """ `paths` without those inside another one, so nothing is walked twice. """
    paths = sorted(set(paths))
    return [p for p in paths if not any(p != q and p.is_relative_to(q) for q in paths)]


def without_pycache_prefix(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k != "PYTHONPYCACHEPREFIX"}


def python_sources(roots: list[Path]) -> Iterator[str]:
    for root in roots:
        for directory, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if name.endswith(".py"):
                    yield os.path.join(directory, name)


def bytecode_coverage(roots: list[Path]) -> tuple[int, int]:
    """ (sources, sources with a .pyc where this environment looks for one) under `roots`. """
    total = cached = 0
    for source in python_sources(roots):
        total += 1
        try:
            cached += os.path.exists(importlib.util.cache_from_source(source))
        except ValueError:
            pass
    return total, cached


def as_configured_mode(work_dir: Path, stdlib: list[Path], project: list[Path]) -> Mode:
    """ The environment as it is (PYTHONDONTWRITEBYTECODE kept) on a venv as `uv sync` leaves it: no
    .pyc for the venv's and the project's sources, so with PYTHONDONTWRITEBYTECODE=1 every process
    compiles them again. Any .pyc files someone has put in the venv since are hidden behind a
    private cache prefix that holds only the installation's stdlib .pyc files, so this mode
    measures the same thing however the shared venv looks today. """
    prefix = work_dir / "pycache-as-configured"
    linked = link_stdlib_bytecode(stdlib, prefix)
    total, in_venv = bytecode_coverage(project)
    dont_write = os.environ.get("PYTHONDONTWRITEBYTECODE", "")
    if dont_write:
        description = (f"PYTHONDONTWRITEBYTECODE={dont_write} kept, no .pyc for the {total} venv/project sources: "
                       f"every process compiles them")
    else:
        description = (f"PYTHONDONTWRITEBYTECODE unset: the first start writes .pyc for the {total} venv/project "
                       f"sources, later ones use them")
    if in_venv:
        description += f" (the {in_venv} .pyc files already in the venv/project are hidden)"
    return Mode("as-configured", env_with_pycache_prefix(prefix), description,
                {"PYTHONDONTWRITEBYTECODE": dont_write, "sources": total, "sources_with_pyc_in_venv": in_venv,
                 "pycache_prefix": str(prefix), "stdlib_pyc_linked": linked})


def bytecode_mode(work_dir: Path, stdlib: list[Path], project: list[Path]) -> Mode:
    """ Every source precompiled, as in a production install (`pip install` / `uv pip install
    --compile-bytecode`, distribution packages): compileall writes .pyc files for the venv's and the
    project's sources into a private cache prefix, next to links to the installation's stdlib .pyc
    files. The shared venv is left as it is. """
    prefix = work_dir / "pycache-bytecode"
    started = time.perf_counter()
    linked = link_stdlib_bytecode(stdlib, prefix)
    compiled = subprocess.run([PYTHON, "-X", f"pycache_prefix={prefix}", "-m", "compileall", "-q", "-j", "0",
                               *map(str, project)], capture_output=True, text=True,
                              env=without_pycache_prefix(os.environ))
    took = time.perf_counter() - started
    if compiled.returncode:
        # Some distributions ship files that do not compile on purpose (test data); say so, go on.
        failed = compiled.stdout.count("***") + compiled.stderr.count("***")
        print(f"  note: compileall could not compile {failed or 'some'} file(s); they are compiled on import",
              file=sys.stderr)
    total, cached = bytecode_coverage_in(prefix, project)
    description = (f"compileall: .pyc for {cached} of {total} venv/project sources "
                   f"(prepared in {took:.1f} s)")
    return Mode("bytecode", env_with_pycache_prefix(prefix), description,
                {"sources": total, "sources_with_pyc": cached, "pycache_prefix": str(prefix),
                 "stdlib_pyc_linked": linked, "prepare_s": round(took, 2)})


def env_with_pycache_prefix(prefix: Path) -> dict[str, str]:
    """ This environment with Python reading (and, unless PYTHONDONTWRITEBYTECODE, writing) its .pyc
    files only under `prefix` instead of the __pycache__ folders next to the sources. """
    env = without_pycache_prefix(os.environ)
    env["PYTHONPYCACHEPREFIX"] = str(prefix)
    return env


def prefixed_cache_path(prefix: Path, source: str) -> Path:
    """ Where Python looks for the .pyc of `source` when PYTHONPYCACHEPREFIX=prefix. """
    tag = sys.implementation.cache_tag
    head, name = os.path.split(source)
    return prefix / head.lstrip(os.sep) / f"{name[:-3]}.{tag}.pyc"


def bytecode_coverage_in(prefix: Path, roots: list[Path]) -> tuple[int, int]:
    total = cached = 0
    for source in python_sources(roots):
        total += 1
        cached += prefixed_cache_path(prefix, source).exists()
    return total, cached


def link_stdlib_bytecode(stdlib: list[Path], prefix: Path) -> int:
    """ Links the installation's __pycache__/*.pyc into `prefix`'s layout; returns how many. """
    suffix = f".{sys.implementation.cache_tag}.pyc"  # no .opt-N: the level the server runs at
    count = 0
    for root in nest_free(stdlib):
        for directory, _, files in os.walk(root):
            if os.path.basename(directory) != "__pycache__":
                continue
            target_dir = prefix / os.path.dirname(directory).lstrip(os.sep)
            for name in files:
                if name.endswith(suffix) and name.count(".") == 2:
                    target_dir.mkdir(parents=True, exist_ok=True)
                    os.symlink(os.path.join(directory, name), target_dir / name)
                    count += 1
    return count


# ################################################################################################
# The server directory


def create_server_dir(base_dir: Path, env: dict[str, str]) -> list[str]:
    """ A quickstart server on a free port with every installed plugin enabled; returns their names. """
    run([ZATO, "quickstart", "create", str(base_dir), "--port", "0", "--admin-password", ADMIN_PASSWORD], env)
    plugins = list_plugins(base_dir, env)
    disabled = [p["name"] for p in plugins if not p["enabled"]]
    if disabled:
        enable_plugins(base_dir / "config" / "server.conf", disabled)
        plugins = list_plugins(base_dir, env)
    broken = [f"{p['name']}: {p['error']}" for p in plugins if p["error"]]
    not_loaded = [p["name"] for p in plugins if not p["enabled"] or not p["loaded"]]
    if broken or not_loaded:
        raise BenchError("not every plugin can be enabled: " + "; ".join(broken or not_loaded))
    return [p["name"] for p in plugins]


def workspace_members_not_installed() -> list[str]:
    """ Distributions under plugins/ that this venv does not have (a `uv sync --all-packages` is due):
    their plugins cannot be discovered, so the benchmark would run without them. """
    missing = []
    for pyproject in sorted((REPO / "plugins").glob("*/pyproject.toml")):
        try:
            name = tomllib.loads(pyproject.read_text("utf-8"))["project"]["name"]
        except (OSError, ValueError, KeyError):
            continue
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def list_plugins(base_dir: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    return json.loads(run([ZATO, "plugins", "list", str(base_dir), "--json"], env))


def enable_plugins(server_conf: Path, names: list[str]) -> None:
    """ Sets `name = True` in [plugins] for each of `names`, keeping every other line. """
    lines, section, wanted = server_conf.read_text("utf-8").splitlines(), None, set(names)
    out = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
            out.append(line)
            if section == "plugins":
                out.extend(f"{name} = True" for name in names)
            continue
        if section == "plugins" and "=" in stripped and stripped.split("=", 1)[0].strip() in wanted:
            continue
        out.append(line)
    if not any(line.strip() == "[plugins]" for line in lines):
        out += ["[plugins]", *(f"{name} = True" for name in names)]
    server_conf.write_text("\n".join(out) + "\n", "utf-8")


def run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if done.returncode:
        raise BenchError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


# ################################################################################################
# Measuring


@dataclass
class Sample:
    ms: float
    server_ready_ms: float | None = None  # what the server logs as its own start-up time


def measure_baseline(env: dict[str, str], cwd: Path) -> Sample:
    command = [PYTHON, "-c", BASELINE_CODE]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True)
    took = time.perf_counter() - started
    if done.returncode:
        raise BenchError(f"the baseline failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
    return Sample(took * 1000)


def measure_start(base_dir: Path, env: dict[str, str], *, fresh: bool, timeout: float) -> Sample:
    """ Spawns `zato start DIR --fg`, times it until GET /zato/ping answers 200, stops it. """
    work = base_dir / "work"
    cache_file, runtime_file, output_file = work / "startup-cache.json", work / "server.json", base_dir / "bench.out"
    runtime_file.unlink(missing_ok=True)
    if fresh:
        cache_file.unlink(missing_ok=True)
    elif not cache_file.exists():
        raise BenchError(f"no start-up cache to start from: {cache_file}")
    cache_before = cache_file.stat().st_mtime_ns if cache_file.exists() else None

    from zato.testing import ExternalProcess, ProcessExited

    process = ExternalProcess([ZATO, "start", str(base_dir), "--fg"], name="the server", output=output_file,
                              cwd=base_dir, env=env)
    started = time.perf_counter()
    process.start()
    try:
        ready = process.wait_until(answered_at(process.pid, runtime_file), timeout, interval=POLL_INTERVAL)
    except (ProcessExited, TimeoutError):
        ready = None
    finally:
        process.stop()  # and wait for it to exit, so the next round starts on an idle machine
    log = output_file.read_text("utf-8", "replace")
    if ready is None:
        raise BenchError(f"the server did not answer (exit code {process.returncode}); its output:\n{log}")

    cache_after = cache_file.stat().st_mtime_ns if cache_file.exists() else None
    if cache_after is None or (not fresh and cache_after != cache_before):
        print(f"  warning: the start-up cache was {'not written' if cache_after is None else 'rebuilt'} "
              f"in a {'fresh' if fresh else 'cached'} start", file=sys.stderr)
    found = READY_LOG_LINE.search(log)
    return Sample((ready - started) * 1000, float(found.group(1)) if found else None)


def answered_at(pid: int, runtime_file: Path) -> Any:
    """ A check for `ExternalProcess.wait_until`: perf_counter() at the first 200 from /zato/ping
    of the server `pid` (whose address is in `runtime_file`), else None. """
    address = None

    def check() -> float | None:
        nonlocal address
        if address is None:
            address = read_address(runtime_file, pid)
        if address is not None and ping(address):
            return time.perf_counter()
        return None
    return check


def read_address(runtime_file: Path, pid: int) -> tuple[str, int] | None:
    try:
        info = json.loads(runtime_file.read_bytes())
    except (OSError, ValueError):
        return None
    if info.get("pid") != pid or not info.get("address"):
        return None
    host, _, port = info["address"].removeprefix("http://").rpartition(":")
    return host, int(port)


def ping(address: tuple[str, int]) -> bool:
    """ One GET /zato/ping on a raw socket: cheap enough to poll every few milliseconds. """
    try:
        with socket.create_connection(address, timeout=2) as sock:
            sock.sendall(b"GET /zato/ping HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % address[0].encode())
            head = b""
            while b"\r\n" not in head:
                chunk = sock.recv(256)
                if not chunk:
                    break
                head += chunk
    except OSError:
        return False
    return head.split(b" ", 2)[1:2] == [b"200"]


def run_mode(mode: Mode, base_dir: Path, *, rounds: int, warmup: int, timeout: float) -> dict[str, list[Sample]]:
    """ Warm-up rounds (not counted), then `rounds` rounds of baseline, fresh, cached. """
    samples: dict[str, list[Sample]] = {kind: [] for kind in KINDS}
    for index in range(-warmup, rounds):
        row = {
            "baseline": measure_baseline(mode.env, base_dir),
            "fresh": measure_start(base_dir, mode.env, fresh=True, timeout=timeout),
            "cached": measure_start(base_dir, mode.env, fresh=False, timeout=timeout),
        }
        label = f"warm-up {index + warmup + 1}/{warmup}" if index < 0 else f"round {index + 1}/{rounds}"
        print(f"  {label:>15}: " + ", ".join(f"{kind} {row[kind].ms:6.0f} ms" for kind in KINDS), flush=True)
        if index >= 0:
            for kind in KINDS:
                samples[kind].append(row[kind])
    return samples


# ################################################################################################
# Reporting


def percentile(values: list[float], fraction: float) -> float:
    """ Nearest-rank percentile: the smallest value with at least `fraction` of them at or below it. """
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summarize(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "p90": percentile(values, 0.9),
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def mode_report(mode: Mode, samples: dict[str, list[Sample]]) -> dict[str, Any]:
    stats = {kind: summarize([s.ms for s in samples[kind]]) for kind in KINDS}
    base = stats["baseline"]["median"]
    ratios = {"fresh_vs_baseline": stats["fresh"]["median"] / base,
              "cached_vs_baseline": stats["cached"]["median"] / base}
    server_logged = {}
    for kind in ("fresh", "cached"):
        logged = [s.server_ready_ms for s in samples[kind] if s.server_ready_ms is not None]
        if logged:
            server_logged[kind] = statistics.median(logged)
    goals = {
        "ready_under_ms": GOAL_READY_MS,
        "fresh_ready_met": stats["fresh"]["median"] < GOAL_READY_MS,
        "cached_ready_met": stats["cached"]["median"] < GOAL_READY_MS,
        "cached_vs_baseline_max": GOAL_CACHED_VS_BASELINE,
        "cached_vs_baseline_met": ratios["cached_vs_baseline"] <= GOAL_CACHED_VS_BASELINE,
    }
    return {
        "title": mode.title,
        "description": mode.description,
        "details": mode.details,
        "samples_ms": {kind: [round(s.ms, 2) for s in samples[kind]] for kind in KINDS},
        "stats_ms": {kind: {k: round(v, 2) for k, v in stats[kind].items()} for kind in KINDS},
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "server_logged_ready_median_ms": server_logged,
        "goals": goals,
    }


def print_mode(report: dict[str, Any]) -> None:
    stats, ratios, goals = report["stats_ms"], report["ratios"], report["goals"]
    print(f"\n== {report['title']} ==")
    print(textwrap.fill(report["description"], 100, initial_indent="   ", subsequent_indent="   "))
    print(f"   {'':10} {'median':>9} {'p90':>9} {'min':>9}   {'median / baseline':>17}")
    for kind in KINDS:
        s = stats[kind]
        ratio = "1.00x" if kind == "baseline" else f"{ratios[f'{kind}_vs_baseline']:.2f}x"
        print(f"   {kind:10} {s['median']:6.0f} ms {s['p90']:6.0f} ms {s['min']:6.0f} ms   {ratio:>17}")
    logged = report["server_logged_ready_median_ms"]
    if logged:
        print("   server's own 'ready in' log (from serve_worker start, after imports), median: "
              + ", ".join(f"{kind} {ms:.0f} ms" for kind, ms in logged.items()))

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"
    print(f"   goals: ready < {GOAL_READY_MS:.0f} ms: fresh {stats['fresh']['median']:.0f} ms "
          f"{verdict(goals['fresh_ready_met'])}, cached {stats['cached']['median']:.0f} ms "
          f"{verdict(goals['cached_ready_met'])}; cached <= {GOAL_CACHED_VS_BASELINE:g}x baseline: "
          f"{ratios['cached_vs_baseline']:.2f}x {verdict(goals['cached_vs_baseline_met'])}")


def load_average() -> float:
    """ Other processes compete for the 2 cores; a high load average explains noisy numbers. """
    return round(os.getloadavg()[0], 2)


def zato_version(env: dict[str, str]) -> str:
    return run([ZATO, "--version"], env).strip().rpartition(" ")[2]


# ################################################################################################


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="measured rounds per mode (default: 10)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted rounds per mode first (default: 1)")
    parser.add_argument("--mode", choices=("both", *MODES), default="both",
                        help="as-configured: the environment as it is; bytecode: every source precompiled "
                             "(default: both)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a start may take (default: 60)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"JSON results (default: {DEFAULT_OUTPUT.relative_to(REPO)})")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (server directory, bytecode prefix)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be at least 1 and --warmup at least 0")
    if not os.access(ZATO, os.X_OK):
        parser.error(f"{ZATO} not found: run this with the venv's python (.venv/bin/python)")
    modes = MODES if args.mode == "both" else (args.mode,)

    work_dir = Path(tempfile.mkdtemp(prefix="zato-bench-startup-"))
    base_dir = work_dir / "server"
    try:
        stdlib, project = interpreter_paths()
        setup_env = dict(os.environ)
        plugins = create_server_dir(base_dir, setup_env)
        version = zato_version(setup_env)
        load_at_start = load_average()
        print(f"Zato {version} start-up benchmark: {args.rounds} rounds (+{args.warmup} warm-up) per mode, "
              f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average {load_at_start}")
        print(f"plugins enabled: {', '.join(plugins)}")
        missing = workspace_members_not_installed()
        if missing:
            print(f"warning: not installed in this venv, so not measured: {', '.join(missing)} "
                  f"(run `uv sync --all-packages`)", file=sys.stderr)
        print(f"server:   zato start DIR --fg, from spawn to the first 200 from GET /zato/ping "
              f"(polled every {POLL_INTERVAL * 1000:g} ms); fresh = work/startup-cache.json deleted first")
        print(f"baseline: python -c \"{BASELINE_CODE}\", from spawn to exit")

        reports = {}
        for name in modes:
            if name == "bytecode":
                print(f"\npreparing '{MODE_TITLES[name]}' (compileall into a private cache prefix) ...", flush=True)
                mode = bytecode_mode(work_dir, stdlib, project)
            else:
                mode = as_configured_mode(work_dir, stdlib, project)
            print(f"\nmeasuring '{mode.title}': {mode.description}", flush=True)
            samples = run_mode(mode, base_dir, rounds=args.rounds, warmup=args.warmup, timeout=args.timeout)
            reports[name] = mode_report(mode, samples)

        load_at_end = load_average()
        print("\n" + "=" * 100)
        print(f"Results (ms, {args.rounds} round{'s' * (args.rounds > 1)} each; ratios are of medians; "
              f"load average {load_at_start} at start, {load_at_end} at end)")
        for report in reports.values():
            print_mode(report)

        write_results(args.output, {
            "benchmark": "startup",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "zato_version": version,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "python_executable": PYTHON,
                        "load_average_1min": {"start": load_at_start, "end": load_at_end}},
            "commands": {"server": "zato start DIR --fg", "ready": "first 200 from GET /zato/ping",
                         "baseline": f'python -c "{BASELINE_CODE}"'},
            "plugins": plugins,
            "workspace_plugins_not_installed": missing,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "poll_interval_ms": POLL_INTERVAL * 1000,
            "modes": reports,
        })
        print(f"\nwritten to {args.output}")
        return 0
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)


def write_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    os.replace(temp, path)


if __name__ == "__main__":
    sys.exit(main())
