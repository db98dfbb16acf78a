""" IBM MQ benchmark: messages per second from a queue through a service and committed, and puts
per second through `self.outgoing.ibm_mq.send`, beside the same loops calling MQ directly, in the
same process and run.

    .venv/bin/python bench/ibm_mq/run.py [--rounds N] [--messages N] [--output PATH]

IBM MQ's C client cannot be installed on this machine, so both sides run the real `ibmmq`
Python layer over the plugin's stand-in queue manager (zato_plugin_ibm_mq.testing), in this
process: the ratio is the platform's overhead per message (the listener runtime, the owner
thread of each connection, the service invocation, the commit), not what a real queue manager
over a network costs, which adds the same round trips to both sides.

* **raw consume**: one thread, one connection: MQGET (syncpoint, wait) then MQCMIT per message.
* **channel, def / async def**: a `channel_ibm_mq` in a server (`zato.testing.run_server`), its
  service a plain `def handle` (run in a worker thread) or an `async def handle` that does
  nothing; from the first message got to the queue empty and committed.
* **raw put**: one thread, one connection, MQPUT (no syncpoint) per message.
* **send, def / async def**: one service call putting every message through
  `self.outgoing.ibm_mq.send(msg, conn, queue)`.

Rounds are interleaved (raw, platform, raw, platform...) after a warm-up. Results go to
bench/results/ibm_mq.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = REPO / "bench" / "results" / "ibm_mq.json"
QUEUE_IN, QUEUE_OUT = "BENCH.IN", "BENCH.OUT"

SERVICES = '''
from zato.server.service import Service


class Sink(Service):
    name = "bench.mq.sink"

    def handle(self):
        pass


class AsyncSink(Service):
    name = "bench.mq.async-sink"

    async def handle(self):
        pass


class Send(Service):
    name = "bench.mq.send"

    def handle(self):
        for index in range(self.request.payload["count"]):
            self.outgoing.ibm_mq.send("message %d" % index, "bench", "BENCH.OUT")


class AsyncSend(Service):
    name = "bench.mq.async-send"

    async def handle(self):
        for index in range(self.request.payload["count"]):
            await self.outgoing.ibm_mq.send("message %d" % index, "bench", "BENCH.OUT")
'''

DEFINITION = {"name": "bench", "host": "localhost", "port": 1414, "queue_manager": "QM1", "channel": "DEV.APP.SVRCONN",
              "username": "", "max_chars_printed": 20}


def connect(ibmmq: Any) -> Any:
    return ibmmq.connect("QM1", "DEV.APP.SVRCONN", "localhost(1414)")


def raw_consume(ibmmq: Any, qm: Any, count: int) -> float:
    """ Messages per second: MQGET under syncpoint then MQCMIT, one thread. """
    for index in range(count):
        qm.put(QUEUE_IN, f"message {index}".encode())
    qmgr = connect(ibmmq)
    queue = ibmmq.Queue(qmgr, QUEUE_IN, ibmmq.CMQC.MQOO_INPUT_AS_Q_DEF)
    started = time.perf_counter()
    for _ in range(count):
        md, gmo = ibmmq.MD(), ibmmq.GMO()
        gmo.Options = ibmmq.CMQC.MQGMO_WAIT | ibmmq.CMQC.MQGMO_SYNCPOINT
        gmo.WaitInterval = 1000
        queue.get(None, md, gmo)
        qmgr.commit()
    elapsed = time.perf_counter() - started
    queue.close()
    qmgr.disconnect()
    return count / elapsed


def raw_put(ibmmq: Any, qm: Any, count: int) -> float:
    qmgr = connect(ibmmq)
    queue = ibmmq.Queue(qmgr, QUEUE_OUT, ibmmq.CMQC.MQOO_OUTPUT)
    started = time.perf_counter()
    for index in range(count):
        md, pmo = ibmmq.MD(), ibmmq.PMO()
        pmo.Options = ibmmq.CMQC.MQPMO_NO_SYNCPOINT | ibmmq.CMQC.MQPMO_NEW_MSG_ID
        md.Format = ibmmq.CMQC.MQFMT_STRING
        queue.put(f"message {index}".encode(), md, pmo)
    elapsed = time.perf_counter() - started
    queue.close()
    qmgr.disconnect()
    qm.clear(QUEUE_OUT)
    return count / elapsed


async def channel_consume(server: Any, client: Any, qm: Any, count: int, service: str, name: str) -> float:
    """ Messages per second through a channel: loaded first, then the channel is created; from its
    first get to the queue empty (every message committed). """
    import trio
    for index in range(count):
        qm.put(QUEUE_IN, f"message {index}".encode())
    reply = await client.post("/zato/api/objects/channel_ibm_mq", json={
        "name": name, "definition": "bench", "queue": QUEUE_IN, "service": service, "wait_interval": 100})
    assert reply.status_code == 201, reply.text
    while qm.depth(QUEUE_IN) == count:
        await trio.sleep(0.001)
    started = time.perf_counter()
    while qm.depth(QUEUE_IN):
        await trio.sleep(0.001)
    elapsed = time.perf_counter() - started
    reply = await client.delete(f"/zato/api/objects/channel_ibm_mq/{name}")
    assert reply.status_code in (200, 204), reply.text
    return (count - 1) / elapsed  # the first get started the clock


async def service_send(server: Any, qm: Any, count: int, service: str) -> float:
    started = time.perf_counter()
    await server.invoke(service, {"count": count})
    elapsed = time.perf_counter() - started
    assert qm.depth(QUEUE_OUT) == count, qm.depth(QUEUE_OUT)
    qm.clear(QUEUE_OUT)
    return count / elapsed


async def measure(args: argparse.Namespace, base: Path) -> dict[str, list[float]]:
    import httpx
    import trio

    from zato.testing import admin_auth, create_test_server_dir, run_server
    from zato_plugin_ibm_mq.client import reset_library
    from zato_plugin_ibm_mq.testing import QueueManagerStandIn, installed

    qm = QueueManagerStandIn("QM1", channels=["DEV.APP.SVRCONN"], listeners=["localhost(1414)"])
    for name in (QUEUE_IN, QUEUE_OUT):
        qm.define_queue(name, max_depth=10_000_000, backout_threshold=3, backout_queue=QUEUE_OUT)
    quiet = {name: False for name in ("hot_deploy", "user_config", "pubsub", "rate_limit", "scheduler", "metrics")}
    server_dir = create_test_server_dir(base / "server", main={"graceful_timeout": 2}, plugins=quiet,
                                        component_enabled={"ibm_mq": True})
    (server_dir / "pickup" / "bench_mq.py").write_text(SERVICES)
    samples: dict[str, list[float]] = {key: [] for key in (
        "raw_consume", "channel_def", "channel_async", "raw_put", "send_def", "send_async")}
    with installed(qm) as ibmmq:
        reset_library()
        async with run_server(server_dir) as server:
            async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=60,
                                         headers={"content-type": "application/json"}) as client:
                for object_type, data in (("definition_ibm_mq", DEFINITION),
                                          ("outgoing_ibm_mq", {"name": "bench", "definition": "bench"})):
                    reply = await client.post(f"/zato/api/objects/{object_type}", json=data)
                    assert reply.status_code == 201, reply.text
                # warm-up
                await trio.to_thread.run_sync(raw_consume, ibmmq, qm, 200)
                await channel_consume(server, client, qm, 200, "bench.mq.sink", "warm")
                await service_send(server, qm, 200, "bench.mq.send")
                for round_no in range(args.rounds):
                    samples["raw_consume"].append(await trio.to_thread.run_sync(raw_consume, ibmmq, qm, args.messages))
                    samples["channel_def"].append(await channel_consume(server, client, qm, args.messages,
                                                                        "bench.mq.sink", f"def-{round_no}"))
                    samples["channel_async"].append(await channel_consume(server, client, qm, args.messages,
                                                                          "bench.mq.async-sink", f"async-{round_no}"))
                    samples["raw_put"].append(await trio.to_thread.run_sync(raw_put, ibmmq, qm, args.messages))
                    samples["send_def"].append(await service_send(server, qm, args.messages, "bench.mq.send"))
                    samples["send_async"].append(await service_send(server, qm, args.messages,
                                                                    "bench.mq.async-send"))
                    print(f"round {round_no + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in samples.items()),
                          flush=True)
    reset_library()
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=3000, help="messages per measured loop")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    import trio
    with tempfile.TemporaryDirectory(prefix="zato-bench-ibm-mq-") as tmp:
        samples = trio.run(measure, args, Path(tmp))
    median = {key: statistics.median(values) for key, values in samples.items()}
    rows = [("raw consume: MQGET + MQCMIT, one thread", "raw_consume", "raw_consume"),
            ("channel_ibm_mq, def handle", "channel_def", "raw_consume"),
            ("channel_ibm_mq, async def handle", "channel_async", "raw_consume"),
            ("raw put: MQPUT, one thread", "raw_put", "raw_put"),
            ("self.outgoing.ibm_mq.send, def handle", "send_def", "raw_put"),
            ("self.outgoing.ibm_mq.send, async def", "send_async", "raw_put")]
    print(f"\n{args.messages} messages per loop, {args.rounds} interleaved rounds, the stand-in queue manager")
    print(f"| {'case':<42} | {'msgs/s':>8} | {'vs raw':>7} | {'per round':<20} | {'µs/msg over raw':>15} |")
    print(f"|{'-' * 44}|{'-' * 10}|{'-' * 9}|{'-' * 22}|{'-' * 17}|")
    ratios: dict[str, Any] = {}
    for label, key, base in rows:
        per_round = [a / b for a, b in zip(samples[key], samples[base])]
        ratios[key] = {"ratio": median[key] / median[base], "per_round": per_round,
                       "overhead_us": (1 / median[key] - 1 / median[base]) * 1e6}
        print(f"| {label:<42} | {median[key]:>8.0f} | {median[key] / median[base]:>6.2f}x | "
              f"{' '.join(f'{r:.2f}' for r in per_round):<20} | {ratios[key]['overhead_us']:>15.1f} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "at": datetime.now(timezone.utc).isoformat(), "python": platform.python_version(), "cpus": os.cpu_count(),
        "rounds": args.rounds, "messages": args.messages, "samples": samples, "median": median, "ratios": ratios,
    }, indent=2))
    print(f"results: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
