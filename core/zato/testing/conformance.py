""" The conformance suite every outgoing connection type passes: connect, ping, reconnect after
an outage, live edit, close, bad config. A plugin runs it against its real remote end:

```python
from zato.testing.conformance import OutgoingConnectionConformance

class TestSMTPConformance(OutgoingConnectionConformance):
    connection_type = "smtp"            # OutgoingConnectionType.name
    object_type = "email_smtp"          # its ObjectType.name

    @pytest.fixture
    async def peer(self):               # a `Peer` (below) around a real server on 127.0.0.1
        ...
```

The suite starts a Zato server in-process with every installed plugin, creates the connection
through the admin API (secrets through their own call), and drives the peer. `server_settings`
sets server.conf values in the suite's servers, e.g. an opt-in plugin switched on:
`server_settings = {"plugins": {"ftp": True}}` (both suites have it).

Listener channels (`zato.registry.ListenerType`) pass `ListenerConformance` the same way, with a
`source` fixture (a `ListenerSource`) around their real backend: start, live edit, delete,
backend down then back, bad definitions, a failing service, a stop with an item in hand. The
reference listener type, on queues in RAM (`MemoryBroker`, like trio's `MemoryListener`), is
`memory_listener_type()`; tests/test_listeners.py runs the suite against it. A listener plugin
declares the request attribute it adds (`register_request_attributes`: `self.request.memory`).
"""

from __future__ import annotations

import itertools
import time
import uuid
import weakref
from collections import defaultdict, deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Protocol
from urllib.parse import quote

import httpx
import pytest
import trio

from zato.registry import Kind
from zato.testing._servers import admin_auth, create_test_server_dir, run_server


class Peer(Protocol):
    """ What a plugin's `peer` fixture yields. """

    def definition(self, name: str) -> dict[str, Any]:
        """ Fields (no secrets) of a connection to this peer, for the admin API. """

    def secrets(self) -> dict[str, str]:
        """ Secret fields to set through their own call ({} if none). """

    def use(self, connection: Any) -> None:
        """ A real round trip through the connection (runs in a worker thread); raises if it fails. """

    def edited(self, definition: dict[str, Any]) -> dict[str, Any]:
        """ A changed definition that still reaches this peer (a live edit). """

    def check_edit(self, connection: Any) -> None:
        """ Asserts the connection now works as the edited definition says (runs in a worker thread). """

    def assert_closed(self, connection: Any) -> None:
        """ Asserts the connection released what it held (sockets, pools). """

    def bad_definitions(self) -> list[tuple[dict[str, Any], str]]:
        """ (definition, field named in the admin API's errors) pairs that must be refused. """

    async def stop(self) -> None:
        """ The remote end goes away. """

    async def start(self) -> None:
        """ It comes back at the same address. """


def _with_settings(base_dir: Path, settings: dict[str, dict[str, Any]], **config: dict[str, Any]) -> Path:
    merged = {section: dict(values) for section, values in settings.items()}
    for section, values in config.items():
        merged.setdefault(section, {}).update(values)
    return create_test_server_dir(base_dir, **merged)


class OutgoingConnectionConformance:
    connection_type: str = ""
    object_type: str = ""
    name = "conformance connection"
    server_settings: dict[str, dict[str, Any]] = {}     # server.conf section -> {key: value}

    @pytest.fixture
    async def zato(self, tmp_path):
        """ A running server (graceful_timeout short, so replaced connections close quickly) and an
        admin client. """
        base_dir = _with_settings(tmp_path / "server", self.server_settings, main={"graceful_timeout": 0.3})
        async with run_server(base_dir) as server:
            # admin writes need Content-Type: application/json, with or without a body
            async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                                         headers={"content-type": "application/json"}) as client:
                client.server = server
                yield client

    def url(self, name: str = "") -> str:
        return f"/zato/api/objects/{self.object_type}" + (f"/{quote(name, safe='')}" if name else "")

    async def create(self, zato: Any, peer: Peer, name: str | None = None) -> Any:
        name = name or self.name
        reply = await zato.post(self.url(), json={**peer.definition(name), "name": name})
        assert reply.status_code == 201, reply.text
        for field, value in peer.secrets().items():
            reply = await zato.put(f"{self.url(name)}/secrets/{field}", json={"value": value})
            assert reply.status_code == 204, reply.text
        return self.connection(zato, name)

    def connection(self, zato: Any, name: str | None = None) -> Any:
        server = zato.server
        outconn_type = server.registry.get(Kind.OUTGOING_CONNECTION_TYPES, self.connection_type)
        return server.outgoing.map(outconn_type.accessor)[name or self.name]

    async def ping(self, zato: Any, name: str | None = None) -> dict[str, Any]:
        reply = await zato.post(f"/zato/api/outgoing/{self.connection_type}/{quote(name or self.name, safe='')}/ping")
        assert reply.status_code == 200, reply.text
        return reply.json()

    # ############################################################################################

    async def test_connects_and_is_used(self, zato, peer):
        connection = await self.create(zato, peer)
        ping = await self.ping(zato)
        assert ping["ok"], ping
        await trio.to_thread.run_sync(peer.use, connection)

    async def test_ping_reports_an_outage_and_it_reconnects_when_the_peer_is_back(self, zato, peer):
        connection = await self.create(zato, peer)
        await trio.to_thread.run_sync(peer.use, connection)
        await peer.stop()
        ping = await self.ping(zato)
        assert not ping["ok"] and ping["error"], ping
        with pytest.raises(Exception):
            await trio.to_thread.run_sync(peer.use, connection)
        await peer.start()
        deadline = time.monotonic() + 15
        while True:
            try:
                await trio.to_thread.run_sync(peer.use, connection)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await trio.sleep(0.2)
        assert (await self.ping(zato))["ok"]

    async def test_a_live_edit_rebuilds_the_connection(self, zato, peer):
        old = await self.create(zato, peer)
        await trio.to_thread.run_sync(peer.use, old)  # so that closing it has something to release
        edited = peer.edited({**peer.definition(self.name), "name": self.name})
        reply = await zato.put(self.url(self.name), json=edited)
        assert reply.status_code == 200, reply.text
        new = self.connection(zato)
        assert new is not old
        await trio.to_thread.run_sync(peer.use, new)
        await trio.to_thread.run_sync(peer.check_edit, new)
        await trio.sleep(0.6)  # past graceful_timeout: the replaced connection is closed
        peer.assert_closed(old)

    async def test_a_deleted_connection_is_gone_and_closed(self, zato, peer):
        connection = await self.create(zato, peer)
        await trio.to_thread.run_sync(peer.use, connection)
        reply = await zato.delete(self.url(self.name))
        assert reply.status_code == 204, reply.text
        with pytest.raises(LookupError, match=f"no outgoing connection {self.name!r}"):
            self.connection(zato)
        await trio.sleep(0.6)
        peer.assert_closed(connection)

    async def test_unknown_names_list_the_ones_that_exist(self, zato, peer):
        await self.create(zato, peer)
        with pytest.raises(LookupError) as info:
            self.connection(zato, "no such connection")
        assert repr(self.name) in str(info.value)

    async def test_bad_config_is_refused_naming_the_field(self, zato, peer):
        for definition, field in peer.bad_definitions():
            reply = await zato.post(self.url(), json={"name": "bad", **definition})
            assert reply.status_code == 400, (definition, reply.text)
            assert field in {e["field"] for e in reply.json()["errors"]}, (definition, reply.json())

    async def test_connections_close_when_the_server_stops(self, tmp_path, peer):
        base_dir = _with_settings(tmp_path / "stopping", self.server_settings)
        async with run_server(base_dir) as server:
            async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                                         headers={"content-type": "application/json"}) as zato:
                zato.server = server
                connection = await self.create(zato, peer)
                await trio.to_thread.run_sync(peer.use, connection)
        peer.assert_closed(connection)


# ################################################################################################
# Listener channels: the reference listener type, on queues in RAM


class MemoryBroker:
    """ Named queues in RAM that outlive the servers using them, so a test can see what a server
    left behind (messages given back, never acknowledged). A message a receiver took stays
    "unacked" until `ack`; `nack`, and a receiver closed with messages it did not ack, put them
    back at the head of their queue, as a real broker redelivers them. `stop()` makes the broker
    unreachable (receivers waiting fail, new ones cannot open) until `start()`. Listener
    definitions name a broker by its `name`, looked up in this process. """

    instances: "weakref.WeakValueDictionary[str, MemoryBroker]" = weakref.WeakValueDictionary()

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"memory-broker-{uuid.uuid4().hex[:8]}"
        self.queues: dict[str, deque[MemoryMessage]] = defaultdict(deque)
        self.unacked: dict[str, dict[int, MemoryMessage]] = defaultdict(dict)
        self.dead_letters: dict[str, list[Any]] = defaultdict(list)
        self.is_up = True
        self.opened = 0  # receivers opened, ever
        self._ids = itertools.count(1)
        self._changed = trio.Event()
        MemoryBroker.instances[self.name] = self

    def put(self, queue: str, payload: Any) -> None:
        self.queues[queue].append(MemoryMessage(next(self._ids), queue, payload))
        self._wake()

    def pending(self, queue: str) -> list[Any]:
        """ Payloads not acknowledged yet: taken (in delivery order), then queued. """
        return [m.payload for m in self.unacked[queue].values()] + [m.payload for m in self.queues[queue]]

    def stop(self) -> None:
        self.is_up = False
        self._wake()

    def start(self) -> None:
        self.is_up = True
        self._wake()

    def check_up(self, queue: str) -> None:
        if not self.is_up:
            raise ConnectionError(f"memory broker {self.name!r} is down (queue {queue!r})")

    def give_back(self, message: "MemoryMessage") -> None:
        if self.unacked[message.queue].pop(message.id, None) is not None:
            self.queues[message.queue].appendleft(message)
            self._wake()

    async def wait_for_change(self) -> None:
        await self._changed.wait()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


@dataclass
class MemoryMessage:
    id: int
    queue: str
    payload: Any
    deliveries: int = 0


@dataclass(frozen=True)
class MemoryDelivery:
    """ `self.request.memory` in a service a memory listener invoked. """
    broker: str
    queue: str
    message_id: int
    deliveries: int  # 1 the first time, more after a nack or a receiver that went away


class MemoryReceiver:
    """ A receiver of one memory listener definition: {"broker", "queue", "service"}. """

    def __init__(self, broker: MemoryBroker, definition: dict[str, Any]) -> None:
        self.broker = broker
        self.queue = definition["queue"]
        self.service = definition["service"]
        self.held: dict[int, MemoryMessage] = {}
        # redeliver_attempts: the broker redelivers what is given back, as MQ does after a
        # backout (Invocation.delivery_count), at most that many deliveries in all
        self.redeliver_attempts = int(definition.get("redeliver_attempts") or 0)
        if self.redeliver_attempts:
            from zato.server.listeners import FailurePolicy
            self.failure_policy = FailurePolicy(attempts=self.redeliver_attempts, backoff=None)

    async def receive(self) -> MemoryMessage:
        await trio.lowlevel.checkpoint()  # trio's rule: an async call is always a checkpoint
        while True:  # cancel-safe: a message is taken only after the last checkpoint
            self.broker.check_up(self.queue)
            queue = self.broker.queues[self.queue]
            if queue:
                message = queue.popleft()
                message.deliveries += 1
                self.broker.unacked[self.queue][message.id] = self.held[message.id] = message
                return message
            await self.broker.wait_for_change()

    def to_invocation(self, message: MemoryMessage) -> Any:
        from zato.server.listeners import Invocation
        return Invocation(self.service, message.payload, attributes={"memory": MemoryDelivery(
            self.broker.name, self.queue, message.id, message.deliveries)},
            delivery_count=message.deliveries - 1 if self.redeliver_attempts else None)

    async def ack(self, message: MemoryMessage) -> None:
        self.broker.unacked[self.queue].pop(message.id, None)
        self.held.pop(message.id, None)

    async def nack(self, message: MemoryMessage, error: BaseException) -> None:
        self.held.pop(message.id, None)
        self.broker.give_back(message)

    async def dead_letter(self, message: MemoryMessage, error: BaseException | None) -> None:
        self.broker.dead_letters[self.queue].append(message.payload)

    def close(self) -> None:
        for message in reversed(list(self.held.values())):  # what it did not ack goes back, in order
            self.broker.give_back(message)
        self.held.clear()


@asynccontextmanager
async def open_memory_receiver(server: Any, definition: dict[str, Any]) -> AsyncIterator[MemoryReceiver]:
    broker = MemoryBroker.instances.get(definition["broker"])
    if broker is None:
        raise LookupError(f"no memory broker named {definition['broker']!r} in this process")
    broker.check_up(definition["queue"])
    broker.opened += 1
    receiver = MemoryReceiver(broker, definition)
    try:
        yield receiver
    finally:
        receiver.close()


def _check_memory_listener(data: dict[str, Any], *, partial: bool = False) -> list[dict[str, str]]:
    queue = data.get("queue")
    if isinstance(queue, str) and not all(c.isalnum() or c in "._-" for c in queue):
        return [{"field": "queue", "error": f"{queue!r} is not a queue name: use letters, digits, '.', '_', '-'"}]
    return []


def _validate_memory_listener(definition: dict[str, Any]) -> list[dict[str, str]]:
    broker = definition.get("broker")
    if broker not in MemoryBroker.instances:
        known = ", ".join(sorted(MemoryBroker.instances)) or "none"
        return [{"field": "broker", "error": f"no memory broker named {broker!r} in this process (there are: "
                                             f"{known}); create a zato.testing.conformance.MemoryBroker first"}]
    return []


def memory_object_type(name: str = "memory_listener") -> Any:
    """ The object type of memory listener definitions. """
    from zato.registry import Field, ObjectType
    return ObjectType(name, (
        Field("broker", required=True, description="The name of a MemoryBroker in this process"),
        Field("queue", required=True, min_length=1, description="The queue to take messages from",
              example="orders"),
        Field("service", required=True, references="service", description="The service each message goes to"),
        Field("redeliver_attempts", "int", default=0, minimum=0,
              description="0: the core retries a failing item in place; N: the broker redelivers what is given back "
                          "(as an MQ backout), at most N deliveries in all, then the dead letter"),
    ), description="A listener on a queue in RAM (the test kit's reference listener)", check=_check_memory_listener)


def memory_listener_type(name: str = "memory", object_type: str = "memory_listener", *,
                         failure_policy: Any = None, restart: Any = None, placement: str = "every_worker") -> Any:
    """ The reference listener type: takes messages from a `MemoryBroker` queue. Register it with
    `memory_object_type(object_type)` from a plugin's `register_channel_types`. """
    from zato.registry import ListenerType
    return ListenerType(name, object_type, "Messages from a queue in RAM (the test kit's reference listener)",
                        open=open_memory_receiver, validate=_validate_memory_listener, placement=placement,
                        failure_policy=failure_policy, restart=restart)


class MemorySource:
    """ The `ListenerSource` of the memory listener type, around one `MemoryBroker`. """
    request_attribute = "memory"

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker or MemoryBroker()

    def definition(self, name: str, service: str) -> dict[str, Any]:
        return {"broker": self.broker.name, "queue": f"queue-{uuid.uuid4().hex[:6]}", "service": service}

    def edited(self, definition: dict[str, Any]) -> dict[str, Any]:
        return {**definition, "queue": definition["queue"] + "-edited"}

    async def put(self, definition: dict[str, Any], payload: dict[str, Any]) -> None:
        self.broker.put(definition["queue"], payload)

    def pending(self, definition: dict[str, Any]) -> list[Any]:
        return self.broker.pending(definition["queue"])

    def dead_letters(self, definition: dict[str, Any]) -> list[Any] | None:
        return self.broker.dead_letters[definition["queue"]]

    async def stop(self) -> None:
        self.broker.stop()

    async def start(self) -> None:
        self.broker.start()

    def bad_definitions(self) -> list[tuple[dict[str, Any], str]]:
        good = self.definition("bad", RECORD_SERVICE)
        return [({**good, "queue": "no spaces allowed"}, "queue"),  # the object type's check: 400
                ({k: v for k, v in good.items() if k != "service"}, "service"),  # the schema: 400
                ({**good, "broker": "no such broker"}, "broker")]  # the listener type's validate: 400


# ################################################################################################
# Listener channels: the suite


class ListenerSource(Protocol):
    """ What a listener plugin's `source` fixture yields: its backend, driven by the suite. """
    request_attribute: str  # the attribute its listener adds to `self.request` ("ibm_mq")

    def definition(self, name: str, service: str) -> dict[str, Any]:
        """ Fields (no secrets) of a definition listening on a place of its own, invoking `service`. """

    def edited(self, definition: dict[str, Any]) -> dict[str, Any]:
        """ The definition changed to listen somewhere else on the same backend (a live edit). """

    async def put(self, definition: dict[str, Any], payload: dict[str, Any]) -> None:
        """ Sends `payload` (a JSON object) where `definition` listens; its listener must give the
        service the same object as `self.request.payload`. """

    def pending(self, definition: dict[str, Any]) -> list[Any]:
        """ Payloads the backend still holds where `definition` listens (not acknowledged). """

    def dead_letters(self, definition: dict[str, Any]) -> list[Any] | None:
        """ Payloads in its dead-letter destination; None if the listener has none (it logs them). """

    async def stop(self) -> None:
        """ The backend goes away. """

    async def start(self) -> None:
        """ It comes back. """

    def bad_definitions(self) -> list[tuple[dict[str, Any], str]]:
        """ (definition, the field the refusal must name) pairs that the admin API must refuse. """


RECORD_SERVICE = "listener.conformance.record"
FAIL_SERVICE = "listener.conformance.fail"
SLOW_SERVICE = "listener.conformance.slow"

LISTENER_SERVICES = f'''
import trio

from zato.server.service import Service
from zato.testing.conformance import listener_log


class Record(Service):
    name = {RECORD_SERVICE!r}

    async def handle(self):
        nested = await self.invoke({RECORD_SERVICE + ".nested"!r})
        listener_log(self.server).record(self, "done", nested=nested)


class Nested(Service):
    """ Invoked by Record: what a service a listener's service invokes gets. """
    name = {RECORD_SERVICE + ".nested"!r}

    async def handle(self):
        self.response.payload = sorted(name for name, value in self.request.attributes.items() if value is not None)


class Fail(Service):
    name = {FAIL_SERVICE!r}

    async def handle(self):
        listener_log(self.server).record(self, "failed")
        raise RuntimeError("the listener conformance suite's service fails on purpose")


class Slow(Service):
    """ Sleeps `payload["sleep"]` seconds (an item in hand when a test stops or edits). """
    name = {SLOW_SERVICE!r}

    async def handle(self):
        log = listener_log(self.server)
        log.record(self, "started")
        await trio.sleep(float(self.request.payload.get("sleep", 0.5)))
        log.record(self, "done")
'''


@dataclass
class ListenerCall:
    """ One service call the suite's services saw. """
    service: str
    outcome: str  # started, done, failed
    channel: str
    payload: Any
    attributes: dict[str, Any]  # each read as `self.request.<name>`
    cid: str
    nested: Any = None  # the attribute names a service this one invoked got


@dataclass
class ListenerLog:
    calls: list[ListenerCall] = field(default_factory=list)

    def record(self, service: Any, outcome: str, nested: Any = None) -> None:
        request = service.request
        attributes = {name: getattr(request, name) for name in request.attributes}
        self.calls.append(ListenerCall(service.name, outcome, request.channel, request.payload, attributes,
                                       service.cid, nested))

    def of(self, item_id: str, outcome: str = "done") -> list[ListenerCall]:
        return [call for call in self.calls
                if isinstance(call.payload, dict) and call.payload.get("id") == item_id and call.outcome == outcome]


_listener_logs: "weakref.WeakKeyDictionary[Any, ListenerLog]" = weakref.WeakKeyDictionary()


def listener_log(server: Any) -> ListenerLog:
    """ What the suite's services saw in `server`. """
    log = _listener_logs.get(server)
    if log is None:
        log = _listener_logs[server] = ListenerLog()
    return log


async def wait_until(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """ Polls `check()` until it returns something true (returned), failing with `what` at `timeout`. """
    deadline = trio.current_time() + timeout
    while True:
        value = check()
        if value:
            return value
        if trio.current_time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await trio.sleep(0.02)


class ListenerConformance:
    """ The suite every listener type passes. A subclass names its `listener_type` and
    `object_type` and provides a `source` fixture (a `ListenerSource` around a real backend). The
    suite starts servers in-process (override `listener_server_dir` to prepare their directory),
    deploys its services through the admin API and creates definitions through it. Its timeouts
    follow the listener type's failure policy and restart back-off. """
    listener_type: str = ""
    object_type: str = ""
    name = "conformance listener"
    graceful_timeout = 3.0
    server_settings: dict[str, dict[str, Any]] = {}     # server.conf section -> {key: value}

    @pytest.fixture
    def listener_server_dir(self, tmp_path: Path) -> Callable[..., Path]:
        """ `make(name, **main)`: a server directory for the suite's servers. """
        def make(name: str, **main: Any) -> Path:
            return _with_settings(tmp_path / name, self.server_settings,
                                  main={"graceful_timeout": self.graceful_timeout, **main})
        return make

    @asynccontextmanager
    async def serve(self, base_dir: Path) -> AsyncIterator[Any]:
        """ A running server and an admin client (`client.server`) with the suite's services deployed. """
        async with run_server(base_dir) as server:
            async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                                         headers={"content-type": "application/json"}) as client:
                client.server = server
                reply = await client.post("/zato/api/deploy/listener_conformance_services.py",
                                          content=LISTENER_SERVICES.encode(), headers={"content-type": "text/x-python"})
                assert reply.status_code == 200, reply.text
                yield client

    @pytest.fixture
    async def zato(self, listener_server_dir):
        async with self.serve(listener_server_dir("server")) as client:
            yield client

    # Helpers

    def url(self, name: str = "") -> str:
        return f"/zato/api/objects/{self.object_type}" + (f"/{quote(name, safe='')}" if name else "")

    def runtime(self, zato: Any) -> Any:
        return zato.server.channels[self.listener_type]

    async def create(self, zato: Any, source: ListenerSource, service: str, name: str | None = None) -> dict[str, Any]:
        name = name or self.name
        definition = {**source.definition(name, service), "name": name}
        reply = await zato.post(self.url(), json=definition)
        assert reply.status_code == 201, reply.text
        return definition

    async def state(self, zato: Any, name: str | None = None) -> dict[str, Any] | None:
        """ The listener's entry in GET /zato/api/listeners. """
        reply = await zato.get("/zato/api/listeners")
        assert reply.status_code == 200, reply.text
        for state in reply.json()["listeners"]:
            if state["listener_type"] == self.listener_type and state["name"] == (name or self.name):
                return state
        return None

    async def wait_state(self, zato: Any, state: str, name: str | None = None,
                         timeout: float | None = None) -> dict[str, Any]:
        deadline = trio.current_time() + (timeout or self.restart_wait(zato))
        while True:
            found = await self.state(zato, name)
            if found is not None and found["state"] == state:
                return found
            if trio.current_time() > deadline:
                raise AssertionError(f"listener {name or self.name!r} is not {state} in time: {found}")
            await trio.sleep(0.02)

    def restart_wait(self, zato: Any) -> float:
        """ Long enough for a few restarts of the listener type's back-off. """
        return 5 + 3 * self.runtime(zato).restart.maximum

    def delivery_wait(self, zato: Any) -> float:
        """ Long enough for every attempt of the listener type's failure policy. """
        policy = self.runtime(zato).policy
        wait = policy.backoff.maximum if policy.backoff is not None else 0.0
        return 5 + policy.attempts * (wait + (policy.timeout or 1))

    # The suite

    async def test_a_definition_starts_and_its_items_reach_its_service(self, zato, source):
        definition = await self.create(zato, source, RECORD_SERVICE)
        await self.wait_state(zato, "running")
        await source.put(definition, {"id": "first"})
        log = listener_log(zato.server)
        [call] = await wait_until(lambda: log.of("first"), "the service got the item")
        assert call.channel == self.name and call.payload == {"id": "first"}
        assert source.request_attribute in call.attributes, call.attributes  # self.request.<plugin>
        await wait_until(lambda: source.pending(definition) == [], "the item is acknowledged")
        await wait_until(lambda: self.runtime(zato).states()[0]["succeeded"], "it is counted")
        state = await self.state(zato)
        assert call.attributes[source.request_attribute] is not None
        assert call.nested == [], "a service the listener's service invokes gets no channel attributes"
        assert (state["received"], state["succeeded"], state["failed"], state["dead_lettered"]) == (1, 1, 0, 0), state

    async def test_a_live_edit_replaces_the_receiver_losing_nothing_and_handling_nothing_twice(self, zato, source):
        old = await self.create(zato, source, SLOW_SERVICE)
        await self.wait_state(zato, "running")
        log = listener_log(zato.server)
        await source.put(old, {"id": "in hand", "sleep": 0.5})
        await wait_until(lambda: log.of("in hand", "started"), "the slow service started")
        new = {**source.edited(old), "name": self.name}
        reply = await zato.put(self.url(self.name), json=new)
        assert reply.status_code == 200, reply.text
        await wait_until(lambda: log.of("in hand"), "the item in hand is finished on the old receiver")
        await source.put(new, {"id": "after the edit", "sleep": 0})
        await wait_until(lambda: log.of("after the edit"), "the new definition's receiver took an item")
        await source.put(old, {"id": "to the old place", "sleep": 0})
        await trio.sleep(0.3)
        assert [c.payload["id"] for c in log.calls if c.outcome == "done"] == ["in hand", "after the edit"]
        assert len(log.of("in hand", "started")) == 1  # handled once
        assert source.pending(old) == [{"id": "to the old place", "sleep": 0}]  # in hand was acked there
        assert source.pending(new) == []

    async def test_a_deactivated_or_deleted_definition_stops_listening(self, zato, source):
        definition = await self.create(zato, source, RECORD_SERVICE)
        await self.wait_state(zato, "running")
        reply = await zato.patch(self.url(self.name), json={"is_active": False})
        assert reply.status_code == 200, reply.text
        await self.wait_state(zato, "stopped")
        await source.put(definition, {"id": "while inactive"})
        await trio.sleep(0.3)
        log = listener_log(zato.server)
        assert not log.of("while inactive") and source.pending(definition) == [{"id": "while inactive"}]
        reply = await zato.patch(self.url(self.name), json={"is_active": True})
        assert reply.status_code == 200, reply.text
        await wait_until(lambda: log.of("while inactive"), "active again, it takes what waited")
        reply = await zato.delete(self.url(self.name))
        assert reply.status_code == 204, reply.text
        await self.wait_state(zato, "stopped")
        await source.put(definition, {"id": "after the delete"})
        await trio.sleep(0.3)
        assert not log.of("after the delete") and source.pending(definition) == [{"id": "after the delete"}]

    async def test_a_backend_that_goes_down_is_reopened_with_back_off_when_it_is_back(self, zato, source):
        definition = await self.create(zato, source, RECORD_SERVICE)
        await self.wait_state(zato, "running")
        await source.stop()
        state = await self.wait_state(zato, "backing_off")
        assert state["last_error"] and state["last_error_at"] and state["next_attempt_at"] >= state["last_error_at"]
        first = state["restarts"]
        await wait_until(lambda: self.runtime(zato).states()[0]["restarts"] > first,
                         "it keeps trying while the backend is down", self.restart_wait(zato))
        await source.start()
        state = await self.wait_state(zato, "running")
        assert state["last_error"], "the last error is kept after it recovers"
        await source.put(definition, {"id": "after the outage"})
        log = listener_log(zato.server)
        await wait_until(lambda: log.of("after the outage"), "items flow again")

    async def test_a_bad_definition_is_refused_naming_the_field(self, zato, source):
        for number, (definition, field_name) in enumerate(source.bad_definitions()):
            name = f"bad {number}"
            reply = await zato.post(self.url(), json={**definition, "name": name})
            assert reply.status_code in (400, 409), (definition, reply.text)
            body = reply.json()
            named = {e["field"] for e in body.get("errors", [])} if reply.status_code == 400 else body["details"]
            assert field_name in named, (definition, body)
            assert await self.state(zato, name) is None  # nothing runs for it
        # Stored without the admin API (an older version, enmasse, a hand edit): not run either.
        for number, (definition, field_name) in enumerate(source.bad_definitions()):
            await trio.to_thread.run_sync(zato.server.odb.put_object, self.object_type, f"stored {number}",
                                          {k: v for k, v in definition.items() if k != "name"})
        reply = await zato.post("/zato/api/config/reload")
        assert reply.status_code in (200, 204), reply.text
        for number, (definition, field_name) in enumerate(source.bad_definitions()):
            state = await self.state(zato, f"stored {number}")
            error = zato.server.config_errors.get(f"{self.object_type}:stored {number}", "")
            assert (state is None and field_name in error) or (
                state["state"] == "invalid" and any(field_name in problem for problem in state["problems"])), (
                definition, state, error)

    async def test_a_failing_service_is_retried_then_dead_lettered(self, zato, source):
        definition = await self.create(zato, source, FAIL_SERVICE)
        await self.wait_state(zato, "running")
        await source.put(definition, {"id": "doomed"})
        policy = self.runtime(zato).policy
        state = await wait_until(lambda: [s for s in self.runtime(zato).states() if s["dead_lettered"] == 1],
                                 "the item is dead-lettered", self.delivery_wait(zato))
        assert len(listener_log(zato.server).of("doomed", "failed")) == policy.attempts
        state = await self.state(zato)
        assert (state["received"], state["failed"], state["retried"], state["succeeded"], state["dead_lettered"]) == (
            1, policy.attempts, policy.attempts - 1, 0, 1), state
        assert source.pending(definition) == []  # done: it is not delivered again
        dead = source.dead_letters(definition)
        assert dead is None or dead == [{"id": "doomed"}], dead

    async def test_a_stop_finishes_the_item_in_hand(self, listener_server_dir, source):
        async with self.serve(listener_server_dir("stopping")) as zato:
            definition = await self.create(zato, source, SLOW_SERVICE)
            await self.wait_state(zato, "running")
            log = listener_log(zato.server)
            await source.put(definition, {"id": "in hand", "sleep": 0.5})
            await wait_until(lambda: log.of("in hand", "started"), "the slow service started")
            runtime = self.runtime(zato)
        assert len(log.of("in hand")) == 1  # finished during the stop
        assert source.pending(definition) == []  # and acknowledged
        assert [s["state"] for s in runtime.states()] == ["stopped"]

    async def test_a_stop_gives_back_the_item_that_cannot_finish_in_time(self, listener_server_dir, source):
        async with self.serve(listener_server_dir("stopping", graceful_timeout=0.3)) as zato:
            definition = await self.create(zato, source, SLOW_SERVICE)
            await self.wait_state(zato, "running")
            log = listener_log(zato.server)
            await source.put(definition, {"id": "too slow", "sleep": 30})
            await wait_until(lambda: log.of("too slow", "started"), "the slow service started")
            runtime = self.runtime(zato)
        assert not log.of("too slow")
        assert source.pending(definition) == [{"id": "too slow", "sleep": 30}]  # not lost: delivered again later
        assert runtime.states()[0]["nacked"] == 1
