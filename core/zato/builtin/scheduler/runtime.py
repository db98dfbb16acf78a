""" The scheduler of one worker process (`Scheduler`): it competes for the lease, and while it holds
it reads the jobs, waits for the next due time, claims each firing in a fenced transaction and
starts the service in the server's background nursery. `Plan` is one firing to claim,
`Scheduled` one job waited for.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Awaitable, Callable

import trio

from zato.config import Bunch
from zato.objects import ObjectEnvError, runtime_view
from zato.server.placement import new_holder, placement_of
from zato.server.plugin_state import PluginState

from .jobs import (
    CHANNEL, DEFAULTS, JOB_TYPE, KIND, LEASE_NAME, MAX_SLEEP, MISFIRE, OBJECT_TYPE, OUTCOME, PLUGIN, PRUNE_EVERY, SCHEDULER_TYPE,
    InvalidJob, Job, _iso, _payload_of, make_clock, run_blocking,
)
from .store import Fingerprint, LeaseLost, store_of

logger = logging.getLogger("zato.scheduler")

SCHEDULER = PluginState["Scheduler"](PLUGIN)

# ################################################################################################
# The scheduler


@dataclass
class Plan:
    """ What one firing is to do, claimed in the database before it is done. """
    job_id: int
    job_name: str
    kind: str
    due_time: datetime
    missed: int
    cid: str
    outcome: str  # running (start it) or skipped (with the reason in error)
    error: str | None
    next_due: datetime | None
    runs: int
    finished: bool


@dataclass
class Scheduled:
    """ A job the scheduling process is waiting for. """
    job: Job
    next_due: datetime | None
    last_due: datetime | None
    runs: int
    anchor: datetime | None
    misfire_cutoff: datetime  # due times before this were missed while no server was scheduling
    generation: int = 0


def _settings(server: Any) -> dict[str, Any]:
    """ [scheduler] of server.conf (typed by the core from DEFAULTS). """
    from zato.config import as_bool
    section = server.config.get("scheduler") or {}
    settings = {}
    for key, default in DEFAULTS.items():
        value = section.get(key, default)
        settings[key] = as_bool(value) if isinstance(default, bool) else type(default)(value)
    return settings


def _new_cid() -> str:
    from zato.common.util import new_cid
    return new_cid()


class Scheduler:
    """ The scheduler of one worker process. Every worker competes for the lease (the core's
    `Placement`, lease `scheduler`); the holder schedules. Runs live in the server's background
    nursery, so they outlive a lost lease. """

    def __init__(self, server: Any, *, clock: Any = None, blocking: Callable[..., Awaitable[Any]] | None = None,
                 settings: dict[str, Any] | None = None) -> None:
        self.server = server
        self.clock = clock or make_clock()
        self.blocking = blocking or run_blocking
        self.settings = settings or _settings(server)
        self.lease_seconds = max(0.3, float(self.settings["lease_seconds"]))
        self.renew_every = self.lease_seconds / 3
        self.store = store_of(server)
        self.holder = new_holder()
        self.db_limiter = trio.CapacityLimiter(1)
        # The core's fenced lease (zato.server.placement), on the scheduler's clock and database calls
        self.placement = placement_of(server, LEASE_NAME, engine=self.store.engine, lease_seconds=self.lease_seconds,
                                      holder=self.holder, clock=self.clock, blocking=self.blocking,
                                      release_when_cancelled=False)
        self.epoch: int | None = None
        self.leader_since: datetime | None = None
        self.fingerprint: Fingerprint | None = None
        self.definitions: dict[int, Job] = {}  # every valid job, active or not, by id
        self.invalid: dict[int, str] = {}  # job id -> why it is not scheduled
        self.scheduled: dict[int, Scheduled] = {}  # active jobs, by id
        self.running: dict[int, int] = {}  # job id -> runs in progress in this process
        self.closing = False
        self._heap: list[tuple[datetime, int, int, int]] = []  # (due, sequence, job id, generation)
        self._sequence = 0
        self._dirty = True
        self._pending = True
        self._wakeup = trio.Event()
        self._finished: list[dict[str, Any]] = []
        self._finished_event = trio.Event()
        self._logged_invalid: set[tuple[int, int]] = set()
        self._last_prune = 0.0
        self.counters = {"firings": 0, "runs_started": 0, "runs_failed": 0, "skipped": 0, "claims": 0,
                         "stale_claims": 0, "syncs": 0}

    # ############################################################################################
    # Signals from the rest of the server

    def definitions_changed(self) -> None:
        """ Jobs changed (the `config_objects_changed` hook): read them again before anything else. """
        self._dirty = True
        self._wakeup.set()

    def run_requested(self) -> None:
        """ A run was asked for (execute now). """
        self._pending = True
        self._wakeup.set()

    def statistics(self) -> dict[str, Any]:
        return {**self.counters, "leader": self.epoch is not None, "jobs": len(self.scheduled),
                "running": sum(self.running.values()), "holder": self.holder}

    # ############################################################################################

    async def _db(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.blocking(partial(fn, *args), self.db_limiter)

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._record_finished_runs)
            task_status.started()
            await self.placement.run(self._lead_while_held)

    async def _lead_while_held(self, epoch: int) -> None:
        """ The placement's work: schedules while this process holds the lease at `epoch` (the
        placement cancels it when the lease is lost; `LeaseLost` from a fenced claim ends it too). """
        while True:
            try:
                await self._lead(epoch)
            except* LeaseLost:
                raise
            except* Exception as group:
                logger.error("scheduler: stopped scheduling after an error; trying again in %.1f s",
                             self.renew_every, exc_info=group)
            await trio.sleep(self.renew_every)

    async def _lead(self, epoch: int) -> None:
        self.epoch, self.leader_since = epoch, self.clock.now()
        self._dirty = self._pending = True
        logger.info("scheduler: this process schedules the jobs now (holder %s, lease epoch %d)", self.holder, epoch)
        try:
            await self._db(self.store.mark_lost_runs, self.holder, epoch, self.clock.now())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_database)
                await self._schedule()
        finally:
            self.epoch = None
            self.scheduled.clear()
            self._heap.clear()
            self.fingerprint = None

    async def _watch_database(self) -> None:
        """ Changes made through another server process reach this one within `poll_seconds`. """
        poll = float(self.settings["poll_seconds"])
        while True:
            await trio.sleep(poll)
            try:
                fingerprint, pending = await self._db(self.store.poll)
                if fingerprint != self.fingerprint:
                    self.definitions_changed()
                if pending:
                    self.run_requested()
                if trio.current_time() - self._last_prune >= PRUNE_EVERY:
                    self._last_prune = trio.current_time()
                    await self._db(self.store.prune, int(self.settings["history_size"]))
            except Exception as exc:
                logger.error("scheduler: cannot read the configuration database (%s: %s)", type(exc).__name__, exc)

    async def _schedule(self) -> None:
        while True:
            self._wakeup = trio.Event()
            if self._stopping():
                await trio.sleep_forever()
            if self._dirty:
                self._dirty = False
                await self._sync()
                continue
            if self._pending:
                self._pending = False
                await self._start_pending_runs()
            now = self.clock.now()
            due = self._pop_due(now)
            if due:
                await self._fire(due, now)
                continue
            wait = MAX_SLEEP if not self._heap else min(MAX_SLEEP, (self._heap[0][0] - now).total_seconds())
            with trio.move_on_at(trio.current_time() + max(0.0, wait)):
                await self._wakeup.wait()

    # ############################################################################################
    # Reading jobs

    async def _sync(self) -> None:
        """ Reads every job and its state; schedules the active valid ones. New jobs, changed
        schedules and reactivated finished jobs start their schedule from now. """
        fingerprint, objects = await self._db(self.store.read_jobs)
        states = await self._db(self.store.read_states)
        now = self.clock.now()
        definitions: dict[int, Job] = {}
        invalid: dict[int, str] = {}
        for obj in objects:
            job_id, version = obj["_meta"]["id"], obj["_meta"]["version"]
            try:
                job = Job.from_object(runtime_view(SCHEDULER_TYPE, obj, None), obj["_meta"]["created"])
            except (InvalidJob, ObjectEnvError, ValueError) as exc:
                invalid[job_id] = str(exc)
                if obj["is_active"] and (job_id, version) not in self._logged_invalid:
                    self._logged_invalid.add((job_id, version))
                    logger.error("scheduler job %r is not scheduled: %s; fix it through the admin API or enmasse",
                                 obj["name"], exc)
                continue
            definitions[job_id] = job

        new_states, finished, forget = [], [], []
        scheduled: dict[int, Scheduled] = {}
        for job in definitions.values():
            state = states.get(job.id)
            if not job.is_active:
                if state is not None and state["next_due"] is not None:  # parked: reactivated, it starts anew
                    new_states.append({**{k: state[k] for k in ("job_id", "job_created", "schedule_key", "anchor",
                                                                "last_due", "runs")}, "next_due": None})
                continue
            same_job = state is not None and state["job_created"] == job.created
            if same_job and state["schedule_key"] == job.schedule_key and state["next_due"] is not None:
                entry = Scheduled(job, state["next_due"], state["last_due"], state["runs"], state["anchor"],
                                  self.leader_since or now)
                if job.repeats and entry.runs >= job.repeats:  # repeats lowered below the runs made
                    finished.append(job.id)
                    continue
                scheduled[job.id] = entry
                continue
            if state is not None and not same_job:
                forget.append(job.id)  # a new job under a reused id: the old job's history is not its own
            last_due = state["last_due"] if same_job else None
            if job.job_type == JOB_TYPE.ONE_TIME and last_due is not None and last_due == job.start:
                logger.info("scheduler job %r: this one_time job ran at %s already; change start_date to run it "
                            "again, or execute it now", job.name, _iso(job.start))
                finished.append(job.id)
                continue
            anchor = None
            if job.job_type == JOB_TYPE.INTERVAL_BASED and job.start is None:
                anchor = now + job.interval  # type: ignore[operator]
            if job.job_type == JOB_TYPE.ONE_TIME:
                next_due = job.start
            else:
                after = now - timedelta(microseconds=1)
                next_due = job.first_after(max(after, last_due) if last_due else after, anchor)
            if next_due is None:
                finished.append(job.id)
                continue
            entry = Scheduled(job, next_due, last_due, 0, anchor, now)
            new_states.append({"job_id": job.id, "job_created": job.created, "schedule_key": job.schedule_key,
                               "anchor": anchor, "next_due": next_due, "last_due": last_due, "runs": 0})
            scheduled[job.id] = entry

        versions = {job_id: definitions[job_id].version for job_id in [s["job_id"] for s in new_states] + finished}
        saved = await self._db(self.store.save_states, self.holder, self.epoch, versions, new_states, finished,
                               forget, now)
        if not saved:  # changed while we read: read again
            self._dirty = True
            return
        self.counters["syncs"] += 1
        self.fingerprint = fingerprint if not finished else None
        self.definitions, self.invalid = definitions, invalid
        self.scheduled = scheduled
        self._heap = []
        for entry in scheduled.values():
            self._push(entry)
        logger.info("scheduler: %d active job(s) scheduled%s", len(scheduled),
                    f", {len(invalid)} invalid" if invalid else "")
        if finished:
            await self._announce_changes()

    def _push(self, entry: Scheduled) -> None:
        entry.generation += 1
        self._sequence += 1
        if entry.next_due is not None:
            heapq.heappush(self._heap, (entry.next_due, self._sequence, entry.job.id, entry.generation))

    def _pop_due(self, now: datetime) -> list[Scheduled]:
        due = []
        while self._heap and self._heap[0][0] <= now:
            when, _, job_id, generation = heapq.heappop(self._heap)
            entry = self.scheduled.get(job_id)
            if entry is not None and entry.generation == generation and entry.next_due == when:
                due.append(entry)
        return due

    async def _announce_changes(self) -> None:
        """ Jobs were deactivated here (finished): every worker reloads them. """
        from zato.server.config_objects import CHANGED
        try:
            await self.server.notify(CHANGED, {"types": [OBJECT_TYPE]})
        except Exception:
            logger.exception("scheduler: could not tell the workers that jobs finished")

    # ############################################################################################
    # Firing

    def _plan(self, entry: Scheduled, now: datetime) -> Plan:
        job, due = entry.job, entry.next_due
        assert due is not None
        remaining = job.repeats - entry.runs if job.repeats else None
        count, latest = job.due_through(due, now, entry.anchor, remaining)
        runs = entry.runs + count
        next_due = None if (job.repeats and runs >= job.repeats) else job.first_after(max(now, latest), entry.anchor)
        missed = due < entry.misfire_cutoff
        outcome, error, kind, not_run = OUTCOME.RUNNING, None, KIND.MISFIRE if missed else KIND.SCHEDULED, count - 1
        if not job.allow_overlap and self.running.get(job.id):
            outcome, not_run = OUTCOME.SKIPPED, count
            error = "skipped: the job's previous run has not finished and allow_overlap is off"
        elif missed and job.misfire_policy == MISFIRE.SKIP:
            outcome, not_run = OUTCOME.SKIPPED, count
            error = (f"skipped: {count} run(s) due from {_iso(due)} to {_iso(latest)} were missed while no server was "
                     f"scheduling, and misfire_policy is skip")
        elif count > 1:
            logger.warning("scheduler job %r: %d due times from %s to %s %s; running it once", job.name, count,
                           _iso(due), _iso(latest), "were missed while no server was scheduling" if missed
                           else "passed while the scheduler was busy")
        return Plan(job.id, job.name, kind, latest, not_run, _new_cid(), outcome, error, next_due, runs,
                    next_due is None)

    def _stopping(self) -> bool:
        """ No firing is claimed once the server is stopping: its background work would be lost
        (another process, or this one at its next start, fires it from the database). """
        return self.closing or self.server.stopping

    async def _fire(self, due: list[Scheduled], now: datetime) -> None:
        if self._stopping():
            return
        plans = [self._plan(entry, now) for entry in due]
        finished_any = False
        with trio.CancelScope(shield=True):  # what is claimed is started, even if the lease is lost meanwhile
            versions = {entry.job.id: entry.job.version for entry in due}
            claimed, changed = await self._db(self.store.claim, self.holder, self.epoch, versions, plans, now)
            self.counters["claims"] += 1
            if changed:  # edited, deactivated or deleted since read: read the jobs again, then decide
                self.counters["stale_claims"] += 1
                self._dirty = True
            for plan in plans:
                entry = self.scheduled[plan.job_id]
                if plan.job_id in changed:
                    continue
                if plan.job_id not in claimed:
                    logger.warning("scheduler job %r: the firing due at %s was claimed already; not run here",
                                   plan.job_name, _iso(plan.due_time))
                    self._dirty = True
                    continue
                self.counters["firings"] += 1
                entry.next_due, entry.last_due, entry.runs = plan.next_due, plan.due_time, plan.runs
                if plan.finished:
                    del self.scheduled[plan.job_id]
                    finished_any = True
                    logger.info("scheduler job %r is done (%s) and now inactive", plan.job_name,
                                f"{plan.runs} runs" if entry.job.repeats else "no more due times")
                else:
                    self._push(entry)
                if plan.outcome == OUTCOME.RUNNING:
                    self._start(entry.job, plan.cid, claimed[plan.job_id], plan.kind, plan.due_time, plan.missed)
                else:
                    self.counters["skipped"] += 1
                    logger.warning("cid=%s scheduler job %r due at %s: %s", plan.cid, plan.job_name,
                                   _iso(plan.due_time), plan.error)
        if finished_any:
            self.fingerprint = None
            self._dirty = True
            await self._announce_changes()

    async def _start_pending_runs(self) -> None:
        """ Runs asked for with execute now (through any server process). """
        pending = await self._db(self.store.pending_runs)
        decisions = []
        for row in pending:
            job = self.definitions.get(row["job_id"])
            if job is None:
                reason = self.invalid.get(row["job_id"], "the job does not exist any more")
                decisions.append({"id": row["id"], "outcome": OUTCOME.SKIPPED, "error": f"not run: {reason}"})
            elif not job.allow_overlap and self.running.get(job.id):
                decisions.append({"id": row["id"], "outcome": OUTCOME.SKIPPED,
                                  "error": "skipped: the job's previous run has not finished and allow_overlap is off"})
            else:
                decisions.append({"id": row["id"], "outcome": OUTCOME.RUNNING, "job": job, "cid": row["cid"]})
        if not decisions or self._stopping():
            return
        with trio.CancelScope(shield=True):
            await self._db(self.store.start_pending, self.holder, self.epoch, decisions, self.clock.now())
            for decision in decisions:
                if decision["outcome"] == OUTCOME.RUNNING:
                    self._start(decision["job"], decision["cid"], decision["id"], KIND.MANUAL, None, 0)
                else:
                    logger.warning("scheduler: execute now: %s", decision["error"])

    # ############################################################################################
    # Runs

    def _start(self, job: Job, cid: str, run_id: int, kind: str, due_time: datetime | None, missed: int) -> None:
        from zato.server.service.patterns import background_calls
        self.running[job.id] = self.running.get(job.id, 0) + 1
        self.counters["runs_started"] += 1
        info = Bunch(name=job.name, id=job.id, job_type=job.job_type, due_time=due_time, kind=kind, missed=missed,
                     cid=cid)
        background_calls(self.server).start(cid, f"scheduler job {job.name!r} (service {job.service!r})",
                                            partial(self._run_job, job, cid, run_id, info))

    async def _run_job(self, job: Job, cid: str, run_id: int, info: Bunch) -> None:
        started_at = trio.current_time()
        outcome, error = OUTCOME.OK, None
        try:
            await self.server.invoke_service(job.service, _payload_of(job.extra), cid=cid, channel=CHANNEL,
                                             raw_request=job.extra, attributes={"scheduler_job": info},
                                             channel_type="scheduler")
        except Exception as exc:
            outcome, error = OUTCOME.ERROR, f"{type(exc).__name__}: {exc}"[:4000]
            self.counters["runs_failed"] += 1
            logger.error("cid=%s scheduler job %r: service %r failed: %s; the schedule goes on", cid, job.name,
                         job.service, error, exc_info=not isinstance(exc, LookupError))
        except BaseException:  # cancelled: the server is stopping (or patterns.cancel(cid))
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._db(self.store.finish, [self._record(run_id, started_at, OUTCOME.CANCELLED,
                                                                "cancelled before it finished")])
            raise
        finally:
            left = self.running.get(job.id, 1) - 1
            if left > 0:
                self.running[job.id] = left
            else:
                self.running.pop(job.id, None)
        self._finished.append(self._record(run_id, started_at, outcome, error))
        self._finished_event.set()

    def _record(self, run_id: int, started_at: float, outcome: str, error: str | None) -> dict[str, Any]:
        return {"id": run_id, "finished": self.clock.now(), "outcome": outcome, "error": error,
                "duration_ms": (trio.current_time() - started_at) * 1000}

    async def _record_finished_runs(self) -> None:
        """ Writes how runs ended, many in one transaction when many end together. """
        try:
            while True:
                await self._finished_event.wait()
                self._finished_event = trio.Event()
                await self._flush()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._flush()

    async def _flush(self) -> None:
        batch, self._finished = self._finished, []
        if not batch:
            return
        try:
            await self._db(self.store.finish, batch)
        except Exception as exc:
            logger.error("scheduler: could not record how %d run(s) ended (%s: %s); trying again", len(batch),
                         type(exc).__name__, exc)
            self._finished = batch + self._finished
            await trio.sleep(1)
            self._finished_event.set()

    async def close(self) -> None:
        """ A clean stop: no new firings, outcomes written, the lease released for another process. """
        self.closing = True
        self._wakeup.set()
        await self._flush()
        await self.placement.close()  # scheduling stops here; another process takes over at once


def scheduler_of(server: Any) -> Scheduler | None:
    return SCHEDULER.get(server)
