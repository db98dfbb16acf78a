""" WebSocket channel benchmark: what a WSX session costs in a server's memory, how fast
invoke-service goes at 1 and at 1,000 connections, and what pings cost in CPU, each beside a bare
hypercorn-trio WebSocket echo (bench/wsx/echo_app.py) measured the same way in the same run.

    .venv/bin/python bench/wsx/run.py [--sessions N] [--connections N] [--seconds S]
                                      [--ping-interval S] [--ping-seconds S] [--rounds N] [--output PATH]

Both servers are real processes: ours a quickstart directory (`zato.testing.ServerProcess`) with
a Basic Auth definition and two `channel_web_socket`s on the service `bench.wsx.echo` (an
`async def` returning its input), one pinging every `--ping-interval` seconds and one whose
interval is too long to ever ping; the baseline an ASGI echo app, and a second one with
hypercorn's own `websocket_ping_interval` for the pings. The clients are this process: raw
wsproto over trio streams, every connection a task.

* **memory**: VmRSS of the server process before and after N idle sessions are open (ours:
  handshake, create-session with the Basic Auth credentials, the token back; the baseline:
  handshake and one message echoed), divided by N.
* **round trip**: every connection sends invoke-service and waits for its reply, in a loop, for
  `--seconds`; p50/p99 of the round trips and requests per second, at 1 and at N connections.
* **pings**: N sessions held idle for `--ping-seconds` while being pinged, and N held as long on
  the channel that never pings; the difference in the server's CPU time (utime + stime from
  /proc/PID/stat) divided by the Pings the clients answered is the CPU per ping.

Results go to bench/results/wsx.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = REPO / "bench" / "results" / "wsx.json"
ECHO_APP = Path(__file__).resolve().parent / "echo_app.py"
USER, PASSWORD = "bench.wsx", "bench-wsx-s3cret"
NEVER = 1e9  # a ping_interval no run lasts

SERVICES = '''
from zato.server.service import Service


class Echo(Service):
    name = "bench.wsx.echo"

    async def handle(self):
        self.response.payload = self.request.payload
'''

# Plugins with periodic work of their own would add to the idle CPU measured
QUIET_PLUGINS = {name: False for name in ("hot_deploy", "user_config", "pubsub", "rate_limit", "scheduler", "metrics")}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ################################################################################################
# The server processes


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """ utime + stime of the process (all its threads). """
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_open_files_limit(wanted: int) -> dict[str, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = soft if hard != resource.RLIM_INFINITY and hard <= soft else \
        (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard))
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"soft": soft, "hard": hard, "wanted": wanted}


def start_our_server(base: Path) -> Any:
    from zato.testing import ServerProcess, create_test_server_dir
    server_dir = create_test_server_dir(base / "server", main={"graceful_timeout": 2}, plugins=QUIET_PLUGINS)
    (server_dir / "pickup" / "bench_wsx.py").write_text(textwrap.dedent(SERVICES))
    return ServerProcess(server_dir).start(timeout=60)


def start_echo(base: Path, name: str, ping_interval: float | None = None) -> tuple[Any, str]:
    from zato.testing import ExternalProcess
    address_file = base / f"{name}.address"
    command = [sys.executable, str(ECHO_APP), str(address_file)]
    if ping_interval is not None:
        command += ["--ping-interval", str(ping_interval)]
    process = ExternalProcess(command, name=name, output=base / f"{name}.log").start()
    address = process.wait_until(lambda: address_file.exists() and address_file.read_text(), timeout=30)
    return process, address


async def create_channels(address: str, ping_interval: float) -> None:
    import httpx

    from zato.testing import admin_auth
    port = address.rsplit(":", 1)[1]
    async with httpx.AsyncClient(base_url=address, auth=admin_auth(), timeout=30,
                                 headers={"content-type": "application/json"}) as client:
        reply = await client.post("/zato/api/objects/security",
                                  json={"name": "bench.wsx", "type": "basic_auth", "username": USER})
        assert reply.status_code == 201, reply.text
        reply = await client.put("/zato/api/objects/security/bench.wsx/secrets/password", json={"value": PASSWORD})
        assert reply.status_code == 204, reply.text
        for name, interval in (("bench.wsx.quiet", NEVER), ("bench.wsx.ping", ping_interval)):
            reply = await client.post("/zato/api/objects/channel_web_socket", json={
                "name": name, "address": f"ws://127.0.0.1:{port}/{name.replace('.', '/')}",
                "service": "bench.wsx.echo", "security": "bench.wsx", "ping_interval": interval,
                "new_token_wait_time": 30})
            assert reply.status_code == 201, reply.text


# ################################################################################################
# The clients


class Closed(Exception):
    pass


class Client:
    """ One WebSocket connection from this process: wsproto over a trio stream, Pings answered. """

    __slots__ = ("stream", "ws", "events", "pings", "close_code", "request")

    def __init__(self, stream: Any) -> None:
        from wsproto import ConnectionType, WSConnection
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list[Any] = []
        self.pings = 0
        self.close_code: int | None = None
        self.request = b""  # the invoke-service frame, masked once and sent as it is each time

    @classmethod
    async def open(cls, host: str, port: int, path: str) -> "Client":
        import trio
        from wsproto.events import AcceptConnection, Request
        client = cls(await trio.open_tcp_stream(host, port))
        await client.stream.send_all(client.ws.send(Request(host=f"{host}:{port}", target=path)))
        event = await client.next_event()
        if not isinstance(event, AcceptConnection):
            await client.stream.aclose()
            raise Closed(f"handshake refused: {type(event).__name__} {getattr(event, 'status_code', '')}")
        return client

    async def next_event(self) -> Any:
        import trio
        while not self.events:
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise Closed(f"connection lost: {exc!r}") from None
            if not data:
                raise Closed("the server closed the TCP connection")
            self.ws.receive_data(data)
            self.events.extend(self.ws.events())
        return self.events.pop(0)

    async def receive_text(self) -> str:
        from wsproto.events import CloseConnection, Message, Ping
        text = ""
        while True:
            event = await self.next_event()
            if isinstance(event, Ping):
                self.pings += 1
                await self.stream.send_all(self.ws.send(event.response()))
            elif isinstance(event, Message):
                text += event.data if isinstance(event.data, str) else event.data.decode()
                if event.message_finished:
                    return text
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
                raise Closed(f"closed by the server with {event.code} {event.reason!r}")

    async def send_text(self, text: str) -> None:
        from wsproto.events import TextMessage
        await self.stream.send_all(self.ws.send(TextMessage(data=text)))

    async def aclose(self) -> None:
        import trio
        from wsproto.events import CloseConnection
        with trio.move_on_after(2):
            try:
                await self.stream.send_all(self.ws.send(CloseConnection(code=1000)))
            except Exception:
                pass
        await self.stream.aclose()


def wsx_frame(action: str, data: Any, **meta: Any) -> str:
    return json.dumps({"data": data, "meta": {"action": action, "id": meta.pop("id", "bench.1"),
                                              "timestamp": datetime.now(timezone.utc).isoformat(), **meta}})


PAYLOAD = {"customer_id": 123, "text": "hello"}


@dataclass
class Target:
    """ A server to connect to: `wsx` ones need a session first. """
    label: str
    host: str
    port: int
    path: str
    wsx: bool
    pid: int

    async def open_session(self, index: int) -> Client:
        from wsproto.events import TextMessage
        client = await Client.open(self.host, self.port, self.path)
        if self.wsx:
            await client.send_text(wsx_frame("create-session", {}, username=USER, secret=PASSWORD, token=None,
                                             client_id=f"bench-{index}", client_name="bench"))
            reply = json.loads(await client.receive_text())
            if reply["meta"].get("msg_type") != "zwsx.rspa":
                await client.aclose()
                raise Closed(f"create-session refused: {reply}")
            request = wsx_frame("invoke-service", PAYLOAD, token=reply["data"]["token"], client_id=f"bench-{index}")
        else:
            request = wsx_frame("invoke-service", PAYLOAD, client_id=f"bench-{index}")
            await client.send_text(request)
            await client.receive_text()  # the baseline's session: one message echoed
        client.request = client.ws.send(TextMessage(data=request))
        return client


@dataclass
class Held:
    """ Sessions held open by `hold_sessions`. """
    clients: list[Client] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)        # while opening: message -> count
    lost: Counter = field(default_factory=Counter)          # closed while held: message -> count
    open_seconds: float = 0.0

    @property
    def pings(self) -> int:
        return sum(client.pings for client in self.clients)


async def hold_sessions(nursery: Any, target: Target, count: int, batch: int, timeout: float) -> Held:
    """ Opens `count` sessions, `batch` at a time, each then read (Pings answered) by a task in
    `nursery` until the nursery is cancelled. Returns once every one is open or failed. """
    import trio
    held = Held()
    limiter = trio.CapacityLimiter(batch)
    done = trio.Event()
    remaining = [count]

    async def one(index: int) -> None:
        try:
            async with limiter:
                with trio.fail_after(timeout):
                    client = await target.open_session(index)
            held.clients.append(client)
        except (Closed, OSError, trio.TooSlowError) as exc:
            held.errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
            return
        finally:
            remaining[0] -= 1
            if not remaining[0]:
                done.set()
        try:
            while True:
                await client.receive_text()
        except Closed as exc:
            held.lost[str(exc)[:200]] += 1
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()

    started = time.perf_counter()
    for index in range(count):
        nursery.start_soon(one, index)
    await done.wait()
    held.open_seconds = time.perf_counter() - started
    return held


async def measure_memory(target: Target, args: argparse.Namespace, idle_seconds: float) -> dict[str, Any]:
    """ RSS per idle session, and the CPU of holding them `idle_seconds` (no pings). """
    import trio
    before = rss_kb(target.pid)
    async with trio.open_nursery() as nursery:
        held = await hold_sessions(nursery, target, args.sessions, args.batch, args.open_timeout)
        await trio.sleep(args.settle)
        after = rss_kb(target.pid)
        cpu_before, started = cpu_seconds(target.pid), time.perf_counter()
        await trio.sleep(idle_seconds)
        idle_cpu, elapsed = cpu_seconds(target.pid) - cpu_before, time.perf_counter() - started
        open_now = len(held.clients) - sum(held.lost.values())
        nursery.cancel_scope.cancel()
    opened = len(held.clients)
    result = {"sessions": args.sessions, "opened": opened, "open_errors": dict(held.errors),
              "lost_while_held": dict(held.lost), "open_at_end": open_now, "open_seconds": held.open_seconds,
              "sessions_per_second": opened / held.open_seconds if held.open_seconds else 0.0,
              "rss_before_kb": before, "rss_after_kb": after,
              "kb_per_session": (after - before) / opened if opened else None,
              "idle_cpu_seconds": idle_cpu, "idle_seconds": elapsed, "pings": held.pings}
    await trio.sleep(1)  # the server closes them
    return result


async def measure_pings(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    """ The server's CPU over `--ping-seconds` while N sessions are pinged. """
    import trio
    async with trio.open_nursery() as nursery:
        held = await hold_sessions(nursery, target, args.sessions, args.batch, args.open_timeout)
        await trio.sleep(args.ping_interval + args.settle)  # every session has started pinging
        pings_before, cpu_before, started = held.pings, cpu_seconds(target.pid), time.perf_counter()
        await trio.sleep(args.ping_seconds)
        cpu, elapsed, pings = (cpu_seconds(target.pid) - cpu_before, time.perf_counter() - started,
                               held.pings - pings_before)
        open_now = len(held.clients) - sum(held.lost.values())
        nursery.cancel_scope.cancel()
    await trio.sleep(1)
    return {"sessions": args.sessions, "opened": len(held.clients), "open_errors": dict(held.errors),
            "lost_while_held": dict(held.lost), "open_at_end": open_now, "cpu_seconds": cpu, "seconds": elapsed,
            "pings": pings}


async def measure_round_trips(target: Target, connections: int, args: argparse.Namespace) -> dict[str, Any]:
    """ Every connection sends invoke-service and waits for the reply, in a loop; the first
    `--warm-up` seconds are not counted. """
    import trio
    latencies: list[float] = []
    errors: Counter = Counter()
    clients: list[Client] = []
    failed_open: Counter = Counter()

    async def open_one(index: int, limiter: Any) -> None:
        try:
            async with limiter:
                with trio.fail_after(args.open_timeout):
                    clients.append(await target.open_session(index))
        except (Closed, OSError, trio.TooSlowError) as exc:
            failed_open[f"{type(exc).__name__}: {exc}"[:200]] += 1

    limiter = trio.CapacityLimiter(args.batch)
    async with trio.open_nursery() as nursery:
        for index in range(connections):
            nursery.start_soon(open_one, index, limiter)
    start = time.perf_counter()
    counted_from, deadline = start + args.warm_up, start + args.warm_up + args.seconds

    async def loop(client: Client) -> None:
        perf = time.perf_counter
        try:
            while True:
                sent = perf()
                if sent >= deadline:
                    return
                await client.stream.send_all(client.request)
                await client.receive_text()
                done = perf()
                if done >= counted_from and done < deadline:
                    latencies.append(done - sent)
        except Closed as exc:
            errors[str(exc)[:200]] += 1

    server_cpu, own_cpu = cpu_seconds(target.pid), own_cpu_seconds()
    async with trio.open_nursery() as nursery:
        for client in clients:
            nursery.start_soon(loop, client)
    elapsed = time.perf_counter() - start
    server_cpu, own_cpu = cpu_seconds(target.pid) - server_cpu, own_cpu_seconds() - own_cpu
    async with trio.open_nursery() as nursery:
        for client in clients:
            nursery.start_soon(client.aclose)
    latencies.sort()
    return {"connections": connections, "opened": len(clients), "open_errors": dict(failed_open),
            "errors": dict(errors), "requests": len(latencies), "per_second": len(latencies) / args.seconds,
            "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000,
            "server_cpu_percent": 100 * server_cpu / elapsed, "client_cpu_percent": 100 * own_cpu / elapsed}


def percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * pct / 100))]


# ################################################################################################


async def measure(args: argparse.Namespace, ours: Target, bare: Target, bare_pinging: Target,
                  ours_pinging: Target) -> dict[str, Any]:
    import trio
    results: dict[str, Any] = {"memory": {}, "pings": {}, "round_trip": []}
    for target in (bare, ours):  # warm-up: code paths, caches, the first thread
        async with trio.open_nursery() as nursery:
            await hold_sessions(nursery, target, 50, args.batch, args.open_timeout)
            nursery.cancel_scope.cancel()
        await measure_round_trips(target, 10, argparse.Namespace(**{**vars(args), "seconds": 0.5, "warm_up": 0}))
    await trio.sleep(1)
    for key, target in (("bare", bare), ("ours", ours)):
        print(f"memory and idle CPU: {args.sessions} sessions on {target.label}...", flush=True)
        results["memory"][key] = await measure_memory(target, args, args.ping_seconds)
        print(f"  {json.dumps(results['memory'][key])}", flush=True)
    for key, target in (("bare", bare_pinging), ("ours", ours_pinging)):
        print(f"pings: {args.sessions} sessions on {target.label}, pinged every {args.ping_interval:g} s...",
              flush=True)
        results["pings"][key] = await measure_pings(target, args)
        print(f"  {json.dumps(results['pings'][key])}", flush=True)
    for round_no in range(args.rounds):
        for connections in (1, args.connections):
            for key, target in (("bare", bare), ("ours", ours)):
                result = await measure_round_trips(target, connections, args)
                result.update(server=key, round=round_no + 1)
                results["round_trip"].append(result)
                print(f"round {round_no + 1}, {connections} connections, {target.label}: "
                      f"{result['per_second']:.0f}/s p50 {result['p50_ms']:.2f} ms p99 {result['p99_ms']:.2f} ms "
                      f"(server CPU {result['server_cpu_percent']:.0f}%, client {result['client_cpu_percent']:.0f}%)"
                      + (f" errors {result['errors']}" if result["errors"] else "")
                      + (f" open errors {result['open_errors']}" if result["open_errors"] else ""), flush=True)
    return results


def summarise(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    memory = results["memory"]
    kb = {key: memory[key]["kb_per_session"] for key in ("bare", "ours")}
    summary["memory"] = {"kb_per_session": kb, "ratio": kb["ours"] / kb["bare"] if kb["bare"] and kb["ours"] else None}
    pings = results["pings"]
    summary["pings"] = {}
    for key in ("bare", "ours"):
        pinged, idle = pings[key], memory[key]
        idle_rate = idle["idle_cpu_seconds"] / idle["idle_seconds"]
        extra = pinged["cpu_seconds"] - idle_rate * pinged["seconds"]
        per_ping_us = extra / pinged["pings"] * 1e6 if pinged["pings"] else None
        summary["pings"][key] = {
            "pings": pinged["pings"], "cpu_percent_pinging": 100 * pinged["cpu_seconds"] / pinged["seconds"],
            "cpu_percent_idle": 100 * idle_rate, "us_per_ping": per_ping_us,
            # at Zato's default interval of 30 s with the same sessions
            "cpu_percent_at_30s": (per_ping_us * pinged["opened"] / 30 / 1e4) if per_ping_us is not None else None}
    summary["round_trip"] = {}
    for connections in (1, args.connections):
        row = {}
        for key in ("bare", "ours"):
            runs = [r for r in results["round_trip"] if r["server"] == key and r["connections"] == connections]
            row[key] = {name: statistics.median(r[name] for r in runs)
                        for name in ("per_second", "p50_ms", "p99_ms", "server_cpu_percent", "client_cpu_percent")}
            row[key]["per_round"] = [r["per_second"] for r in runs]
        row["throughput_ratio"] = row["ours"]["per_second"] / row["bare"]["per_second"]
        summary["round_trip"][connections] = row
    return summary


def print_table(results: dict[str, Any], summary: dict[str, Any], args: argparse.Namespace,
                limits: dict[str, int]) -> None:
    memory = results["memory"]
    print(f"\n{args.sessions} sessions (open files: soft {limits['soft']}, hard {limits['hard']}), "
          f"{args.rounds} round(s) of {args.seconds:g} s per round-trip case, pings every "
          f"{args.ping_interval:g} s over {args.ping_seconds:g} s")
    print("| case | bare echo | channel_web_socket | ratio |")
    print("|---|---|---|---|")
    for key, label in (("opened", "sessions opened"), ("open_at_end", "still open at the end")):
        print(f"| {label} | {memory['bare'][key]:,} | {memory['ours'][key]:,} | |")
    print(f"| sessions opened per second | {memory['bare']['sessions_per_second']:,.0f} | "
          f"{memory['ours']['sessions_per_second']:,.0f} | "
          f"{memory['ours']['sessions_per_second'] / memory['bare']['sessions_per_second']:.2f}x |")
    kb = summary["memory"]["kb_per_session"]
    print(f"| RSS per idle session | {kb['bare']:.1f} kB | {kb['ours']:.1f} kB | {summary['memory']['ratio']:.2f}x |")
    for connections, row in summary["round_trip"].items():
        bare, ours = row["bare"], row["ours"]
        print(f"| invoke-service, {connections} connection(s): requests/s | {bare['per_second']:,.0f} | "
              f"{ours['per_second']:,.0f} | {row['throughput_ratio']:.2f}x |")
        print(f"| ... p50 / p99 | {bare['p50_ms']:.2f} / {bare['p99_ms']:.2f} ms | "
              f"{ours['p50_ms']:.2f} / {ours['p99_ms']:.2f} ms | "
              f"{ours['p50_ms'] / bare['p50_ms']:.2f}x / {ours['p99_ms'] / bare['p99_ms']:.2f}x |")
        print(f"| ... server / client CPU | {bare['server_cpu_percent']:.0f}% / {bare['client_cpu_percent']:.0f}% | "
              f"{ours['server_cpu_percent']:.0f}% / {ours['client_cpu_percent']:.0f}% | |")
    ping = summary["pings"]
    print(f"| pings answered in {args.ping_seconds:g} s | {ping['bare']['pings']:,} | {ping['ours']['pings']:,} | |")
    print(f"| server CPU, idle / pinged | {ping['bare']['cpu_percent_idle']:.2f}% / "
          f"{ping['bare']['cpu_percent_pinging']:.2f}% | {ping['ours']['cpu_percent_idle']:.2f}% / "
          f"{ping['ours']['cpu_percent_pinging']:.2f}% | |")
    bare_us, ours_us = ping["bare"]["us_per_ping"], ping["ours"]["us_per_ping"]
    print(f"| CPU per ping | {bare_us:.0f} µs | {ours_us:.0f} µs | "
          f"{ours_us / bare_us:.2f}x |" if bare_us and ours_us else f"| CPU per ping | {bare_us} | {ours_us} | |")
    print(f"| CPU at ping_interval 30 s, {args.sessions} sessions | {ping['bare']['cpu_percent_at_30s']:.2f}% | "
          f"{ping['ours']['cpu_percent_at_30s']:.2f}% of a core | |")
    for phase in ("memory", "pings"):
        for key in ("bare", "ours"):
            part = results[phase][key]
            if part["open_errors"] or part["lost_while_held"]:
                print(f"{phase}, {key}: open errors {part['open_errors']}, lost while held {part['lost_while_held']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=5000, help="idle sessions held for memory and pings")
    parser.add_argument("--connections", type=int, default=1000, help="connections of the second round-trip case")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds of each round-trip case")
    parser.add_argument("--warm-up", type=float, default=0.5, help="seconds of each round-trip case not counted")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved round-trip rounds")
    parser.add_argument("--ping-interval", type=float, default=5.0)
    parser.add_argument("--ping-seconds", type=float, default=20.0,
                        help="seconds of CPU measured while pinged (and idle without pings)")
    parser.add_argument("--batch", type=int, default=100, help="connections opened at once")
    parser.add_argument("--open-timeout", type=float, default=60.0, help="seconds one session may take to open")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds after opening before RSS is read")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (server dir, logs)")
    args = parser.parse_args(argv)
    # the sessions, the round-trip connections and the server's own files, in this process and in each server
    limits = raise_open_files_limit(args.sessions + args.connections + 1000)
    if limits["soft"] < limits["wanted"]:
        print(f"warning: open files limited to {limits['soft']} (hard limit {limits['hard']}), "
              f"{limits['wanted']} wanted: sessions past it will fail", flush=True)
    import trio
    tmp = Path(tempfile.mkdtemp(prefix="zato-bench-wsx-"))
    processes: list[Any] = []
    try:
        server = start_our_server(tmp)
        processes.append(server)
        bare, bare_address = start_echo(tmp, "bare-echo")
        bare_pinging, bare_pinging_address = start_echo(tmp, "bare-echo-pinging", args.ping_interval)
        processes += [bare, bare_pinging]
        trio.run(create_channels, server.address, args.ping_interval)
        host, port = server.address.split("://", 1)[1].rsplit(":", 1)
        targets = (
            Target("channel_web_socket", host, int(port), "/bench/wsx/quiet", True, server.pid),
            Target("bare echo", *split(bare_address), "/", False, bare.pid),
            Target("bare echo, hypercorn pinging", *split(bare_pinging_address), "/", False, bare_pinging.pid),
            Target("channel_web_socket, pinging", host, int(port), "/bench/wsx/ping", True, server.pid),
        )
        results = trio.run(measure, args, *targets)
        summary = summarise(results, args)
        print_table(results, summary, args, limits)
    finally:
        for process in processes:
            process.stop(10)
        if args.keep:
            print(f"kept: {tmp}")
        else:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "at": datetime.now(timezone.utc).isoformat(), "python": platform.python_version(), "cpus": os.cpu_count(),
        "open_files": limits, "options": {k: str(v) for k, v in vars(args).items()},
        "results": results, "summary": summary,
    }, indent=2, default=str))
    print(f"results: {args.output}")
    return 0


def split(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


if __name__ == "__main__":
    sys.exit(main())
