""" The core's listener runtime (zato.server.listeners): the channel conformance suite run against
the test kit's reference listener type (queues in RAM) through real in-process servers, plus what
the suite does not cover: definitions stored before start, placement, metrics, the admin route's
OpenAPI entry, the back-off and the failure policy, request attributes. """

from __future__ import annotations

from types import MappingProxyType

import httpx
import pytest
import trio

from zato.odb import ODB, sqlite_url
from zato.plugins import DEFAULT_PLUGINS
from zato.registry import ListenerType, RegistrationError
from zato.server.listeners import Backoff, FailurePolicy
from zato.server.service import Request, request_attributes
from zato.testing import admin_auth, create_test_server_dir, run_server
from zato.testing.conformance import (
    FAIL_SERVICE, LISTENER_SERVICES, RECORD_SERVICE, ListenerConformance, MemoryBroker, MemoryMessage, MemorySource,
    listener_log, open_memory_receiver, wait_until,
)

PLUGIN_SOURCE = '''
from zato import hookimpl
from zato.server.listeners import Backoff, FailurePolicy
from zato.testing.conformance import memory_listener_type, memory_object_type


@hookimpl
def register_object_types(register):
    register(memory_object_type())


@hookimpl
def register_request_attributes(register):
    register("memory", "the queue and delivery of the item")


@hookimpl
def register_channel_types(register):
    # Short delays, so that the suite's retries and restarts take fractions of a second
    register(memory_listener_type(failure_policy=FailurePolicy(attempts=3, backoff=Backoff(0.05, 0.2)),
                                  restart=Backoff(0.05, 0.3)))
'''


def install(plugin_site) -> None:
    """ The reference listener type, and the admin route's plugin unless it is a built-in already. """
    plugin_site.add("memory_listener", PLUGIN_SOURCE)
    if "listeners" not in DEFAULT_PLUGINS:
        plugin_site.add("listeners", "from zato.builtin.listeners import register_http_routes\n")


class TestMemoryListenerConformance(ListenerConformance):
    listener_type = "memory"
    object_type = "memory_listener"

    @pytest.fixture
    def listener_server_dir(self, plugin_site, tmp_path):
        install(plugin_site)

        def make(name, **main):
            return create_test_server_dir(tmp_path / name, main={"graceful_timeout": self.graceful_timeout, **main})
        return make

    @pytest.fixture
    def source(self):
        return MemorySource()


# ################################################################################################
# What the suite does not cover


def store(server_dir, name: str, data: dict) -> None:
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    odb.upgrade()
    odb.put_object("memory_listener", name, data)
    odb.close()


async def test_definitions_stored_before_the_start_are_started_and_take_what_waited(plugin_site, server_dir):
    install(plugin_site)
    source = MemorySource()
    definition = source.definition("stored", RECORD_SERVICE)
    store(server_dir, "stored", definition)
    await source.put(definition, {"id": "waiting"})  # there before the server
    # The services are deployed at start, before the listener starts (a service uploaded after the
    # start may come later than the failure policy's last retry: a flake under load).
    (server_dir / "pickup" / "listener_conformance_services.py").write_text(LISTENER_SERVICES)
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30) as client:
            log = listener_log(server)
            [call] = await wait_until(lambda: log.of("waiting"), "the waiting item reached the service")
            assert call.channel == "stored" and call.attributes["memory"].queue == definition["queue"]
            reply = await client.get("/zato/api/listeners")
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["worker"]["pid"] == server.pid
            [state] = [s for s in body["listeners"] if s["name"] == "stored"]
            assert state["state"] == "running" and state["listener_type"] == "memory"


async def test_a_backend_that_redelivers_gets_each_failure_back_then_the_dead_letter(plugin_site, server_dir):
    # A broker that redelivers and counts (as MQ's backout and BackoutCount): one attempt per
    # delivery, the item given back after each failure, the dead letter at the last attempt; an
    # item that arrives already delivered that often is dead-lettered without an attempt.
    install(plugin_site)
    (server_dir / "pickup" / "listener_conformance_services.py").write_text(LISTENER_SERVICES)
    source = MemorySource()
    definition = {**source.definition("redelivered", FAIL_SERVICE), "redeliver_attempts": 3}
    store(server_dir, "redelivered", definition)
    async with run_server(server_dir) as server:
        log = listener_log(server)
        await source.put(definition, {"id": "failing"})
        await wait_until(lambda: source.dead_letters(definition) == [{"id": "failing"}], "the dead letter")
        calls = log.of("failing", "failed")
        assert [call.attributes["memory"].deliveries for call in calls] == [1, 2, 3]  # each a new delivery
        worn = MemoryMessage(999, definition["queue"], {"id": "worn"}, deliveries=3)  # failed thrice elsewhere
        source.broker.queues[definition["queue"]].append(worn)
        source.broker._wake()
        await wait_until(lambda: len(source.dead_letters(definition)) == 2, "the worn item's dead letter")
        assert log.of("worn", "failed") == [] and source.broker.pending(definition["queue"]) == []
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth()) as client:
            [state] = [s for s in (await client.get("/zato/api/listeners")).json()["listeners"]
                       if s["name"] == "redelivered"]
        assert (state["received"], state["failed"], state["retried"], state["dead_lettered"], state["nacked"]) == \
            (4, 3, 2, 2, 0)


async def test_an_outage_is_logged_once_and_its_end_once(plugin_site, server_dir, caplog):
    install(plugin_site)
    caplog.set_level("DEBUG", logger="zato.listeners")
    source = MemorySource()
    definition = source.definition("flaky", RECORD_SERVICE)
    store(server_dir, "flaky", definition)
    source.broker.stop()  # down before the server starts: every opening fails
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth()) as client:
            async def restarts() -> int:
                [state] = [s for s in (await client.get("/zato/api/listeners")).json()["listeners"]
                           if s["name"] == "flaky"]
                return state["restarts"]
            with trio.fail_after(10):
                while await restarts() < 4:
                    await trio.sleep(0.02)
            source.broker.start()
            with trio.fail_after(10):
                while not [r for r in caplog.records if "is running again" in r.getMessage()]:
                    await trio.sleep(0.02)
    mine = [r for r in caplog.records if "'flaky'" in r.getMessage()]
    warnings = [r for r in mine if r.levelname == "WARNING" and "failed" in r.getMessage()]
    assert len(warnings) == 1 and "memory broker" in warnings[0].getMessage(), [r.getMessage() for r in mine]
    assert len([r for r in mine if r.levelname == "DEBUG" and "failed again" in r.getMessage()]) >= 3
    [again] = [r for r in mine if "is running again" in r.getMessage()]
    assert again.levelname == "INFO" and "ConnectionError" in again.getMessage()


async def test_a_one_process_listener_runs_in_one_of_two_servers_and_moves_when_it_stops(plugin_site, tmp_path,
                                                                                         database_url):
    """ Two servers sharing one configuration database: the holder of the lease `listener:memory`
    runs every definition, the other keeps them in standby, and takes over when the holder stops. """
    plugin_site.add("one_process_listener", PLUGIN_SOURCE.replace(
        "restart=Backoff(0.05, 0.3))", "restart=Backoff(0.05, 0.3), placement='one_process')"))
    source = MemorySource()
    definition = source.definition("single", RECORD_SERVICE)
    odb = ODB(database_url)
    odb.upgrade()
    odb.put_object("memory_listener", "single", definition)
    odb.close()
    dirs = [create_test_server_dir(tmp_path / name, main={"graceful_timeout": 1, "placement_lease_seconds": 1},
                                   odb={"url": database_url}) for name in ("a", "b")]

    async def serve(base, stop: trio.Event, *, task_status):
        async with run_server(base) as server:
            task_status.started(server)
            await stop.wait()

    def state(server) -> str:
        return [s["state"] for s in server.channels["memory"].states() if s["name"] == "single"][0]

    async with trio.open_nursery() as nursery:
        stop_a, stop_b = trio.Event(), trio.Event()
        server_a = await nursery.start(serve, dirs[0], stop_a)
        await wait_until(lambda: state(server_a) == "running", "server A runs it")
        server_b = await nursery.start(serve, dirs[1], stop_b)
        await trio.sleep(1.5)  # longer than the lease: B competes, A keeps it
        assert (state(server_a), state(server_b)) == ("running", "standby") and source.broker.opened == 1
        stop_a.set()  # A's stop releases the lease: B takes over at once
        await wait_until(lambda: state(server_b) == "running", "server B took it over", timeout=5)
        assert source.broker.opened == 2  # once by A, then once by B
        stop_b.set()


async def test_listener_counts_and_states_are_prometheus_metrics(plugin_site, server_dir):
    install(plugin_site)
    source = MemorySource()
    definition = source.definition("metered", "no.such.service")  # every attempt fails: all counts move
    store(server_dir, "metered", definition)
    await source.put(definition, {"id": "one"})
    async with run_server(server_dir) as server:
        runtime = server.channels["memory"]
        await wait_until(lambda: runtime.states()[0]["dead_lettered"] == 1, "dead-lettered")
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30) as client:
            text = (await client.get("/zato/metrics")).text
    labels = 'listener="metered",listener_type="memory"'
    for outcome, value in (("received", 1), ("failed", 3), ("retried", 2), ("dead_lettered", 1)):
        assert f'zato_listener_items_total{{{labels},outcome="{outcome}"}} {value}.0' in text, (outcome, text)
    assert f"zato_listener_running{{{labels}}} 1.0" in text
    assert source.broker.dead_letters[definition["queue"]] == [{"id": "one"}]


async def test_the_admin_route_is_in_the_openapi_document(plugin_site, server_dir):
    install(plugin_site)
    async with run_server(server_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30) as client:
            document = (await client.get("/zato/api/openapi.json")).json()
            operation = document["paths"]["/zato/api/listeners"]["get"]
            assert operation["operationId"] == "listListeners"
            assert {"200", "401"} <= set(operation["responses"])
            assert (await client.get("/zato/api/listeners", auth=("admin", "wrong"))).status_code == 401


def test_back_off_grows_is_bounded_and_jittered():
    backoff = Backoff(initial=0.1, maximum=1.0, multiplier=2.0, jitter=0.25)
    for attempt, base in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (50, 1.0), (5000, 1.0)):
        delays = {backoff.delay(attempt) for _ in range(50)}
        assert all(base * 0.75 <= delay <= base for delay in delays), (attempt, delays)
        assert len(delays) > 1, "jittered"
    with pytest.raises(ValueError, match="initial must be > 0.*maximum must be >= initial"):
        Backoff(initial=0, maximum=-1)
    with pytest.raises(ValueError, match="jitter must be from 0 to less than 1"):
        Backoff(jitter=1)


async def test_the_failure_policy_retries_with_back_off_then_gives_up_with_the_last_error():
    policy = FailurePolicy(attempts=3, backoff=Backoff(initial=0.01, maximum=0.02))
    calls, failures = [], []

    async def attempt():
        calls.append(trio.current_time())
        raise ValueError(f"failure {len(calls)}")
    delivery = await policy.deliver(attempt, on_failure=lambda n, exc, delay: failures.append((n, str(exc), delay)))
    assert (delivery.ok, delivery.attempts, str(delivery.error)) == (False, 3, "failure 3")
    assert [(n, text) for n, text, _ in failures] == [(1, "failure 1"), (2, "failure 2"), (3, "failure 3")]
    assert failures[0][2] > 0 and failures[1][2] > 0 and failures[2][2] is None  # no wait after the last
    assert calls[1] - calls[0] >= 0.01 * 0.8

    async def second_time_lucky():
        calls.append(1)
        if len(calls) < 5:
            raise ValueError("not yet")
        return "done"
    calls.clear()
    calls.extend([0, 0, 0])
    assert (await policy.deliver(second_time_lucky)).result == "done"
    with pytest.raises(ValueError, match="attempts must be an integer >= 1"):
        FailurePolicy(attempts=0)


async def test_the_failure_policy_step_by_step_is_the_schedule_deliver_follows():
    """ `after_failure(n)`: what callers that keep an item elsewhere between attempts (pub/sub)
    ask; `backoff=None` retries at once. """
    policy = FailurePolicy(attempts=3, backoff=Backoff(initial=0.5, maximum=0.8, multiplier=2.0, jitter=0.0))
    assert [policy.after_failure(n) for n in (1, 2, 3, 4)] == [0.5, 0.8, None, None]
    at_once = FailurePolicy(attempts=2, backoff=None)
    assert [at_once.after_failure(n) for n in (1, 2)] == [0.0, None]
    delays = []

    async def attempt():
        raise ValueError("no")
    delivery = await at_once.deliver(attempt, on_failure=lambda n, exc, delay: delays.append(delay))
    assert (delivery.ok, delivery.attempts, delays) == (False, 2, [0.0, None])
    with pytest.raises(ValueError, match="backoff must be a Backoff or None"):
        FailurePolicy(backoff=0.5)


def test_listener_type_registration_is_checked():
    with pytest.raises(RegistrationError, match="placement 'everywhere' is not one of every_worker, one_process"):
        ListenerType("x", "x_type", open=lambda server, definition: None, placement="everywhere")
    listener = ListenerType("x", "x_type", open=lambda server, definition: None)
    assert listener.create is not None  # filled in: the core's runtime


def test_request_attributes_are_declared_read_as_attributes_and_none_elsewhere():
    declared = MappingProxyType({"ibm_mq": None, "scheduler_job": None})
    first = Request({"a": 1}, channel="orders", attributes=request_attributes(declared, {"ibm_mq": "info"}))
    second = Request(attributes=request_attributes(declared, None))  # a service the first one invokes
    assert first.ibm_mq == "info" and first.scheduler_job is None
    assert dict(first.attributes) == {"ibm_mq": "info", "scheduler_job": None}
    assert second.ibm_mq is None and request_attributes(declared, None) is declared  # nothing made per request
    with pytest.raises(AttributeError, match="self.request has no attribute 'other': channel 'orders' gives ibm_mq"):
        first.other
    # a channel attribute of a known plugin that is not enabled here says which line switches it on
    with pytest.raises(AttributeError, match=r"self.request.wsx needs the wsx plugin \(zato-plugin-wsx\).*"
                                             r"\[deploy_internal\] zato_plugin_wsx = True"):
        first.wsx
    with pytest.raises(ValueError, match=r"request attribute\(s\) wsx not declared by any enabled plugin; .* "
                                         r"register_request_attributes hook \(declared: ibm_mq, scheduler_job\)"):
        request_attributes(declared, {"wsx": 1})


def test_a_request_attribute_cannot_hide_a_request_field():
    from zato.plugins import _register_request_attribute
    for name in ("payload", "http", "channel", "_x", "not-a-name"):
        with pytest.raises(TypeError):
            _register_request_attribute(name)
    assert _register_request_attribute("ibm_mq", "what MQ says") == ("ibm_mq", "what MQ says")


async def test_the_memory_broker_gives_back_what_a_closed_receiver_did_not_ack():
    broker = MemoryBroker()
    for payload in (1, 2, 3):
        broker.put("q", payload)
    definition = {"broker": broker.name, "queue": "q", "service": "s"}
    async with open_memory_receiver(None, definition) as receiver:
        first, second = await receiver.receive(), await receiver.receive()
        await receiver.ack(first)
        assert broker.pending("q") == [2, 3]
    assert broker.pending("q") == [2, 3] and [m.payload for m in broker.queues["q"]] == [2, 3]
    broker.stop()
    with pytest.raises(ConnectionError, match=f"memory broker {broker.name!r} is down"):
        async with open_memory_receiver(None, definition):
            pass


def test_a_listener_type_copied_with_dataclasses_replace_builds_runtimes_with_its_own_open():
    """ `create` is filled in per object: a copy with another `open` must not keep building
    runtimes of the original (dataclasses.replace passes the old object's bound method on). """
    import dataclasses

    from zato.testing.conformance import memory_listener_type

    original = memory_listener_type()

    async def other_open(server, definition):  # never opened here
        raise AssertionError

    copy = dataclasses.replace(original, open=other_open)
    assert copy.create.__self__ is copy and original.create.__self__ is original  # so create() uses copy.open
