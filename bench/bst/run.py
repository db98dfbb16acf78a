""" Business state transitions per second, on SQLite, beside a baseline measured in the same run.

    .venv/bin/python bench/bst/run.py [--objects 250] [--rest-objects 100] [--clients 8] [--rounds 5]

One server as a real process (`zato.testing.ServerProcess`, a quickstart directory, one worker,
its configuration database work/zato.db on SQLite), the Orders definition created through the
admin API, a REST channel /bst/transition on `zato.bst.transition` without a security definition
(so that what is measured is the transition, not a password hash per request) and a service
`bench.bst.many` from pickup/. Each object goes through four transitions: no state -> New (an
INSERT of its state), then Submitted, Ready and Sent (compare-and-set UPDATEs), each with its
history row in the same transaction.

* **baseline**: raw `sqlite3` in this process on a file in the same directory as the server's
  database, with the server's pragmas (WAL, busy_timeout; synchronous left at SQLite's default):
  per transition BEGIN, the INSERT or `UPDATE ... WHERE version = ?`, the INSERT of the history row,
  COMMIT.
* **transition_to**: many transitions inside one service invocation: `bench.bst.many`, a plain
  `def handle`, does `with transition_to(self, 'Order', id, state): pass` for every object and
  state, timing itself (one admin invoke per round; the time is the service's own).
* **rest, 1 client**: one HTTP POST to /bst/transition per transition, sequential, keep-alive.
* **rest, N clients**: the same from `--clients` threads at once, each with objects of its own.
* **rest echo, 1 client**: for reference, the same POSTs to a channel whose service (`async def`)
  only answers `{"can_transition": true}`: what a REST call costs this server without BST.

The modes run interleaved, every round each once, `--rounds` times; medians are reported, with
each one's ratio to the baseline's. JSON goes to bench/results/bst.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import httpx

from zato.plugin_api import ServerProcess, admin_auth, create_test_server_dir

REPO = Path(__file__).resolve().parents[2]
STATES = ("New", "Submitted", "Ready", "Sent")
ORDERS = """\
Orders
------
Objects: Order
New: Submitted
Submitted: Ready
Ready: Sent
Sent: Confirmed
Force stop: Canceled
"""
SERVICE = '''
import time

from zato.server.service import Service
from zato_bst import transition_to

STATES = ("New", "Submitted", "Ready", "Sent")


class Many(Service):
    name = "bench.bst.many"

    def handle(self):
        prefix, count = self.request.payload["prefix"], self.request.payload["count"]
        started = time.perf_counter()
        for state in STATES:
            for index in range(count):
                with transition_to(self, "Order", f"{prefix}-{index}", state):
                    pass
        self.response.payload = {"seconds": time.perf_counter() - started, "transitions": count * len(STATES)}


class Echo(Service):
    name = "bench.bst.echo"

    async def handle(self):
        self.response.payload = {"can_transition": True}
'''


# ################################################################################################
# The baseline: the same writes in raw sqlite3


def baseline_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("CREATE TABLE IF NOT EXISTS state (object_type TEXT, object_id TEXT, def_name TEXT, def_version "
                 "INTEGER, state TEXT, updated TIMESTAMP, version INTEGER, PRIMARY KEY (object_type, object_id))")
    conn.execute("CREATE TABLE IF NOT EXISTS history (id INTEGER PRIMARY KEY AUTOINCREMENT, object_type TEXT, "
                 "object_id TEXT, def_name TEXT, def_version INTEGER, state_old TEXT, state_new TEXT, forced BOOLEAN, "
                 "time TIMESTAMP, user_ctx TEXT, cid TEXT, server_name TEXT, server_pid INTEGER)")
    conn.execute("CREATE INDEX IF NOT EXISTS ix_history ON history (object_type, object_id, id)")
    return conn


def baseline_round(conn: sqlite3.Connection, prefix: str, count: int) -> tuple[float, int]:
    started = time.perf_counter()
    for number, state in enumerate(STATES):
        for index in range(count):
            object_id, now = f"{prefix}-{index}", time.strftime("%Y-%m-%d %H:%M:%S")
            conn.execute("BEGIN")
            if number == 0:
                conn.execute("INSERT INTO state VALUES ('order', ?, 'Orders', 1, ?, ?, 1)", (object_id, state, now))
            else:
                done = conn.execute("UPDATE state SET state = ?, updated = ?, version = version + 1 WHERE "
                                    "object_type = 'order' AND object_id = ? AND version = ?",
                                    (state, now, object_id, number))
                assert done.rowcount == 1
            conn.execute("INSERT INTO history (object_type, object_id, def_name, def_version, state_old, state_new, "
                         "forced, time, user_ctx, cid, server_name, server_pid) VALUES ('order', ?, 'Orders', 1, ?, ?, "
                         "0, ?, NULL, 'cid', 'bench', 1)",
                         (object_id, STATES[number - 1] if number else None, state, now))
            conn.execute("COMMIT")
    return time.perf_counter() - started, count * len(STATES)


# ################################################################################################
# The server


def rest_round(address: str, prefix: str, count: int, clients: int, path: str = "/bst/transition") -> tuple[float, int]:
    errors: list[str] = []

    def client(number: int) -> None:
        with httpx.Client(base_url=address, timeout=60) as http:
            for state in STATES:
                for index in range(count):
                    reply = http.post(path, json={"object_type": "Order",
                                                               "object_id": f"{prefix}-{number}-{index}",
                                                               "state_new": state})
                    if reply.status_code != 200 or not reply.json()["can_transition"]:
                        errors.append(reply.text)
                        return

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"a REST transition failed: {errors[0]}")
    return elapsed, count * len(STATES) * clients


def service_round(admin: httpx.Client, prefix: str, count: int) -> tuple[float, int]:
    reply = admin.post("/zato/api/invoke/bench.bst.many", json={"prefix": prefix, "count": count})
    if reply.status_code != 200:
        raise SystemExit(f"bench.bst.many failed: {reply.status_code} {reply.text}")
    return reply.json()["seconds"], reply.json()["transitions"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=250, help="objects per round (baseline, transition_to)")
    parser.add_argument("--rest-objects", type=int, default=100, help="objects per round and REST client")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "bst.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base_dir = create_test_server_dir(Path(tmp) / "server", main={"graceful_timeout": 2},
                                          plugins={"enclog": False})
        (base_dir / "pickup" / "bench_bst.py").write_text(textwrap.dedent(SERVICE))
        server = ServerProcess(base_dir).start()
        try:
            admin = httpx.Client(base_url=server.address, auth=admin_auth(), timeout=120)
            for path, body in (("/zato/api/objects/bst_definition", {"name": "Orders", "text": ORDERS}),
                               ("/zato/api/objects/channel_rest", {"name": "bst.transition", "url_path": "/bst/transition",
                                                                   "service": "zato.bst.transition"}),
                               ("/zato/api/objects/channel_rest", {"name": "bench.echo", "url_path": "/bench/echo",
                                                                   "service": "bench.bst.echo"})):
                reply = admin.post(path, json=body)
                assert reply.status_code == 201, reply.text
            for _ in range(100):  # the service from pickup and the definition in place
                if admin.post("/zato/api/invoke/bench.bst.many", json={"prefix": "warm", "count": 1}).status_code == 200:
                    break
                time.sleep(0.1)
            database = base_dir / "work" / "zato.db"
            assert database.exists(), database
            conn = baseline_connection(database.parent / "bench-baseline.db")
            baseline_round(conn, "warm", 20)
            rest_round(server.address, "warm", 5, 1)

            modes = ("baseline", "transition_to", "rest_1_client", f"rest_{args.clients}_clients", "rest_echo_1_client")
            rounds: dict[str, list[float]] = {mode: [] for mode in modes}
            for number in range(args.rounds):
                prefix = f"r{number}"
                runs = {
                    "baseline": lambda: baseline_round(conn, prefix, args.objects),
                    "transition_to": lambda: service_round(admin, prefix, args.objects),
                    "rest_1_client": lambda: rest_round(server.address, prefix + "s", args.rest_objects, 1),
                    f"rest_{args.clients}_clients": lambda: rest_round(server.address, prefix + "c",
                                                                      args.rest_objects, args.clients),
                    "rest_echo_1_client": lambda: rest_round(server.address, prefix + "e", args.rest_objects, 1,
                                                             "/bench/echo"),
                }
                for mode in modes:
                    seconds, transitions = runs[mode]()
                    rounds[mode].append(transitions / seconds)
                    print(f"round {number + 1}: {mode:>16} {transitions / seconds:10,.0f} transitions/s", flush=True)
            conn.close()
            admin.close()
        finally:
            server.stop()

    median = {mode: statistics.median(values) for mode, values in rounds.items()}
    report = {
        "what": "BST transitions per second on SQLite: transition_to (many in one service invocation), the REST "
                "API (HTTP POST to a channel), and raw sqlite3 doing the same INSERT/UPDATE + history INSERT per "
                "transaction on a file beside the server's database",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "objects": args.objects, "rest_objects": args.rest_objects, "clients": args.clients, "rounds": args.rounds,
        "transitions_per_object": len(STATES),
        "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "machine": platform.machine(),
        "transitions_per_second_median": median, "transitions_per_second_rounds": rounds,
        "ratio_to_baseline": {mode: median[mode] / median["baseline"] for mode in modes},
        "ratio_rest_to_rest_echo": median["rest_1_client"] / median["rest_echo_1_client"],
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print()
    print("| mode | transitions/s (median) | vs baseline |")
    print("|---|---:|---:|")
    for mode in modes:
        print(f"| {mode} | {median[mode]:,.0f} | {report['ratio_to_baseline'][mode]:.2f}x |")
    print(f"\n-> {out}")


if __name__ == "__main__":
    main()
