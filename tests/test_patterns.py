""" Invocation patterns (zato.server.service.patterns): invoke_async with callbacks, fan-out/fan-in,
parallel execution and invoke/retry, from plain `def` and `async def` services, on a real
in-process server. Cancellation and deadlines must reach every service a call started, and work
left in the background must be owned (cancellable by cid, cancelled at shutdown). """

from __future__ import annotations

import textwrap
import time
from contextlib import asynccontextmanager
from typing import Any, Callable

import pytest
import trio

from zato.server.service.patterns import InvokeRetry, RetryFailed, background_calls
from zato.server.deployment import ServiceNotFound
from zato.testing import run_server

SERVICES = '''
import time

import trio

from zato.server.service import Service


def probe(service):
    return service.server.plugin_state["test_patterns_probe"]


def record(service, kind):
    probe(service).record(kind, service.name, service.cid, service.request.channel, service.request.payload)


class Noop(Service):
    name = "test.noop"

    async def handle(self):
        pass


class EchoSync(Service):
    name = "test.echo.sync"

    def handle(self):
        record(self, "target")
        self.response.payload = {"echo": self.request.payload, "by": "sync"}


class EchoAsync(Service):
    name = "test.echo.async"

    async def handle(self):
        record(self, "target")
        await trio.sleep(0)
        self.response.payload = {"echo": self.request.payload, "by": "async"}


class Fails(Service):
    name = "test.fails"

    def handle(self):
        record(self, "target")
        raise ValueError(f"boom {self.request.payload}")


class FailsUntil(Service):
    """ Raises until it has been invoked `request["succeed_on"]` times. """
    name = "test.fails.until"

    def handle(self):
        attempts = probe(self).count(self.name) + 1
        record(self, "target")
        if attempts < self.request.payload["succeed_on"]:
            raise ConnectionError(f"attempt {attempts} refused")
        self.response.payload = {"attempts": attempts}


class Gated(Service):
    """ Finishes when the test opens the probe's gate. """
    name = "test.gated"

    async def handle(self):
        record(self, "target")
        await probe(self).gate.wait()
        self.response.payload = {"gated": self.request.payload}


class BlocksAsync(Service):
    """ Waits 20 s unless cancelled (if cancellation never reached it, the test fails on
    "finished" instead of hanging). """
    name = "test.blocks.async"

    async def handle(self):
        record(self, "started")
        try:
            await trio.sleep(20)
        except BaseException as exc:
            record(self, type(exc).__name__)
            raise
        record(self, "finished")


class BlocksSync(Service):
    """ Pure Python in a worker thread, calling into the server now and then. Gives up after
    20 s (a thread cannot be interrupted: if cancellation never reached it, the test fails on
    "finished" instead of hanging). """
    name = "test.blocks.sync"

    def handle(self):
        record(self, "started")
        try:
            give_up_at = time.monotonic() + 20
            while time.monotonic() < give_up_at:
                time.sleep(0.005)
                self.invoke("test.noop")
        except BaseException as exc:
            record(self, type(exc).__name__)
            raise
        record(self, "finished")


class CallbackSync(Service):
    name = "test.callback.sync"

    def handle(self):
        record(self, "callback")


class CallbackAsync(Service):
    name = "test.callback.async"

    async def handle(self):
        record(self, "callback")


def call(service, request):
    """ Calls `request["call"]` (an attribute path on the service) with args and kwargs. """
    target = service
    for attr in request["call"].split("."):
        target = getattr(target, attr)
    return target(*request.get("args", ()), **request.get("kwargs", {}))


class CallerSync(Service):
    name = "test.caller.sync"

    def handle(self):
        result = call(self, self.request.payload)
        record(self, "caller-returned")
        self.response.payload = {"result": result, "cid": self.cid}


class CallerAsync(Service):
    name = "test.caller.async"

    async def handle(self):
        result = call(self, self.request.payload)
        if hasattr(result, "__await__"):
            result = await result
        record(self, "caller-returned")
        self.response.payload = {"result": result, "cid": self.cid}


class Conventional(Service):
    name = "test.conventional"

    def handle(self):
        self.response.payload = {"cid": self.invoke_async("test.echo.async", "by convention")}


class ConventionalCallback(Service):
    name = "test.conventional-async-callback"

    def handle(self):
        record(self, "callback")
'''

CALLERS = ["test.caller.sync", "test.caller.async"]


class Probe:
    """ What the test services saw, shared with them through `server.plugin_state`. Sync services
    append from worker threads (list.append is atomic). """

    def __init__(self) -> None:
        self.records: list[tuple[str, str, str, str, Any]] = []
        self.gate = trio.Event()

    def record(self, kind: str, name: str, cid: str, channel: str, payload: Any) -> None:
        self.records.append((kind, name, cid, channel, payload))

    def count(self, name: str) -> int:
        return sum(1 for record in self.records if record[1] == name)

    def of(self, kind: str, name: str | None = None) -> list[tuple[str, str, str, str, Any]]:
        return [record for record in self.records if record[0] == kind and (name is None or record[1] == name)]

    def kinds(self, name: str) -> list[str]:
        return [record[0] for record in self.records if record[1] == name]

    async def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
        try:
            with trio.fail_after(timeout):
                while not condition():
                    await trio.sleep(0.005)
        except trio.TooSlowError:
            raise AssertionError(f"waited {timeout} s for {what}; records: {self.records}") from None


@pytest.fixture
def patterns_dir(server_dir):
    (server_dir / "pickup" / "pattern_services.py").write_text(textwrap.dedent(SERVICES))
    return server_dir


@asynccontextmanager
async def serving(server_dir):
    async with run_server(server_dir) as server:
        probe = server.plugin_state["test_patterns_probe"] = Probe()
        yield server, probe


async def invoke(server, caller: str, call: str, *args: Any, caller_timeout: float | None = None, **kwargs: Any) -> Any:
    """ Has a test caller service run `self.<call>(*args, **kwargs)`; returns what it returned.
    `caller_timeout` is the caller's own timeout (its deadline). """
    response = await server.invoke_service(caller, {"call": call, "args": args, "kwargs": kwargs},
                                           timeout=caller_timeout)
    return response.payload["result"]


async def background_idle(server, probe: Probe) -> None:
    await probe.wait_for(lambda: background_calls(server).statistics()["running"] == 0, "background calls to finish")


# ################################################################################################
# invoke_async


@pytest.mark.parametrize("caller", CALLERS)
async def test_invoke_async_returns_the_cid_at_once_and_the_callback_gets_the_response(patterns_dir, caller):
    async with serving(patterns_dir) as (server, probe):
        cid = await invoke(server, caller, "invoke_async", "test.gated", {"n": 1}, callback="test.callback.async")
        assert probe.kinds(caller) == ["caller-returned"]
        assert isinstance(cid, str) and len(cid) == 24
        await probe.wait_for(lambda: probe.of("target", "test.gated"), "the target to start")
        assert not probe.of("callback")  # the caller returned; the target still waits for the gate

        probe.gate.set()
        await probe.wait_for(lambda: probe.of("callback"), "the callback")
        [(_, _, target_cid, target_channel, target_request)] = probe.of("target", "test.gated")
        [(_, callback_name, callback_cid, callback_channel, callback_request)] = probe.of("callback")
        assert (target_cid, target_channel, target_request) == (cid, "invoke-async", {"n": 1})
        assert (callback_name, callback_cid, callback_channel) == ("test.callback.async", cid, "invoke-async-callback")
        assert callback_request == {"gated": {"n": 1}}
        await background_idle(server, probe)


async def test_invoke_async_callbacks_by_class_and_by_convention(patterns_dir):
    async with serving(patterns_dir) as (server, probe):
        class_callback = server.services.get("test.callback.sync").cls
        cid = await invoke(server, "test.caller.async", "invoke_async", "test.echo.sync", "x",
                            callback=class_callback)
        conventional_cid = (await server.invoke_service("test.conventional")).payload["cid"]
        await probe.wait_for(lambda: len(probe.of("callback")) == 2, "both callbacks")
        assert probe.of("callback", "test.callback.sync")[0][2:] == (cid, "invoke-async-callback",
                                                                    {"echo": "x", "by": "sync"})
        assert probe.of("callback", "test.conventional-async-callback")[0][2:] == (
            conventional_cid, "invoke-async-callback", {"echo": "by convention", "by": "async"})


async def test_invoke_async_failure_is_logged_with_its_cid_and_the_server_carries_on(patterns_dir, caplog):
    async with serving(patterns_dir) as (server, probe):
        cid = await invoke(server, "test.caller.sync", "invoke_async", "test.fails", 7,
                            callback="test.callback.sync")
        await background_idle(server, probe)
        assert not probe.of("callback")
        assert f"cid={cid} invoke_async of 'test.fails'" in caplog.text and "boom 7" in caplog.text
        assert background_calls(server).statistics()["failed"] == 1
        # The background nursery survived the failure
        cid = await invoke(server, "test.caller.sync", "invoke_async", "test.echo.sync", 8,
                            callback="test.callback.sync")
        await probe.wait_for(lambda: probe.of("callback"), "the callback")
        assert probe.of("callback")[0][2] == cid


@pytest.mark.parametrize("caller", CALLERS)
async def test_invoke_async_refuses_unknown_services_in_the_caller(patterns_dir, caller):
    async with serving(patterns_dir) as (server, probe):
        with pytest.raises(ServiceNotFound, match="no.such.service"):
            await invoke(server, caller, "invoke_async", "no.such.service")
        with pytest.raises(ServiceNotFound, match="no.such.callback"):
            await invoke(server, caller, "invoke_async", "test.echo.sync", callback="no.such.callback")
        assert background_calls(server).statistics()["started"] == 0


async def test_invoke_async_timeout_applies_to_the_target(patterns_dir, caplog):
    async with serving(patterns_dir) as (server, probe):
        cid = await invoke(server, "test.caller.async", "invoke_async", "test.blocks.async", timeout=0.2,
                            callback="test.callback.sync")
        await background_idle(server, probe)
        assert probe.kinds("test.blocks.async") == ["started", "Cancelled"]
        assert not probe.of("callback")
        assert f"cid={cid} invoke_async of 'test.blocks.async'" in caplog.text and "TooSlowError" in caplog.text


# ################################################################################################
# Fan-out/fan-in and parallel execution


TARGETS = {"test.echo.sync": {"a": 1}, "test.echo.async": {"b": 2}, "test.fails": 3}


def check_outcomes(outcomes: list[dict], cid: str, source: str) -> None:
    """ One outcome per target, in the order of TARGETS; the failing one recorded, not lost. """
    assert [outcome["target"] for outcome in outcomes] == list(TARGETS)
    sync_ok, async_ok, failed = outcomes
    assert sync_ok["ok"] and sync_ok["response"] == {"echo": {"a": 1}, "by": "sync"} and sync_ok["exception"] is None
    assert async_ok["ok"] and async_ok["response"] == {"echo": {"b": 2}, "by": "async"}
    assert not failed["ok"] and failed["response"] is None
    assert failed["exception"] == "ValueError: boom 3" and failed["exception_type"] == "ValueError"
    for outcome in outcomes:
        assert outcome["cid"] == cid and outcome["source"] == source
        assert outcome["req_ts_utc"] <= outcome["resp_ts_utc"]


@pytest.mark.parametrize("caller", CALLERS)
async def test_fanout_runs_every_target_and_the_final_callbacks_get_every_outcome(patterns_dir, caller, caplog):
    async with serving(patterns_dir) as (server, probe):
        result = await invoke(server, caller, "patterns.fanout.invoke", TARGETS,
                              ["test.callback.sync", "test.callback.async"], on_target="test.callback.async")
        cid = result  # Zato: the caller's cid unless one is given
        await probe.wait_for(lambda: len(probe.of("callback")) == 5, "3 on-target and 2 on-final callbacks")
        await background_idle(server, probe)

        assert sorted(record[1] for record in probe.of("target")) == sorted(TARGETS)
        assert {record[2] for record in probe.of("target")} == {cid}
        assert {record[3] for record in probe.of("target")} == {"fanout-call"}

        on_target = [record for record in probe.of("callback") if record[3] == "fanout-on-target"]
        assert sorted(record[4]["target"] for record in on_target) == sorted(TARGETS)
        assert all(record[4]["phase"] == "on-target" and record[2] == cid for record in on_target)

        on_final = [record for record in probe.of("callback") if record[3] == "fanout-on-final"]
        assert sorted(record[1] for record in on_final) == ["test.callback.async", "test.callback.sync"]
        for record in on_final:
            check_outcomes(record[4], cid, caller)
        assert f"cid={cid} fanout target 'test.fails' raised ValueError: boom 3" in caplog.text


async def test_fanout_with_a_cid_of_its_own_and_a_target_timeout(patterns_dir):
    async with serving(patterns_dir) as (server, probe):
        cid = await invoke(server, "test.caller.sync", "patterns.fanout.invoke",
                           [("test.blocks.async", None), ("test.echo.sync", 1), ("test.echo.sync", 2)],
                           "test.callback.sync", cid="my-own-cid", timeout=0.3)
        assert cid == "my-own-cid"
        await probe.wait_for(lambda: probe.of("callback"), "the final callback")
        [(_, _, callback_cid, _, outcomes)] = probe.of("callback")
        assert callback_cid == "my-own-cid"
        assert [outcome["ok"] for outcome in outcomes] == [False, True, True]
        assert outcomes[0]["exception"] == "TooSlowError: did not finish within 0.3 s"
        assert [outcome["response"] for outcome in outcomes[1:]] == [{"echo": 1, "by": "sync"},
                                                                     {"echo": 2, "by": "sync"}]
        assert probe.kinds("test.blocks.async") == ["started", "Cancelled"]


@pytest.mark.parametrize("caller", CALLERS)
async def test_parallel_calls_on_target_callbacks_for_each_target(patterns_dir, caller):
    async with serving(patterns_dir) as (server, probe):
        cid = await invoke(server, caller, "patterns.parallel.invoke", TARGETS, ["test.callback.sync"])
        await probe.wait_for(lambda: len(probe.of("callback")) == 3, "3 on-target callbacks")
        await background_idle(server, probe)
        assert {record[3] for record in probe.of("target")} == {"parallel-exec-call"}
        callbacks = probe.of("callback")
        assert {record[3] for record in callbacks} == {"parallel-exec-on-target"}
        order = list(TARGETS)
        outcomes = sorted((record[4] for record in callbacks), key=lambda outcome: order.index(outcome["target"]))
        check_outcomes([{k: v for k, v in outcome.items() if k != "phase"} for outcome in outcomes], cid, caller)


@pytest.mark.parametrize("caller", CALLERS)
async def test_fanout_invoke_wait_returns_every_outcome_to_the_caller(patterns_dir, caller):
    async with serving(patterns_dir) as (server, probe):
        response = (await server.invoke_service(caller, {"call": "patterns.fanout.invoke_wait", "args": (TARGETS,)}))
        check_outcomes(response.payload["result"], response.payload["cid"], caller)
        assert background_calls(server).statistics()["started"] == 0  # nothing was left to the background


async def test_fanout_refuses_bad_targets_before_starting_anything(patterns_dir):
    async with serving(patterns_dir) as (server, probe):
        with pytest.raises(ServiceNotFound, match="no.such.target"):
            await invoke(server, "test.caller.sync", "patterns.fanout.invoke",
                         {"test.echo.sync": 1, "no.such.target": 2}, "test.callback.sync")
        with pytest.raises(ServiceNotFound, match="no.such.callback"):
            await invoke(server, "test.caller.async", "patterns.parallel.invoke", {"test.echo.sync": 1},
                         "no.such.callback")
        with pytest.raises(TypeError, match="targets must be a dict"):
            await invoke(server, "test.caller.async", "patterns.fanout.invoke", "test.echo.sync", "test.callback.sync")
        with pytest.raises(ValueError, match="timeout must be"):
            await invoke(server, "test.caller.async", "patterns.fanout.invoke_wait", TARGETS, timeout=-1)
        assert not probe.of("target")
        assert background_calls(server).statistics()["started"] == 0


# ################################################################################################
# Cancellation and deadlines reaching a fan-out


BLOCKING = [("test.blocks.async", 1), ("test.blocks.sync", 2)]


async def assert_all_cancelled(probe: Probe) -> None:
    """ Both targets started and observed trio.Cancelled; neither finished normally. A caller
    stops waiting at once for what runs in a thread (a plain `def` caller, a plain `def`
    target), which is cancelled right after: the sync target at its next call into the server
    (it calls in every 5 ms), so both see Cancelled well within 2 s. """
    for name in ("test.blocks.async", "test.blocks.sync"):
        await probe.wait_for(lambda: len(probe.kinds(name)) == 2, f"{name} to see Cancelled", 2)
        assert probe.kinds(name) == ["started", "Cancelled"], probe.records


@pytest.mark.parametrize("caller", CALLERS)
async def test_cancelling_the_caller_cancels_every_target_of_its_fanout(patterns_dir, caller):
    async with serving(patterns_dir) as (server, probe):
        with trio.fail_after(30):  # a target that escaped cancellation would hang the caller: fail instead
            async with trio.open_nursery() as nursery:
                scope = trio.CancelScope()

                async def call_and_record() -> None:
                    with scope:
                        await invoke(server, caller, "patterns.fanout.invoke_wait", BLOCKING)

                nursery.start_soon(call_and_record)
                await probe.wait_for(lambda: len(probe.of("started")) == 2, "both targets to start")
                scope.cancel()
        assert scope.cancelled_caught
        # Nothing is left running: the async target is done, the sync one sees Cancelled at once.
        await assert_all_cancelled(probe)
        assert not probe.of("caller-returned")


@pytest.mark.parametrize("caller", CALLERS)
async def test_the_callers_deadline_reaches_every_target_of_its_fanout(patterns_dir, caller):
    async with serving(patterns_dir) as (server, probe):
        started = time.monotonic()
        with trio.fail_after(30), pytest.raises(trio.TooSlowError):
            await invoke(server, caller, "patterns.fanout.invoke_wait", BLOCKING, caller_timeout=1.5)
        assert time.monotonic() - started < 20
        await assert_all_cancelled(probe)


async def test_background_fanout_is_cancelled_by_its_cid(patterns_dir, caplog):
    async with serving(patterns_dir) as (server, probe):
        cid = await invoke(server, "test.caller.sync", "patterns.fanout.invoke", BLOCKING, "test.callback.sync")
        await probe.wait_for(lambda: len(probe.of("started")) == 2, "both targets to start")
        assert background_calls(server).running() == [cid]

        assert await invoke(server, "test.caller.async", "patterns.cancel", cid) == 1
        await background_idle(server, probe)
        await assert_all_cancelled(probe)
        assert not probe.of("callback")  # a cancelled fan-out calls no callbacks
        assert background_calls(server).statistics()["cancelled"] == 1
        assert f"cid={cid} fanout of 'test.blocks.async', 'test.blocks.sync' was cancelled" in caplog.text
        assert await invoke(server, "test.caller.sync", "patterns.cancel", cid) == 0


async def test_background_work_is_cancelled_when_the_server_stops(patterns_dir, caplog):
    async with serving(patterns_dir) as (server, probe):
        fanout_cid = await invoke(server, "test.caller.async", "patterns.fanout.invoke", BLOCKING,
                                  "test.callback.sync")
        async_cid = await invoke(server, "test.caller.sync", "invoke_async", "test.blocks.async")
        await probe.wait_for(lambda: len(probe.of("started")) == 3, "every target to start")
    # run_server has returned: the server's nursery, background work included, is closed.
    assert probe.kinds("test.blocks.async") == ["started", "started", "Cancelled", "Cancelled"]
    assert probe.kinds("test.blocks.sync") == ["started", "Cancelled"]
    assert not probe.of("callback")
    lost = [record.getMessage() for record in caplog.records if "because the server is stopping" in record.getMessage()]
    assert any(line.startswith(f"cid={fanout_cid} fanout of 'test.blocks.async', 'test.blocks.sync'") for line in lost)
    assert any(line.startswith(f"cid={async_cid} invoke_async of 'test.blocks.async'") for line in lost)


# ################################################################################################
# Invoke/retry


def test_backoff_delays():
    assert InvokeRetry.delays(1, 1.0) == []
    assert InvokeRetry.delays(4, 1.0) == [1.0, 2.0, 4.0]
    assert InvokeRetry.delays(4, 0.5, backoff=3) == [0.5, 1.5, 4.5]
    assert InvokeRetry.delays(5, 1.0, max_seconds=3) == [1.0, 2.0, 3, 3]
    assert InvokeRetry.delays(3, 2.0, backoff=1) == [2.0, 2.0]  # Zato's fixed interval


@pytest.mark.parametrize("caller", CALLERS)
async def test_invoke_retry_repeats_until_the_target_succeeds(patterns_dir, caller):
    async with serving(patterns_dir) as (server, probe):
        result = await invoke(server, caller, "patterns.invoke_retry.invoke", "test.fails.until", {"succeed_on": 3},
                              repeats=3, seconds=0.01)
        assert result == {"attempts": 3}
        targets = probe.of("target", "test.fails.until")
        assert len(targets) == 3 and len({record[2] for record in targets}) == 1  # one call cid for every attempt
        assert {record[3] for record in targets} == {"invoke-retry"}


@pytest.mark.parametrize("caller", CALLERS)
async def test_invoke_retry_gives_up_with_an_error_naming_the_target_and_last_error(patterns_dir, caller, caplog):
    async with serving(patterns_dir) as (server, probe):
        with pytest.raises(RetryFailed) as info:
            await invoke(server, caller, "patterns.invoke_retry.invoke", "test.fails.until", {"succeed_on": 99},
                         repeats=3, seconds=0.01, backoff=1)
        error = info.value
        assert error.target == "test.fails.until" and error.attempts == 3
        assert isinstance(error.inner_exc, ConnectionError) and error.__cause__ is error.inner_exc
        assert "gave up after 3 attempts" in str(error) and "ConnectionError: attempt 3 refused" in str(error)
        assert f"cid={error.cid}" in str(error)
        assert probe.count("test.fails.until") == 3
        assert f"cid={error.cid} invoke_retry: attempt 1 of 3 of 'test.fails.until' raised ConnectionError" \
               in caplog.text


@pytest.mark.parametrize("caller", CALLERS)
async def test_the_callers_deadline_reaches_invoke_retry_waits(patterns_dir, caller):
    async with serving(patterns_dir) as (server, probe):
        started = time.monotonic()
        with trio.fail_after(30), pytest.raises(trio.TooSlowError):
            await invoke(server, caller, "patterns.invoke_retry.invoke", "test.fails", 1, repeats=5, seconds=60,
                         caller_timeout=1)
        assert time.monotonic() - started < 20 and probe.count("test.fails") == 1


async def test_invoke_retry_async_fallback_continues_in_the_background(patterns_dir):
    async with serving(patterns_dir) as (server, probe):
        call_cid = await invoke(server, "test.caller.async", "patterns.invoke_retry.invoke", "test.fails.until",
                                {"succeed_on": 2}, repeats=3, seconds=0.01, async_fallback=True,
                                callback="test.callback.sync", context={"order": 5})
        assert probe.count("test.fails.until") == 1  # the first attempt ran in the caller
        await probe.wait_for(lambda: probe.of("callback"), "the callback")
        [(_, _, callback_cid, channel, request)] = probe.of("callback")
        assert callback_cid == call_cid == request["call_cid"] and channel == "invoke-retry-callback"
        assert request["ok"] and request["response"] == {"attempts": 2} and request["exception"] is None
        assert request["context"] == {"order": 5} and request["target"] == "test.fails.until"
        assert request["retry_repeats"] == 3 and request["source"] == "test.caller.async"

        # Succeeding at once returns the response, not a cid
        assert await invoke(server, "test.caller.sync", "patterns.invoke_retry.invoke", "test.echo.sync", 1,
                            repeats=2, async_fallback=True, callback="test.callback.sync") == {"echo": 1, "by": "sync"}


async def test_invoke_retry_invoke_async_reports_failure_to_the_callback(patterns_dir):
    async with serving(patterns_dir) as (server, probe):
        call_cid = await invoke(server, "test.caller.sync", "patterns.invoke_retry.invoke_async", "test.fails", 4,
                                repeats=2, seconds=0.01, callback="test.callback.async")
        await probe.wait_for(lambda: probe.of("callback"), "the callback")
        request = probe.of("callback")[0][4]
        assert not request["ok"] and request["response"] is None and request["exception"] == "ValueError: boom 4"
        assert request["call_cid"] == call_cid and probe.count("test.fails") == 2


async def test_invoke_retry_refuses_bad_settings_before_the_first_attempt(patterns_dir):
    async with serving(patterns_dir) as (server, probe):
        cases = [
            ({}, ValueError, "repeats .how many attempts in total. must be an int"),
            ({"repeats": 2, "seconds": 1, "minutes": 1}, ValueError, "seconds or minutes, not both"),
            ({"repeats": 2, "backoff": 0.5}, ValueError, "backoff must be"),
            ({"repeats": 2, "async_fallback": True}, ValueError, "needs callback"),
            ({"repeats": 2, "sleep": 3}, TypeError, "unknown argument sleep"),
        ]
        for kwargs, error, message in cases:
            with pytest.raises(error, match=message):
                await invoke(server, "test.caller.sync", "patterns.invoke_retry.invoke", "test.fails", **kwargs)
        with pytest.raises(ServiceNotFound):
            await invoke(server, "test.caller.async", "patterns.invoke_retry.invoke", "no.such", repeats=2)
        assert probe.count("test.fails") == 0

