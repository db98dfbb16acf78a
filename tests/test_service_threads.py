""" The worker threads of plain `def handle` services (zato.server.service_threads.SyncCalls):
what a call gets in its thread is what `trio.to_thread.run_sync(..., abandon_on_cancel=True)`
gives, calls queued behind a blocked thread are not held up, and a server uses the pool with the
trio installed here. Real threads, a real trio loop; the server test a real in-process server. """

from __future__ import annotations

import contextvars
import threading
import time

import httpx
import pytest
import trio

from zato.server.service_threads import STUCK_SECONDS, SyncCalls
from zato.testing import admin_auth, create_test_server_dir, run_server

WHO = contextvars.ContextVar("who", default="nobody")


@pytest.fixture
async def calls():
    pool = SyncCalls(8, name="test-calls")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pool.watch)
        yield pool
        nursery.cancel_scope.cancel()


def test_the_installed_trio_has_what_the_pool_needs():
    """ Without trio's per-thread state the server falls back to trio.to_thread: slower, and this
    test says so before a release does. """
    assert SyncCalls.available


async def test_a_call_runs_in_a_pool_thread_with_the_callers_context_and_returns_or_raises(calls):
    WHO.set("the caller")

    def job(x):
        return threading.current_thread().name, WHO.get(), x * 2

    name, who, value = await calls.run(job, 21, limiter=trio.CapacityLimiter(1))
    assert name.startswith("test-calls-") and who == "the caller" and value == 42

    def fails():
        raise ValueError("from the thread")

    with pytest.raises(ValueError, match="from the thread"):
        await calls.run(fails, limiter=trio.CapacityLimiter(1))


async def test_from_thread_run_and_check_cancelled_work_in_the_thread(calls):
    async def on_the_loop():
        return trio.lowlevel.current_task().name is not None

    def job():
        trio.from_thread.check_cancelled()  # not cancelled: returns
        return trio.from_thread.run(on_the_loop)

    assert await calls.run(job, limiter=trio.CapacityLimiter(1)) is True


async def test_a_cancelled_caller_stops_waiting_at_once_and_the_thread_learns_it(calls):
    limiter = trio.CapacityLimiter(1)
    started, learnt = threading.Event(), threading.Event()

    def slow():
        started.set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                trio.from_thread.check_cancelled()
            except trio.Cancelled:
                learnt.set()
                return "abandoned"
            time.sleep(0.01)
        return "finished"

    with trio.move_on_after(0.2) as scope:
        await calls.run(slow, limiter=limiter)
    assert scope.cancelled_caught and started.is_set()
    assert limiter.borrowed_tokens == 1  # held until the thread really finishes
    await trio.to_thread.run_sync(learnt.wait, 5)
    for _ in range(100):
        if limiter.borrowed_tokens == 0:
            break
        await trio.sleep(0.01)
    assert limiter.borrowed_tokens == 0


async def test_calls_behind_a_blocked_thread_are_not_held_up(calls):
    """ One thread is awake while calls are quick; a call that blocks (a slow outgoing call)
    must not make the ones queued behind it wait for it. """
    limiter = trio.CapacityLimiter(8)
    finished: list[str] = []

    async def call(what, seconds):
        await calls.run(time.sleep, seconds, limiter=limiter)
        finished.append(what)

    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "blocked", 1.0)
        await trio.sleep(0.05)
        for number in range(5):
            nursery.start_soon(call, f"quick {number}", 0)
        with trio.fail_after(0.5):
            while len(finished) < 5:
                await trio.sleep(0.01)
    assert sorted(finished[:5]) == [f"quick {number}" for number in range(5)] and finished[-1] == "blocked", finished
    assert trio.current_time() - started < 1.5


async def test_many_blocking_calls_at_once_get_threads_of_their_own(calls):
    limiter = trio.CapacityLimiter(8)
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(lambda: calls.run(time.sleep, 0.3, limiter=limiter))
    # one after another would be 2.4 s; threads are woken every STUCK_SECONDS at most
    assert trio.current_time() - started < 0.3 + 1.0, trio.current_time() - started
    assert STUCK_SECONDS < 0.05


SERVICE = '''
import threading
from zato.server.service import Service


class WhichThread(Service):
    name = "test.which-thread"

    def handle(self):
        self.response.payload = {"thread": threading.current_thread().name,
                                 "nested": self.invoke("test.plain", {"a": 1})}


class CallsMany(Service):
    name = "test.calls-many"

    def handle(self):
        for number in range(100):
            self.invoke("test.plain", {"n": number})


class Plain(Service):
    name = "test.plain"

    def handle(self):
        self.response.payload = {"got": self.request.payload}
'''


async def test_a_server_runs_plain_def_services_in_the_pool(tmp_path):
    async with run_server(create_test_server_dir(tmp_path / "server")) as server:
        assert server.sync_calls is not None
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                                     headers={"content-type": "application/json"}) as admin:
            reply = await admin.post("/zato/api/deploy/thread_services.py", content=SERVICE.encode(),
                                     headers={"content-type": "text/x-python"})
            assert reply.status_code == 200, reply.text
            reply = await admin.post("/zato/api/invoke/test.which-thread", json={})
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["thread"].startswith("zato-service-"), body
            assert body["nested"] == {"got": {"a": 1}}, body
            # a plain def service invoking another: the thread waiting for the answer is not
            # counted as awake, so the nested call gets a thread at once, not after STUCK_SECONDS
            started = time.perf_counter()
            reply = await admin.post("/zato/api/invoke/test.calls-many", json={})
            assert reply.status_code == 200, reply.text
            assert time.perf_counter() - started < 100 * STUCK_SECONDS, time.perf_counter() - started
