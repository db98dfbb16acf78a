""" Invocation patterns, as Zato offers them to services: `self.invoke_async`,
`self.patterns.fanout`, `self.patterns.parallel` and `self.patterns.invoke_retry`, on trio.

Who owns what (see docs/patterns.md):

* Work that waits for its results (`invoke_retry.invoke`, `fanout.invoke_wait`,
  `parallel.invoke_wait`) runs in the calling service's own task: the caller's deadline and
  cancellation reach every service it started, and the call returns only when all of them
  have finished. Nothing is left running.
* Work that outlives the caller (`invoke_async`, `fanout.invoke`, `parallel.invoke`,
  `invoke_retry.invoke_async` and the background part of `async_fallback`) is owned by
  `server.background_nursery`, each call inside a cancel scope of its own, found by its cid
  (`self.patterns.cancel(cid)`). It lives in RAM only: when the server stops it is cancelled,
  and the log names each call that was lost.

Everything here works from a plain `def handle` (a worker thread: calls that wait block) and
from an `async def handle` (calls that wait return an awaitable; calls that start background
work return the cid at once, as in Zato).
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from datetime import datetime, timezone
from functools import partial
from typing import Any, Awaitable, Callable

import trio

from zato.common.exception import ZatoException
from zato.common.util import new_cid
from zato.server.service import Service, in_trio_thread
from zato.server.deployment import ServiceNotFound

logger = logging.getLogger("zato.patterns")


class CHANNEL:
    """ `self.request.channel` of the services the patterns invoke (Zato's names). """
    INVOKE_ASYNC = "invoke-async"
    INVOKE_ASYNC_CALLBACK = "invoke-async-callback"
    FANOUT_CALL = "fanout-call"
    FANOUT_ON_TARGET = "fanout-on-target"
    FANOUT_ON_FINAL = "fanout-on-final"
    PARALLEL_EXEC_CALL = "parallel-exec-call"
    PARALLEL_EXEC_ON_TARGET = "parallel-exec-on-target"
    INVOKE_RETRY = "invoke-retry"
    INVOKE_RETRY_CALLBACK = "invoke-retry-callback"


class RetryFailed(ZatoException):
    """ `invoke_retry` gave up: every attempt raised. `inner_exc` is the last error (also the
    `__cause__`); `cid` the call's cid, `msg` the message (as on Zato's exceptions). """

    def __init__(self, cid: str, msg: str, *, target: str = "", attempts: int = 0,
                 inner_exc: BaseException | None = None) -> None:
        super().__init__(cid, msg)
        self.target = target
        self.attempts = attempts
        self.inner_exc = inner_exc


# ################################################################################################
# Running code in the trio thread from either kind of service


def _call_in_trio_thread(server: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """ Calls the plain function `fn(*args)` in the trio thread and returns its result, from the
    trio thread or from a worker thread. For short, non-blocking work (starting a task). """
    if in_trio_thread():
        return fn(*args)
    return server.run_trio(partial(_as_async, fn, *args))


async def _as_async(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def _utcnow() -> str:
    return datetime.now(timezone.utc).isoformat()


def _describe(exc: BaseException, timeout: float | None = None) -> str:
    if isinstance(exc, trio.TooSlowError):
        return f"TooSlowError: did not finish within {timeout} s"
    return f"{type(exc).__name__}: {exc}"


# ################################################################################################
# Background calls: owned by server.background_nursery, one cancel scope each


class BackgroundCalls:
    """ The calls of one server that outlive the service that started them. Each runs as a task
    of `server.background_nursery` inside a cancel scope of its own, registered under its cid
    (several calls may share a cid: a fan-out's cid is its caller's by default). Only touched
    from the trio thread; `statistics()` may be read from anywhere. """

    def __init__(self, server: Any) -> None:
        self.server = server
        self._scopes: dict[str, set[trio.CancelScope]] = {}
        self._started = 0
        self._failed = 0
        self._cancelled = 0
        self._lost_at_shutdown = 0

    def start(self, cid: str, what: str, async_fn: Callable[[], Awaitable[Any]]) -> None:
        """ Starts `async_fn()` in the background now and returns at once. `what` names the call
        in log lines ("invoke_async of 'my.service'"). Call from the trio thread. """
        nursery = self.server.background_nursery
        if nursery is None:
            raise RuntimeError(f"cannot start {what} in the background: the server is not running yet "
                               f"(background work can be started from the AFTER_STARTED phase on)")
        scope = trio.CancelScope()
        try:
            nursery.start_soon(self._run, cid, what, scope, async_fn, name=f"{what} cid={cid}")
        except RuntimeError:  # the nursery is closed
            raise RuntimeError(f"cannot start {what} in the background: the server is stopping") from None
        self._scopes.setdefault(cid, set()).add(scope)
        self._started += 1

    async def _run(self, cid: str, what: str, scope: trio.CancelScope, async_fn: Callable[[], Awaitable[Any]]) -> None:
        outcome = "lost"  # stays so only if the background nursery itself is cancelled: the server is stopping
        try:
            with scope:
                await async_fn()
            outcome = "cancelled" if scope.cancelled_caught else "done"
        except Exception:
            outcome = "failed"
            self._failed += 1
            logger.exception("cid=%s %s failed", cid, what)
        finally:
            scopes = self._scopes.get(cid)
            if scopes is not None:
                scopes.discard(scope)
                if not scopes:
                    del self._scopes[cid]
            if outcome == "cancelled":
                self._cancelled += 1
                logger.warning("cid=%s %s was cancelled before it finished (patterns.cancel)", cid, what)
            elif outcome == "lost":
                self._lost_at_shutdown += 1
                logger.warning("cid=%s %s was cancelled because the server is stopping; background work "
                               "lives in RAM only, so it is lost (use pub/sub for messages that must survive)",
                               cid, what)

    def cancel(self, cid: str) -> int:
        """ Cancels every background call running under `cid`; returns how many there were. Each
        of their services observes `trio.Cancelled` (a plain `def` service at its next call into
        the server). Call from the trio thread. """
        scopes = self._scopes.get(cid, ())
        for scope in scopes:
            scope.cancel()
        return len(scopes)

    def running(self) -> list[str]:
        """ The cids with background calls still running. """
        return list(self._scopes)

    def statistics(self) -> dict[str, int]:
        return {"running": sum(len(scopes) for scopes in list(self._scopes.values())), "started": self._started,
                "failed": self._failed, "cancelled": self._cancelled, "lost_at_shutdown": self._lost_at_shutdown}


_background: weakref.WeakKeyDictionary[Any, BackgroundCalls] = weakref.WeakKeyDictionary()
_background_lock = threading.Lock()


def background_calls(server: Any) -> BackgroundCalls:
    """ The `BackgroundCalls` of a server (created on first use). """
    with _background_lock:
        calls = _background.get(server)
        if calls is None:
            calls = _background[server] = BackgroundCalls(server)
        return calls


def _start_in_background(server: Any, cid: str, what: str, async_fn: Callable[[], Awaitable[Any]]) -> None:
    _call_in_trio_thread(server, background_calls(server).start, cid, what, async_fn)


# ################################################################################################
# Checking what callers pass


def _check_service(server: Any, name: Any, role: str) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"{role} must be a service name (a non-empty string), not {name!r}")
    if name not in server.services:
        raise ServiceNotFound(name)
    return name


def _callback_name(server: Any, callback: Any, role: str) -> str:
    """ A callback given as a service name, a Service subclass or a service instance. """
    if isinstance(callback, Service):
        callback = type(callback)
    if isinstance(callback, type) and issubclass(callback, Service):
        for entry in server.services.entries.values():
            if entry.module == callback.__module__ and entry.class_name == callback.__name__:
                return entry.name
        raise ServiceNotFound(f"{callback.__module__}.{callback.__name__}")
    return _check_service(server, callback, role)


def _callback_names(server: Any, callbacks: Any, role: str) -> list[str]:
    if callbacks is None:
        return []
    if isinstance(callbacks, (str, type, Service)):
        callbacks = [callbacks]
    return [_callback_name(server, callback, role) for callback in callbacks]


def _target_list(server: Any, targets: Any) -> list[tuple[str, Any]]:
    """ Targets as Zato takes them, a dict of service name -> request, or a list of
    (service name, request) pairs (which may name one service more than once). """
    if isinstance(targets, dict):
        pairs = list(targets.items())
    elif isinstance(targets, (list, tuple)) and all(isinstance(item, (list, tuple)) and len(item) == 2
                                                     for item in targets):
        pairs = [tuple(item) for item in targets]
    else:
        raise TypeError(f"targets must be a dict of service name -> request, or a list of (service name, request) "
                        f"pairs, not {type(targets).__name__}")
    for name, _ in pairs:
        _check_service(server, name, "a target")
    return pairs  # type: ignore[return-value]


def _check_timeout(timeout: Any) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError(f"timeout must be a number of seconds greater than 0, not {timeout!r}")
    return float(timeout)


# ################################################################################################
# invoke_async


def invoke_async(service: Service, name: str, payload: Any = None, callback: Any = None, *, cid: str | None = None,
                 channel: str = CHANNEL.INVOKE_ASYNC, timeout: float | None = None, to_json_string: bool = False,
                 data_format: Any = None, transport: Any = None, expiration: Any = None, zato_ctx: Any = None,
                 environ: Any = None) -> str:
    """ `self.invoke_async(name, payload, callback=None)`: starts `name` in the background and
    returns its cid at once. The target runs with that cid as its `self.cid`; when it succeeds,
    `callback` (a service name or class; by default the service named like the caller plus
    `-async-callback`, if one exists) is invoked with the target's response payload as its
    request payload, under the same cid. A failure is logged with the cid.

    `timeout` (seconds) applies to the target and to the callback, each. The call is owned by
    `server.background_nursery`: it lives in RAM only and `self.patterns.cancel(cid)` stops it.
    `data_format`, `transport`, `expiration`, `zato_ctx` and `environ` are accepted for Zato
    compatibility and not used.
    """
    server = service.server
    _check_service(server, name, "the service to invoke")
    timeout = _check_timeout(timeout)
    if callback is None:
        conventional = f"{service.name}-async-callback"
        callback_name = conventional if conventional in server.services else None
    else:
        callback_name = _callback_name(server, callback, "callback")
    if to_json_string:
        payload = json.dumps(payload)
    cid = cid or new_cid()

    async def run() -> None:
        response = await server.invoke_service(name, payload, cid=cid, channel=channel, timeout=timeout)
        if callback_name:
            await server.invoke_service(callback_name, response.payload, cid=cid,
                                        channel=CHANNEL.INVOKE_ASYNC_CALLBACK, timeout=timeout)

    what = f"invoke_async of {name!r}" + (f" (callback {callback_name!r})" if callback_name else "")
    _start_in_background(server, cid, what, run)
    return cid


# ################################################################################################
# Fan-out/fan-in and parallel execution


class ParallelBase:
    """ What fan-out/fan-in and parallel execution share: running targets side by side and
    recording each one's outcome. """

    call_channel = ""
    on_target_channel = ""
    on_final_channel = ""
    pattern = ""

    def __init__(self, source: Service) -> None:
        self.source = source
        self.server = source.server

    def _result(self, cid: str, target: str, started: str, response: Any, exc: BaseException | None,
                timeout: float | None) -> dict[str, Any]:
        """ One target's outcome, as Zato's callbacks get it (plus `exception_type`). """
        return {
            "source": self.source.name,
            "target": target,
            "cid": cid,
            "ok": exc is None,
            "response": response,
            "exception": None if exc is None else _describe(exc, timeout),
            "exception_type": None if exc is None else type(exc).__name__,
            "req_ts_utc": started,
            "resp_ts_utc": _utcnow(),
        }

    async def _run_target(self, cid: str, target: str, payload: Any, timeout: float | None) -> dict[str, Any]:
        started = _utcnow()
        try:
            response = await self.server.invoke_service(target, payload, cid=cid, channel=self.call_channel,
                                                        timeout=timeout)
        except Exception as exc:  # recorded for the callbacks; trio.Cancelled is not an Exception and propagates
            logger.warning("cid=%s %s target %r raised %s", cid, self.pattern, target, _describe(exc, timeout),
                           exc_info=not isinstance(exc, trio.TooSlowError))
            return self._result(cid, target, started, None, exc, timeout)
        return self._result(cid, target, started, response.payload, None, timeout)

    async def _run_all(self, cid: str, targets: list[tuple[str, Any]], timeout: float | None,
                       on_each: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """ Runs every target side by side in a nursery of the current task; returns their
        outcomes in the order of `targets`. `on_each(result)` is called as each one finishes. """
        results: list[dict[str, Any]] = [{} for _ in targets]

        async def run_one(index: int, target: str, payload: Any) -> None:
            results[index] = await self._run_target(cid, target, payload, timeout)
            if on_each is not None:
                on_each(results[index])

        async with trio.open_nursery() as nursery:
            for index, (target, payload) in enumerate(targets):
                nursery.start_soon(run_one, index, target, payload, name=f"{self.pattern} {target} cid={cid}")
        return results

    async def _run_callback(self, cid: str, callback: str, payload: Any, channel: str, timeout: float | None) -> None:
        try:
            await self.server.invoke_service(callback, payload, cid=cid, channel=channel, timeout=timeout)
        except Exception as exc:
            logger.error("cid=%s %s callback %r raised %s", cid, self.pattern, callback, _describe(exc, timeout),
                         exc_info=not isinstance(exc, trio.TooSlowError))

    async def _run_in_background(self, cid: str, targets: list[tuple[str, Any]], on_target: list[str],
                                 on_final: list[str], timeout: float | None) -> None:
        async with trio.open_nursery() as callbacks:  # callbacks run side by side, not blocking each other

            def on_each(result: dict[str, Any]) -> None:
                for callback in on_target:
                    callbacks.start_soon(self._run_callback, cid, callback, {**result, "phase": "on-target"},
                                         self.on_target_channel, timeout)

            results = await self._run_all(cid, targets, timeout, on_each if on_target else None)
            for callback in on_final:  # each gets its own list: one callback changing it cannot affect another
                callbacks.start_soon(self._run_callback, cid, callback, [dict(result) for result in results],
                                     self.on_final_channel, timeout)

    def _start(self, targets: Any, on_final: Any, on_target: Any, cid: str | None, timeout: float | None) -> str:
        pairs = _target_list(self.server, targets)
        final_names = _callback_names(self.server, on_final, "an on-final callback")
        target_names = _callback_names(self.server, on_target, "an on-target callback")
        timeout = _check_timeout(timeout)
        cid = cid or self.source.cid or new_cid()
        what = f"{self.pattern} of {', '.join(repr(name) for name, _ in pairs) or 'no targets'}"
        _start_in_background(self.server, cid, what,
                             partial(self._run_in_background, cid, pairs, target_names, final_names, timeout))
        return cid

    def invoke_wait(self, targets: Any, *, cid: str | None = None, timeout: float | None = None) -> Any:
        """ Invokes every target side by side and waits for all of them; returns their outcomes
        (one dict each, in the order of `targets`, as callbacks get them). Runs in the caller's
        task: the caller's deadline and cancellation reach every target. A plain `def handle`
        blocks; an `async def handle` awaits: `results = await self.patterns.fanout.invoke_wait(...)`.
        `timeout` (seconds) applies to each target. """
        pairs = _target_list(self.server, targets)
        timeout = _check_timeout(timeout)
        cid = cid or self.source.cid or new_cid()
        return self.server.run_trio(partial(self._run_all, cid, pairs, timeout))


class FanOut(ParallelBase):
    """ `self.patterns.fanout`: runs targets side by side; once all of them have finished, each
    on-final callback gets the list of their outcomes. """

    call_channel = CHANNEL.FANOUT_CALL
    on_target_channel = CHANNEL.FANOUT_ON_TARGET
    on_final_channel = CHANNEL.FANOUT_ON_FINAL
    pattern = "fanout"

    def invoke(self, targets: Any, on_final: Any, on_target: Any = None, cid: str | None = None, *,
               timeout: float | None = None) -> str:
        """ Starts the targets (a dict of service name -> request) in the background and returns
        the cid at once (the caller's cid unless `cid` is given; every target runs with it).

        Each `on_target` callback (a name or a list) gets one target's outcome as it finishes,
        with `phase` "on-target"; each `on_final` callback gets the list of all outcomes, in the
        order of `targets`. An outcome is a dict: `source`, `target`, `cid`, `ok`, `response`,
        `exception` ("ValueError: message" or None), `exception_type`, `req_ts_utc`,
        `resp_ts_utc`. A target that raises is recorded so; the others still run to the end.
        `timeout` (seconds) applies to each target and each callback.
        """
        return self._start(targets, on_final, on_target, cid, timeout)


class ParallelExec(ParallelBase):
    """ `self.patterns.parallel`: runs targets side by side; each on-target callback gets each
    target's outcome as it finishes. """

    call_channel = CHANNEL.PARALLEL_EXEC_CALL
    on_target_channel = CHANNEL.PARALLEL_EXEC_ON_TARGET
    pattern = "parallel"

    def invoke(self, targets: Any, on_target: Any = None, cid: str | None = None, *,
               timeout: float | None = None) -> str:
        """ Starts the targets (a dict of service name -> request) in the background and returns
        the cid at once; each `on_target` callback gets each target's outcome (see
        `FanOut.invoke` for its keys). `timeout` (seconds) applies to each target and callback. """
        return self._start(targets, None, on_target, cid, timeout)


# ################################################################################################
# Invoke/retry

_RETRY_INVOKE_KWARGS = ("timeout", "channel", "raw_request")


class InvokeRetry:
    """ `self.patterns.invoke_retry`: invokes a service again when it raises, waiting longer
    after each failed attempt.

    `repeats` is how many attempts in total (at least 1); `seconds` (or `minutes`; 1 second if
    neither is given) the wait after the first failure, multiplied by `backoff` (default 2; 1
    waits the same each time, as Zato did) after each further one, never more than
    `max_seconds` if given. Only exceptions (`Exception` subclasses) cause a retry; cancellation
    never does. `timeout` (seconds) applies to each attempt, `channel` names it.
    """

    def __init__(self, source: Service) -> None:
        self.source = source
        self.server = source.server

    # Settings ###################################################################################

    def _settings(self, target: str, args: tuple[Any, ...], repeats: Any, seconds: Any, minutes: Any,
                  backoff: Any, max_seconds: Any, invoke_kwargs: dict[str, Any]) -> tuple[Any, list[float]]:
        """ Checks everything before the first attempt; returns the request and the waits. """
        _check_service(self.server, target, "the service to invoke")
        where = f"invoke_retry of {target!r}"
        if len(args) > 1:
            raise TypeError(f"{where}: give the target's request as the only positional argument after the service "
                            f"name; got {len(args)} of them")
        unknown = sorted(set(invoke_kwargs) - set(_RETRY_INVOKE_KWARGS))
        if unknown:
            raise TypeError(f"{where}: unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                            f"known: repeats, seconds, minutes, backoff, max_seconds, async_fallback, callback, "
                            f"context, cid, {', '.join(_RETRY_INVOKE_KWARGS)}")
        invoke_kwargs["timeout"] = _check_timeout(invoke_kwargs.get("timeout"))
        invoke_kwargs.setdefault("channel", CHANNEL.INVOKE_RETRY)
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"{where}: repeats (how many attempts in total) must be an int of 1 or more, "
                             f"not {repeats!r}")
        if seconds is not None and minutes is not None:
            raise ValueError(f"{where}: give seconds or minutes, not both")
        for label, value in (("seconds", seconds), ("minutes", minutes), ("max_seconds", max_seconds)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"{where}: {label} must be a number of 0 or more, not {value!r}")
        if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or backoff < 1:
            raise ValueError(f"{where}: backoff must be a number of 1 or more, not {backoff!r}")
        if seconds is None and minutes is None:
            first_wait = 1.0
        else:
            first_wait = float(seconds if seconds is not None else minutes * 60)
        return (args[0] if args else None), self.delays(repeats, first_wait, backoff, max_seconds)

    @staticmethod
    def delays(repeats: int, seconds: float, backoff: float = 2.0, max_seconds: float | None = None) -> list[float]:
        """ The waits between `repeats` attempts: `[seconds, seconds * backoff, ...]` (one fewer
        than `repeats`), each at most `max_seconds`. """
        waits = [seconds * backoff ** attempt for attempt in range(repeats - 1)]
        return [min(wait, max_seconds) for wait in waits] if max_seconds is not None else waits

    # Attempts ###################################################################################

    async def _attempt(self, target: str, payload: Any, call_cid: str, attempt: int, waits: list[float],
                       invoke_kwargs: dict[str, Any]) -> tuple[bool, Any]:
        """ One attempt: (True, response payload) or (False, the exception it raised). """
        try:
            response = await self.server.invoke_service(target, payload, cid=call_cid, **invoke_kwargs)
        except Exception as exc:
            repeats = len(waits) + 1
            after = f"; next attempt in {waits[attempt - 1]} s" if attempt < repeats else ""
            logger.warning("cid=%s invoke_retry: attempt %d of %d of %r raised %s%s", call_cid, attempt, repeats,
                           target, _describe(exc, invoke_kwargs.get("timeout")), after)
            return False, exc
        return True, response.payload

    async def _attempts(self, target: str, payload: Any, call_cid: str, waits: list[float], first: int,
                        invoke_kwargs: dict[str, Any], last_error: BaseException | None = None) -> Any:
        """ Attempts number `first` to `len(waits) + 1`, waiting `waits[n - 1]` before attempt
        n + 1. Returns the first response payload; raises `RetryFailed` if every one raised. """
        repeats = len(waits) + 1
        for attempt in range(first, repeats + 1):
            if attempt > 1:
                await trio.sleep(waits[attempt - 2])
            ok, result = await self._attempt(target, payload, call_cid, attempt, waits, invoke_kwargs)
            if ok:
                return result
            last_error = result
        msg = (f"invoke_retry of {target!r} gave up after {repeats} attempt{'s' if repeats > 1 else ''} "
               f"(cid={call_cid}); the last one raised {_describe(last_error, invoke_kwargs.get('timeout'))}. "
               f"The log has every attempt under this cid")
        raise RetryFailed(call_cid, msg, target=target, attempts=repeats, inner_exc=last_error) from last_error

    async def _attempts_then_callback(self, target: str, payload: Any, call_cid: str, waits: list[float],
                                      first: int, invoke_kwargs: dict[str, Any], callback: str | None,
                                      context: Any, started: str, last_error: BaseException | None) -> None:
        try:
            response = await self._attempts(target, payload, call_cid, waits, first, invoke_kwargs, last_error)
        except RetryFailed as exc:
            logger.error("%s", exc)
            ok, response, error = False, None, _describe(exc.inner_exc, invoke_kwargs.get("timeout"))
        else:
            ok, error = True, None
        if callback is None:
            return
        request = {
            "ok": ok, "response": response, "exception": error, "orig_cid": self.source.cid, "call_cid": call_cid,
            "source": self.source.name, "target": target, "retry_seconds": waits[0] if waits else 0.0,
            "retry_repeats": len(waits) + 1, "context": context, "req_ts_utc": started, "resp_ts_utc": _utcnow(),
        }
        await self.server.invoke_service(callback, request, cid=call_cid, channel=CHANNEL.INVOKE_RETRY_CALLBACK,
                                         timeout=invoke_kwargs.get("timeout"))

    async def _first_then_background(self, target: str, payload: Any, call_cid: str, waits: list[float],
                                     invoke_kwargs: dict[str, Any], callback: str, context: Any) -> Any:
        started = _utcnow()
        if not waits:  # one attempt only: nothing to continue in the background
            return await self._attempts(target, payload, call_cid, waits, 1, invoke_kwargs)
        ok, result = await self._attempt(target, payload, call_cid, 1, waits, invoke_kwargs)
        if ok:
            return result
        background_calls(self.server).start(
            call_cid, f"invoke_retry of {target!r} (callback {callback!r})",
            partial(self._attempts_then_callback, target, payload, call_cid, waits, 2, invoke_kwargs, callback,
                    context, started, result))
        return call_cid

    # The API ####################################################################################

    def invoke(self, target: str, *args: Any, repeats: int | None = None, seconds: float | None = None,
               minutes: float | None = None, backoff: float = 2.0, max_seconds: float | None = None,
               async_fallback: bool = False, callback: Any = None, context: Any = None,
               cid: str | None = None, **invoke_kwargs: Any) -> Any:
        """ Invokes `target` with the request in `args` (at most one), repeating it while it raises.

        Without `async_fallback` every attempt runs in the caller's task: this returns the
        response payload or raises `RetryFailed` (a plain `def handle` blocks; an `async def
        handle` awaits), and the caller's deadline and cancellation reach the attempts and the
        waits between them. With `async_fallback=True` the first attempt runs so; if it raises,
        the remaining ones run in the background, `callback` (required) gets the outcome (see
        `invoke_async`) and this returns the call's cid.
        """
        payload, waits = self._settings(target, args, repeats, seconds, minutes, backoff, max_seconds, invoke_kwargs)
        callback_name = _callback_name(self.server, callback, "callback") if callback else None
        if async_fallback and callback_name is None:
            raise ValueError(f"invoke_retry of {target!r} with async_fallback=True needs callback, the service that "
                             f"gets the outcome of the attempts made in the background")
        call_cid = cid or new_cid()
        if not async_fallback:
            return self.server.run_trio(partial(self._attempts, target, payload, call_cid, waits, 1, invoke_kwargs))
        return self.server.run_trio(partial(self._first_then_background, target, payload, call_cid, waits,
                                            invoke_kwargs, callback_name, context))

    def invoke_async(self, target: str, *args: Any, repeats: int | None = None, seconds: float | None = None,
                     minutes: float | None = None, backoff: float = 2.0, max_seconds: float | None = None,
                     callback: Any = None, context: Any = None, cid: str | None = None, **invoke_kwargs: Any) -> str:
        """ Makes every attempt in the background and returns the call's cid at once. `callback`
        (optional) gets the outcome as its request: `ok`, `response`, `exception`
        ("ValueError: message" or None), `orig_cid`, `call_cid`, `source`, `target`,
        `retry_seconds`, `retry_repeats`, `context`, `req_ts_utc`, `resp_ts_utc`. """
        payload, waits = self._settings(target, args, repeats, seconds, minutes, backoff, max_seconds, invoke_kwargs)
        callback_name = _callback_name(self.server, callback, "callback") if callback else None
        call_cid = cid or new_cid()
        what = f"invoke_retry of {target!r}" + (f" (callback {callback_name!r})" if callback_name else "")
        _start_in_background(self.server, call_cid, what,
                             partial(self._attempts_then_callback, target, payload, call_cid, waits, 1, invoke_kwargs,
                                     callback_name, context, _utcnow(), None))
        return call_cid


# ################################################################################################


class Patterns:
    """ `self.patterns`: `fanout`, `parallel`, `invoke_retry`, and `cancel(cid)` for the
    background calls this server runs under a cid. """

    def __init__(self, service: Service) -> None:
        self.service = service

    @property
    def fanout(self) -> FanOut:
        return FanOut(self.service)

    @property
    def parallel(self) -> ParallelExec:
        return ParallelExec(self.service)

    @property
    def invoke_retry(self) -> InvokeRetry:
        return InvokeRetry(self.service)

    def cancel(self, cid: str) -> int:
        """ Cancels the background calls running under `cid` (started by `invoke_async`,
        `fanout.invoke`, `parallel.invoke`...); returns how many there were. Their services
        observe `trio.Cancelled`; a fan-out's callbacks are not called. """
        server = self.service.server
        return _call_in_trio_thread(server, background_calls(server).cancel, cid)


__all__ = ["CHANNEL", "BackgroundCalls", "FanOut", "InvokeRetry", "ParallelExec", "Patterns", "RetryFailed",
           "background_calls", "invoke_async"]
