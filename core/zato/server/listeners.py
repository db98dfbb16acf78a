""" The core's listener runtime: the long-lived work of channels that listen (a queue, WebSocket
peers, a poller), owned by the core as Redpanda Connect's engine owns an input's connect and
retry loop. A listener plugin only opens a receiver per active definition and maps what arrives
to a service invocation (`zato.registry.ListenerType`; the contract is in docs/channels.md).

One `ListenerRuntime` per listener type per worker. It is the channel runtime the server makes
with `ListenerType.create(server)`: `apply(definitions)` (at start, before `run`, and after every
change), `async run(*, task_status)` in the server's intake lifetime, `validate(data)` for the
admin API. In `run` it owns a nursery with one task per active definition, which

- opens the receiver and hands each item to its service, one at a time, in order;
- restarts a receiver that failed (`open`, `receive` or `ack` raised) after an exponential,
  bounded, jittered back-off (`Backoff`), keeping its last error;
- on a live edit, stops the old receiver once its item in hand is done, then opens the new one;
- on a stop (the server cancels `run`), stops receiving at once and gives the item in hand until
  the drain deadline (`[main] graceful_timeout`) to finish; what cannot finish is given back
  (`nack`), to be delivered again.

A failing service is handled by the one failure policy for everything that delivers items to
services (`FailurePolicy`): bounded retries with back-off, then the item's dead-letter
destination (the receiver's `dead_letter`, or the log, with the cid).

`states()` reports each listener (running, backing off with the last error and the next attempt,
stopped, invalid, standby) and its counts; `listener_states(server)` gathers every runtime's for
`GET /zato/api/listeners` (zato.builtin.listeners), and the counts are Prometheus metrics when
the metrics plugin collects them.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Mapping, Protocol

import trio

from zato.common.util import new_cid
from zato.registry import REFERENCES, Kind, ListenerType
from zato.server.observability import feature_metrics

logger = logging.getLogger("zato.listeners")

# Seconds that `nack` and `dead_letter` get once an item's drain deadline has passed
NACK_TIMEOUT = 1.0

RUNNING = "running"
STARTING = "starting"
BACKING_OFF = "backing_off"
STOPPED = "stopped"
INVALID = "invalid"  # its definition is refused (the problems say which field and why)
STANDBY = "standby"  # placement "one_process": another process runs it

COUNTS = ("received", "succeeded", "failed", "retried", "dead_lettered", "nacked")


# ################################################################################################
# The failure policy


@dataclass(frozen=True)
class Backoff:
    """ Delays between attempts: `initial` seconds, times `multiplier` after each failure, never
    more than `maximum`, each less a random share of up to `jitter` (0 to <1) of it, so that
    workers and listeners that failed together do not retry in step. """
    initial: float = 0.5
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        problems = []
        if not self.initial > 0:
            problems.append(f"initial must be > 0 (got {self.initial!r})")
        if not self.maximum >= self.initial:
            problems.append(f"maximum must be >= initial (got {self.maximum!r} < {self.initial!r})")
        if not self.multiplier >= 1:
            problems.append(f"multiplier must be >= 1 (got {self.multiplier!r})")
        if not 0 <= self.jitter < 1:
            problems.append(f"jitter must be from 0 to less than 1 (got {self.jitter!r})")
        if problems:
            raise ValueError(f"Backoff: {'; '.join(problems)}")

    def delay(self, attempt: int) -> float:
        """ Seconds to wait after failure number `attempt` (1: the first). """
        try:
            base = min(self.maximum, self.initial * self.multiplier ** max(0, attempt - 1))
        except OverflowError:
            base = self.maximum
        return base * (1 - self.jitter * random.random())


@dataclass(frozen=True)
class Delivery:
    """ What `FailurePolicy.deliver` did: `ok`, how many `attempts`, the last `error` if not ok. """
    ok: bool
    attempts: int
    error: BaseException | None = None
    result: Any = None


@dataclass(frozen=True)
class FailurePolicy:
    """ The one failure policy for everything that delivers items to services (listener channels,
    pub/sub subscriptions): an item whose service fails is tried again after `backoff.delay(n)`
    (`backoff` None: at once), at most `attempts` times in all; then the caller puts it in its
    dead-letter destination. `timeout` (seconds, None: none) bounds each attempt
    (`Server.invoke_service(timeout=...)`). Every `Exception` counts as a failure
    (`trio.Cancelled` and other BaseExceptions are not caught).

    `deliver` runs the whole schedule in one task; a caller that keeps an item elsewhere between
    attempts (pub/sub stores its retries) asks `after_failure(n)` after each failure instead. """
    attempts: int = 3
    backoff: Backoff | None = field(default_factory=lambda: Backoff(initial=0.2, maximum=5.0))
    timeout: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"FailurePolicy: attempts must be an integer >= 1 (got {self.attempts!r})")
        if self.backoff is not None and not isinstance(self.backoff, Backoff):
            raise ValueError(f"FailurePolicy: backoff must be a Backoff or None (got {self.backoff!r})")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"FailurePolicy: timeout must be > 0 or None (got {self.timeout!r})")

    def after_failure(self, attempt: int) -> float | None:
        """ After failed attempt number `attempt` (1: the first): the seconds to wait before the
        next one, or None if it was the last (the item goes to its dead-letter destination). """
        if attempt >= self.attempts:
            return None
        return self.backoff.delay(attempt) if self.backoff is not None else 0.0

    async def deliver(self, attempt: Callable[[], Awaitable[Any]], *,
                      on_failure: Callable[[int, Exception, float | None], None] | None = None) -> Delivery:
        """ Awaits `attempt()` until it returns, at most `attempts` times. `on_failure(number,
        error, delay)` is called after each failure, `delay` being None after the last one. """
        error: Exception | None = None
        for number in range(1, self.attempts + 1):
            try:
                result = await attempt()
            except Exception as exc:
                error = exc
                delay = self.after_failure(number)
                if on_failure is not None:
                    on_failure(number, exc, delay)
                if delay is None:
                    break
                await trio.sleep(delay)
            else:
                return Delivery(True, number, None, result)
        return Delivery(False, self.attempts, error)


DEFAULT_FAILURE_POLICY = FailurePolicy()
DEFAULT_RESTART = Backoff(initial=0.5, maximum=30.0)


# ################################################################################################
# What a listener plugin provides


@dataclass(frozen=True)
class Invocation:
    """ What `to_invocation(item)` returns: the service to invoke and its payload; `attributes`
    become the service's `self.request.<name>` (name them after the plugin: `{"ibm_mq": info}`);
    `raw_request` is `self.request.raw_request` (None: the payload); `cid` the correlation ID
    (None: a new one). """
    service: str
    payload: Any = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    raw_request: Any = None
    cid: str | None = None
    # For a backend that redelivers what is given back (an MQ backout, a broker's requeue): how
    # many times it delivered this item before (MQ's BackoutCount). Set, a failed attempt gives
    # the item back (`nack`) instead of retrying here, and the item goes to its dead letter once
    # it was delivered `FailurePolicy.attempts` times. None: the core retries in place.
    delivery_count: int | None = None


class RedeliveriesExhausted(Exception):
    """ A backend redelivered an item as often as the failure policy allows (`Invocation.delivery_count`). """


class Receiver(Protocol):
    """ What `ListenerType.open(server, definition)` yields, for one definition.

    `receive()` must be cancel-safe (trio's rule: if it is cancelled, nothing was taken), since
    a stop or an edit cancels it. An item stays the receiver's until it is acked or nacked; the
    runtime does one or the other for every item it received, except after a failed `ack`. """

    async def receive(self) -> Any:
        """ The next item; waits for one. Raising says the backend failed: the runtime closes the
        receiver and opens a new one after a back-off. """

    def to_invocation(self, item: Any) -> Invocation:
        """ The service invocation for `item`; raising dead-letters the item (it is not retried). """

    async def ack(self, item: Any) -> None:
        """ The item is done (its service succeeded, or it is in its dead-letter destination). """

    async def nack(self, item: Any, error: BaseException) -> None:
        """ The item could not be finished (the drain deadline passed): the backend should deliver
        it again. Has `NACK_TIMEOUT` seconds. """

    # Optional: `async def dead_letter(self, item, error)`: keeps an item whose service failed
    # `FailurePolicy.attempts` times; without it the item is logged with its cid, then acked.
    # Optional: `failure_policy`, a `FailurePolicy` of this receiver's own (one definition's
    # settings, or what the backend says, as an MQ queue's backout threshold) instead of the type's.


# ################################################################################################
# The state of one listener


@dataclass
class ListenerState:
    """ One listener (one definition of a listener type) in this worker, as `states()` gives it.
    Times are Unix timestamps. Counts: items `received`; `succeeded` (their service returned);
    `failed` (service attempts that raised); `retried` (attempts after a failure);
    `dead_lettered` (given up on); `nacked` (given back to the backend, not done). """
    listener_type: str
    name: str
    state: str = STARTING
    since: float = field(default_factory=time.time)
    last_error: str | None = None
    last_error_at: float | None = None
    next_attempt_at: float | None = None
    restarts: int = 0
    problems: list[str] = field(default_factory=list)
    received: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    nacked: int = 0

    def set(self, state: str, **changes: Any) -> None:
        if state != self.state:
            self.state, self.since = state, time.time()
        for key, value in changes.items():
            setattr(self, key, value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Slot:
    """ The task of one definition: what it runs and how to stop it. """

    def __init__(self, name: str, definition: dict[str, Any], record: ListenerState) -> None:
        self.name = name
        self.definition = definition
        self.record = record
        self.removed = False
        self.scope: trio.CancelScope | None = None  # around the current receiver (and its back-off)
        self.item_scope: trio.CancelScope | None = None  # the shielded scope of the item in hand
        self.drain_deadline = math.inf
        self.failures = 0  # consecutive failures of the receiver (the back-off's attempt number)
        self.opened_at: float | None = None
        self.outage: tuple[str, float] | None = None  # (the error logged, when it began) while it lasts

    def stop_receiving(self, drain_seconds: float) -> None:
        """ No more items from the current receiver; the item in hand may take `drain_seconds`. """
        self.drain_deadline = min(self.drain_deadline, trio.current_time() + drain_seconds)
        if self.item_scope is not None:
            self.item_scope.deadline = self.drain_deadline
        if self.scope is not None:
            self.scope.cancel()


class DrainTimeout(Exception):
    """ An item was not done when its receiver had to stop (the error `nack` is given). """


# ################################################################################################
# The runtime


class ListenerRuntime:
    """ The runtime of one listener type in one worker (see the module's docstring). """

    def __init__(self, server: Any, listener_type: ListenerType) -> None:
        self.server = server
        self.type = listener_type
        self.policy: FailurePolicy = listener_type.failure_policy or DEFAULT_FAILURE_POLICY
        self.restart: Backoff = listener_type.restart or DEFAULT_RESTART
        self.drain_timeout = float(server.config.main.get("graceful_timeout", 10))
        self._wanted: dict[str, dict[str, Any]] = {}
        self._slots: dict[str, _Slot] = {}
        self._records: dict[str, ListenerState] = {}
        self._nursery: trio.Nursery | None = None
        self._stopped = False  # run has ended: definitions are kept, nothing starts
        self._holding = False  # placement "one_process": this process holds the listener type's lease
        self.placement: Any = None  # and that lease's zato.server.placement.Placement, while `run` runs

    # The channel runtime's interface (zato.server.config_objects, the admin API, server.py)

    def validate(self, data: dict[str, Any]) -> list[str]:
        """ The listener type's own problems with a definition the admin API is about to store,
        each naming the field (the admin API refuses the definition with them). """
        return [f"{self.type.object_type} {data.get('name')!r}: {problem['field']}: {problem['error']}"
                for problem in self._type_problems(data)]

    def apply(self, definitions: Iterable[dict[str, Any]]) -> None:
        """ The active definitions, at start (before `run`) and after every change: starts new
        ones, stops those gone, replaces those changed; a definition with problems is not run
        (its state is "invalid", with the problems). """
        wanted: dict[str, dict[str, Any]] = {}
        definitions = list(definitions)
        given = {definition.get("name") for definition in definitions}
        for name, record in self._records.items():  # gone while invalid or not yet started: stopped
            if name not in given and name not in self._slots and record.state != STOPPED:
                record.set(STOPPED, problems=[], next_attempt_at=None)
        for definition in definitions:
            name = definition.get("name")
            if definition.get("is_active") is False:
                continue
            problems = self._problems(definition)
            if problems:
                messages = [f"{problem['field']}: {problem['error']}" for problem in problems]
                record = self._record(name)
                record.set(INVALID, problems=messages)
                logger.error("listener %s %r (%s) is not started: %s; correct it through the admin API "
                             "(PUT /zato/api/objects/%s/NAME) or enmasse", self.type.name, name, self.type.object_type,
                             "; ".join(messages), self.type.object_type)
                continue
            wanted[name] = definition
        self._wanted = wanted
        if self._stopped:
            return
        if self._nursery is not None:
            self._reconcile()
        else:
            for name in wanted:
                self._record(name).set(STANDBY if self._standby() else STARTING, problems=[])

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """ Runs every active definition until cancelled, then drains. Ready at once: a backend
        that is down does not delay the server's start (that listener backs off). """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._reconcile()
            if self.type.placement == "one_process":
                self._start_placement(nursery)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:  # cancelled: the server stops
                self._nursery, self._stopped = None, True
                for slot in list(self._slots.values()):
                    slot.stop_receiving(self.drain_timeout)
                if self._slots:
                    logger.info("listener type %s: stopping %d listener(s); items in hand may finish within %.1f s",
                                self.type.name, len(self._slots), self.drain_timeout)

    def states(self) -> list[dict[str, Any]]:
        """ Every listener of this type in this worker: its state, last error, next attempt, counts. """
        return [self._records[name].as_dict() for name in sorted(self._records, key=str)]

    statistics = states  # trio's name for what a long-lived object reports

    # Definitions

    def _type_problems(self, definition: dict[str, Any]) -> list[dict[str, str]]:
        check = self.type.validate
        if check is None:
            return []
        try:
            return list(check(definition))
        except Exception as exc:
            logger.exception("the validate of listener type %s failed", self.type.name)
            return [{"field": "(object)", "error": f"the {self.type.name} listener type's validate failed "
                                                   f"({type(exc).__name__}: {exc}); report it to the plugin's authors"}]

    def _problems(self, definition: dict[str, Any]) -> list[dict[str, str]]:
        """ The object type's own check (stored objects skip it when loaded) and the listener type's. """
        problems: list[dict[str, str]] = []
        object_type = self.server.registry.items(Kind.OBJECT_TYPES).get(self.type.object_type)
        if object_type is not None and object_type.check is not None:
            data = {key: value for key, value in definition.items() if not str(key).startswith("_")}
            try:
                problems.extend(object_type.check(data, partial=False))
            except Exception as exc:
                problems.append({"field": "(object)", "error": f"the {object_type.name} check failed "
                                                               f"({type(exc).__name__}: {exc})"})
        return problems + self._type_problems(definition)

    def _standby(self) -> bool:
        """ Placement "one_process": this process does not hold the listener type's lease (another
        process among all sharing the configuration database runs its definitions). """
        return self.type.placement == "one_process" and not self._holding

    def _start_placement(self, nursery: trio.Nursery) -> None:
        """ Competes for the lease `listener:<type>`: while held, every definition runs here;
        when it is lost (or its holder stops or dies, elsewhere) they stop here and start there. """
        from zato.server.placement import listener_lease_name, placement_of
        self.placement = placement_of(self.server, listener_lease_name(self.type.name))

        async def while_held(epoch: int) -> None:
            self._holding = True
            try:
                if not self._stopped:
                    self._reconcile()
                await trio.sleep_forever()
            finally:
                self._holding = False
                if not self._stopped and self._nursery is not None:
                    self._reconcile()  # back to standby: the slots stop once their item in hand is done

        nursery.start_soon(self.placement.run, while_held, name=f"placement of listener type {self.type.name}")

    def _record(self, name: str) -> ListenerState:
        record = self._records.get(name)
        if record is None:
            record = self._records[name] = ListenerState(self.type.name, name)
        return record

    def _reconcile(self) -> None:
        """ Makes the running slots match `_wanted` (in `run`'s nursery). """
        wanted = {} if self._standby() else self._wanted
        for name in self._wanted:
            if self._standby():
                self._record(name).set(STANDBY, problems=[])
        for name, slot in list(self._slots.items()):
            definition = wanted.get(name)
            if definition is None:
                if not slot.removed:
                    slot.removed = True
                    slot.stop_receiving(self.drain_timeout)
                    logger.info("listener %s %r: stopping (deleted or inactive)", self.type.name, name)
            elif slot.removed or _changed(slot.definition, definition):
                slot.removed = False
                slot.definition = definition
                slot.failures = 0
                slot.stop_receiving(self.drain_timeout)
                logger.info("listener %s %r: replacing it with its new definition", self.type.name, name)
        for name, definition in wanted.items():
            if name not in self._slots:
                record = self._record(name)
                record.set(STARTING, problems=[], next_attempt_at=None)
                slot = self._slots[name] = _Slot(name, definition, record)
                assert self._nursery is not None
                self._nursery.start_soon(self._serve, slot, name=f"listener {self.type.name} {name!r}")

    # One definition's task

    async def _serve(self, slot: _Slot) -> None:
        record = slot.record
        try:
            while not slot.removed:
                definition = slot.definition
                slot.drain_deadline = math.inf
                with trio.CancelScope() as slot.scope:
                    try:
                        await self._receive(slot, definition)
                    except Exception as exc:
                        await self._back_off(slot, exc)
                slot.scope = None
        finally:
            slot.scope = None
            if record.state != INVALID:  # an edit it cannot run stopped it: say why, not just "stopped"
                standby = self._standby() and not self._stopped and slot.name in self._wanted  # lease lost
                record.set(STANDBY if standby else STOPPED, next_attempt_at=None)
            _metrics(self.server).running(self.type.name, slot.name, False)
            if self._slots.get(slot.name) is slot:
                del self._slots[slot.name]

    async def _receive(self, slot: _Slot, definition: dict[str, Any]) -> None:
        record = slot.record
        record.set(STARTING)
        async with self.type.open(self.server, definition) as receiver:
            slot.opened_at = trio.current_time()
            record.set(RUNNING, next_attempt_at=None)
            if slot.outage is not None:
                logger.info("listener %s %r is running again, %.1f s and %d attempt(s) after it failed (%s)",
                            self.type.name, slot.name, trio.current_time() - slot.outage[1], slot.failures,
                            slot.outage[0])
                slot.outage = None
            _metrics(self.server).running(self.type.name, slot.name, True)
            try:
                while True:
                    # A stop or an edit ends the loop here even if `receive` returns at once
                    # without a checkpoint (an item given back is there again at once).
                    await trio.lowlevel.checkpoint_if_cancelled()
                    item = await receiver.receive()
                    slot.failures = 0
                    await self._handle(slot, receiver, item)
            finally:
                _metrics(self.server).running(self.type.name, slot.name, False)

    async def _back_off(self, slot: _Slot, exc: Exception) -> None:
        record = slot.record
        if slot.opened_at is not None and trio.current_time() - slot.opened_at >= self.restart.maximum:
            slot.failures = 0  # it worked for a while: this is a new outage, not the same one
        slot.opened_at = None
        slot.failures += 1
        delay = self.restart.delay(slot.failures)
        now = time.time()
        record.restarts += 1
        record.set(BACKING_OFF, last_error=f"{type(exc).__name__}: {exc}", last_error_at=now,
                   next_attempt_at=now + delay)
        _metrics(self.server).count(self.type.name, slot.name, "restarts")
        error = f"{type(exc).__name__}: {exc}"
        if slot.outage is None or slot.outage[0] != error:  # once per outage (and per new error in it)
            logger.warning("listener %s %r failed (%s); failure %d in a row, opening it again in %.2f s, and with "
                           "back-off while it fails (logged again once it runs, or fails otherwise; its state: GET "
                           "/zato/api/listeners)", self.type.name, slot.name, error, slot.failures, delay,
                           exc_info=exc if slot.outage is None else None)
            slot.outage = (error, slot.outage[1] if slot.outage else trio.current_time())
        else:
            logger.debug("listener %s %r failed again (%s); failure %d in a row, opening it again in %.2f s",
                         self.type.name, slot.name, error, slot.failures, delay)
        await trio.sleep(delay)

    # One item

    async def _handle(self, slot: _Slot, receiver: Any, item: Any) -> None:
        """ Delivers one item under a shielded scope: a stop or an edit waits for it until the drain
        deadline, then it is given back (nack). """
        self._count(slot, "received")
        with trio.CancelScope(shield=True) as scope:
            slot.item_scope = scope
            scope.deadline = slot.drain_deadline
            try:
                await self._deliver(slot, receiver, item)
            finally:
                slot.item_scope = None
        if scope.cancelled_caught:
            await self._nack(slot, receiver, item, DrainTimeout(
                f"listener {self.type.name} {slot.name!r} had to stop and the item was not done within "
                f"{self.drain_timeout} s ([main] graceful_timeout)"))

    async def _deliver(self, slot: _Slot, receiver: Any, item: Any) -> None:
        cid = new_cid()
        try:
            invocation = self._invocation_of(receiver, item)
        except Exception as exc:
            logger.error("cid=%s listener %s %r: the item cannot be mapped to a service invocation (%s: %s); "
                         "it is dead-lettered", cid, self.type.name, slot.name, type(exc).__name__, exc, exc_info=exc)
            await self._dead_letter(slot, receiver, item, exc, cid, None)
            return
        cid = invocation.cid or cid
        policy = getattr(receiver, "failure_policy", None) or self.policy  # a receiver may have its own
        if invocation.delivery_count is not None:
            await self._deliver_once(slot, receiver, item, invocation, cid, policy)
            return

        def on_failure(number: int, exc: Exception, delay: float | None) -> None:
            self._count(slot, "failed")
            if delay is not None:
                self._count(slot, "retried")
                logger.warning("cid=%s listener %s %r: service %s failed (attempt %d of %d: %s: %s); trying again "
                               "in %.2f s", cid, self.type.name, slot.name, invocation.service, number, policy.attempts,
                               type(exc).__name__, exc, delay)
            else:
                logger.error("cid=%s listener %s %r: service %s failed (attempt %d of %d: %s: %s); giving up",
                             cid, self.type.name, slot.name, invocation.service, number, policy.attempts,
                             type(exc).__name__, exc, exc_info=exc)

        delivery = await policy.deliver(lambda: self._invoke(invocation, cid, slot.name, policy), on_failure=on_failure)
        if delivery.ok:
            await receiver.ack(item)
            self._count(slot, "succeeded")
        else:
            await self._dead_letter(slot, receiver, item, delivery.error, cid, invocation.service)

    async def _deliver_once(self, slot: _Slot, receiver: Any, item: Any, invocation: Invocation, cid: str,
                            policy: FailurePolicy) -> None:
        """ The backend redelivers: one attempt here; a failure gives the item back (`nack`), or
        sends it to its dead letter once it was delivered `policy.attempts` times. """
        delivered_before = max(0, int(invocation.delivery_count or 0))
        if delivered_before >= policy.attempts:
            await self._dead_letter(slot, receiver, item, RedeliveriesExhausted(
                f"delivered {delivered_before} times before without success (at most {policy.attempts} attempts); "
                f"the earlier errors are logged"), cid, invocation.service)
            return
        try:
            await self._invoke(invocation, cid, slot.name, policy)
        except Exception as exc:
            self._count(slot, "failed")
            attempt = delivered_before + 1
            if attempt >= policy.attempts:
                logger.error("cid=%s listener %s %r: service %s failed (attempt %d of %d: %s: %s); giving up",
                             cid, self.type.name, slot.name, invocation.service, attempt, policy.attempts,
                             type(exc).__name__, exc, exc_info=exc)
                await self._dead_letter(slot, receiver, item, exc, cid, invocation.service)
                return
            logger.warning("cid=%s listener %s %r: service %s failed (attempt %d of %d: %s: %s); the item is given "
                           "back to be delivered again", cid, self.type.name, slot.name, invocation.service, attempt,
                           policy.attempts, type(exc).__name__, exc)
            await self._nack(slot, receiver, item, exc, outcome="retried")
            return
        await receiver.ack(item)
        self._count(slot, "succeeded")

    def _invocation_of(self, receiver: Any, item: Any) -> Invocation:
        invocation = receiver.to_invocation(item)
        if not isinstance(invocation, Invocation):
            raise TypeError(f"to_invocation of listener type {self.type.name} returned {type(invocation).__name__}, "
                            f"not a zato.server.listeners.Invocation")
        if not isinstance(invocation.service, str) or not invocation.service:
            raise TypeError(f"to_invocation of listener type {self.type.name} gave no service name "
                            f"(got {invocation.service!r})")
        return invocation

    async def _invoke(self, invocation: Invocation, cid: str, channel: str, policy: FailurePolicy) -> Any:
        return await self.server.invoke_service(invocation.service, invocation.payload, cid=cid, channel=channel,
                                                raw_request=invocation.raw_request, timeout=policy.timeout,
                                                attributes=invocation.attributes)

    async def _dead_letter(self, slot: _Slot, receiver: Any, item: Any, error: BaseException | None, cid: str,
                           service: str | None) -> None:
        dead_letter = getattr(receiver, "dead_letter", None)
        if dead_letter is not None:
            try:
                await dead_letter(item, error)
            except Exception as exc:
                logger.error("cid=%s listener %s %r: the dead-letter destination refused the item (%s: %s); it is "
                             "given back (nack)", cid, self.type.name, slot.name, type(exc).__name__, exc, exc_info=exc)
                await self._nack(slot, receiver, item, error or exc)
                return
            logger.warning("cid=%s listener %s %r: the item is in its dead-letter destination (service %s: %s)",
                           cid, self.type.name, slot.name, service, _describe(error))
        else:
            logger.error("cid=%s listener %s %r: dead letter (listener type %s has no dead-letter destination, so it "
                         "is logged here and acknowledged): service %s, error %s, item %s", cid, self.type.name,
                         slot.name, self.type.name, service, _describe(error), _truncated(item))
        await receiver.ack(item)
        self._count(slot, "dead_lettered")

    async def _nack(self, slot: _Slot, receiver: Any, item: Any, error: BaseException, outcome: str = "nacked") -> None:
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + NACK_TIMEOUT
            try:
                await receiver.nack(item, error)
            except Exception:
                logger.exception("listener %s %r: nack failed; the backend keeps or redelivers the item as it "
                                 "does for a receiver that goes away", self.type.name, slot.name)
        if scope.cancelled_caught:
            logger.error("listener %s %r: nack took more than %s s", self.type.name, slot.name, NACK_TIMEOUT)
        self._count(slot, outcome)
        if outcome == "nacked":
            logger.warning("listener %s %r: an item was given back (nack): %s", self.type.name, slot.name, error)

    def _count(self, slot: _Slot, outcome: str) -> None:
        setattr(slot.record, outcome, getattr(slot.record, outcome) + 1)
        _metrics(self.server).count(self.type.name, slot.name, outcome)


def _changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """ Whether a definition changed (storage keys such as `_version` aside). """
    return ({k: v for k, v in old.items() if not str(k).startswith("_") or k == REFERENCES}
            != {k: v for k, v in new.items() if not str(k).startswith("_") or k == REFERENCES})


def _describe(error: BaseException | None) -> str:
    return f"{type(error).__name__}: {error}" if error is not None else "-"


def _truncated(item: Any, limit: int = 500) -> str:
    text = repr(item)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


# ################################################################################################
# The admin API and metrics


def listener_runtimes(server: Any) -> dict[str, ListenerRuntime]:
    """ Listener type name -> its runtime in this worker. """
    return {name: runtime for name, runtime in server.channels.items() if isinstance(runtime, ListenerRuntime)}


def listener_states(server: Any) -> dict[str, Any]:
    """ What `GET /zato/api/listeners` answers: this worker and every listener in it. """
    return {"worker": {"pid": server.pid, "index": getattr(server.options, "worker_index", 0)},
            "listeners": [state for runtime in listener_runtimes(server).values() for state in runtime.states()]}


class _ListenerMetrics:
    """ `zato_listener_items_total{listener_type, listener, outcome}` (outcome: received,
    succeeded, failed, retried, dead_lettered, nacked, restarts) and
    `zato_listener_running{listener_type, listener}` (1 while its receiver is open; the number of
    workers where it is, with several). """

    def __init__(self, metrics: Any) -> None:
        from prometheus_client import Counter, Gauge
        self.items = Counter("zato_listener_items", "Items of listener channels by outcome, and their restarts",
                             ("listener_type", "listener", "outcome"), registry=metrics.registry)
        self.up = Gauge("zato_listener_running", "1 while a listener channel's receiver is open",
                        ("listener_type", "listener"), registry=metrics.registry, multiprocess_mode="livesum")

    def count(self, listener_type: str, listener: str, outcome: str) -> None:
        self.items.labels(listener_type, listener, outcome).inc()

    def running(self, listener_type: str, listener: str, running: bool) -> None:
        self.up.labels(listener_type, listener).set(1 if running else 0)


class _NoMetrics:
    def count(self, listener_type: str, listener: str, outcome: str) -> None:
        pass

    def running(self, listener_type: str, listener: str, running: bool) -> None:
        pass


_NO_METRICS = _NoMetrics()


def _metrics(server: Any) -> _ListenerMetrics | _NoMetrics:
    """ The listener metrics of this process's Prometheus registry, or a no-op while metrics are off. """
    return feature_metrics(server, _ListenerMetrics, _NO_METRICS)
