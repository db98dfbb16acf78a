""" The pub/sub runtime of one worker (`PubSub`): the writer task for delivery bookkeeping, the
poller noticing what other processes published, one runner per subscription queue, publishing
from both kinds of service, and the delivery targets by endpoint type. """

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import socket
import time
from functools import partial
from typing import Any, Awaitable, Callable

import trio

from zato.builtin.pubsub.api import PubSubAPI
from zato.builtin.pubsub.message import (
    PublishError, PubSubMessage, TopicFull, build_row, message_from_row, normalise_options, service_topic_name,
)
from zato.builtin.pubsub.objects import (
    ENDPOINT_SERVICE, OBJECT_TYPES, SubscriptionConfig, TopicConfig, build_config, create_service_objects,
)
from zato.builtin.pubsub.store import (
    MESSAGE_COLUMNS, Publication, PubSubStore, Settlement, StoreError, WriteBatch, WriteResult,
)
from zato.common.pubsub import DeliveryError
from zato.common.util import new_cid
from zato.registry import Kind
from zato.server.observability import feature_metrics

logger = logging.getLogger("zato.pubsub")

CHANNEL = "pubsub"  # `self.request.channel` of services that get messages
# A queue's delivery outcomes, as the listener channels name theirs (zato.server.listeners.COUNTS)
COUNTS = ("succeeded", "failed", "retried", "dead_lettered", "expired")
LEASE_MARGIN = 1.0  # seconds: a claim closer than this to its end is not started
FULL_PROBE_SECONDS = 5.0  # how often every queue is checked (at most; or every half lease), e.g. for claims
# of servers that stopped
CONFIG_CHECK_SECONDS = 1.0  # how often other servers' pub/sub object changes are looked for
COALESCE_CHECKPOINTS = 3  # the writer lets ready tasks run this many times before it writes
SETTLEMENT_DELAY = 0.005  # seconds acknowledgements alone wait for other work to share their transaction
LAST_MESSAGE_SECONDS = 1.0  # a worker writes a topic's last message to the database at most this often

# Delivers one message to one subscriber: raises to say it was not delivered.
DeliveryTarget = Callable[[Any, "SubscriptionConfig", PubSubMessage, str], Awaitable[None]]


# ################################################################################################
# Delivery targets


async def deliver_to_service(server: Any, sub: SubscriptionConfig, message: PubSubMessage, cid: str) -> None:
    """ The `service` endpoint type: the endpoint's service, or the service the message was
    published to, gets it as `self.request.raw_request` (its `data` as the request payload). """
    target = sub.service_name or (message.zato_ctx or {}).get("target_service_name")
    if not target:
        raise DeliveryError(f"endpoint {sub.endpoint_name!r} names no service and the message was not published to "
                            f"one; set service_name on the endpoint")
    await server.invoke_service(target, message.data, raw_request=message, channel=CHANNEL, cid=cid,
                                timeout=sub.policy.timeout)


# ################################################################################################
# What runners hold


_sequence = itertools.count()


class Item:
    """ One message waiting in a runner for one subscription. GD items have a `delivery_id` (their
    database row) and a claim; non-GD ones live here only. """
    __slots__ = ("message", "row", "delivery_id", "claimed_until", "due", "sort_key")

    def __init__(self, message: PubSubMessage, row: dict[str, Any], delivery_id: int | None,
                 claimed_until: float = 0.0) -> None:
        self.message = message
        self.row = row  # the storage form, for dead letters
        self.delivery_id = delivery_id
        self.claimed_until = claimed_until
        self.due = 0.0
        # ties (one batch shares its pub_time) go by the order of publication
        self.sort_key = (-message.priority, message.pub_time, delivery_id if delivery_id is not None else next(_sequence))

    def __lt__(self, other: "Item") -> bool:
        return self.sort_key < other.sort_key


class QueueRunner:
    """ Delivers one subscription queue, one message at a time, best first (priority, then
    publication time). Holds at most `capacity` claimed GD messages. """

    def __init__(self, pubsub: "PubSub", sub: SubscriptionConfig, capacity: int) -> None:
        self.pubsub = pubsub
        self.sub = sub
        self.capacity = capacity
        self.ready: list[Item] = []
        self.delayed: list[tuple[float, int, Item]] = []  # non-GD retries, by due time
        self.gd_held = 0  # claimed GD items here (ready or being delivered)
        self.in_flight: Item | None = None
        self.more = False  # the last claim was full: more may be waiting in the database
        self.scope = trio.CancelScope()
        self._changed = trio.Event()

    def room(self) -> int:
        return self.capacity - self.gd_held

    def push(self, item: Item) -> None:
        heapq.heappush(self.ready, item)
        if item.delivery_id is not None:
            self.gd_held += 1
        self._changed.set()

    def push_later(self, item: Item) -> None:
        heapq.heappush(self.delayed, (item.due, next(_sequence), item))
        self._changed.set()

    def wake(self) -> None:
        self._changed.set()

    def take_unstarted(self) -> list[Item]:
        """ Empties the runner of what it has not started (on stop or removal). """
        items = list(self.ready) + [entry[2] for entry in self.delayed]
        self.ready, self.delayed = [], []
        self.gd_held = 1 if self.in_flight is not None and self.in_flight.delivery_id is not None else 0
        return items

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        with self.scope:
            task_status.started()
            while True:
                item = await self._next()
                if item is None:
                    return
                self.in_flight = item
                try:
                    await self.pubsub._deliver(self, item)
                finally:
                    self.in_flight = None
                    if item.delivery_id is not None:
                        self.gd_held -= 1
                if self.more and self.room() * 2 >= self.capacity:
                    self.more = False
                    self.pubsub.want_claim(self.sub.sub_key)

    async def _next(self) -> Item | None:
        while True:
            if self.pubsub.stopping:
                return None
            now = time.time()
            while self.delayed and self.delayed[0][0] <= now:
                heapq.heappush(self.ready, heapq.heappop(self.delayed)[2])
            if self.ready:
                return heapq.heappop(self.ready)
            timeout = self.delayed[0][0] - now if self.delayed else float("inf")
            self._changed = trio.Event()
            with trio.move_on_after(timeout):
                await self._changed.wait()


# ################################################################################################
# The runtime of one worker


class PubSub:
    """ Pub/sub in one worker process: `RUNTIME`. """

    def __init__(self, server: Any) -> None:
        self.server = server
        conf = server.config.get("pubsub", {})
        self.poll_interval = max(float(conf.get("poll_interval", 0.2)), 0.01)
        self.lease_seconds = max(float(conf.get("lease_seconds", 30.0)), 3 * LEASE_MARGIN)
        self.claim_batch = max(int(conf.get("claim_batch", 50)), 1)
        self.cleanup_interval = max(float(conf.get("cleanup_interval", 10.0)), 0.1)
        self.store = PubSubStore(server.odb.url)
        slot = f"{socket.gethostname()}|{server.paths.base_dir}|{server.options.worker_index}|"
        self.claimer_prefix = slot
        self.claimer = f"{slot}{os.getpid()}|{new_cid()[:12]}"
        # endpoint type -> how its subscribers get messages (`register_pubsub_delivery_targets`)
        self.targets: dict[str, DeliveryTarget] = server.registry.items(Kind.PUBSUB_DELIVERY_TARGETS)
        self.topics: dict[str, TopicConfig] = {}
        self.subs: dict[str, SubscriptionConfig] = {}
        self.runners: dict[str, QueueRunner] = {}
        self.config_problems: list[str] = []
        self.stopping = False
        self.running = False
        self._nursery: trio.Nursery | None = None
        self._db_limiter = trio.CapacityLimiter(1)  # maintenance and admin writes of this worker, one at a time
        # work for the writer
        self._work = trio.Event()
        self._settlements: list[Settlement] = []
        self._dead_in_ram: list[dict[str, Any]] = []
        self._claims_wanted: set[str] = set()
        self._routes: dict[str, set[str]] = {}
        self._renew = False
        self._flush_waiters: list[trio.Event] = []
        self._due: dict[str, float] = {}  # sub_key -> when a retry of it becomes claimable
        self._lease_ok_until = 0.0  # every claim of ours made before the last renewal is valid until then
        # non-GD messages
        self._waiting_in_topic: dict[str, list[dict[str, Any]]] = {}  # published while no subscription
        self._ram_depth: dict[str, int] = {}
        self._ram_pending: dict[str, int] = {}  # msg_id -> queues still to deliver it
        self._creating = trio.Lock()
        self._last_recorded: dict[str, float] = {}  # topic -> when this worker last wrote its last message
        self.last_published: dict[str, dict[str, Any]] = {}  # topic -> the last message this worker published
        self.stats = {"published_gd": 0, "published_non_gd": 0, "delivered": 0, "failed_attempts": 0,
                      "retried": 0, "dead_lettered": 0, "expired": 0, "writer_transactions": 0}
        self.counts: dict[str, dict[str, int]] = {}  # sub_key -> outcome -> count (`COUNTS`), this worker's

    # ############################################################################################
    # Configuration

    def apply_config(self) -> None:
        """ Rebuilds topics and queues from `server.config_objects`; starts and stops runners. """
        topics, subs, problems = build_config(self.server.config_objects, set(self.targets))
        for problem in problems:
            if problem not in self.config_problems:
                logger.error("%s", problem)
        self.config_problems = problems
        previous = self.subs
        self.topics, self.subs = topics, subs
        if self._nursery is None:
            return
        for sub_key in [key for key in self.runners if key not in subs]:
            self._remove_runner(sub_key)
        for sub_key, sub in subs.items():
            runner = self.runners.get(sub_key)
            if runner is None:
                runner = self.runners[sub_key] = QueueRunner(self, sub, self.claim_batch)
                self._nursery.start_soon(runner.run, name=f"pubsub queue {sub_key}")
                self._routes.setdefault(sub.topic_name, set()).add(sub_key)
                self.want_claim(sub_key)
            else:
                runner.sub = sub
        for topic_name in list(self._waiting_in_topic):
            if topics.get(topic_name) and topics[topic_name].sub_keys:
                self._queue_in_ram(topics[topic_name], self._waiting_in_topic.pop(topic_name))
        if subs.keys() != previous.keys():
            logger.info("pub/sub: %d topics, %d subscription queues", len(topics), len(subs))
        self._work.set()

    def _remove_runner(self, sub_key: str) -> None:
        runner = self.runners.pop(sub_key)
        runner.scope.cancel()
        for item in runner.take_unstarted():
            self._drop_item(item, "release")

    # ############################################################################################
    # The tasks

    async def serve(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """ Runs this worker's pub/sub until the server stops. """
        released = await trio.to_thread.run_sync(self.store.release_claims_of, self.claimer_prefix, self.claimer)
        if released:
            logger.info("pub/sub: released %d deliveries claimed by an earlier process of this worker (it stopped "
                        "before finishing them); they are delivered again", released)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.apply_config()
                await nursery.start(self._serve_writer)
                nursery.start_soon(self._serve_poller)
                self.running = True
                task_status.started()
        finally:
            self.running = False
            self.store.close()

    async def _serve_writer(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._work.wait()
            for _ in range(COALESCE_CHECKPOINTS):  # let tasks that are ready add to this transaction
                await trio.lowlevel.checkpoint()
            # Acknowledgements alone may wait a little for a publication to share its commit with.
            company = SETTLEMENT_DELAY if self._only_settlements() else 0.0
            self._work = trio.Event()
            waiters, self._flush_waiters = self._flush_waiters, []
            batch = self._take_batch()
            if not batch.is_empty():
                try:
                    result = await trio.to_thread.run_sync(
                        partial(self.store.submit, batch, wait_for_company=company))
                except Exception as exc:
                    await self._write_failed(batch, exc)
                else:
                    self.stats["writer_transactions"] += 1
                    self._written(batch, result)
            for waiter in waiters:
                waiter.set()

    def _only_settlements(self) -> bool:
        return bool(self._settlements) and not (
            self._claims_wanted or self._routes or self._renew or self._flush_waiters or self._dead_in_ram
            or self.stopping)

    def _take_batch(self) -> WriteBatch:
        now = time.time()
        batch = WriteBatch(now=now, claimer=self.claimer, lease_until=now + self.lease_seconds)
        batch.settlements, self._settlements = self._settlements, []
        batch.dead_in_ram, self._dead_in_ram = self._dead_in_ram, []
        batch.routes = {topic: sorted(keys) for topic, keys in self._routes.items()}
        self._routes = {}
        batch.renew, self._renew = self._renew, False
        if not self.stopping:
            for sub_key in self._claims_wanted:
                runner = self.runners.get(sub_key)
                if runner is not None:
                    if runner.room() > 0:
                        batch.claims[sub_key] = runner.room()
                    else:
                        runner.more = True
        self._claims_wanted = set()
        return batch

    def _written(self, batch: WriteBatch, result: WriteResult) -> None:
        if batch.renew:  # every claim of ours made before this transaction now lasts until lease_until
            self._lease_ok_until = batch.lease_until - LEASE_MARGIN
        counts: dict[str, int] = {}
        for row in result.claimed:
            sub_key = row["sub_key"]
            counts[sub_key] = counts.get(sub_key, 0) + 1
            runner = self.runners.get(sub_key)
            stored = row["message"]
            if runner is None or stored is None:  # removed meanwhile, or the message was deleted
                self._settlements.append(Settlement(row["id"], row["msg_id"], "release" if stored else "delivered"))
                self._work.set()
                continue
            message = message_from_row(stored, sub_key=sub_key, delivery_count=row["delivery_count"])
            runner.push(Item(message, {k: stored[k] for k in MESSAGE_COLUMNS}, row["id"], row["claimed_until"]))
        for sub_key, asked in batch.claims.items():
            runner = self.runners.get(sub_key)
            if runner is not None and counts.get(sub_key, 0) >= asked:
                runner.more = True

    async def _write_failed(self, batch: WriteBatch, exc: Exception) -> None:
        import sqlite3
        from sqlalchemy.exc import OperationalError
        transient = isinstance(exc, (OperationalError, StoreError, sqlite3.OperationalError))
        logger.error("pub/sub could not write to %s: %s: %s; %s", self.store.safe_url(), type(exc).__name__, exc,
                     "retrying in 1 s" if transient else "writing what it held one by one",
                     exc_info=not transient)
        self._claims_wanted.update(batch.claims)
        self._renew = self._renew or batch.renew
        for topic, keys in batch.routes.items():
            self._routes.setdefault(topic, set()).update(keys)
        if transient:
            self._settlements[:0] = batch.settlements
            self._dead_in_ram[:0] = batch.dead_in_ram
            await trio.sleep(1.0)
            self._work.set()
            return
        # Something in the batch itself is wrong: write each settlement alone, keep what works.
        for settlement in batch.settlements:
            one = WriteBatch(now=batch.now, claimer=batch.claimer, lease_until=batch.lease_until,
                             settlements=[settlement])
            try:
                await trio.to_thread.run_sync(self.store.submit, one)
            except Exception as inner:
                logger.error("pub/sub dropped the %s of delivery %s (message %s): %s; the message is delivered again "
                             "when its lease ends", settlement.outcome, settlement.delivery_id, settlement.msg_id, inner)
        for dead in batch.dead_in_ram:
            try:
                await trio.to_thread.run_sync(self.store.submit, WriteBatch(
                    now=batch.now, claimer=batch.claimer, lease_until=batch.lease_until, dead_in_ram=[dead]))
            except Exception as inner:
                logger.error("pub/sub lost the dead letter of non-GD message %s: %s", dead.get("msg_id"), inner)

    async def _serve_poller(self) -> None:
        """ Notices what other processes changed: messages published, retries due, claims of
        stopped servers that ended, pub/sub objects edited; and removes expired messages. """
        newest: int | None = None  # the newest queue entry seen, at the last poll
        fingerprint = None
        last_full = last_config = last_cleanup = 0.0
        last_renew = time.time()
        last_problem, last_problem_logged = "", 0.0
        while True:
            now = time.time()
            next_due = min(self._due.values(), default=now + self.poll_interval)
            await trio.sleep(max(min(self.poll_interval, next_due - now), 0.0))
            if self.stopping:
                return
            now = time.time()
            try:
                for sub_key, due in list(self._due.items()):
                    if due <= now:
                        del self._due[sub_key]
                        self.want_claim(sub_key)
                newest, sub_keys = await trio.to_thread.run_sync(self.store.new_deliveries, newest)
                for sub_key in sub_keys:
                    if sub_key in self.runners:
                        self.want_claim(sub_key)
                if now - last_full >= min(FULL_PROBE_SECONDS, self.lease_seconds / 2):
                    last_full = now
                    candidates = [key for key, runner in self.runners.items() if runner.room() > 0]
                    for sub_key in await trio.to_thread.run_sync(self.store.claimable, candidates, now):
                        self.want_claim(sub_key)
                if now - last_renew >= self.lease_seconds / 3:
                    last_renew = now
                    if any(runner.gd_held for runner in self.runners.values()):
                        self._renew = True
                        self._work.set()
                if now - last_config >= CONFIG_CHECK_SECONDS:
                    last_config = now
                    latest_fingerprint = await trio.to_thread.run_sync(self.store.config_fingerprint, OBJECT_TYPES)
                    if fingerprint is not None and latest_fingerprint != fingerprint:
                        from zato.server import config_objects
                        await config_objects.reload(self.server, OBJECT_TYPES)
                    fingerprint = latest_fingerprint
                    await self._route_waiting(now)
                if now - last_cleanup >= self.cleanup_interval:
                    last_cleanup = now
                    await self._cleanup(now)
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
                if problem != last_problem or now - last_problem_logged >= 60:  # not five lines a second
                    last_problem, last_problem_logged = problem, now
                    logger.error("pub/sub could not poll %s: %s; trying again every %s s (repeats of this error are "
                                 "logged once a minute)", self.store.safe_url(), problem, self.poll_interval)

    async def _cleanup(self, now: float) -> None:
        expired = await trio.to_thread.run_sync(self.store.delete_expired, now, limiter=self._db_limiter)
        if expired:
            self.stats["expired"] += expired
            logger.info("pub/sub: %d expired messages removed undelivered", expired)

    async def _route_waiting(self, now: float) -> None:
        """ Queues messages stored while their publisher knew no subscription of their topic. """
        topics = await trio.to_thread.run_sync(self.store.unrouted_topics)
        routes = {name: list(self.topics[name].sub_keys) for name in topics
                  if name in self.topics and self.topics[name].sub_keys}
        if routes and await trio.to_thread.run_sync(self.store.route_waiting, routes, now, limiter=self._db_limiter):
            for sub_keys in routes.values():
                for sub_key in sub_keys:
                    self.want_claim(sub_key)

    def want_claim(self, sub_key: str) -> None:
        self._claims_wanted.add(sub_key)
        self._work.set()

    async def flush(self) -> None:
        """ Waits until what is pending for the database has been written. """
        waiter = trio.Event()
        self._flush_waiters.append(waiter)
        self._work.set()
        await waiter.wait()

    async def stop(self) -> None:
        """ Graceful stop: finish deliveries under way, give back claimed messages not started,
        write what is pending. Non-GD messages not yet delivered are lost (logged). """
        if not self.running or self.stopping:
            return
        self.stopping = True
        for runner in self.runners.values():
            runner.wake()
        while any(runner.in_flight is not None for runner in self.runners.values()):
            await trio.sleep(0.01)
        lost = 0
        for runner in self.runners.values():
            for item in runner.take_unstarted():
                if item.delivery_id is None:
                    lost += 1
                self._drop_item(item, "release")
        lost += sum(len(rows) for rows in self._waiting_in_topic.values())
        await self.flush()
        await self.flush()  # the first may have started before the releases were queued
        if lost:
            logger.warning("pub/sub: %d non-GD messages were not delivered before the stop; they lived in RAM only "
                           "and are lost (publish with has_gd=True for messages that must survive)", lost)

    # ############################################################################################
    # Publishing

    def resolve(self, name: Any) -> tuple[str, str | None]:
        """ (topic name, target service or None) for what a publisher names: a topic, or a
        service by name or class. """
        from zato.server.service import Service
        from zato.server.deployment import service_name
        if isinstance(name, Service):
            name = type(name)
        if isinstance(name, type) and issubclass(name, Service):
            name = service_name(name, name.__module__)
        if not isinstance(name, str) or not name:
            raise PublishError(f"publish needs a topic or service name (a non-empty string) or a Service class, "
                               f"not {name!r}")
        if name in self.topics:
            return name, None
        if name in self.server.services:
            return service_topic_name(name), name
        raise PublishError(f"no topic or service named {name!r}: create the topic (pubsub_topic, through the admin "
                           f"API or enmasse), check that it is active, or deploy a service by that name")

    async def _ensure_service_topic(self, service: str, topic_name: str) -> TopicConfig:
        """ Creates the topic, endpoint and subscription of a service on first use, as objects in
        the configuration database, and tells every worker. """
        topic = self.topics.get(topic_name)
        if topic is not None and topic.sub_keys:
            return topic
        async with self._creating:
            topic = self.topics.get(topic_name)
            if topic is None or not topic.sub_keys:
                created = await trio.to_thread.run_sync(create_service_objects, self.server, service, topic_name)
                if created:
                    from zato.server.config_objects import CHANGED
                    logger.info("pub/sub: created %s for service %r", ", ".join(created), service)
                    await self.server.notify(CHANGED, {"types": list(OBJECT_TYPES)})
                else:
                    from zato.server import config_objects
                    await config_objects.reload(self.server, OBJECT_TYPES)
                topic = self.topics.get(topic_name)
        if topic is None:
            raise PublishError(f"the topic {topic_name!r} of service {service!r} exists but is inactive; activate it "
                               f"(admin API) to publish to the service")
        return topic

    def _check_running(self) -> None:
        if not self.running or self.stopping:
            raise PublishError("pub/sub is not running in this worker (it starts with the server's tasks, before "
                               "AFTER_STARTED, and stops with the server)")

    def _specs(self, name: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) \
            -> tuple[str, str | None, list[dict[str, Any]], bool, str]:
        """ What to publish where: (topic name, target service or None, each message's options,
        whether data_list was given, the call as error messages name it). Checks everything
        that can be checked before anything is stored. """
        kwargs = dict(kwargs)
        if len(args) > 1:
            raise PublishError(f"publish takes the data as the only positional argument after the name; got "
                               f"{len(args)} of them")
        data_list = kwargs.pop("data_list", None)
        if args:
            if "data" in kwargs:
                raise PublishError("publish got data both as a positional argument and as data=")
            kwargs["data"] = args[0]
        topic_name, service = self.resolve(name)
        where = f"publish to {service or topic_name!r}"
        defaults = normalise_options(kwargs, where)
        if data_list is None:
            if "data" not in defaults and "data" not in kwargs:
                raise PublishError(f"{where}: nothing to publish; give data=... or data_list=[...]")
            defaults.setdefault("data", kwargs.get("data"))
            return topic_name, service, [defaults], False, where
        if isinstance(data_list, (str, bytes, dict)) or not hasattr(data_list, "__iter__"):
            raise PublishError(f"{where}: data_list must be a list of messages, each a dict with 'data' and "
                               f"optionally priority, expiration, has_gd, mime_type, correl_id, in_reply_to, "
                               f"msg_id (as in Zato)")
        if "data" in defaults:
            raise PublishError(f"{where}: give data or data_list, not both")
        specs = []
        for index, element in enumerate(data_list):
            if not isinstance(element, dict):
                raise PublishError(f"{where}: data_list[{index}] must be a dict with 'data' (and optionally "
                                   f"priority, expiration...), not {type(element).__name__}")
            specs.append({**defaults, **normalise_options(element, f"{where}, data_list[{index}]")})
        if not specs:
            raise PublishError(f"{where}: data_list is empty; there is nothing to publish")
        return topic_name, service, specs, True, where

    def _rows(self, topic: TopicConfig, service: str | None, specs: list[dict[str, Any]], is_list: bool, where: str,
              published_by: str | None) -> list[dict[str, Any]]:
        zato_ctx = {"target_service_name": service} if service else None
        now = time.time()
        rows = [build_row(spec, topic_name=topic.name, default_has_gd=topic.has_gd, now=now, published_by=published_by,
                          server_name=self.server.name, server_pid=os.getpid(), zato_ctx=zato_ctx,
                          where=f"{where}, data_list[{index}]" if is_list else where)
                for index, spec in enumerate(specs)]
        ram_rows = [row for row in rows if not row["has_gd"]]
        if ram_rows and topic.max_depth_non_gd:  # checked before anything is stored: all or nothing
            depth = self._ram_depth.get(topic.name, 0)
            if depth + len(ram_rows) > topic.max_depth_non_gd:
                raise TopicFull(topic.name, depth, topic.max_depth_non_gd, len(ram_rows), False)
        return rows

    def _gd_batch(self, topic: TopicConfig, specs: list[dict[str, Any]], rows: list[dict[str, Any]]) -> WriteBatch:
        """ The write of a publication's GD messages. Queues whose runner here has room and no
        backlog get them already claimed by this worker: delivery starts as soon as they commit. """
        gd_rows = [row for row in rows if row["has_gd"]]
        now = time.time()
        user_ids = [row["msg_id"] for spec, row in zip(specs, rows) if row["has_gd"] and spec.get("msg_id")]
        record_last = now - self._last_recorded.get(topic.name, 0.0) >= LAST_MESSAGE_SECONDS
        if record_last:
            self._last_recorded[topic.name] = now
        claimed = []
        for sub_key in topic.sub_keys:
            runner = self.runners.get(sub_key)
            if runner is not None and not runner.more and runner.room() >= len(gd_rows) and not self.stopping:
                claimed.append(sub_key)
        publication = Publication(topic.name, gd_rows, list(topic.sub_keys), topic.max_depth_gd, user_ids,
                                  record_last, claimed)
        return WriteBatch(now=now, claimer=self.claimer, lease_until=now + self.lease_seconds,
                          publications=[publication])

    def _store_publication(self, batch: WriteBatch) -> WriteResult:
        """ Blocking: commits a publication (with whatever other threads commit at that moment). """
        try:
            return self.store.submit(batch)
        except Exception as exc:
            logger.error("pub/sub could not store %d messages of topic %r in %s: %s: %s",
                         len(batch.publications[0].rows), batch.publications[0].topic_name, self.store.safe_url(),
                         type(exc).__name__, exc)
            raise StoreError(f"the messages were not stored: the database refused the write ({type(exc).__name__}: "
                             f"{exc}); nothing of this publication was kept, publish again") from exc

    @staticmethod
    def _preclaimed_items(batch: WriteBatch, result: WriteResult) -> list[tuple[str, Item]]:
        """ The messages of a stored publication that this worker claimed, ready for runners. """
        if result.published[0] is not None:
            raise result.published[0]
        rows = {row["msg_id"]: row for row in batch.publications[0].rows}
        return [(sub_key, Item(message_from_row(rows[msg_id], sub_key=sub_key, delivery_count=1), rows[msg_id],
                               delivery_id, batch.lease_until))
                for sub_key, msg_id, delivery_id in result.preclaimed[0]]

    def _stored(self, topic_name: str, batch: WriteBatch, items: list[tuple[str, Item]]) -> None:
        """ On the trio thread, after a publication committed: its claimed messages go to their
        runners, the other queues are asked to claim. """
        publication = batch.publications[0]
        self.stats["published_gd"] += len(publication.rows)
        for sub_key, item in items:
            runner = self.runners.get(sub_key)
            if runner is None or self.stopping:
                self._drop_item(item, "release")
            else:
                runner.push(item)
        for sub_key in publication.sub_keys:
            if sub_key not in publication.claimed_sub_keys:
                self.want_claim(sub_key)

    def _accept_ram(self, topic: TopicConfig, ram_rows: list[dict[str, Any]]) -> None:
        """ On the trio thread: non-GD messages to their runners (or to wait for a subscription). """
        self.stats["published_non_gd"] += len(ram_rows)
        self._ram_depth[topic.name] = self._ram_depth.get(topic.name, 0) + len(ram_rows)
        if topic.sub_keys:
            self._queue_in_ram(topic, ram_rows)
        else:
            self._waiting_in_topic.setdefault(topic.name, []).extend(ram_rows)

    def _published(self, topic: TopicConfig, rows: list[dict[str, Any]], is_list: bool) -> Any:
        last = rows[-1]
        self.last_published[topic.name] = {"msg_id": last["msg_id"], "pub_time": last["pub_time"],
                                           "data_prefix": last["data"][:200], "published_by": last["published_by"]}
        ids = [row["msg_id"] for row in rows]
        return ids if is_list else ids[0]

    async def publish(self, name: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                      published_by: str | None = None) -> Any:
        """ From the trio thread (an `async def` service): see `PubSubAPI.publish`. """
        self._check_running()
        topic_name, service, specs, is_list, where = self._specs(name, args, kwargs)
        topic = await self._ensure_service_topic(service, topic_name) if service else self.topics[topic_name]
        rows = self._rows(topic, service, specs, is_list, where, published_by)
        if any(row["has_gd"] for row in rows):
            batch = self._gd_batch(topic, specs, rows)
            # If the caller is cancelled while this runs, the messages may still be stored.
            result = await trio.to_thread.run_sync(self._store_publication, batch)
            self._stored(topic.name, batch, self._preclaimed_items(batch, result))
        ram_rows = [row for row in rows if not row["has_gd"]]
        if ram_rows:
            self._accept_ram(topic, ram_rows)
        return self._published(topic, rows, is_list)

    def publish_blocking(self, name: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                         published_by: str | None = None) -> Any:
        """ From a worker thread (a plain `def` service): the transaction runs in this thread, so
        a publication costs no round trip to the trio loop. """
        try:
            trio.from_thread.check_cancelled()  # the calling service's deadline
        except RuntimeError:
            pass  # not a thread trio started
        self._check_running()
        topic_name, service, specs, is_list, where = self._specs(name, args, kwargs)
        topic = self.topics.get(topic_name)
        if service and (topic is None or not topic.sub_keys):
            topic = self.server.run_trio(partial(self._ensure_service_topic, service, topic_name))
        rows = self._rows(topic, service, specs, is_list, where, published_by)
        token = self.server.trio_token
        if any(row["has_gd"] for row in rows):
            batch = self._gd_batch(topic, specs, rows)
            result = self._store_publication(batch)
            token.run_sync_soon(self._stored, topic.name, batch, self._preclaimed_items(batch, result))
        ram_rows = [row for row in rows if not row["has_gd"]]
        if ram_rows:
            trio.from_thread.run_sync(self._accept_ram, topic, ram_rows, trio_token=token)
        return self._published(topic, rows, is_list)

    def _queue_in_ram(self, topic: TopicConfig, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self._ram_pending[row["msg_id"]] = len(topic.sub_keys)
            for sub_key in topic.sub_keys:
                message = message_from_row(row, sub_key=sub_key, delivery_count=0)
                self.runners[sub_key].push(Item(message, row, None))

    # ############################################################################################
    # Delivering

    async def _deliver(self, runner: QueueRunner, item: Item) -> None:
        sub, message = runner.sub, item.message
        now = time.time()
        if message.expiration_time <= now:
            logger.info("pub/sub: message %s of topic %r expired before delivery to %s; it is not delivered",
                        message.msg_id, message.topic_name, sub.sub_key)
            self.stats["expired"] += 1
            self._count(sub, "expired")
            self._drop_item(item, "expired")
            return
        if item.delivery_id is not None:
            if max(item.claimed_until - LEASE_MARGIN, self._lease_ok_until) <= now:
                # Our claim may have ended (the database was unreachable to renew it): another
                # server may deliver it now, so this one must not.
                self._skip_lapsed_claim(item)
                return
            if message.delivery_count > sub.policy.attempts:
                self._dead(runner, item, f"delivery was started {message.delivery_count - 1} times and never "
                                         f"finished (the server stopped during each attempt?)")
                return
        else:
            message = item.message = message.replace(delivery_count=message.delivery_count + 1)
        cid = new_cid()
        try:
            await self.targets[sub.endpoint_type](self.server, sub, message, cid)
        except Exception as exc:
            self._failed(runner, item, exc, cid)
        else:
            self.stats["delivered"] += 1
            self._count(sub, "succeeded")
            self._drop_item(item, "delivered")

    def _failed(self, runner: QueueRunner, item: Item, exc: Exception, cid: str) -> None:
        """ The core's failure policy decides: another attempt after its back-off, or the
        dead-letter queue. The retry waits in the database (GD) or in the runner (non-GD), not
        in this task, so the queue's other messages go on meanwhile. """
        sub, message = runner.sub, item.message
        self.stats["failed_attempts"] += 1
        self._count(sub, "failed")
        error = _describe(exc, sub.delivery_timeout)
        attempt = message.delivery_count
        wait = sub.policy.after_failure(attempt)
        if wait is None:
            self._dead(runner, item, error, cid)
            return
        self.stats["retried"] += 1
        self._count(sub, "retried")
        logger.warning("cid=%s pub/sub: delivery of message %s (topic %r) to %s failed, attempt %d of %d: %s; next "
                       "attempt in %.1f s", cid, message.msg_id, message.topic_name, _target_name(sub, message),
                       attempt, sub.policy.attempts, error, wait, exc_info=not isinstance(exc, DeliveryError))
        now = time.time()
        if item.delivery_id is not None:
            self._settlements.append(Settlement(item.delivery_id, message.msg_id, "retry", next_attempt_at=now + wait,
                                                error=error))
            self._due[sub.sub_key] = min(self._due.get(sub.sub_key, float("inf")), now + wait)
            self._work.set()
        else:
            item.due = now + wait
            runner.push_later(item)

    def _dead(self, runner: QueueRunner, item: Item, error: str, cid: str = "") -> None:
        sub, message = runner.sub, item.message
        self.stats["dead_lettered"] += 1
        self._count(sub, "dead_lettered")
        logger.error("%spub/sub: message %s (topic %r) could not be delivered to %s in %d attempts; the last one: "
                     "%s. It is in the dead-letter queue: GET /zato/api/pubsub/dlq/%s/%s, replay it with "
                     "POST /zato/api/pubsub/dlq/replay", f"cid={cid} " if cid else "", message.msg_id,
                     message.topic_name, _target_name(sub, message), message.delivery_count, error, sub.sub_key,
                     message.msg_id)
        if item.delivery_id is not None:
            self._settlements.append(Settlement(
                item.delivery_id, message.msg_id, "dead", error=error, sub_key=sub.sub_key,
                topic_name=message.topic_name, delivery_count=message.delivery_count, message=item.row))
        else:
            self._dead_in_ram.append({"msg_id": message.msg_id, "sub_key": sub.sub_key,
                                      "topic_name": message.topic_name, "message": json.dumps(item.row),
                                      "delivery_count": message.delivery_count, "last_error": error,
                                      "dead_at": time.time()})
            self._ram_done(message)
        self._work.set()

    def _drop_item(self, item: Item, outcome: str) -> None:
        """ Done with an item: delivered, expired or released (GD: recorded in the database). """
        if item.delivery_id is not None:
            self._settlements.append(Settlement(item.delivery_id, item.message.msg_id, outcome))
            self._work.set()
        elif outcome != "release":
            self._ram_done(item.message)

    def _skip_lapsed_claim(self, item: Item) -> None:
        logger.warning("pub/sub: the claim of message %s for %s ended before its delivery started; it is left to "
                       "whichever server claims it next", item.message.msg_id, item.message.sub_key)

    def _ram_done(self, message: PubSubMessage) -> None:
        left = self._ram_pending.get(message.msg_id, 1) - 1
        if left > 0:
            self._ram_pending[message.msg_id] = left
            return
        self._ram_pending.pop(message.msg_id, None)
        depth = self._ram_depth.get(message.topic_name, 0) - 1
        if depth > 0:
            self._ram_depth[message.topic_name] = depth
        else:
            self._ram_depth.pop(message.topic_name, None)

    # ############################################################################################

    async def clear(self, sub_key: str) -> int:
        """ `PubSubQueues.clear` (zato.server.pubsub_queues): every message waiting in one queue
        deleted, in the database and in this worker's memory. """
        deleted = await trio.to_thread.run_sync(self.store.delete_from_queue, sub_key, None, limiter=self._db_limiter)
        runner = self.runners.get(sub_key)
        if runner is not None:
            for item in runner.take_unstarted():
                if item.delivery_id is None:  # a non-GD message lives only in memory
                    self._ram_done(item.message)
                    deleted += 1
                else:  # its row is gone already: the claim is let go
                    self._drop_item(item, "release")
        return deleted

    def api_for(self, service: Any) -> "PubSubAPI":
        return PubSubAPI(self, service)

    def ram_depth(self, topic_name: str) -> int:
        return self._ram_depth.get(topic_name, 0)

    def _count(self, sub: SubscriptionConfig, outcome: str) -> None:
        """ One delivery outcome of a queue: in its counts (the admin API) and in the metrics. """
        counts = self.counts.get(sub.sub_key)
        if counts is None:
            counts = self.counts[sub.sub_key] = dict.fromkeys(COUNTS, 0)
        counts[outcome] += 1
        _metrics(self.server).count(sub.topic_name, sub.name, outcome)

    def counts_of(self, sub_key: str) -> dict[str, int]:
        """ A queue's delivery counts in this worker since it started (`COUNTS`). """
        return dict(self.counts.get(sub_key) or dict.fromkeys(COUNTS, 0))

    def statistics(self) -> dict[str, Any]:
        return {**self.stats, "queues": len(self.runners), "held": sum(r.gd_held for r in self.runners.values()),
                "non_gd_waiting": sum(self._ram_depth.values())}


class _PubSubMetrics:
    """ `zato_pubsub_deliveries_total{topic, subscription, outcome}` (outcome: succeeded, failed,
    retried, dead_lettered, expired), the outcomes named as `zato_listener_items_total` names them. """

    def __init__(self, metrics: Any) -> None:
        from prometheus_client import Counter
        self.deliveries = Counter("zato_pubsub_deliveries", "Deliveries of pub/sub messages to subscribers by outcome",
                                  ("topic", "subscription", "outcome"), registry=metrics.registry)

    def count(self, topic: str, subscription: str, outcome: str) -> None:
        self.deliveries.labels(topic, subscription, outcome).inc()


class _NoMetrics:
    def count(self, topic: str, subscription: str, outcome: str) -> None:
        pass


_NO_METRICS = _NoMetrics()


def _metrics(server: Any) -> _PubSubMetrics | _NoMetrics:
    """ The pub/sub metrics of this process's Prometheus registry, or a no-op while metrics are off. """
    return feature_metrics(server, _PubSubMetrics, _NO_METRICS)


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, trio.TooSlowError):
        return f"TooSlowError: the delivery did not finish within {timeout} s (delivery_timeout)"
    return f"{type(exc).__name__}: {exc}"


def _target_name(sub: SubscriptionConfig, message: PubSubMessage) -> str:
    target = sub.service_name or (message.zato_ctx or {}).get("target_service_name")
    return f"service {target!r} ({sub.sub_key})" if target else sub.sub_key
