""" Pub/sub benchmark: durable publish-and-deliver to a service, end to end, beside the raw
database it stores messages in, measured in the same run.

    .venv/bin/python bench/pubsub/run.py [--rounds N] [--messages N] [--batch-messages N]

A real server process (one worker, SQLite in WAL mode with synchronous=FULL) runs two services:
`bench.pubsub.publish` publishes messages to the service `bench.pubsub.sink` in a loop - one
message per `self.pubsub.publish` call, or 100 per call (`data_list`) - and the sink records,
for each message, the time from just before its publish call to the start of its delivery.
Throughput is messages / (last delivery - first publish call); latency is publish-to-delivery,
p50 and p99, under that load (the publisher does not wait for deliveries).

The baseline is what the same disk does with plain sqlite3 (WAL, synchronous=FULL) and the same
rows: each row inserted in its own transaction then deleted in its own transaction ("raw, one
per transaction"), and the same with 100 rows per transaction ("raw, batched"). Goal: end-to-end
durable throughput at 0.5x or better of the raw one-per-transaction baseline.

Two more rounds measure latency without a backlog: the publisher waits until the messages of a
call were delivered before it makes the next call ("one at a time").

Rounds are interleaved (raw single, e2e single, raw batched, e2e batched, one at a time...) after
a warm-up.
The idle cost of polling for messages published by other processes is measured as the CPU time
of an idle server with pub/sub on, beside one with pub/sub switched off. Results go to
bench/results/pubsub.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import textwrap
import time
import urllib.request
from base64 import b64encode
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = REPO / "bench" / "results" / "pubsub.json"
GOAL = 0.5
BATCH = 100

SERVICES = '''
import threading, time
from zato.server.service import Service

_lock = threading.Condition()
_runs = {}  # run id -> {"latencies": [...], "first": t, "last": t}


class Publish(Service):
    name = "bench.pubsub.publish"

    def handle(self):
        request = self.request.payload
        run, count, per_call = request["run"], request["count"], request["per_call"]
        started = time.time()
        with _lock:
            _runs[run] = {"latencies": [], "first": started, "last": None}
        for start in range(0, count, per_call):
            now = time.time()
            if per_call == 1:
                self.pubsub.publish("bench.pubsub.sink", data={"run": run, "i": start, "t": now})
            else:
                self.pubsub.publish("bench.pubsub.sink", data_list=[
                    {"data": {"run": run, "i": index, "t": now}} for index in range(start, min(start + per_call, count))])
            if request.get("closed_loop"):  # one publish call in flight at a time: latency without a backlog
                with _lock:
                    _lock.wait_for(lambda: len(_runs[run]["latencies"]) >= min(start + per_call, count), 30)
        self.response.payload = {"publish_seconds": time.time() - started}


class Sink(Service):
    name = "bench.pubsub.sink"

    def handle(self):
        now = time.time()
        data = self.request.raw_request.data
        with _lock:
            run = _runs.get(data["run"])
            if run is not None:
                run["latencies"].append(now - data["t"])
                run["last"] = now
                _lock.notify_all()


class Results(Service):
    name = "bench.pubsub.results"

    def handle(self):
        with _lock:
            run = _runs.get(self.request.payload["run"])
            if not run:
                self.response.payload = {}
            elif self.request.payload.get("full"):
                self.response.payload = dict(run)
            else:  # while polling, only how many arrived: the list grows to every message of the round
                self.response.payload = {"count": len(run["latencies"])}
'''


# ################################################################################################
# The raw baseline


def raw_baseline(path: Path, count: int, per_transaction: int) -> float:
    """ Rows per second: `count` rows inserted then deleted, `per_transaction` per transaction,
    in plain sqlite3 with WAL and synchronous=FULL. """
    if path.exists():
        path.unlink()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE message (id INTEGER PRIMARY KEY, msg_id TEXT UNIQUE, topic_name TEXT, data TEXT, "
                 "priority INTEGER, pub_time REAL)")
    rows = [(f"zpsm{index:024x}", "/zato/s/to/bench_pubsub_sink",
             json.dumps({"run": "raw", "i": index, "t": time.time()}), 5, time.time()) for index in range(count)]
    started = time.perf_counter()
    ids = []
    for start in range(0, count, per_transaction):
        conn.execute("BEGIN")
        for row in rows[start:start + per_transaction]:
            ids.append(conn.execute("INSERT INTO message (msg_id, topic_name, data, priority, pub_time) "
                                    "VALUES (?, ?, ?, ?, ?)", row).lastrowid)
        conn.execute("COMMIT")
    for start in range(0, count, per_transaction):
        conn.execute("BEGIN")
        conn.executemany("DELETE FROM message WHERE id = ?", [(i,) for i in ids[start:start + per_transaction]])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return count / elapsed


# ################################################################################################
# The server


def admin_call(address: str, password: str, service: str, payload: Any, timeout: float = 600) -> Any:
    request = urllib.request.Request(f"{address}/zato/api/invoke/{service}", data=json.dumps(payload).encode(),
                                     method="POST")
    request.add_header("Authorization", "Basic " + b64encode(f"admin:{password}".encode()).decode())
    request.add_header("Content-Type", "application/json")  # the admin API refuses writes without it (415)
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        return json.loads(reply.read())


def start_server(base: Path, pubsub: bool = True) -> Any:
    from zato.testing import ServerProcess, create_test_server_dir, set_config_value
    create_test_server_dir(base, main={"graceful_timeout": 5})
    (base / "pickup" / "bench_pubsub.py").write_text(textwrap.dedent(SERVICES))
    if not pubsub:
        set_config_value(base, "plugins", "pubsub", "False")
    return ServerProcess(base).start(timeout=60)


def end_to_end(server: Any, password: str, run: str, count: int, per_call: int, timeout: float,
               closed_loop: bool = False) -> dict[str, Any]:
    admin_call(server.address, password, "bench.pubsub.publish", {"run": run, "count": count, "per_call": per_call,
                                                                  "closed_loop": closed_loop})
    deadline = time.monotonic() + timeout
    while True:
        result = admin_call(server.address, password, "bench.pubsub.results", {"run": run})
        if result.get("count", 0) >= count:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run}: only {result.get('count', 0)} of {count} messages delivered "
                               f"within {timeout} s; see {server.base_dir}/logs/server.log")
        time.sleep(0.05)
    result = admin_call(server.address, password, "bench.pubsub.results", {"run": run, "full": True})
    latencies = sorted(result["latencies"])
    return {"msgs_per_s": count / (result["last"] - result["first"]),
            "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000}


def allow_deep_backlogs(address: str, password: str) -> None:
    """ The throughput rounds publish faster than a sync service takes messages: the backlog grows
    past the default max_depth_gd (10,000). The limit stays on (it is checked at every publication),
    only higher. """
    request = urllib.request.Request(f"{address}/zato/api/objects/pubsub_topic/%2Fzato%2Fs%2Fto%2Fbench_pubsub_sink",
                                     data=json.dumps({"max_depth_gd": 10_000_000}).encode(), method="PATCH")
    request.add_header("Authorization", "Basic " + b64encode(f"admin:{password}".encode()).decode())
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert json.loads(reply.read())["max_depth_gd"] == 10_000_000


def percentile(values: list[float], pct: float) -> float:
    index = min(int(round(pct / 100 * (len(values) - 1))), len(values) - 1)
    return values[index]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(server: Any, seconds: float) -> float:
    """ CPU milliseconds per second an idle server uses. """
    time.sleep(1.0)
    before = cpu_seconds(server.process.pid)
    time.sleep(seconds)
    return (cpu_seconds(server.process.pid) - before) / seconds * 1000


# ################################################################################################


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=2000, help="messages per one-per-call round")
    parser.add_argument("--batch-messages", type=int, default=20000, help="messages per 100-per-call round")
    parser.add_argument("--latency-messages", type=int, default=300,
                        help="messages of the one-at-a-time latency round (the 100-per-call one has 10x as many)")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)

    from zato.testing import ADMIN_PASSWORD
    tmp = Path(tempfile.mkdtemp(prefix="zato-bench-pubsub-", dir=str(REPO / "bench" / "results")
                                if (REPO / "bench" / "results").is_dir() else None))
    samples: dict[str, list[dict[str, Any]]] = {"raw_single": [], "raw_batch": [], "e2e_single": [], "e2e_batch": [],
                                                "closed_single": [], "closed_batch": []}
    server = start_server(tmp / "server")
    try:
        print(f"server {server.address} (pid {server.process.pid}), database {tmp / 'server' / 'work' / 'zato.db'}")
        end_to_end(server, ADMIN_PASSWORD, "warmup", 200, 1, 120)  # creates the sink's topic and subscription
        allow_deep_backlogs(server.address, ADMIN_PASSWORD)
        end_to_end(server, ADMIN_PASSWORD, "warmup-batch", 1000, BATCH, 120)
        for round_no in range(1, args.rounds + 1):
            samples["raw_single"].append({"msgs_per_s": raw_baseline(tmp / "raw.db", args.messages, 1)})
            samples["e2e_single"].append(end_to_end(server, ADMIN_PASSWORD, f"single-{round_no}", args.messages, 1,
                                                    600))
            samples["raw_batch"].append({"msgs_per_s": raw_baseline(tmp / "raw.db", args.batch_messages, BATCH)})
            samples["e2e_batch"].append(end_to_end(server, ADMIN_PASSWORD, f"batch-{round_no}", args.batch_messages,
                                                   BATCH, 600))
            samples["closed_single"].append(end_to_end(server, ADMIN_PASSWORD, f"closed-single-{round_no}",
                                                       args.latency_messages, 1, 600, closed_loop=True))
            samples["closed_batch"].append(end_to_end(server, ADMIN_PASSWORD, f"closed-batch-{round_no}",
                                                      args.latency_messages * BATCH // 10, BATCH, 600, closed_loop=True))
            print(f"round {round_no}: " + ", ".join(f"{name} {items[-1]['msgs_per_s']:.0f}/s"
                                                     for name, items in samples.items()))
        idle_on = idle_cpu(server, args.idle_seconds)
    finally:
        server.stop()
    idle_server = start_server(tmp / "server-no-pubsub", pubsub=False)
    try:
        idle_off = idle_cpu(idle_server, args.idle_seconds)
    finally:
        idle_server.stop()

    def median(name: str, key: str) -> float:
        return statistics.median(sample[key] for sample in samples[name])

    raw_single = median("raw_single", "msgs_per_s")
    rows = [
        ("raw sqlite3, 1 row per transaction", raw_single, None, None),
        ("raw sqlite3, 100 rows per transaction", median("raw_batch", "msgs_per_s"), None, None),
        ("pub/sub, 1 message per publish", median("e2e_single", "msgs_per_s"), median("e2e_single", "p50_ms"),
         median("e2e_single", "p99_ms")),
        ("pub/sub, 100 messages per publish", median("e2e_batch", "msgs_per_s"), median("e2e_batch", "p50_ms"),
         median("e2e_batch", "p99_ms")),
        ("pub/sub, 1 per publish, one at a time", median("closed_single", "msgs_per_s"),
         median("closed_single", "p50_ms"), median("closed_single", "p99_ms")),
        ("pub/sub, 100 per publish, one at a time", median("closed_batch", "msgs_per_s"),
         median("closed_batch", "p50_ms"), median("closed_batch", "p99_ms")),
    ]
    print()
    print(f"| {'':40} | {'msgs/s':>8} | {'vs raw 1/txn':>12} | {'p50 ms':>7} | {'p99 ms':>7} |")
    print(f"|{'-' * 42}|{'-' * 10}|{'-' * 14}|{'-' * 9}|{'-' * 9}|")
    for title, rate, p50, p99 in rows:
        print(f"| {title:40} | {rate:8.0f} | {rate / raw_single:11.2f}x | "
              f"{'' if p50 is None else f'{p50:7.1f}':>7} | {'' if p99 is None else f'{p99:7.1f}':>7} |")
    print("\nthroughput rows: the publisher does not wait for deliveries, so latency includes the backlog;\n"
          "one-at-a-time rows: the publisher waits until a call's messages are delivered before the next call")
    ratio = median("e2e_single", "msgs_per_s") / raw_single
    per_round = [e2e["msgs_per_s"] / raw["msgs_per_s"] for e2e, raw in zip(samples["e2e_single"], samples["raw_single"])]
    batch_ratio = median("e2e_batch", "msgs_per_s") / raw_single
    print(f"\ngoal: end-to-end 1 message per publish at {GOAL}x or better of raw 1 row per transaction: "
          f"{ratio:.2f}x, {'met' if ratio >= GOAL else 'NOT met'} (per round: "
          f"{', '.join(f'{r:.2f}x' for r in per_round)}); 100 per publish: {batch_ratio:.2f}x")
    print(f"idle CPU: {idle_on:.1f} ms/s with pub/sub polling (every [pubsub] poll_interval = 0.2 s), "
          f"{idle_off:.1f} ms/s with pub/sub switched off")

    result = {"when": datetime.now(timezone.utc).isoformat(), "machine": platform.platform(),
              "cpus": os.cpu_count(), "python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version,
              "rounds": args.rounds, "messages": args.messages, "batch_messages": args.batch_messages,
              "samples": samples, "median": {title: {"msgs_per_s": rate, "p50_ms": p50, "p99_ms": p99}
                                             for title, rate, p50, p99 in rows},
              "ratio_single_vs_raw_single": ratio, "ratio_single_per_round": per_round,
              "ratio_batch_vs_raw_single": batch_ratio, "goal": GOAL,
              "idle_cpu_ms_per_s": {"pubsub_on": idle_on, "pubsub_off": idle_off}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(f"results: {args.output}")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
