""" Scheduler benchmark: N active interval-based jobs (1,000 and 10,000 by default) firing at a
steady rate, beside baselines measured in the same run and the same process:

* **bare loops** - N trio tasks, each `await trio.sleep_until(due)` then recording how late it
  woke, on the same staggered due times: what waiting alone costs on trio;
* **invoke loops** - the same loops, each calling the same service through
  `server.invoke_service(...)` as the scheduler does: what running the service costs;
* **scheduler** - N jobs in the configuration database, claimed one firing at a time (or many,
  when they come together) in a database transaction, each run started in the server's
  background nursery.

For each: firing lateness (from the due time to the service starting: p50, p99, max) and CPU
time per firing (the whole process: trio, the server, the scheduler's database work in its
threads), and the ratios to the bare loops.

    .venv/bin/python bench/scheduler/run.py [--jobs 1000,10000] [--rate 500] [--duration 20]
                                             [--database sqlite|URL] [--quick]

Results are printed and written to bench/results/scheduler.json. See bench/scheduler/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import trio

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = REPO / "bench" / "results" / "scheduler.json"
UTC = timezone.utc
KINDS = ("bare", "invoke", "scheduler")

SERVICE = '''
import time
from zato.server.service import Service


class Tick(Service):
    """ Records when it started and when it was due. """
    name = "bench.tick"

    async def handle(self):
        due = self.request.scheduler_job.due_time
        self.server.plugin_state["bench.samples"].append((time.time(), due.timestamp()))
'''


class BenchError(Exception):
    pass


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summarize(samples: list[tuple[float, float]], window: tuple[float, float], cpu_seconds: float) -> dict[str, Any]:
    """ Lateness (ms) of the firings due inside the window, and CPU time per firing (µs). """
    late = [(started - due) * 1000 for started, due in samples if window[0] <= due < window[1]]
    if not late:
        raise BenchError("no firing was measured in the window")
    return {"firings": len(late), "lateness_ms": {"p50": percentile(late, 0.5), "p99": percentile(late, 0.99),
                                                  "max": max(late), "mean": statistics.fmean(late)},
            "cpu_us_per_firing": cpu_seconds / len(late) * 1e6, "cpu_seconds": cpu_seconds}


def wall_to_trio(wall: float) -> float:
    return trio.current_time() + (wall - time.time())


async def measure_loops(jobs: int, interval: float, warmup: float, duration: float, invoke: Any = None,
                        samples: list[tuple[float, float]] | None = None) -> dict[str, Any]:
    """ `jobs` tasks sleeping until staggered due times, `interval` apart each, recording how late
    they woke in `samples` (or calling `invoke`, whose service records in `samples`). """
    samples = [] if samples is None else samples
    first = time.time() + 1.0
    end = first + warmup + duration
    step = interval / jobs

    async def loop(index: int) -> None:
        due = first + index * step
        while due < end:
            await trio.sleep_until(wall_to_trio(due))
            if invoke is None:
                samples.append((time.time(), due))
            else:
                await invoke(due)
            due += interval

    window = (first + warmup, first + warmup + duration)
    async with trio.open_nursery() as nursery:
        for index in range(jobs):
            nursery.start_soon(loop, index)
        await trio.sleep_until(wall_to_trio(window[0]))
        cpu = time.process_time()
        await trio.sleep_until(wall_to_trio(window[1]))
        cpu = time.process_time() - cpu
    return summarize(samples, window, cpu)


def make_server(base: Path, jobs: int, interval: int, first_due: datetime, database: str) -> None:
    from zato.cli.quickstart import create_server_dir
    from zato.odb import ODB, Change, sqlite_url
    from zato.testing import set_config_value
    create_server_dir(base, port=0, admin_password="bench-scheduler-password")
    # Plugins with periodic work of their own are off, so the process's CPU is the scheduler's.
    for name in ("hot_deploy", "user_config", "pubsub", "rate_limit", "metrics"):
        set_config_value(base, "plugins", name, False)
    set_config_value(base, "scheduler", "lease_seconds", 30)
    set_config_value(base, "scheduler", "poll_seconds", 1)
    url = sqlite_url(base / "work" / "zato.db") if database == "sqlite" else database
    if database != "sqlite":
        set_config_value(base, "odb", "url", database)
    (base / "pickup" / "bench_tick.py").write_text(SERVICE)
    step = timedelta(seconds=interval) / jobs
    odb = ODB(url)
    odb.upgrade()
    odb.apply(Change("delete", "scheduler", name) for name in
              [obj["name"] for obj in odb.list_objects("scheduler", active_only=False)])
    odb.apply(Change("create", "scheduler", f"bench.job.{index:05d}", {
        "job_type": "interval_based", "service": "bench.tick", "seconds": interval,
        "start_date": (first_due + index * step).isoformat()}) for index in range(jobs))
    odb.close()


async def run_size(jobs: int, rate: float, duration: float, database: str, work_dir: Path) -> dict[str, Any]:
    from zato.builtin.scheduler import scheduler_of
    from zato.config import Bunch
    from zato.testing import run_server

    interval = max(1, round(jobs / rate))
    warmup = float(interval)  # every job fired once before measuring
    loops_time = 2 * (1.0 + warmup + duration)
    start_allowance = 5.0 + jobs / 2000
    first_due = datetime.now(UTC) + timedelta(seconds=start_allowance + loops_time + 1.0)
    base = work_dir / f"server-{jobs}"
    started = time.perf_counter()
    make_server(base, jobs, interval, first_due, database)
    print(f"  {jobs} jobs every {interval} s ({jobs / interval:.0f} firings/s) written in "
          f"{time.perf_counter() - started:.1f} s", flush=True)

    async with run_server(base) as server:
        samples = server.plugin_state["bench.samples"] = []
        if time.time() + loops_time > first_due.timestamp():
            raise BenchError(f"the server took too long to start ({time.perf_counter() - started:.1f} s); the "
                             f"baselines would overlap the jobs")
        report: dict[str, Any] = {"jobs": jobs, "interval_s": interval, "firings_per_s": jobs / interval}
        report["bare"] = await measure_loops(jobs, interval, warmup, duration)
        print(f"  bare loops measured", flush=True)

        async def invoke(due: float) -> None:
            job = Bunch(name="bench", id=0, job_type="interval_based", kind="scheduled", missed=0, cid="",
                        due_time=datetime.fromtimestamp(due, UTC))
            await server.invoke_service("bench.tick", None, channel="scheduler", attributes={"scheduler_job": job})

        report["invoke"] = await measure_loops(jobs, interval, warmup, duration, invoke, samples)
        samples.clear()
        print(f"  invoke loops measured", flush=True)

        scheduler = scheduler_of(server)
        window = (first_due.timestamp() + warmup, first_due.timestamp() + warmup + duration)
        await trio.sleep_until(wall_to_trio(window[0]))
        cpu, before = time.process_time(), dict(scheduler.counters)
        await trio.sleep_until(wall_to_trio(window[1]))
        cpu, after = time.process_time() - cpu, dict(scheduler.counters)
        await trio.sleep(0.5)  # the last firings of the window finish
        report["scheduler"] = summarize(samples, window, cpu)
        claims = after["claims"] - before["claims"]
        report["scheduler"]["claims"] = claims
        report["scheduler"]["firings_per_claim"] = (after["firings"] - before["firings"]) / claims if claims else None
        report["scheduler"]["stale_claims"] = after["stale_claims"] - before["stale_claims"]
        report["scheduler"]["failed_runs"] = after["runs_failed"] - before["runs_failed"]
        print(f"  scheduler measured", flush=True)
    bare = report["bare"]
    report["ratios"] = {kind: {"lateness_p50": report[kind]["lateness_ms"]["p50"] / max(bare["lateness_ms"]["p50"],
                                                                                        1e-6),
                               "lateness_p99": report[kind]["lateness_ms"]["p99"] / max(bare["lateness_ms"]["p99"],
                                                                                        1e-6),
                               "cpu_per_firing": report[kind]["cpu_us_per_firing"] / bare["cpu_us_per_firing"]}
                        for kind in ("invoke", "scheduler")}
    return report


def print_report(report: dict[str, Any]) -> None:
    print(f"\n== {report['jobs']} jobs, every {report['interval_s']} s: {report['firings_per_s']:.0f} firings/s ==")
    print(f"   {'':12} {'firings':>8} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} {'CPU µs/firing':>14}   "
          f"{'p50 x':>7} {'p99 x':>7} {'CPU x':>7}")
    for kind in KINDS:
        row = report[kind]
        late = row["lateness_ms"]
        ratios = report["ratios"].get(kind)
        ratio_text = f"{ratios['lateness_p50']:6.1f}x {ratios['lateness_p99']:6.1f}x {ratios['cpu_per_firing']:6.1f}x" \
            if ratios else f"{'1.0x':>7} {'1.0x':>7} {'1.0x':>7}"
        print(f"   {kind:12} {row['firings']:8d} {late['p50']:9.2f} {late['p99']:9.2f} {late['max']:9.2f} "
              f"{row['cpu_us_per_firing']:14.1f}   {ratio_text}")
    scheduler = report["scheduler"]
    print(f"   scheduler: {scheduler['claims']} claim transactions "
          f"({scheduler['firings_per_claim'] or 0:.2f} firings each), {scheduler['stale_claims']} stale, "
          f"{scheduler['failed_runs']} failed runs")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    work_dir = Path(tempfile.mkdtemp(prefix="zato-bench-scheduler-"))
    try:
        reports = []
        for jobs in args.jobs:
            print(f"\nmeasuring {jobs} jobs ...", flush=True)
            reports.append(await run_size(jobs, args.rate, args.duration, args.database, work_dir))
        return {"reports": reports}
    finally:
        if not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            print(f"kept {work_dir}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", default="1000,10000", help="numbers of jobs, comma-separated (default: 1000,10000)")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="firings per second; each job's interval is jobs / rate seconds (default: 500)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds measured for each kind (default: 20)")
    parser.add_argument("--database", default="sqlite",
                        help="sqlite (work/zato.db, the default) or a PostgreSQL URL (postgresql+psycopg://...)")
    parser.add_argument("--quick", action="store_true", help="--duration 5")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--keep", action="store_true", help="keep the server directories")
    args = parser.parse_args(argv)
    args.jobs = [int(item) for item in args.jobs.split(",") if item.strip()]
    if args.quick:
        args.duration = 5.0
    import logging
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    load_start = os.getloadavg()[0]
    print(f"scheduler benchmark: jobs {args.jobs}, {args.rate:g} firings/s, {args.duration:g} s measured per kind, "
          f"database {args.database.split('@')[-1]}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load average {load_start:.2f}")
    failure: list[BaseException] = []
    try:
        results = trio.run(main_async, args)
    except* BenchError as group:
        failure.extend(group.exceptions)
    if failure:
        print(f"error: {failure[0]}", file=sys.stderr)
        return 1
    load_end = os.getloadavg()[0]
    print("\n" + "=" * 100)
    print(f"Results (lateness = service start - due time; CPU = process CPU time in the window / firings; "
          f"ratios to the bare loops; load average {load_start:.2f} at start, {load_end:.2f} at end)")
    for report in results["reports"]:
        print_report(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    results.update({"benchmark": "scheduler", "created": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "python": platform.python_version(),
                                "load_average_1min": {"start": load_start, "end": load_end}},
                    "settings": {"rate": args.rate, "duration_s": args.duration,
                                 "database": "sqlite" if args.database == "sqlite" else "postgresql"}})
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
