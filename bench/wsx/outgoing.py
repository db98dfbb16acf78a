""" Outgoing WebSocket connection benchmark: what a service invoking a remote server's service
through an `outgoing_wsx` costs, beside the same HTTP call to a service that only echoes and
beside a WebSocket client calling the remote service directly, all measured the same way in
interleaved rounds of the same run.

    .venv/bin/python bench/wsx/outgoing.py [--rounds N] [--seconds S] [--connections 1,50]
                                           [--output PATH] [--keep]

Two real server processes of ours (`zato.testing.ServerProcess`), each with its own directory and
configuration database, one worker each, the plugins with periodic work of their own switched off:

* **remote**: a Basic Auth definition, a `channel_web_socket` on `helpers.web-sockets-gateway`
  and `[wsx] gateway_service_allowed = bench.wsx.echo`; `bench.wsx.echo` (`async def`) returns
  its input.
* **local**: an outgoing Basic Auth definition with the same credentials, an `outgoing_wsx` to
  the remote channel, and the services
  `bench.wsx.through-outconn` (`async def`: `await client.invoke(...)` of `bench.wsx.echo`),
  `bench.wsx.through-outconn-sync` (the same as a plain `def`) and `bench.wsx.local-echo`
  (returns its input, no WebSocket).

The cases, each for `--seconds` at every `--connections` concurrency, all in every round:

* **outconn** / **outconn-sync**: N tasks, each with its own keep-alive httpx client, POST
  /zato/api/invoke/bench.wsx.through-outconn(-sync) on the local server in a loop (admin auth):
  an HTTP hop to the local server, then invoke-service over the one outgoing WebSocket to the
  remote server (the N calls share it, multiplexed by message id).
* **http-echo**: the same HTTP call to `bench.wsx.local-echo`: the HTTP hop on its own.
* **direct**: N WebSocket connections from this process to the remote channel, each with its
  own session, sending invoke-service of `bench.wsx.echo` through the gateway in a loop.

Per case: requests/s, p50/p99 latency, and the CPU (utime + stime from /proc/PID/stat) of each
server process per request. Results go to bench/results/wsx_outgoing.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import textwrap
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # noqa: E402 - the WSX benchmark's helpers
    PASSWORD, QUIET_PLUGINS, USER, Client, Closed, cpu_seconds, own_cpu_seconds, percentile, wsx_frame,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = REPO / "bench" / "results" / "wsx_outgoing.json"
OUTCONN = "bench.wsx.remote"
GATEWAY_PATH = "/bench/wsx/gateway"
PAYLOAD = {"customer_id": 123, "text": "hello"}

REMOTE_SERVICES = '''
from zato.server.service import Service


class Echo(Service):
    name = "bench.wsx.echo"

    async def handle(self):
        self.response.payload = self.request.payload
'''

LOCAL_SERVICES = '''
from zato.server.service import Service

OUTCONN = %r


class ThroughOutconn(Service):
    name = "bench.wsx.through-outconn"

    async def handle(self):
        with self.out.wsx.get(OUTCONN).conn.client() as client:
            self.response.payload = await client.invoke({"service": "bench.wsx.echo",
                                                         "request": self.request.payload})


class ThroughOutconnSync(Service):
    name = "bench.wsx.through-outconn-sync"

    def handle(self):
        with self.out.wsx.get(OUTCONN).conn.client() as client:
            self.response.payload = client.invoke({"service": "bench.wsx.echo", "request": self.request.payload})


class LocalEcho(Service):
    name = "bench.wsx.local-echo"

    async def handle(self):
        self.response.payload = self.request.payload
''' % OUTCONN

CASES = {  # key: (label, what it is)
    "outconn": ("HTTP -> service -> outgoing_wsx (async def)", "bench.wsx.through-outconn"),
    "outconn-sync": ("HTTP -> service -> outgoing_wsx (def)", "bench.wsx.through-outconn-sync"),
    "http-echo": ("HTTP -> local echo (baseline of the HTTP hop)", "bench.wsx.local-echo"),
    "direct": ("WebSocket client -> remote gateway (direct)", None),
}


# ################################################################################################
# The servers


def tree_cpu_seconds(pid: int) -> float:
    """ utime + stime of the server process and any processes it started. """
    from zato.testing import process_tree
    total = 0.0
    for each in process_tree(pid):
        try:
            total += cpu_seconds(each)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def start_server(base: Path, name: str, services: str, **config: Any) -> Any:
    from zato.testing import ServerProcess, create_test_server_dir
    server_dir = create_test_server_dir(base / name, main={"graceful_timeout": 2}, plugins=QUIET_PLUGINS, **config)
    (server_dir / "pickup" / f"bench_wsx_{name}.py").write_text(textwrap.dedent(services))
    return ServerProcess(server_dir).start(timeout=60)


def api_client(address: str) -> Any:
    import httpx

    from zato.testing import admin_auth
    return httpx.AsyncClient(base_url=address, auth=admin_auth(), timeout=30, headers={"content-type": "application/json"})


async def wait_for_service(api: Any, service: str, timeout: float = 30) -> None:
    """ Until the hot-deployed pickup file's service answers. """
    import trio
    with trio.fail_after(timeout):
        while True:
            reply = await api.post(f"/zato/api/invoke/{service}", json=PAYLOAD)
            if reply.status_code == 200:
                return
            await trio.sleep(0.1)


async def configure(remote: Any, local: Any) -> dict[str, Any]:
    """ The remote's channel and credentials, the local's outgoing connection; returns the
    connection's state row once it is connected. """
    import trio
    port = remote.address.rsplit(":", 1)[1]
    async with api_client(remote.address) as api:
        reply = await api.post("/zato/api/objects/security",
                               json={"name": "bench.wsx", "type": "basic_auth", "username": USER})
        assert reply.status_code == 201, reply.text
        reply = await api.put("/zato/api/objects/security/bench.wsx/secrets/password", json={"value": PASSWORD})
        assert reply.status_code == 204, reply.text
        reply = await api.post("/zato/api/objects/channel_web_socket", json={
            "name": "bench.wsx.gateway", "address": f"ws://127.0.0.1:{port}{GATEWAY_PATH}",
            "service": "helpers.web-sockets-gateway", "security": "bench.wsx", "new_token_wait_time": 30})
        assert reply.status_code == 201, reply.text
        await wait_for_service(api, "bench.wsx.echo")
    async with api_client(local.address) as api:
        reply = await api.post("/zato/api/objects/security", json={
            "name": "bench.wsx.out", "type": "basic_auth", "username": USER, "direction": "outgoing"})
        assert reply.status_code == 201, reply.text
        reply = await api.put("/zato/api/objects/security/bench.wsx.out/secrets/password", json={"value": PASSWORD})
        assert reply.status_code == 204, reply.text
        reply = await api.post("/zato/api/objects/outgoing_wsx", json={
            "name": OUTCONN, "address": f"ws://127.0.0.1:{port}{GATEWAY_PATH}", "security": "bench.wsx.out"})
        assert reply.status_code == 201, reply.text
        row: dict[str, Any] | None = None
        with trio.move_on_after(30):
            while True:
                reply = await api.get("/zato/api/wsx/outgoing")
                assert reply.status_code == 200, reply.text
                row = {r["name"]: r for r in reply.json()["outgoing"]}.get(OUTCONN)
                if row is not None and row["state"] == "connected":
                    break
                await trio.sleep(0.1)
        if row is None or row["state"] != "connected":
            raise RuntimeError(f"the outgoing connection did not connect within 30 s: {row}")
        for service in ("bench.wsx.local-echo", "bench.wsx.through-outconn", "bench.wsx.through-outconn-sync"):
            await wait_for_service(api, service)
            reply = await api.post(f"/zato/api/invoke/{service}", json=PAYLOAD)
            if reply.json() != PAYLOAD:
                raise RuntimeError(f"{service} answered {reply.status_code} {reply.text!r}, not the payload")
    return row


# ################################################################################################
# The clients


class HTTPWorker:
    """ One keep-alive HTTP client posting to one service. """

    def __init__(self, address: str, service: str) -> None:
        import httpx

        from zato.testing import admin_auth
        self.client = httpx.AsyncClient(base_url=address, auth=admin_auth(), timeout=30,
                                        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
        self.path = f"/zato/api/invoke/{service}"
        self.body = json.dumps(PAYLOAD).encode()
        self.headers = {"content-type": "application/json"}

    async def call(self) -> None:
        reply = await self.client.post(self.path, content=self.body, headers=self.headers)
        if reply.status_code != 200:
            raise Closed(f"HTTP {reply.status_code}: {reply.text[:160]}")

    async def aclose(self) -> None:
        await self.client.aclose()


class WSWorker:
    """ One WebSocket connection with its own session on the remote gateway channel. """

    def __init__(self, client: Client) -> None:
        self.ws = client

    @classmethod
    async def open(cls, host: str, port: int, index: int) -> "WSWorker":
        from wsproto.events import TextMessage
        client = await Client.open(host, port, GATEWAY_PATH)
        client_id = f"bench-direct-{index}"
        await client.send_text(wsx_frame("create-session", {}, username=USER, secret=PASSWORD, token=None,
                                         client_id=client_id, client_name="bench"))
        reply = json.loads(await client.receive_text())
        if reply["meta"].get("msg_type") != "zwsx.rspa":
            await client.aclose()
            raise Closed(f"create-session refused: {reply}")
        request = wsx_frame("invoke-service", {"service": "bench.wsx.echo", "request": PAYLOAD},
                            token=reply["data"]["token"], client_id=client_id)
        await client.send_text(request)
        answer = json.loads(await client.receive_text())
        if answer.get("data") != PAYLOAD:
            await client.aclose()
            raise Closed(f"the gateway answered {answer}, not the payload")
        client.request = client.ws.send(TextMessage(data=request))
        return cls(client)

    async def call(self) -> None:
        await self.ws.stream.send_all(self.ws.request)
        await self.ws.receive_text()

    async def aclose(self) -> None:
        await self.ws.aclose()


async def measure_case(case: str, connections: int, seconds: float, warm_up: float, servers: dict[str, Any],
                       direct_to: tuple[str, int]) -> dict[str, Any]:
    """ `connections` workers call in a loop for `warm_up` + `seconds`; the warm-up's calls are not counted. """
    import trio
    workers: list[Any] = []
    if case == "direct":
        async def open_one(index: int) -> None:
            workers.append(await WSWorker.open(*direct_to, index))
        async with trio.open_nursery() as nursery:
            for index in range(connections):
                nursery.start_soon(open_one, index)
    else:
        workers = [HTTPWorker(servers["local"].address, CASES[case][1]) for _ in range(connections)]

    latencies: list[float] = []
    errors: Counter = Counter()
    start = time.perf_counter()
    counted_from, deadline = start + warm_up, start + warm_up + seconds
    cpu_at: dict[str, float] = {}

    async def take_cpu() -> None:  # when counting starts, in the same loop as the workers
        await trio.sleep_until(counted_from)
        cpu_at.update({key: tree_cpu_seconds(s.pid) for key, s in servers.items()}, own=own_cpu_seconds())

    async def loop(worker: Any) -> None:
        perf = time.perf_counter
        while True:
            sent = perf()
            if sent >= deadline:
                return
            try:
                await worker.call()
            except Exception as exc:  # counted and reported: a benchmark of a failing path shows it
                errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
                if isinstance(exc, Closed) and case == "direct":
                    return
                await trio.sleep(0.01)
                continue
            done = perf()
            if counted_from <= done < deadline:
                latencies.append(done - sent)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take_cpu)
        for worker in workers:
            nursery.start_soon(loop, worker)
    elapsed = time.perf_counter() - counted_from
    cpu = {key: tree_cpu_seconds(s.pid) - cpu_at[key] for key, s in servers.items()}
    own = own_cpu_seconds() - cpu_at["own"]
    async with trio.open_nursery() as nursery:
        for worker in workers:
            nursery.start_soon(worker.aclose)
    latencies.sort()
    count = len(latencies)
    return {"case": case, "connections": connections, "opened": len(workers), "errors": dict(errors),
            "requests": count, "seconds": elapsed, "per_second": count / elapsed,
            "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000,
            "cpu_seconds": {**cpu, "client": own},
            "cpu_us_per_request": {key: value / count * 1e6 if count else None
                                   for key, value in {**cpu, "client": own}.items()},
            "cpu_percent": {key: 100 * value / elapsed for key, value in {**cpu, "client": own}.items()}}


async def measure(args: argparse.Namespace, servers: dict[str, Any], direct_to: tuple[str, int]) -> list[dict]:
    results = []
    for case in CASES:  # warm-up: code paths, connections, the first threads
        await measure_case(case, max(args.connections), 0.5, 0, servers, direct_to)
    for round_no in range(args.rounds):
        for connections in args.connections:
            for case in CASES:
                result = await measure_case(case, connections, args.seconds, args.warm_up, servers, direct_to)
                result["round"] = round_no + 1
                results.append(result)
                us = result["cpu_us_per_request"]
                print(f"round {round_no + 1}, {connections:>3} concurrent, {case:<12}: {result['per_second']:7.0f}/s "
                      f"p50 {result['p50_ms']:6.2f} ms p99 {result['p99_ms']:6.2f} ms; CPU/request local "
                      f"{fmt_us(us['local'])} remote {fmt_us(us['remote'])} client {fmt_us(us['client'])}"
                      + (f" errors {result['errors']}" if result["errors"] else ""), flush=True)
    return results


def fmt_us(value: float | None) -> str:
    return f"{value:.0f} µs" if value is not None else "-"


# ################################################################################################


def summarise(results: list[dict], args: argparse.Namespace) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for connections in args.connections:
        row: dict[str, Any] = {}
        for case in CASES:
            runs = [r for r in results if r["case"] == case and r["connections"] == connections]
            entry = {name: statistics.median(r[name] for r in runs) for name in ("per_second", "p50_ms", "p99_ms")}
            for key in ("local", "remote", "client"):
                values = [r["cpu_us_per_request"][key] for r in runs if r["cpu_us_per_request"][key] is not None]
                entry[f"cpu_us_{key}"] = statistics.median(values) if values else None
            entry["per_round"] = [round(r["per_second"], 1) for r in runs]
            entry["errors"] = sum(sum(r["errors"].values()) for r in runs)
            row[case] = entry
        direct, echo = row["direct"], row["http-echo"]
        for case in ("outconn", "outconn-sync"):
            out = row[case]
            out["throughput_vs_direct"] = out["per_second"] / direct["per_second"] if direct["per_second"] else None
            out["throughput_vs_http_echo"] = out["per_second"] / echo["per_second"] if echo["per_second"] else None
            out["p50_vs_direct"] = out["p50_ms"] / direct["p50_ms"]
            out["added_p50_ms"] = out["p50_ms"] - echo["p50_ms"]  # the outgoing hop over the HTTP hop
            out["added_cpu_us"] = {key: out[f"cpu_us_{key}"] - echo[f"cpu_us_{key}"]
                                   for key in ("local", "remote")
                                   if out[f"cpu_us_{key}"] is not None and echo[f"cpu_us_{key}"] is not None}
        echo["throughput_vs_direct"] = echo["per_second"] / direct["per_second"] if direct["per_second"] else None
        echo["p50_vs_direct"] = echo["p50_ms"] / direct["p50_ms"]
        summary[connections] = row
    return summary


def print_table(summary: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\n{args.rounds} round(s) of {args.seconds:g} s per case (medians over the rounds); "
          f"CPU is per request, utime + stime")
    print("| concurrency | case | requests/s | p50 / p99 ms | vs direct: req/s, p50 | CPU local / remote / client |")
    print("|---|---|---|---|---|---|")
    for connections, row in summary.items():
        for case, (label, _) in CASES.items():
            entry = row[case]
            ratio = "1 (baseline)" if case == "direct" else \
                f"{entry['throughput_vs_direct']:.2f}x, {entry['p50_vs_direct']:.2f}x"
            print(f"| {connections} | {label} | {entry['per_second']:,.0f} | {entry['p50_ms']:.2f} / "
                  f"{entry['p99_ms']:.2f} | {ratio} | {fmt_us(entry['cpu_us_local'])} / "
                  f"{fmt_us(entry['cpu_us_remote'])} / {fmt_us(entry['cpu_us_client'])} |"
                  + (f" errors: {entry['errors']}" if entry["errors"] else ""))
    print("\nThe outgoing hop, (a) minus (b):")
    print("| concurrency | service | added p50 | added CPU local / remote per request | req/s vs HTTP echo |")
    print("|---|---|---|---|---|")
    for connections, row in summary.items():
        for case in ("outconn", "outconn-sync"):
            entry = row[case]
            added = entry["added_cpu_us"]
            print(f"| {connections} | {CASES[case][1]} | {entry['added_p50_ms']:+.2f} ms | "
                  f"{added.get('local', float('nan')):+.0f} / {added.get('remote', float('nan')):+.0f} µs | "
                  f"{entry['throughput_vs_http_echo']:.2f}x |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every case")
    parser.add_argument("--seconds", type=float, default=5.0, help="counted seconds of each case")
    parser.add_argument("--warm-up", type=float, default=0.5, help="seconds of each case not counted")
    parser.add_argument("--connections", default="1,50",
                        help="concurrent clients, comma-separated: HTTP clients or WebSocket connections")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--keep", action="store_true", help="keep the server directories (logs/server.log)")
    args = parser.parse_args(argv)
    args.connections = [int(each) for each in str(args.connections).split(",") if each.strip()]
    import trio
    tmp = Path(tempfile.mkdtemp(prefix="zato-bench-wsx-outgoing-"))
    servers: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        servers["remote"] = start_server(tmp, "remote", REMOTE_SERVICES, wsx={"gateway_service_allowed": "bench.wsx.echo"})
        servers["local"] = start_server(tmp, "local", LOCAL_SERVICES)
        print(f"remote {servers['remote'].address} (pid {servers['remote'].pid}), "
              f"local {servers['local'].address} (pid {servers['local'].pid})", flush=True)
        state = trio.run(configure, servers["remote"], servers["local"])
        print(f"outgoing connection: {json.dumps(state)}", flush=True)
        host, port = servers["remote"].address.split("://", 1)[1].rsplit(":", 1)
        results = trio.run(measure, args, servers, (host, int(port)))
        summary = summarise(results, args)
        print_table(summary, args)
    finally:
        for server in servers.values():
            server.stop(10)
        if args.keep:
            print(f"kept: {tmp} (remote/logs/server.log, local/logs/server.log)")
        else:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "at": datetime.now(timezone.utc).isoformat(), "python": platform.python_version(), "cpus": os.cpu_count(),
        "wall_seconds": time.perf_counter() - started, "options": {k: str(v) for k, v in vars(args).items()},
        "outgoing_state": state, "results": results, "summary": summary,
    }, indent=2, default=str))
    print(f"results: {args.output} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
