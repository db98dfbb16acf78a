""" The worker threads plain `def handle` services run in: a pool of long-lived threads that a
busy server keeps awake, instead of one wake-up of a sleeping thread per call.

`trio.to_thread.run_sync` hands every call to a sleeping thread of its cache, and every
hand-back wakes the trio thread: with 50 calls in flight that is most of a plain `def` service's
cost (the GIL passes between a thread that was just woken and one that is busy, over and over).
Here a call is queued; a thread that finishes one takes the next without sleeping, a sleeping
thread is woken only when no thread is awake or when calls have waited longer than
`STUCK_SECONDS` (the awake ones may be blocked: a slow outgoing call, a sleep), and results go
back to the trio thread in batches, one `run_sync_soon` for all that finished meanwhile. A
thread waiting on the trio thread (`self.invoke` of another plain `def` service, through
`SyncCalls.waiting_on_trio`) is not counted as awake, so the call it waits for gets a thread at
once; without `watch` running (a server not started by `serve_worker`, the service test kit)
every call wakes a thread, as trio's own threads do.

What a service sees is what `trio.to_thread.run_sync(fn, limiter=..., abandon_on_cancel=True)`
gives it: the caller's contextvars, `trio.from_thread.run`/`run_sync`/`check_cancelled` in the
thread (through trio's per-thread state, `trio._threads.PARENT_TASK_DATA`, set for each call as
trio sets it), a limiter slot held until the call really finishes, and a caller that stops
waiting at once when it is cancelled (the call runs on; its result is dropped). Where the
installed trio lacks that state, `SyncCalls.available` is False and the server uses
`trio.to_thread.run_sync` (tests/test_service_threads.py checks it is used with the trio
installed).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import deque
from typing import Any, Callable

import outcome
import trio

logger = logging.getLogger(__name__)

STUCK_SECONDS = 0.005   # calls waiting this long wake another thread: the awake ones may be blocked
_this_thread = threading.local()  # .calls: the SyncCalls a thread of the pool belongs to

try:  # trio's per-thread state of threads it started (private: checked, with a fallback)
    from trio._threads import PARENT_TASK_DATA as _PARENT_TASK_DATA
    _PARENT_TASK_DATA_FIELDS = ("token", "abandon_on_cancel", "cancel_register", "task_register")
except ImportError:  # pragma: no cover - another trio
    _PARENT_TASK_DATA = None

try:
    from sniffio import current_async_library_cvar as _async_library
except ImportError:  # pragma: no cover - trio depends on sniffio
    _async_library = None


class _Call:
    """ One call: what to run, in which context, and who waits for it. """

    __slots__ = ("fn", "args", "context", "task", "cancel_register", "task_register", "limiter", "queued_at", "token")

    def __init__(self, fn: Callable[..., Any], args: tuple, task: Any, limiter: Any, token: Any) -> None:
        self.token = token  # of the trio run that waits for it
        self.fn = fn
        self.args = args
        self.context = contextvars.copy_context()
        if _async_library is not None:
            self.context.run(_async_library.set, None)  # in the thread, no async library runs
        self.task = task
        self.cancel_register: list[Any] = [None]       # trio's raise_cancel once the caller is cancelled
        self.task_register: list[Any] = [task]
        self.limiter = limiter
        self.queued_at = 0.0


class SyncCalls:
    """ The pool of one worker process; `await calls.run(fn, *args, limiter=...)` from the trio
    thread. At most `max_threads` threads, started as they are needed. """

    available = _PARENT_TASK_DATA is not None

    def __init__(self, max_threads: int, name: str = "zato-service") -> None:
        self.max_threads = max(1, int(max_threads))
        self.name = name
        self._lock = threading.Lock()
        self._calls: deque[_Call] = deque()
        self._sleeping: list[threading.Lock] = []   # one lock per sleeping thread, released to wake it
        self._threads = 0
        self._awake = 0                              # threads running a call or about to take one
        self._waiting = 0                            # of those, threads waiting on the trio thread
        self._watching = False                       # watch() runs: calls may wait for an awake thread
        self._done: list[tuple[_Call, outcome.Outcome]] = []
        self._hand_back_scheduled = False
        self._queued = trio.Event()                  # set when calls wait with no thread woken for them

    # ############################################################################################
    # The trio side

    async def run(self, fn: Callable[..., Any], *args: Any, limiter: Any) -> Any:
        await trio.lowlevel.checkpoint_if_cancelled()
        token = trio.lowlevel.current_trio_token()  # one per trio.run (the test kit makes several)
        call = _Call(fn, args, trio.lowlevel.current_task(), limiter, token)
        await limiter.acquire_on_behalf_of(call)
        try:
            self._submit(call)
        except BaseException:
            limiter.release_on_behalf_of(call)
            raise

        def abort(raise_cancel: Any) -> trio.lowlevel.Abort:
            call.cancel_register[0] = raise_cancel  # trio.from_thread.check_cancelled raises in the thread
            call.task = None                        # nobody waits: the result is dropped
            return trio.lowlevel.Abort.SUCCEEDED

        result = await trio.lowlevel.wait_task_rescheduled(abort)
        return result.unwrap()

    def _submit(self, call: _Call) -> None:
        now = time.monotonic()
        call.queued_at = now
        with self._lock:
            self._calls.append(call)
            wake = (self._awake - self._waiting <= 0 or not self._watching
                    or now - self._calls[0].queued_at > STUCK_SECONDS)
            if wake:
                wake = self._wake_one()
        if not wake:
            self._queued.set()

    def _wake_one(self) -> bool:
        """ Wakes a sleeping thread or starts one (with the lock held); False when at the maximum. """
        if self._sleeping:
            self._awake += 1
            self._sleeping.pop().release()
            return True
        if self._threads < self.max_threads:
            self._threads += 1
            self._awake += 1
            threading.Thread(target=self._work, name=f"{self.name}-{self._threads}", daemon=True).start()
            return True
        return False

    def _hand_back(self) -> None:
        """ On the trio thread: every call finished since the last hand-back. """
        with self._lock:
            done, self._done = self._done, []
            self._hand_back_scheduled = False
        token = trio.lowlevel.current_trio_token()
        for call, result in done:
            if call.token is not token:  # a call of a trio run that has ended: nobody waits for it
                continue
            try:
                call.limiter.release_on_behalf_of(call)
            except BaseException as exc:  # an arbitrary limiter: its error replaces the result
                result = outcome.Error(exc)
            if call.task is not None:
                trio.lowlevel.reschedule(call.task, outcome.Value(result))

    async def watch(self) -> None:
        """ Wakes another thread for calls that wait behind awake threads that do not take them
        (blocked in a slow call). A task of the worker process; sleeps while nothing waits. """
        self._watching = True
        try:
            await self._watch()
        finally:
            self._watching = False

    async def _watch(self) -> None:
        while True:
            await self._queued.wait()
            self._queued = trio.Event()
            while True:
                await trio.sleep(STUCK_SECONDS)
                with self._lock:
                    if not self._calls:
                        break
                    now = time.monotonic()
                    for call in self._calls:  # oldest first
                        if now - call.queued_at <= STUCK_SECONDS or not self._wake_one():
                            break
                        call.queued_at = now  # a thread was woken for it

    # ############################################################################################
    # The threads

    @staticmethod
    def waiting_on_trio() -> Any:
        """ `with SyncCalls.waiting_on_trio():` around a call from a thread of the pool that blocks
        until the trio thread answers (`trio.from_thread.run`): the thread does not count as awake
        meanwhile, so what it waits for (another plain `def` service) is not queued behind it.
        Anywhere else it does nothing. """
        calls = getattr(_this_thread, "calls", None)
        return calls._waiting_on_trio() if calls is not None else _NOT_A_POOL_THREAD

    def _waiting_on_trio(self) -> "_Waiting":
        return _Waiting(self)

    def _work(self) -> None:
        sleep = threading.Lock()
        sleep.acquire()
        state = _PARENT_TASK_DATA
        _this_thread.calls = self
        while True:
            with self._lock:
                if self._calls:
                    call = self._calls.popleft()
                else:
                    call = None
                    self._awake -= 1
                    self._sleeping.append(sleep)
            if call is None:
                sleep.acquire()  # released by _wake_one, which counted this thread awake again
                continue
            token = call.token
            state.token, state.abandon_on_cancel = token, True
            state.cancel_register, state.task_register = call.cancel_register, call.task_register
            try:
                result = outcome.capture(call.context.run, call.fn, *call.args)
            finally:
                for field in _PARENT_TASK_DATA_FIELDS:
                    delattr(state, field)
            with self._lock:
                self._done.append((call, result))
                schedule, self._hand_back_scheduled = not self._hand_back_scheduled, True
            if schedule:
                try:
                    token.run_sync_soon(self._hand_back)
                except trio.RunFinishedError:  # that trio run has ended: nobody waits for its calls
                    with self._lock:
                        self._done = [(done, outcome_) for done, outcome_ in self._done if done.token is not token]
                        self._hand_back_scheduled = False
            del call, result


class _Waiting:
    """ The context of `SyncCalls.waiting_on_trio` in a thread of the pool. """

    __slots__ = ("calls",)

    def __init__(self, calls: SyncCalls) -> None:
        self.calls = calls

    def __enter__(self) -> None:
        calls = self.calls
        with calls._lock:
            calls._waiting += 1
            if calls._calls and calls._awake - calls._waiting <= 0:
                calls._wake_one()  # a call queued already would otherwise wait for this one

    def __exit__(self, *exc: Any) -> None:
        with self.calls._lock:
            self.calls._waiting -= 1


class _NotAPoolThread:
    __slots__ = ()

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: Any) -> None:
        pass


_NOT_A_POOL_THREAD = _NotAPoolThread()
