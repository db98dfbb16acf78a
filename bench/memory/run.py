""" Memory benchmark: does anything in the server grow per request? A real server process (a
quickstart directory: its demo service `demo.hello`, a plain `def`, on /demo/hello, and the
same as an `async def` on /demo/hello-async) gets N rounds of load with wrk; after each round
the worker's RSS and its Python heap are sampled. A bare hypercorn-trio app answering the same
JSON (bench/rest/baseline_app.py, with the same sync/async split) gets the same rounds in the
same session, interleaved, so what hypercorn, trio and the allocator do by themselves shows as
such:

    .venv/bin/python bench/memory/run.py [--rounds N] [--seconds S] [--tracemalloc [FRAMES]]

Prints the curve (round, requests so far, RSS MB and its change, Python's allocated blocks) of
both servers side by side, the growth per 100k requests in the first and the second half of
the run, and the types of objects whose count grew. `--tracemalloc` runs both servers under
`PYTHONTRACEMALLOC=FRAMES` and prints the allocations that grew most, by traceback, between the
end of round 2 and the end of the last round (tracing makes requests several times slower).

Results go to bench/results/memory.json (git-ignored). See bench/memory/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import shutil
import signal
import sys
import tempfile
import textwrap
import time
import tracemalloc
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from zato.testing import ExternalProcess, ProcessExited

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = REPO / "bench" / "results" / "memory.json"
PYTHON = sys.executable
HYPERCORN = str(Path(PYTHON).with_name("hypercorn"))
START_TIMEOUT = 60.0  # seconds; 4x that under tracemalloc, which makes start-up several times slower
SETTLE_SECONDS = 1.0  # after a round, for the server to finish closing wrk's connections


def _load_rest_bench() -> Any:
    """ bench/rest/run.py, for its load tool and process helpers (one way to drive wrk here). """
    spec = importlib.util.spec_from_file_location("bench_rest_run", REPO / "bench" / "rest" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


rest = _load_rest_bench()
BenchError = rest.BenchError

# Deployed from the pickup directory beside the quickstart's demo.py; bench_memory_probe is
# bench/memory/probe.py copied to the server's lib/ directory (on sys.path in the server).
PICKUP_MODULE = '''
from zato.server.service import Service

import bench_memory_probe


class HelloAsync(Service):
    """ The quickstart's demo.hello as an async def: runs on the trio loop. """
    name = "demo.hello.async"

    async def handle(self):
        name = self.request.http.params.get("name") or "world"
        self.response.payload = {"hello": name}


class MemoryProbe(Service):
    """ The heap of this worker (bench/memory/probe.py); {"snapshot": PATH} dumps tracemalloc's. """
    name = "bench.memory.probe"

    async def handle(self):
        request = self.request.payload if isinstance(self.request.payload, dict) else {}
        self.response.payload = bench_memory_probe.heap_stats(request.get("snapshot"), top_types=200)
'''


def post_json(url: str, document: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(document).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Connection": "close"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read())


def threads_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_breakdown(pid: int) -> dict[str, float]:
    """ The process's RSS (MB) by kind of mapping, from /proc/PID/smaps: thread `stacks` (anonymous
    read-write mappings of the stack size), glibc malloc's per-thread `malloc_arenas` (read-write
    mappings at a 64 MiB boundary: glibc reserves arena heaps that way), the main malloc `heap`,
    `files` (code, libraries, mapped files) and `other_anon` (pymalloc's 1 MiB arenas, large
    mallocs served by mmap, the main thread's stack). """
    stack_size = resource.getrlimit(resource.RLIMIT_STACK)[0]
    stack_kb = stack_size // 1024 if stack_size > 0 else 8192
    kinds = dict.fromkeys(("stacks", "malloc_arenas", "heap", "files", "other_anon"), 0)
    kind, size_kb = "other_anon", 0
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                    parts = line.split()
                    start = int(parts[0].split("-")[0], 16)
                    name = parts[5] if len(parts) > 5 else ""
                    kind = ("heap" if name == "[heap]" else "files" if name.startswith("/") else
                            "other_anon" if name or not parts[1].startswith("rw") else
                            "malloc_arenas" if start % (64 << 20) == 0 else "pending")
                elif line.startswith("Size:"):
                    size_kb = int(line.split()[1])
                    if kind == "pending":
                        kind = "stacks" if size_kb == stack_kb else "other_anon"
                elif line.startswith("Rss:"):
                    kinds[kind] += int(line.split()[1])
    except OSError:
        pass
    return {key: round(kb / 1024, 2) for key, kb in kinds.items()}


# ################################################################################################
# The two servers


@dataclass
class Target:
    """ A server process under load: where to send load, where its probe is, and its samples. """
    name: str
    process: ExternalProcess
    sync_url: str
    async_url: str
    probe_url: str
    log: Path
    worker_pid: int = 0
    requests: int = 0
    errors: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)

    def probe(self, snapshot: Path | None = None) -> dict[str, Any]:
        stats = post_json(self.probe_url, {"snapshot": str(snapshot)} if snapshot else {})
        self.worker_pid = stats["pid"]  # the process that answered: the worker, whatever its parent
        return stats

    def sample(self, round_no: int, snapshot: Path | None = None) -> dict[str, Any]:
        if not self.process.running:
            raise BenchError(f"{self.name} exited with {self.process.returncode} during the run; see {self.log}")
        rss = rest.rss_mb(self.worker_pid)  # before the probe, which collects garbage
        breakdown = rss_breakdown(self.worker_pid)
        stats = self.probe(snapshot)
        sample = {"round": round_no, "requests": self.requests, "errors": self.errors, "rss_mb": rss,
                  "rss_by_kind_mb": breakdown,
                  "os_threads": threads_of(self.worker_pid), **stats}
        self.samples.append(sample)
        return sample

    def stop(self) -> None:
        self.process.stop(rest.STOP_TIMEOUT)


def start_zato(base_dir: Path, env: dict[str, str], settings: list[str], timeout: float) -> Target:
    from zato.odb import ODB, sqlite_url
    from zato.testing import create_test_server_dir, set_config_value

    create_test_server_dir(base_dir, workers=1)  # the quickstart: demo.hello on /demo/hello
    for setting in settings:
        key, _, value = setting.partition("=")
        section, _, name = key.partition(".")
        set_config_value(base_dir, section, name, value)
    shutil.copy(HERE / "probe.py", base_dir / "lib" / "bench_memory_probe.py")
    (base_dir / "pickup" / "bench_memory.py").write_text(textwrap.dedent(PICKUP_MODULE).lstrip(), "utf-8")
    odb = ODB(sqlite_url(base_dir / "work" / "zato.db"))
    try:
        odb.put_object("channel_rest", "demo.hello.async", {"url_path": "/demo/hello-async", "service":
                       "demo.hello.async", "methods": ["GET", "POST"], "data_format": "json", "security": None})
        odb.put_object("channel_rest", "bench.memory.probe", {"url_path": "/bench/memory/probe", "service":
                       "bench.memory.probe", "methods": ["POST"], "data_format": "json", "security": None})
    finally:
        odb.close()

    runtime = base_dir / "work" / "server.json"
    log = base_dir / "logs" / "console.log"
    # as `zato start` runs it: python -m zato.server.main DIR
    process = ExternalProcess([PYTHON, "-m", "zato.server.main", str(base_dir), "--fg"], name="the Zato server",
                              output=log, cwd=base_dir, env=env).start()

    def answering() -> Target | None:
        try:
            info = json.loads(runtime.read_text())
            if info["pid"] == process.pid:
                address = info["address"]
                target = Target("zato", process, f"{address}/demo/hello", f"{address}/demo/hello-async",
                                f"{address}/bench/memory/probe", log)
                target.probe()
                return target
        except (OSError, ValueError, KeyError):
            pass
        return None

    try:
        return process.wait_until(answering, timeout, interval=0.1)
    except ProcessExited:
        raise BenchError(f"the Zato server exited with {process.returncode}; see {log} and {base_dir / 'logs'}") from None
    except TimeoutError:
        raise BenchError(f"the Zato server did not answer within {timeout:.0f} s; see {log}") from None


def start_baseline(work_dir: Path, env: dict[str, str], timeout: float) -> Target:
    port = rest.free_port()
    address = f"http://127.0.0.1:{port}"
    log = work_dir / "hypercorn.log"
    process = ExternalProcess([HYPERCORN, "-k", "trio", "-w", "1", "--bind", f"127.0.0.1:{port}",
                               f"{rest.BASELINE_APP}:app"], name="hypercorn", output=log, cwd=HERE,
                              env=env).start()
    target = Target("baseline", process, f"{address}/sync", f"{address}/async", f"{address}/__probe__", log)

    def answering() -> Target | None:
        try:
            target.probe()
            return target
        except OSError:
            return None

    try:
        return process.wait_until(answering, timeout, interval=0.1)
    except ProcessExited:
        raise BenchError(f"hypercorn exited with {process.returncode}; see {log}") from None
    except TimeoutError:
        raise BenchError(f"hypercorn did not answer within {timeout:.0f} s; see {log}") from None


def load(target: Target, wrk: str, script: Path, seconds: float, connections: int) -> None:
    """ Half the round's seconds on the sync service, half on the async one. """
    for url in (target.sync_url, target.async_url):
        result = rest.run_wrk(wrk, url, script, connections=connections, duration=seconds / 2)
        target.requests += result["requests"]
        target.errors += result["errors"]
    time.sleep(SETTLE_SECONDS)


# ################################################################################################
# Reading the curves


def slope_per_100k(samples: list[dict[str, Any]], key: str) -> float | None:
    """ Least-squares growth of `key` per 100k requests over these samples. """
    if len(samples) < 2:
        return None
    xs = [s["requests"] / 1e5 for s in samples]
    ys = [s[key] for s in samples]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / var if var else None


def halves(samples: list[dict[str, Any]]) -> tuple[list, list]:
    loaded = [s for s in samples if s["round"] >= 1]
    middle = len(loaded) // 2
    return loaded[:middle + 1], loaded[middle:]


def summarize(target: Target) -> dict[str, Any]:
    samples = target.samples
    first, second = halves(samples)
    start, after_1, last = samples[0], samples[1] if len(samples) > 1 else samples[0], samples[-1]
    summary = {"requests": target.requests, "errors": target.errors,
               "rss_start_mb": start["rss_mb"], "rss_round_1_mb": after_1["rss_mb"], "rss_end_mb": last["rss_mb"],
               "rss_max_mb": max(s["rss_mb"] for s in samples)}
    for key in ("rss_mb", "allocated_blocks", "gc_objects"):
        summary[f"{key}_per_100k_first_half"] = slope_per_100k(first, key)
        summary[f"{key}_per_100k_second_half"] = slope_per_100k(second, key)
    return summary


def type_growth(before: dict[str, Any], after: dict[str, Any], top: int = 10) -> list[tuple[str, int, int]]:
    names = set(before["types"]) | set(after["types"])
    grown = [(name, after["types"].get(name, 0) - before["types"].get(name, 0), after["types"].get(name, 0))
             for name in names]
    return sorted((g for g in grown if g[1] > 0), key=lambda g: -g[1])[:top]


def print_curves(zato: Target, baseline: Target) -> None:
    print(f"\n{'':>5} | {'Zato worker (demo.hello sync + async)':^58} | {'bare hypercorn-trio (same JSON)':^58} | ratio")
    head = f"{'reqs':>9} {'RSS MB':>7} {'delta':>6} {'blocks':>8} {'delta':>7} {'thr':>4} {'malloc':>7}"
    print(f"{'round':>5} | {head} | {head} | {'RSS':>5}")
    previous: dict[str, Any] = {}
    for z, b in zip(zato.samples, baseline.samples):
        cells = []
        for s in (z, b):
            prev = previous.get(s["pid"])
            d_rss = f"{s['rss_mb'] - prev['rss_mb']:+6.1f}" if prev else f"{'':>6}"
            d_blocks = f"{s['allocated_blocks'] - prev['allocated_blocks']:+7d}" if prev else f"{'':>7}"
            malloc = f"{s['malloc']['in_use_mb']:7.1f}" if s.get("malloc") else f"{'-':>7}"
            cells.append(f"{s['requests']:>9} {s['rss_mb']:7.1f} {d_rss} {s['allocated_blocks']:>8} {d_blocks} "
                         f"{s['os_threads']:>4} {malloc}")
            previous[s["pid"]] = s
        print(f"{z['round']:>5} | {cells[0]} | {cells[1]} | {z['rss_mb'] / b['rss_mb']:5.2f}")
    print("  (RSS: VmRSS of the process that answered the probe; blocks: sys.getallocatedblocks() after "
          "gc.collect(); thr: OS threads; malloc: glibc malloc in use, MB, outside pymalloc's arenas)")


def print_summary(zato: Target, baseline: Target, results: dict[str, Any]) -> None:
    def fmt(value: float | None, digits: int = 2) -> str:
        return "-" if value is None else f"{value:+.{digits}f}"

    print("\nGrowth per 100k requests (least squares), first half of the rounds | second half:")
    for name in ("zato", "baseline"):
        s = results[name]
        print(f"  {name:<9} RSS {fmt(s['rss_mb_per_100k_first_half'])} | {fmt(s['rss_mb_per_100k_second_half'])} MB"
              f"   allocated blocks {fmt(s['allocated_blocks_per_100k_first_half'], 0)} | "
              f"{fmt(s['allocated_blocks_per_100k_second_half'], 0)}"
              f"   gc objects {fmt(s['gc_objects_per_100k_first_half'], 0)} | "
              f"{fmt(s['gc_objects_per_100k_second_half'], 0)}")
        print(f"  {'':<9} RSS start {s['rss_start_mb']:.1f}, after round 1 {s['rss_round_1_mb']:.1f}, end "
              f"{s['rss_end_mb']:.1f} MB; {s['requests']} requests, {s['errors']} errors")
    z, b = results["zato"], results["baseline"]
    print(f"  ratio zato/baseline: RSS at the end {z['rss_end_mb'] / b['rss_end_mb']:.2f}x; RSS growth after "
          f"round 1 {z['rss_end_mb'] - z['rss_round_1_mb']:+.1f} vs {b['rss_end_mb'] - b['rss_round_1_mb']:+.1f} MB")
    for target in (zato, baseline):
        if len(target.samples) > 3:
            before, after = target.samples[2], target.samples[-1]
            grown = type_growth(before, after)
            print(f"\n{target.name}: object types whose count grew from round 2 to round {after['round']} "
                  f"(tracked by gc, after a collection):")
            for name, diff, total in grown or [("(none)", 0, 0)]:
                print(f"  {diff:+8d}  {name} (now {total})")
            kb, ka = target.samples[1]["rss_by_kind_mb"], after["rss_by_kind_mb"]
            print(f"  RSS by kind of mapping, round 1 -> round {after['round']} (MB): "
                  + ", ".join(f"{kind} {kb[kind]:.1f} -> {ka[kind]:.1f} ({ka[kind] - kb[kind]:+.1f})" for kind in ka))
            if before.get("pymalloc") and after.get("pymalloc"):
                pb, pa = before["pymalloc"], after["pymalloc"]
                print(f"  pymalloc: arenas {pb.get('arenas')} -> {pa.get('arenas')}, bytes in allocated blocks "
                      f"{pb.get('allocated_blocks_bytes', 0) / 1e6:.2f} -> {pa.get('allocated_blocks_bytes', 0) / 1e6:.2f} MB, "
                      f"free in pools {pb.get('available_blocks_bytes', 0) / 1e6:.2f} -> "
                      f"{pa.get('available_blocks_bytes', 0) / 1e6:.2f} MB")
            if before.get("malloc") and after.get("malloc"):
                mb, ma = before["malloc"], after["malloc"]
                print(f"  glibc malloc: in use {mb['in_use_mb']:.1f} -> {ma['in_use_mb']:.1f} MB, held free "
                      f"{mb['free_mb']:.1f} -> {ma['free_mb']:.1f} MB")


def tracemalloc_growth(before: Path, after: Path, top: int, frames: int) -> list[dict[str, Any]]:
    filters = [tracemalloc.Filter(False, pattern) for pattern in ("*tracemalloc.py", "*probe.py", "<unknown>")]
    old = tracemalloc.Snapshot.load(str(before)).filter_traces(filters)
    new = tracemalloc.Snapshot.load(str(after)).filter_traces(filters)
    found = []
    for stat in new.compare_to(old, "traceback")[:top]:
        found.append({"size_diff_kb": round(stat.size_diff / 1024, 1), "count_diff": stat.count_diff,
                      "size_kb": round(stat.size / 1024, 1),
                      "traceback": [f"{frame.filename}:{frame.lineno}" for frame in stat.traceback][-frames:]})
    return found


def print_tracemalloc(name: str, growth: list[dict[str, Any]], rounds: tuple[int, int]) -> None:
    print(f"\n{name}: allocations that changed most (by size, either way) from round {rounds[0]} to round {rounds[1]}, by traceback "
          f"(most recent call last):")
    for item in growth:
        print(f"  {item['size_diff_kb']:+9.1f} KiB {item['count_diff']:+7d} blocks (now {item['size_kb']:.1f} KiB)")
        for frame in item["traceback"]:
            print(f"        {frame}")


# ################################################################################################


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="load rounds (default 20)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="seconds of load per round and server, half sync, half async (default 10)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    parser.add_argument("--tracemalloc", type=int, nargs="?", const=25, default=0, metavar="FRAMES",
                        help="run both servers under PYTHONTRACEMALLOC=FRAMES (default 25) and print the top growth "
                             "by traceback from round 2 to the last round")
    parser.add_argument("--top", type=int, default=12, help="tracebacks to print with --tracemalloc (default 12)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for both servers (e.g. MALLOC_ARENA_MAX=2); repeatable")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="settings",
                        help="a server.conf value of the Zato server (e.g. main.gc_threshold=700); repeatable")
    parser.add_argument("--no-install-wrk", action="store_true", help="do not apt-get install wrk if missing")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"JSON results (default {DEFAULT_OUTPUT})")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (server dirs, logs, snapshots)")
    args = parser.parse_args(argv)
    if args.rounds < 3:
        parser.error("--rounds must be 3 or more (the growth is read from round 2 on)")
    for item in args.env + args.settings:
        if "=" not in item:
            parser.error(f"{item!r} is not NAME=VALUE")
    for item in args.settings:
        if "." not in item.partition("=")[0]:
            parser.error(f"--set {item!r}: write SECTION.KEY=VALUE, e.g. main.gc_threshold=700")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the servers
    work_dir = Path(tempfile.mkdtemp(prefix="zato-bench-memory-"))
    targets: list[Target] = []
    try:
        wrk = rest.ensure_wrk(not args.no_install_wrk)
        script = rest.write_wrk_script(work_dir / "post.lua", None)
        env = {**os.environ, **dict(item.split("=", 1) for item in args.env)}
        env.pop("PYTHONTRACEMALLOC", None)
        if args.tracemalloc:
            env["PYTHONTRACEMALLOC"] = str(args.tracemalloc)
        print(f"memory benchmark: {args.rounds} round(s) x {args.seconds:.0f} s per server ({args.seconds / 2:.0f} s "
              f"sync + {args.seconds / 2:.0f} s async), wrk -c{args.connections}; about "
              f"{2 * args.rounds * args.seconds / 60:.1f} min of load"
              + (f"; tracemalloc {args.tracemalloc} frames" if args.tracemalloc else "")
              + (f"; env {' '.join(args.env)}" if args.env else "")
              + (f"; server.conf {' '.join(args.settings)}" if args.settings else ""), flush=True)
        timeout = START_TIMEOUT * (4 if args.tracemalloc else 1)
        zato = start_zato(work_dir / "zato", env, args.settings, timeout)
        targets.append(zato)
        baseline = start_baseline(work_dir, env, timeout)
        targets.append(baseline)
        snapshots = {t.name: (work_dir / f"{t.name}-round-2.tracemalloc", work_dir / f"{t.name}-last.tracemalloc")
                     for t in targets}
        for target in targets:
            target.sample(0)
        for round_no in range(1, args.rounds + 1):
            snapshot = 0 if round_no == 2 else 1 if round_no == args.rounds else None
            line = []
            for target in targets:  # interleaved: zato, baseline, zato, ...
                load(target, wrk, script, args.seconds, args.connections)
                path = snapshots[target.name][snapshot] if args.tracemalloc and snapshot is not None else None
                sample = target.sample(round_no, path)
                line.append(f"{target.name} {sample['requests']:>8} reqs RSS {sample['rss_mb']:6.1f} MB blocks "
                            f"{sample['allocated_blocks']:>7}" + (f" ({target.errors} errors)" if target.errors else ""))
            print(f"  round {round_no:>3}: " + " | ".join(line), flush=True)

        results = {"zato": summarize(zato), "baseline": summarize(baseline)}
        print("\n" + "=" * 130)
        print_curves(zato, baseline)
        print_summary(zato, baseline, results)
        growth: dict[str, Any] = {}
        if args.tracemalloc:
            for target in targets:
                growth[target.name] = tracemalloc_growth(*snapshots[target.name], args.top, 12)
                print_tracemalloc(target.name, growth[target.name], (2, args.rounds))
        rest.write_results(args.output, {
            "benchmark": "memory", "when": datetime.now(timezone.utc).isoformat(), "machine": {
                "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                "load_average": os.getloadavg()},
            "settings": {"rounds": args.rounds, "seconds": args.seconds, "connections": args.connections,
                         "tracemalloc": args.tracemalloc, "env": args.env, "server_conf": args.settings},
            "summary": results, "tracemalloc_growth": growth,
            "samples": {t.name: [{k: v for k, v in s.items() if k != "types"} for s in t.samples] for t in targets},
        })
        print(f"\nwritten to {args.output}")
        if args.keep:
            print(f"kept {work_dir}")
        return 0
    except BenchError as exc:
        print(f"error: {exc} (kept {work_dir})", file=sys.stderr)
        args.keep = True  # the logs the message points to
        return 1
    finally:
        for target in reversed(targets):
            target.stop()
        if not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
