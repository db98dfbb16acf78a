""" The `scheduler` plugin: one-time, interval-based and cron-style jobs that run services in the
background, never twice for the same due time and never under an old name or schedule.

Jobs are configuration objects of type `scheduler` (the enmasse key), managed like every object
through the admin API and enmasse. What the scheduler itself keeps lives in three tables of the
configuration database (the `scheduler` migration branch, core/zato/builtin/migrations/scheduler,
defined below with SQLAlchemy Core too):

* `zato_scheduler_lease` - one row: which process schedules (`holder`), until when (`expires`),
  and an `epoch` that grows with every takeover. Every worker of every server process sharing
  the database competes for it; the holder renews it every `lease_seconds / 3`; when it dies,
  another one takes over once it expired.
* `zato_scheduler_state` - per job (by its object id, never by name): the next due time, the
  last one claimed, how many runs were made, and a key of the schedule they were computed from.
* `zato_scheduler_run` - one row per claimed firing, unique per (job id, due time), with its
  cid, start, duration and outcome: the job's history, and the guarantee.

Why a firing never runs twice: a firing is claimed in one transaction that (1) updates the lease
row where holder and epoch are still ours (the fence: a server that lost the lease, even one
whose clock is wrong, claims nothing, and in PostgreSQL the row lock orders claims with a
takeover), (2) checks that the job was not edited, deactivated or deleted since it was read (its
version; else the jobs are read again first: an edit, rename or deactivation takes effect before
the next firing, also when it was made through another server process), (3) inserts the run row
(unique per job and due time) and (4) moves the job's next due time on. Only then is the service started, in the
server's background nursery, each run in its own cancel scope. A claimed run whose server dies
is marked `lost` by the next holder: runs are at most once.

Time: the scheduler waits with `trio.sleep_until` (trio's clock, so `MockClock` drives tests) and
computes due times with a wall clock (`make_clock()`, which tests replace with `TrioClock`).
Cron definitions (croniter) are evaluated in the job's IANA time zone, across daylight-saving
changes (see `cron_next`).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import os
import socket
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache, partial
from typing import Any, Awaitable, Callable, Iterator, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
import trio
from sqlalchemy import (
    Column, DateTime, Float, Index, Integer, MetaData, String, Table, Text, UniqueConstraint, bindparam,
    delete, func, insert, select, update,
)
from sqlalchemy.engine import Connection, Engine

from zato import hookimpl
from zato.config import Bunch
from zato.objects import ObjectEnvError, is_env_reference, runtime_view
from zato.odb import InsertIgnoringConflicts, in_chunks, objects_table
from zato.registry import Field, ObjectType

logger = logging.getLogger("zato.scheduler")

PLUGIN = "scheduler"
OBJECT_TYPE = "scheduler"
CHANNEL = "scheduler"  # self.request.channel of the services jobs start
WAKE = "scheduler.wake"  # notification: a run was requested (execute now)
LEASE_NAME = "scheduler"
UTC = timezone.utc
API = "/zato/api/scheduler"
DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT = 100, 10_000  # runs a history call returns


class JOB_TYPE:
    ONE_TIME = "one_time"
    INTERVAL_BASED = "interval_based"
    CRON_STYLE = "cron_style"


JOB_TYPES = (JOB_TYPE.ONE_TIME, JOB_TYPE.INTERVAL_BASED, JOB_TYPE.CRON_STYLE)


class MISFIRE:
    RUN_ONCE = "run_once"
    SKIP = "skip"


MISFIRE_POLICIES = (MISFIRE.RUN_ONCE, MISFIRE.SKIP)


class KIND:
    """ Why a run happened (history's `kind`, `self.request.scheduler_job.kind`). """
    SCHEDULED = "scheduled"
    MISFIRE = "misfire"  # a run made for due times missed while no server was scheduling
    MANUAL = "manual"  # execute now


class OUTCOME:
    PENDING = "pending"  # execute now was asked for; the scheduling server has not started it yet
    RUNNING = "running"
    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    LOST = "lost"


INTERVAL_UNITS = ("weeks", "days", "hours", "minutes", "seconds")
DEFAULTS = {"enabled": True, "lease_seconds": 10.0, "poll_seconds": 1.0, "history_size": 25}
MAX_SLEEP = 30.0  # seconds; the wall clock is looked at again at least this often
PRUNE_EVERY = 60.0  # seconds between two trims of the history
CRON_SCAN_LIMIT = 100_000  # due times counted at most when many were missed

# ################################################################################################
# The tables (the same as the scheduler branch's migrations; a test compares them)

metadata = MetaData()

lease_table = Table(
    "zato_scheduler_lease", metadata,
    Column("name", String(200), primary_key=True),
    Column("holder", String(400), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("acquired", DateTime(timezone=True), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=False),
)

state_table = Table(
    "zato_scheduler_state", metadata,
    Column("job_id", Integer, primary_key=True, autoincrement=False),
    Column("job_created", DateTime(timezone=True), nullable=True),
    Column("schedule_key", String(64), nullable=False),
    Column("anchor", DateTime(timezone=True), nullable=True),
    Column("next_due", DateTime(timezone=True), nullable=True),
    Column("last_due", DateTime(timezone=True), nullable=True),
    Column("runs", Integer, nullable=False, server_default="0"),
    Column("updated", DateTime(timezone=True), nullable=False),
)

run_table = Table(
    "zato_scheduler_run", metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, nullable=False),
    Column("job_name", String(400), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("due_time", DateTime(timezone=True), nullable=True),
    Column("missed", Integer, nullable=False, server_default="0"),
    Column("cid", String(64), nullable=False),
    Column("holder", String(400), nullable=True),
    Column("requested", DateTime(timezone=True), nullable=False),
    Column("started", DateTime(timezone=True), nullable=True),
    Column("finished", DateTime(timezone=True), nullable=True),
    Column("duration_ms", Float, nullable=True),
    Column("outcome", String(20), nullable=False),
    Column("error", Text, nullable=True),
    UniqueConstraint("job_id", "due_time", name="uq_zato_scheduler_run_job_due"),
    Index("ix_zato_scheduler_run_job", "job_id", "id"),
    Index("ix_zato_scheduler_run_outcome", "outcome"),
)


# ################################################################################################
# Time


class SystemClock:
    """ The wall clock, in UTC. """

    def now(self) -> datetime:
        return datetime.now(UTC)


class TrioClock:
    """ Wall time that follows trio's clock: `epoch + trio.current_time()`. Under
    `trio.testing.MockClock` the scheduler's waits and its due-time arithmetic then agree exactly. """

    def __init__(self, epoch: datetime) -> None:
        self.epoch = epoch.astimezone(UTC)

    def now(self) -> datetime:
        return self.epoch + timedelta(seconds=trio.current_time())


def make_clock() -> Any:
    """ The wall clock the scheduler computes due times with (tests return a `TrioClock`). """
    return SystemClock()


async def run_blocking(fn: Callable[[], Any], limiter: trio.CapacityLimiter | None = None) -> Any:
    """ How the scheduler calls the database: in a worker thread (tests under `MockClock` may call
    it inline instead, so that virtual time does not jump while a thread works). """
    return await trio.to_thread.run_sync(fn, limiter=limiter)


def _utc(value: datetime | None) -> datetime | None:
    """ A datetime read from the database as aware UTC (SQLite gives it back naive). """
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return _utc(value).isoformat() if value is not None else None


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """ An IANA time zone; ValueError with an explanation if there is none of that name. """
    try:
        return ZoneInfo(str(name).strip())
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"{name!r} is not an IANA time zone name; use one such as UTC, Europe/Warsaw or "
                         f"America/New_York") from None


def parse_start_date(value: Any, tz: ZoneInfo) -> datetime:
    """ A start date as aware UTC: ISO 8601, read in `tz` when it names no offset. """
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 date and time; use e.g. 2026-05-01T09:00:00 (read in "
                             f"the job's time zone) or 2026-05-01T09:00:00+02:00") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(UTC)


def cron_problem(expression: str) -> str | None:
    """ Why a cron definition cannot be used, or None. """
    from croniter import croniter
    try:
        croniter(expression, datetime(2000, 1, 1)).get_next(datetime)
    except Exception as exc:
        return (f"{expression!r} is not a cron definition croniter can use ({type(exc).__name__}: {exc}); use five "
                f"fields, minute hour day-of-month month day-of-week, e.g. '0 9 * * mon-fri', or @hourly, @daily...")
    return None


@lru_cache(maxsize=4096)
def _runs_every_hour(expression: str) -> bool:
    """ True if the hour field covers every hour: such jobs follow real time across daylight-saving
    changes (every repeated hour runs, a skipped hour does not); others follow the wall clock. """
    from croniter import croniter
    hours = croniter(expression, datetime(2000, 1, 1)).expanded[1]
    return hours == ["*"] or len(set(hours)) >= 24


def _instants(naive: datetime, tz: ZoneInfo, every_hour: bool) -> tuple[datetime, ...]:
    """ The moments (UTC) a local wall-clock time of a cron definition stands for. """
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) != naive:
        # It does not exist (the clock jumped forward over it): a job at fixed hours runs when the
        # clock jumps (02:30 runs at 03:30 the new time), one that runs every hour just skips it.
        return () if every_hour else (first,)
    if first != second:  # it happens twice (the clock went back): fixed hours run the first time
        return (first, second) if every_hour else (first,)
    return (first,)


def cron_next(expression: str, tz: ZoneInfo, after: datetime) -> datetime:
    """ The first moment strictly after `after` (aware) that the cron definition names, read as
    wall-clock times in `tz`. """
    from croniter import croniter
    every_hour = _runs_every_hour(expression)
    local_after = after.astimezone(tz)
    naive_after = local_after.replace(tzinfo=None)
    unambiguous = naive_after.replace(tzinfo=tz, fold=1).utcoffset() == local_after.utcoffset() == \
        naive_after.replace(tzinfo=tz, fold=0).utcoffset()
    if unambiguous:  # the common case: no daylight-saving change between `after` and the answer
        candidate = croniter(expression, naive_after).get_next(datetime)
        instants = _instants(candidate, tz, every_hour)
        if len(instants) == 1 and candidate.replace(tzinfo=tz, fold=0).utcoffset() == \
                candidate.replace(tzinfo=tz, fold=1).utcoffset() and instants[0] > after:
            return instants[0]
    # Around a change: look from three hours of wall time earlier (no change moves a clock more than
    # two), and take the earliest moment after `after`.
    iterator = croniter(expression, naive_after - timedelta(hours=3))
    best: datetime | None = None
    best_naive: datetime | None = None
    for _ in range(CRON_SCAN_LIMIT):
        naive = iterator.get_next(datetime)
        if best_naive is not None and naive > best_naive + timedelta(hours=3):
            break
        for instant in _instants(naive, tz, every_hour):
            if instant > after and (best is None or instant < best):
                best, best_naive = instant, naive
    if best is None:
        raise ValueError(f"cron definition {expression!r} names no time after {after.isoformat()}")
    return best


# ################################################################################################
# Jobs


def _present(value: Any) -> bool:
    return value is not None and value != ""


def _given(value: Any) -> bool:
    """ Set and not a `$NAME` reference (those are checked when the job loads). """
    return _present(value) and not is_env_reference(value)


def check_job(data: Mapping[str, Any], *, partial: bool = False) -> list[dict[str, str]]:
    """ Checks beyond the schema, for the admin API, enmasse and the scheduler itself: the job type,
    the time zone, the start date, the units, the cron definition; and for a whole job (`partial`
    False), what its type needs. Returns [{"field": ..., "error": ...}]. """
    errors: list[dict[str, str]] = []

    def bad(field_name: str, error: str) -> None:
        errors.append({"field": field_name, "error": error})

    job_type = data.get("job_type")
    if _given(job_type) and job_type not in JOB_TYPES:
        bad("job_type", f"{job_type!r} is not a job type; use one of {', '.join(JOB_TYPES)}")
    tz = UTC
    if _given(data.get("timezone")):
        try:
            tz = zone(data["timezone"])
        except ValueError as exc:
            bad("timezone", str(exc))
    if _given(data.get("start_date")):
        try:
            parse_start_date(data["start_date"], tz)  # type: ignore[arg-type]
        except ValueError as exc:
            bad("start_date", str(exc))
    for name in (*INTERVAL_UNITS, "repeats"):
        value = data.get(name)
        if _given(value) and isinstance(value, (int, float)) and value < 0:
            bad(name, f"must be 0 or more, not {value}")
    if _given(data.get("cron_definition")):
        problem = cron_problem(str(data["cron_definition"]))
        if problem:
            bad("cron_definition", problem)
    policy = data.get("misfire_policy")
    if _given(policy) and policy not in MISFIRE_POLICIES:
        bad("misfire_policy", f"{policy!r} is not a misfire policy; use {MISFIRE.RUN_ONCE} (one run for the runs "
                              f"missed while no server was scheduling) or {MISFIRE.SKIP}")
    if partial or errors:
        return errors
    if job_type == JOB_TYPE.ONE_TIME and not _present(data.get("start_date")):
        bad("start_date", "a one_time job needs start_date, the moment it runs, e.g. 2026-05-01T09:00:00")
    if job_type == JOB_TYPE.INTERVAL_BASED:
        units = [data.get(name) for name in INTERVAL_UNITS]
        if not any(_present(value) and value != 0 for value in units):
            bad("seconds", "an interval_based job needs an interval: at least one of weeks, days, hours, minutes "
                           "or seconds greater than 0")
    if job_type == JOB_TYPE.CRON_STYLE and not _present(data.get("cron_definition")):
        bad("cron_definition", "a cron_style job needs cron_definition, e.g. '0 9 * * mon-fri'")
    return errors


SCHEDULER_TYPE = ObjectType(OBJECT_TYPE, (
    Field("job_type", required=True, description="one_time, interval_based or cron_style",
          example=JOB_TYPE.INTERVAL_BASED, choices=JOB_TYPES),
    Field("service", required=True, references="service", description="The service the job runs",
          example="api.scheduler.sync"),
    Field("start_date", type="datetime",
          description="ISO 8601, read in the job's time zone unless it names an offset. one_time: when it runs "
                      "(required); interval_based: the first run, then one every interval (default: one interval "
                      "after the job is first scheduled); cron_style: no run before it",
          example="2026-05-01T09:00:00"),
    Field("timezone", default="UTC", description="IANA time zone name the start date and the cron definition "
                                                 "are read in", example="Europe/Warsaw"),
    Field("extra", description="Given to the service as self.request.raw_request (and as self.request.payload, "
                               "parsed, when it is a JSON object)", example='{"source": "crm"}'),
    Field("weeks", type="int", default=0, minimum=0, description="interval_based: weeks between runs"),
    Field("days", type="int", default=0, minimum=0, description="interval_based: days between runs"),
    Field("hours", type="int", default=0, minimum=0, description="interval_based: hours between runs"),
    Field("minutes", type="int", default=0, minimum=0, description="interval_based: minutes between runs"),
    Field("seconds", type="int", default=0, minimum=0, description="interval_based: seconds between runs", example=30),
    Field("repeats", type="int", minimum=0, description="interval_based: how many runs, after which the job becomes "
                                             "inactive; empty or 0: no limit", example=168),
    Field("cron_definition", description="cron_style: minute hour day-of-month month day-of-week (croniter), "
                                         "or @hourly, @daily...", example="0 9 * * mon-fri"),
    Field("misfire_policy", default=MISFIRE.RUN_ONCE, choices=MISFIRE_POLICIES,
          description="Runs missed while no server was scheduling: run_once (one run as soon as one schedules "
                      "again) or skip", example=MISFIRE.SKIP),
    Field("allow_overlap", type="bool", default=False,
          description="Start a run even if the job's previous run has not finished (else that firing is skipped "
                      "and recorded)"),
), "Scheduler jobs: services run in the background, once, every interval or on a cron definition", check_job)


class InvalidJob(Exception):
    def __init__(self, name: str, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"field {e['field']!r}: {e['error']}" for e in errors))


@dataclass(frozen=True)
class Job:
    """ One job definition, checked and parsed. """
    id: int
    name: str
    version: int
    is_active: bool
    created: datetime | None
    job_type: str
    service: str
    timezone: str
    start: datetime | None  # UTC
    interval: timedelta | None
    cron: str | None
    repeats: int | None
    extra: Any
    misfire_policy: str
    allow_overlap: bool
    schedule_key: str

    @classmethod
    def from_object(cls, obj: Mapping[str, Any], created: datetime | None = None) -> "Job":
        """ From an object as runtimes see it (`$NAME` read); raises `InvalidJob`. """
        errors = check_job(obj)
        for name in ("job_type", "service"):
            if not _present(obj.get(name)):
                errors.append({"field": name, "error": "missing (it is required)"})
        if errors:
            raise InvalidJob(str(obj.get("name")), errors)
        tz_name = str(obj.get("timezone") or "UTC")
        tz = zone(tz_name)
        job_type = obj["job_type"]
        start = parse_start_date(obj["start_date"], tz) if _present(obj.get("start_date")) else None
        interval = None
        if job_type == JOB_TYPE.INTERVAL_BASED:
            interval = timedelta(**{name: int(obj.get(name) or 0) for name in INTERVAL_UNITS})
        cron = str(obj["cron_definition"]).strip() if job_type == JOB_TYPE.CRON_STYLE else None
        repeats = int(obj.get("repeats") or 0) or None if job_type == JOB_TYPE.INTERVAL_BASED else None
        key_source = [job_type, _iso(start), tz_name, interval.total_seconds() if interval else None, cron]
        meta = obj.get("_meta") or {}
        return cls(
            id=int(meta["id"]), name=obj["name"], version=int(meta.get("version") or 1),
            is_active=bool(obj.get("is_active", True)), created=created, job_type=job_type,
            service=str(obj["service"]), timezone=tz_name, start=start, interval=interval, cron=cron, repeats=repeats,
            extra=obj.get("extra"), misfire_policy=obj.get("misfire_policy") or MISFIRE.RUN_ONCE,
            allow_overlap=bool(obj.get("allow_overlap")),
            schedule_key=hashlib.sha256(json.dumps(key_source).encode()).hexdigest()[:32])

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.timezone)

    def first_after(self, moment: datetime, anchor: datetime | None = None) -> datetime | None:
        """ The first due time strictly after `moment`, or None if there is none. `anchor` is the
        first due time of an interval job with no start date. """
        if self.job_type == JOB_TYPE.ONE_TIME:
            return self.start if self.start is not None and self.start > moment else None
        if self.job_type == JOB_TYPE.INTERVAL_BASED:
            first = self.start or anchor
            assert first is not None and self.interval
            if moment < first:
                return first
            return first + ((moment - first) // self.interval + 1) * self.interval
        if self.start is not None and moment < self.start:
            moment = self.start - timedelta(microseconds=1)
        return cron_next(self.cron or "", self.tz, moment)

    def due_through(self, due: datetime, now: datetime, anchor: datetime | None, remaining: int | None
                    ) -> tuple[int, datetime]:
        """ From the due time `due` (<= now): how many due times there are up to `now` (at most
        `remaining`), and the latest of them. """
        if self.job_type == JOB_TYPE.INTERVAL_BASED and self.interval:
            count = (now - due) // self.interval + 1
            if remaining is not None:
                count = min(count, remaining)
            return count, due + (count - 1) * self.interval
        limit = remaining if remaining is not None else CRON_SCAN_LIMIT
        count, latest = 1, due
        while count < limit:
            following = self.first_after(latest, anchor)
            if following is None or following > now:
                break
            latest, count = following, count + 1
        return count, latest

    def describe(self) -> str:
        """ The schedule in words, for `zato scheduler list`. """
        if self.job_type == JOB_TYPE.ONE_TIME:
            return f"once at {_iso(self.start)}"
        if self.job_type == JOB_TYPE.INTERVAL_BASED:
            text = f"every {_describe_interval(self.interval)}"
            return text + (f", {self.repeats} times" if self.repeats else "")
        return f"cron {self.cron!r} in {self.timezone}"


def _describe_interval(interval: timedelta | None) -> str:
    seconds = int(interval.total_seconds()) if interval else 0
    parts = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
    return " ".join(parts) or "0 s"


def _payload_of(extra: Any) -> Any:
    """ `self.request.payload` of a job's service: `extra` parsed when it is a JSON object. """
    if isinstance(extra, str) and extra.lstrip().startswith("{"):
        try:
            parsed = json.loads(extra)
        except ValueError:
            return extra
        return parsed if isinstance(parsed, dict) else extra
    return extra


# ################################################################################################
# The database


class LeaseLost(Exception):
    """ This process no longer holds the scheduler's lease: another one schedules now. """


Fingerprint = tuple[int, int, int, str | None]


class SchedulerStore:
    """ The scheduler's reads and writes (all blocking: called from worker threads). """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Statements made once: a claim runs for every firing, and building them costs more than
        # running them.
        self._insert_runs = InsertIgnoringConflicts(engine.dialect, run_table, (run_table.c.job_id, run_table.c.id))
        self._insert_lease = InsertIgnoringConflicts(engine.dialect, lease_table, (lease_table.c.epoch,))
        self._fence = update(lease_table).where(
            lease_table.c.name == LEASE_NAME, lease_table.c.holder == bindparam("f_holder"),
            lease_table.c.epoch == bindparam("f_epoch")).values(holder=lease_table.c.holder)
        self._versions = select(objects_table.c.id, objects_table.c.version).where(
            objects_table.c.id.in_(bindparam("f_ids", expanding=True)), objects_table.c.type == OBJECT_TYPE)
        self._fingerprint = select(
            func.count(), func.coalesce(func.sum(objects_table.c.id), 0),
            func.coalesce(func.sum(objects_table.c.version), 0), func.max(objects_table.c.updated)).where(
            objects_table.c.type == OBJECT_TYPE)
        self._move_states = update(state_table).where(state_table.c.job_id == bindparam("k_job_id")).values(
            next_due=bindparam("k_next_due"), last_due=bindparam("k_last_due"), runs=bindparam("k_runs"),
            updated=bindparam("k_updated"))
        self._finish = update(run_table).where(run_table.c.id == bindparam("k_id")).values(
            finished=bindparam("k_finished"), duration_ms=bindparam("k_duration_ms"), outcome=bindparam("k_outcome"),
            error=bindparam("k_error"))

    # ############################################################################################
    # Jobs

    def read_jobs(self) -> tuple[Fingerprint, list[dict[str, Any]]]:
        """ Every job (active or not) as stored, with its row's `created`, and the fingerprint of
        the jobs read just before them (a change in between is seen as a change by `poll`). """
        with self.engine.connect() as conn:
            fingerprint = self._current_fingerprint(conn)
            rows = conn.execute(select(objects_table).where(objects_table.c.type == OBJECT_TYPE)
                                .order_by(objects_table.c.id)).mappings().all()
        jobs = []
        for row in rows:
            obj = dict(row["data"])
            obj.update(name=row["name"], is_active=row["is_active"])
            obj["_meta"] = {"id": row["id"], "version": row["version"], "created": _utc(row["created"])}
            jobs.append(obj)
        return fingerprint, jobs

    def _current_fingerprint(self, conn: Connection) -> Fingerprint:
        """ What changes whenever any job is created, edited, (de)activated or deleted (computed by
        the database: cheap with many jobs). """
        count, ids, versions, updated = conn.execute(self._fingerprint).one()
        if isinstance(updated, str):
            updated = datetime.fromisoformat(updated)
        return int(count), int(ids), int(versions), _iso(updated)

    def _changed_jobs(self, conn: Connection, versions: Mapping[int, int]) -> set[int]:
        """ Of the jobs (id -> version they were read at), those since edited, deactivated or deleted. """
        ids = list(versions)
        current: dict[int, int] = {}
        for chunk in in_chunks(ids):
            current.update(conn.execute(self._versions, {"f_ids": chunk}).all())
        return {job_id for job_id, version in versions.items() if current.get(job_id) != version}

    def read_states(self) -> dict[int, dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(state_table)).mappings().all()
        return {row["job_id"]: {key: (_utc(value) if isinstance(value, datetime) else value)
                                for key, value in row.items()} for row in rows}

    # ############################################################################################
    # The lease

    def acquire(self, holder: str, now: datetime, seconds: float) -> int | None:
        """ Takes the lease if it is free or expired (or ours); returns its new epoch, else None.
        Runs left `running` by an earlier holder are marked lost. """
        expires = now + timedelta(seconds=seconds)
        with self.engine.begin() as conn:
            taken = conn.execute(update(lease_table).where(
                lease_table.c.name == LEASE_NAME,
                (lease_table.c.expires < now) | (lease_table.c.holder == holder)).values(
                holder=holder, epoch=lease_table.c.epoch + 1, acquired=now, expires=expires)).rowcount
            if not taken:
                created = self._insert_lease(conn, [{
                    "name": LEASE_NAME, "holder": holder, "epoch": 1, "acquired": now, "expires": expires}])
                if not created:
                    return None
            epoch = conn.execute(select(lease_table.c.epoch).where(lease_table.c.name == LEASE_NAME)).scalar_one()
            conn.execute(update(run_table).where(run_table.c.outcome == OUTCOME.RUNNING,
                                                 run_table.c.holder != holder).values(
                outcome=OUTCOME.LOST, finished=now,
                error="lost: the server running it stopped or lost the scheduler's lease before it finished"))
        return epoch

    def renew(self, holder: str, epoch: int, now: datetime, seconds: float) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(update(lease_table).where(
                lease_table.c.name == LEASE_NAME, lease_table.c.holder == holder, lease_table.c.epoch == epoch).values(
                expires=now + timedelta(seconds=seconds))).rowcount == 1

    def release(self, holder: str, epoch: int, now: datetime) -> None:
        """ Lets another process take over at once (a clean stop). """
        with self.engine.begin() as conn:
            conn.execute(update(lease_table).where(
                lease_table.c.name == LEASE_NAME, lease_table.c.holder == holder, lease_table.c.epoch == epoch).values(
                expires=now - timedelta(seconds=1)))

    def lease(self) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(lease_table).where(lease_table.c.name == LEASE_NAME)).mappings().first()
        return None if row is None else {"holder": row["holder"], "epoch": row["epoch"],
                                         "acquired": _iso(row["acquired"]), "expires": _iso(row["expires"])}

    @contextmanager
    def _fenced(self, holder: str, epoch: int) -> Iterator[Connection]:
        """ A transaction that commits only while `holder` still holds the lease at `epoch`. Its
        first statement writes the lease row: SQLite takes its write lock, PostgreSQL locks the row,
        so a takeover is ordered before or after the whole transaction. """
        with self.engine.begin() as conn:
            if conn.execute(self._fence, {"f_holder": holder, "f_epoch": epoch}).rowcount != 1:
                raise LeaseLost("another server took over the scheduler's lease")
            yield conn

    # ############################################################################################
    # Scheduling

    def save_states(self, holder: str, epoch: int, versions: Mapping[int, int], states: list[dict[str, Any]],
                    finished: list[int], forget_history_of: list[int], now: datetime) -> bool:
        """ Writes new schedule states (jobs new or changed), deactivates `finished` jobs and
        forgets the state and history of deleted jobs. False, writing nothing, if any of those
        jobs changed since it was read at its version in `versions`. """
        with self._fenced(holder, epoch) as conn:
            if self._changed_jobs(conn, versions):
                return False
            if states:
                conn.execute(delete(state_table).where(state_table.c.job_id.in_([s["job_id"] for s in states])))
                conn.execute(insert(state_table), [{**s, "updated": now} for s in states])
            if forget_history_of:
                conn.execute(delete(run_table).where(run_table.c.job_id.in_(forget_history_of),
                                                     run_table.c.outcome != OUTCOME.RUNNING))
            self._deactivate(conn, finished, now)
            existing = select(objects_table.c.id).where(objects_table.c.type == OBJECT_TYPE)
            conn.execute(delete(state_table).where(state_table.c.job_id.not_in(existing)))
            conn.execute(delete(run_table).where(run_table.c.job_id.not_in(existing),
                                                 run_table.c.outcome != OUTCOME.RUNNING))
        return True

    @staticmethod
    def _deactivate(conn: Connection, job_ids: list[int], now: datetime) -> None:
        if job_ids:
            conn.execute(update(objects_table).where(objects_table.c.id.in_(job_ids),
                                                     objects_table.c.is_active.is_(True)).values(
                is_active=False, version=objects_table.c.version + 1, updated=now))

    def claim(self, holder: str, epoch: int, versions: Mapping[int, int], plans: list["Plan"], now: datetime
              ) -> tuple[dict[int, int], set[int]]:
        """ Claims firings: one run row per plan (unique per job and due time), the jobs' next due
        times moved on, finished jobs deactivated, all in one fenced transaction. A job edited,
        deactivated or deleted since it was read (at its version in `versions`) is not claimed.
        Returns (job id -> run id of the plans claimed, the ids of the jobs that changed). Raises
        `LeaseLost`. """
        with self._fenced(holder, epoch) as conn:
            changed = self._changed_jobs(conn, versions)
            plans = [p for p in plans if p.job_id not in changed]
            inserted = self._insert_runs(conn, [{
                "job_id": p.job_id, "job_name": p.job_name, "kind": p.kind, "due_time": p.due_time,
                "missed": p.missed, "cid": p.cid, "holder": holder, "requested": now,
                "started": now if p.outcome == OUTCOME.RUNNING else None,
                "finished": None if p.outcome == OUTCOME.RUNNING else now,
                "outcome": p.outcome, "error": p.error} for p in plans])
            claimed = {row[0]: row[1] for row in inserted}
            moved = [{"k_job_id": p.job_id, "k_next_due": p.next_due, "k_last_due": p.due_time, "k_runs": p.runs,
                      "k_updated": now} for p in plans if p.job_id in claimed]
            if moved:
                conn.execute(self._move_states, moved)
            self._deactivate(conn, [p.job_id for p in plans if p.finished and p.job_id in claimed], now)
        return claimed, changed

    def finish(self, records: list[dict[str, Any]]) -> None:
        """ Records how runs ended (one transaction for many). """
        if not records:
            return
        with self.engine.begin() as conn:
            conn.execute(self._finish, [{f"k_{key}": value for key, value in record.items()} for record in records])

    def pending_runs(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(
                select(run_table.c.id, run_table.c.job_id, run_table.c.job_name, run_table.c.cid)
                .where(run_table.c.outcome == OUTCOME.PENDING).order_by(run_table.c.id).limit(limit)).mappings()]

    def start_pending(self, holder: str, epoch: int, decisions: list[dict[str, Any]], now: datetime) -> None:
        """ Starts (or skips, with the reason) runs asked for with execute now. """
        if not decisions:
            return
        with self._fenced(holder, epoch) as conn:
            conn.execute(update(run_table).where(run_table.c.id == bindparam("k_id"),
                                                 run_table.c.outcome == OUTCOME.PENDING).values(
                outcome=bindparam("k_outcome"), error=bindparam("k_error"), holder=holder,
                started=bindparam("k_started"), finished=bindparam("k_finished")),
                [{"k_id": d["id"], "k_outcome": d["outcome"], "k_error": d.get("error"),
                  "k_started": now if d["outcome"] == OUTCOME.RUNNING else None,
                  "k_finished": None if d["outcome"] == OUTCOME.RUNNING else now} for d in decisions])

    def poll(self) -> tuple[Fingerprint, bool]:
        """ What the scheduling process looks at every `poll_seconds`: the jobs' fingerprint and
        whether a run was asked for. """
        with self.engine.connect() as conn:
            fingerprint = self._current_fingerprint(conn)
            pending = conn.execute(select(run_table.c.id).where(run_table.c.outcome == OUTCOME.PENDING)
                                   .limit(1)).first() is not None
        return fingerprint, pending

    def prune(self, keep: int) -> int:
        """ Keeps the newest `keep` finished runs of each job. """
        rank = func.row_number().over(partition_by=run_table.c.job_id, order_by=run_table.c.id.desc()).label("rank")
        ranked = select(run_table.c.id, rank).where(
            run_table.c.outcome.not_in((OUTCOME.PENDING, OUTCOME.RUNNING))).subquery()
        with self.engine.begin() as conn:
            return conn.execute(delete(run_table).where(
                run_table.c.id.in_(select(ranked.c.id).where(ranked.c.rank > keep)))).rowcount

    # ############################################################################################
    # For the admin API

    def add_manual(self, job_id: int, job_name: str, cid: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(run_table).values(job_id=job_id, job_name=job_name, kind=KIND.MANUAL, due_time=None,
                                                  missed=0, cid=cid, requested=now, outcome=OUTCOME.PENDING))

    def history(self, job_id: int, limit: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(run_table).where(run_table.c.job_id == job_id)
                                .order_by(run_table.c.id.desc()).limit(limit)).mappings().all()
        return [run_view(row) for row in rows]

    def last_runs(self) -> dict[int, dict[str, Any]]:
        newest = select(func.max(run_table.c.id)).group_by(run_table.c.job_id)
        with self.engine.connect() as conn:
            rows = conn.execute(select(run_table).where(run_table.c.id.in_(newest))).mappings().all()
        return {row["job_id"]: run_view(row) for row in rows}


def run_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """ One run as the history API shows it. """
    return {"cid": row["cid"], "job": row["job_name"], "kind": row["kind"], "due_time": _iso(row["due_time"]),
            "missed": row["missed"], "requested": _iso(row["requested"]), "started": _iso(row["started"]),
            "finished": _iso(row["finished"]),
            "duration_ms": round(row["duration_ms"], 3) if row["duration_ms"] is not None else None,
            "outcome": row["outcome"], "error": row["error"], "server": row["holder"]}


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
    """ The scheduler of one worker process. Every worker competes for the lease; the holder
    schedules. Runs live in the server's background nursery, so they outlive a lost lease. """

    def __init__(self, server: Any, *, clock: Any = None, blocking: Callable[..., Awaitable[Any]] | None = None,
                 settings: dict[str, Any] | None = None) -> None:
        self.server = server
        self.clock = clock or make_clock()
        self.blocking = blocking or run_blocking
        self.settings = settings or _settings(server)
        self.lease_seconds = max(0.3, float(self.settings["lease_seconds"]))
        self.renew_every = self.lease_seconds / 3
        self.store = store_of(server)
        self.holder = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.db_limiter = trio.CapacityLimiter(1)
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
            await self._compete()

    async def _compete(self) -> None:
        failures = 0
        while True:
            epoch = None
            if not self.closing:
                try:
                    epoch = await self._db(self.store.acquire, self.holder, self.clock.now(), self.lease_seconds)
                    failures = 0
                except Exception as exc:
                    failures += 1
                    if failures == 1 or failures % 100 == 0:
                        logger.error("the scheduler cannot reach the configuration database (%s: %s); trying again "
                                     "every %.1f s", type(exc).__name__, exc, self.renew_every)
            if epoch is None:
                await trio.sleep(self.renew_every)
                continue
            try:
                await self._lead(epoch)
            except* LeaseLost as group:
                logger.warning("scheduler: %s; this process stops scheduling (holder %s)", group.exceptions[0],
                               self.holder)
            except* Exception as group:
                logger.error("scheduler: stopped scheduling after an error; trying again in %.1f s",
                             self.renew_every, exc_info=group)
                await trio.sleep(self.renew_every)

    async def _lead(self, epoch: int) -> None:
        self.epoch, self.leader_since = epoch, self.clock.now()
        self._dirty = self._pending = True
        logger.info("scheduler: this process schedules the jobs now (holder %s, lease epoch %d)", self.holder, epoch)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep_lease, nursery.cancel_scope)
                nursery.start_soon(self._watch_database)
                await self._schedule()
        finally:
            self.epoch = None
            self.scheduled.clear()
            self._heap.clear()
            self.fingerprint = None

    async def _keep_lease(self, leadership: trio.CancelScope) -> None:
        valid_until = trio.current_time() + self.lease_seconds
        while True:
            await trio.sleep(self.renew_every)
            try:
                renewed = await self._db(self.store.renew, self.holder, self.epoch, self.clock.now(),
                                         self.lease_seconds)
            except Exception as exc:
                logger.error("scheduler: cannot renew the lease (%s: %s)", type(exc).__name__, exc)
                if trio.current_time() < valid_until:
                    continue
                renewed = False
            if not renewed:
                logger.warning("scheduler: the lease was lost (holder %s); another server schedules now", self.holder)
                leadership.cancel()
                return
            valid_until = trio.current_time() + self.lease_seconds

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
            if self.closing:
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

    async def _fire(self, due: list[Scheduled], now: datetime) -> None:
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
        if not decisions:
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
                                             raw_request=job.extra, scheduler_job=info)
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
        if self.epoch is not None:
            try:
                await self._db(self.store.release, self.holder, self.epoch, self.clock.now())
                logger.info("scheduler: lease released (holder %s)", self.holder)
            except Exception:
                logger.exception("scheduler: could not release the lease; another server takes over when it expires")


def store_of(server: Any) -> SchedulerStore:
    store = server.plugin_state.get("scheduler.store")
    if store is None:
        store = server.plugin_state["scheduler.store"] = SchedulerStore(server.odb.engine)
    return store


def scheduler_of(server: Any) -> Scheduler | None:
    return server.plugin_state.get(PLUGIN)


# ################################################################################################
# The admin API


async def _job_object(request: Any) -> dict[str, Any]:
    from zato.odb import ObjectNotFound
    from zato.server.http import HTTPError
    name = request.path_params["name"]
    try:
        return await trio.to_thread.run_sync(request.server.odb.get_object, OBJECT_TYPE, name)
    except ObjectNotFound:
        raise HTTPError(404, f"Error 404 Not Found: no scheduler job named {name!r}") from None


async def list_jobs(request: Any) -> Any:
    """ GET /zato/api/scheduler/jobs: every job with its schedule, next due time and last run. """
    from zato.server.admin_auth import check_admin
    from zato.server.http import HTTPResponse
    await check_admin(request)
    store = store_of(request.server)

    def read() -> dict[str, Any]:
        _, objects = store.read_jobs()
        return {"objects": objects, "states": store.read_states(), "last": store.last_runs(), "lease": store.lease()}

    data = await trio.to_thread.run_sync(read)
    jobs = []
    for obj in data["objects"]:
        job_id = obj["_meta"]["id"]
        item: dict[str, Any] = {"name": obj["name"], "id": job_id, "is_active": obj["is_active"],
                                "job_type": obj.get("job_type"), "service": obj.get("service"),
                                "timezone": obj.get("timezone") or "UTC"}
        try:
            job = Job.from_object(runtime_view(SCHEDULER_TYPE, obj, None))
            item["schedule"] = job.describe()
            item["error"] = None
        except (InvalidJob, ObjectEnvError, ValueError) as exc:
            job, item["schedule"], item["error"] = None, None, str(exc)
        state = data["states"].get(job_id)
        fresh = state is not None and job is not None and state["schedule_key"] == job.schedule_key
        next_due = state["next_due"] if fresh and obj["is_active"] else None
        item["next_due"] = _iso(next_due)
        item["next_due_local"] = next_due.astimezone(job.tz).isoformat() if next_due and job else None
        item["runs"] = state["runs"] if fresh else 0
        item["repeats"] = job.repeats if job else None
        item["last_run"] = data["last"].get(job_id)
        jobs.append(item)
    return HTTPResponse.json({"jobs": jobs, "lease": data["lease"]})


async def job_history(request: Any) -> Any:
    """ GET /zato/api/scheduler/jobs/{name}/history?limit=N: the job's runs, newest first. """
    from zato.server.admin_auth import check_admin
    from zato.server.http import HTTPError, HTTPResponse
    await check_admin(request)
    obj = await _job_object(request)
    raw = request.query.get("limit") or str(DEFAULT_HISTORY_LIMIT)
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_HISTORY_LIMIT:
        raise HTTPError(400, f"Error 400 Bad Request: limit must be a whole number from 1 to {MAX_HISTORY_LIMIT}, "
                             f"not {raw[:50]!r}", extra={"errors": [{"field": "limit", "error": "out of range"}]})
    runs = await trio.to_thread.run_sync(store_of(request.server).history, obj["_meta"]["id"], limit)
    return HTTPResponse.json({"name": obj["name"], "runs": runs})


async def execute_job(request: Any) -> Any:
    """ POST /zato/api/scheduler/jobs/{name}/execute: runs the job now, whatever its type (202 and
    the run's cid; the process that schedules starts it, and its history tells the outcome). """
    from zato.server.admin_auth import check_admin
    from zato.server.http import HTTPResponse
    await check_admin(request)
    obj = await _job_object(request)
    cid = _new_cid()
    store = store_of(request.server)
    scheduler = scheduler_of(request.server)
    now = (scheduler.clock if scheduler else make_clock()).now()
    await trio.to_thread.run_sync(store.add_manual, obj["_meta"]["id"], obj["name"], cid, now)
    await request.server.notify(WAKE, {})
    lease = await trio.to_thread.run_sync(store.lease)
    scheduling = lease is not None and datetime.fromisoformat(lease["expires"]) > now
    logger.info("cid=%s scheduler job %r: run requested (execute now)", request.cid, obj["name"])
    body = {"name": obj["name"], "cid": cid, "status": OUTCOME.PENDING, "scheduling": scheduling}
    if not scheduling:
        body["note"] = ("no server is scheduling at the moment (is [scheduler] enabled?); the run starts when one "
                        "takes over")
    return HTTPResponse.json(body, 202)


# ################################################################################################
# The command line


@click.group("scheduler")
def scheduler_command() -> None:
    """ Scheduler jobs of a running server. """


def _api(base_dir: str, method: str, path: str) -> Any:
    from zato.cli.admin_client import admin_request, describe_error, server_paths
    status, _, body = admin_request(server_paths(base_dir), method, path)
    if status >= 300:
        raise click.ClickException(describe_error(status, body))
    return json.loads(body)


@scheduler_command.command("list")
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(base_dir: str, as_json: bool) -> None:
    """ Every job of the server running in BASE_DIR: schedule, next run, last outcome. """
    data = _api(base_dir, "GET", f"{API}/jobs")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    import shutil
    from rich.console import Console
    from rich.table import Table
    lease = data.get("lease") or {}
    table = Table(title=f"Scheduler jobs (scheduling: {lease.get('holder', 'nobody')})")
    table.add_column("name", no_wrap=True)
    for column in ("active", "service", "schedule", "next run", "runs", "last run"):
        table.add_column(column, overflow="fold")
    problems = []
    for job in data["jobs"]:
        last = job.get("last_run") or {}
        last_text = f"{last['outcome']} {_short_time(last.get('started') or last.get('requested'))}" if last else "-"
        if job["error"]:
            problems.append(f"{job['name']}: {job['error']}")
        schedule = job["schedule"] or "[red]invalid (below)[/]"
        runs = f"{job['runs']}/{job['repeats']}" if job.get("repeats") else str(job["runs"])
        table.add_row(job["name"], "yes" if job["is_active"] else "no", str(job["service"]), schedule,
                      _short_time(job.get("next_due_local")), runs, last_text)
    console = Console(highlight=False, width=shutil.get_terminal_size((160, 24)).columns)
    console.print(table)
    for problem in problems:
        console.print(f"[red]not scheduled[/] {problem}")


def _short_time(iso: str | None) -> str:
    """ 2026-05-01T09:00:00.123+02:00 as 2026-05-01 09:00:00+02:00. """
    if not iso:
        return "-"
    moment = datetime.fromisoformat(iso).replace(microsecond=0)
    return moment.isoformat(sep=" ")


@scheduler_command.command("execute")
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("name")
@click.option("--wait", "wait_seconds", default=0.0, show_default=True,
              help="Seconds to wait for the run's outcome (0: return once it is requested).")
def execute_command(base_dir: str, name: str, wait_seconds: float) -> None:
    """ Run the job NAME of the server running in BASE_DIR now, whatever its type. """
    import time
    from urllib.parse import quote
    path = f"{API}/jobs/{quote(name, safe='')}"
    reply = _api(base_dir, "POST", f"{path}/execute")
    click.echo(f"job {name!r}: run requested, cid {reply['cid']}")
    if reply.get("note"):
        click.echo(f"note: {reply['note']}", err=True)
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        runs = [run for run in _api(base_dir, "GET", f"{path}/history?limit=50")["runs"] if run["cid"] == reply["cid"]]
        if runs and runs[0]["outcome"] not in (OUTCOME.PENDING, OUTCOME.RUNNING):
            run = runs[0]
            click.echo(f"outcome: {run['outcome']} in {run['duration_ms']} ms" + (f": {run['error']}" if run["error"]
                                                                                  else ""))
            if run["outcome"] != OUTCOME.OK:
                raise SystemExit(1)
            return
        time.sleep(0.1)
    if wait_seconds:
        raise click.ClickException(f"no outcome within {wait_seconds} s; see `zato scheduler history {base_dir} "
                                   f"{name}`")


@scheduler_command.command("history")
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("name")
@click.option("--limit", default=20, show_default=True)
def history_command(base_dir: str, name: str, limit: int) -> None:
    """ The last runs of job NAME of the server running in BASE_DIR. """
    from urllib.parse import quote
    data = _api(base_dir, "GET", f"{API}/jobs/{quote(name, safe='')}/history?limit={limit}")
    for run in data["runs"]:
        click.echo(f"{run['started'] or run['requested']}  {run['kind']:9}  {run['outcome']:9}  "
                   f"{run['duration_ms'] if run['duration_ms'] is not None else '-':>10} ms  cid {run['cid']}"
                   + (f"  {run['error']}" if run["error"] else ""))


# ################################################################################################
# Hooks


@hookimpl
def register_server_config(register):
    from zato.registry import Setting
    register(PLUGIN, {
        "enabled": Setting(DEFAULTS["enabled"], doc="Whether this server takes part in scheduling"),
        "lease_seconds": Setting(DEFAULTS["lease_seconds"], minimum=0.3, maximum=3600,
                                 doc="Seconds the scheduling process holds its lease (renewed every third)"),
        "poll_seconds": Setting(DEFAULTS["poll_seconds"], exclusive_minimum=0, maximum=3600,
                                doc="Seconds between two looks for other servers' changes"),
        "history_size": Setting(DEFAULTS["history_size"], minimum=0, maximum=1_000_000, doc="Runs kept per job"),
    }, doc="The scheduler: whether this server takes part, the lease (seconds), how "
                                         "often other servers' changes are looked for, runs kept per job.")


@hookimpl
def register_object_types(register):
    register(SCHEDULER_TYPE)


@hookimpl
def register_tasks(register, server):
    settings = _settings(server)
    if not settings["enabled"]:
        logger.info("scheduler: [scheduler] enabled = False; this server does not schedule jobs")
        return
    scheduler = server.plugin_state[PLUGIN] = Scheduler(server, settings=settings)
    register("scheduler", scheduler.run)


@hookimpl
def config_objects_changed(server, object_types):
    scheduler = scheduler_of(server)
    if scheduler is not None and OBJECT_TYPE in object_types:
        scheduler.definitions_changed()


def _wake(server: Any, payload: Any) -> None:
    scheduler = scheduler_of(server)
    if scheduler is not None:
        scheduler.run_requested()


@hookimpl
def register_notification_handlers(register):
    register(WAKE, _wake)


@hookimpl
def register_http_routes(register):
    register(f"{API}/jobs", list_jobs, openapi=LIST_JOBS_OPENAPI)
    register(f"{API}/jobs/{{name}}/history", job_history, openapi=JOB_HISTORY_OPENAPI)
    register(f"{API}/jobs/{{name}}/execute", execute_job, methods=("POST",), openapi=EXECUTE_JOB_OPENAPI)


_TEXT_OR_NULL = {"type": ["string", "null"]}
_TIME_OR_NULL = {"type": ["string", "null"], "description": "ISO 8601, UTC"}
_RUN = {"type": "object", "required": ["cid", "job", "kind", "outcome"], "properties": {
    "cid": {"type": "string"}, "job": {"type": "string"},
    "kind": {"type": "string", "enum": [KIND.SCHEDULED, KIND.MISFIRE, KIND.MANUAL]},
    "due_time": _TIME_OR_NULL, "missed": {"type": "integer"}, "requested": _TIME_OR_NULL, "started": _TIME_OR_NULL,
    "finished": _TIME_OR_NULL, "duration_ms": {"type": ["number", "null"]},
    "outcome": {"type": "string", "enum": [OUTCOME.PENDING, OUTCOME.RUNNING, OUTCOME.OK, OUTCOME.ERROR,
                                           OUTCOME.SKIPPED, OUTCOME.CANCELLED, OUTCOME.LOST]},
    "error": _TEXT_OR_NULL, "server": _TEXT_OR_NULL}}
_JOB = {"type": "object", "required": ["name", "id", "is_active", "schedule", "error", "next_due", "runs"],
        "properties": {
    "name": {"type": "string"}, "id": {"type": "integer"}, "is_active": {"type": "boolean"},
    "job_type": _TEXT_OR_NULL, "service": _TEXT_OR_NULL, "timezone": {"type": "string"},
    "schedule": {"type": ["string", "null"], "description": "the schedule in words; null if the job is invalid"},
    "error": {"type": ["string", "null"], "description": "why the job cannot be scheduled"},
    "next_due": _TIME_OR_NULL, "next_due_local": {"type": ["string", "null"], "description": "in the job's time zone"},
    "runs": {"type": "integer"}, "repeats": {"type": ["integer", "null"]},
    "last_run": {"oneOf": [_RUN, {"type": "null"}]}}}
_LEASE = {"oneOf": [{"type": "null"}, {"type": "object", "required": ["holder", "epoch", "acquired", "expires"],
                                       "properties": {"holder": {"type": "string"}, "epoch": {"type": "integer"},
                                                      "acquired": {"type": "string"}, "expires": {"type": "string"}}}],
          "description": "which server schedules, until when; null if none ever did"}
_JOB_NAME = {"name": "name", "in": "path", "required": True, "description": "the job's name, percent-encoded",
             "schema": {"type": "string", "minLength": 1}}
_NO_JOB = {"description": "No scheduler job of that name", "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


LIST_JOBS_OPENAPI = {"get": {
    "operationId": "scheduler_list_jobs", "tags": ["scheduler"],
    "summary": "Every job with its schedule, next due time and last run",
    "responses": {"200": _json_response("The jobs and the lease", {
        "type": "object", "required": ["jobs", "lease"],
        "properties": {"jobs": {"type": "array", "items": _JOB}, "lease": _LEASE}})}}}
JOB_HISTORY_OPENAPI = {"get": {
    "operationId": "scheduler_job_history", "tags": ["scheduler"], "summary": "A job's runs, newest first",
    "parameters": [_JOB_NAME, {"name": "limit", "in": "query", "schema": {
        "type": "integer", "minimum": 1, "maximum": MAX_HISTORY_LIMIT, "default": DEFAULT_HISTORY_LIMIT}}],
    "responses": {"200": _json_response("The runs", {
        "type": "object", "required": ["name", "runs"],
        "properties": {"name": {"type": "string"}, "runs": {"type": "array", "items": _RUN}}}),
        "400": _json_response("limit is not a whole number from 1 to the maximum",
                              {"$ref": "#/components/schemas/Error"}),
        "404": _NO_JOB}}}
EXECUTE_JOB_OPENAPI = {"post": {
    "operationId": "scheduler_execute_job", "tags": ["scheduler"],
    "summary": "Run a job now, whatever its type; the server that schedules starts it, its history tells the outcome",
    "parameters": [_JOB_NAME],
    "responses": {"202": _json_response("The run is requested", {
        "type": "object", "required": ["name", "cid", "status", "scheduling"], "properties": {
            "name": {"type": "string"}, "cid": {"type": "string", "description": "the run's cid (in its history)"},
            "status": {"type": "string", "enum": [OUTCOME.PENDING]},
            "scheduling": {"type": "boolean", "description": "whether a server is scheduling now"},
            "note": {"type": "string", "description": "why the run may wait"}}}),
        "404": _NO_JOB}}}


@hookimpl
def register_cli_commands(cli):
    cli.add_command(scheduler_command)


@hookimpl
def register_migrations(register):
    """ The tables of this plugin: the lease, job state, run history. """
    from pathlib import Path
    register("scheduler", Path(__file__).resolve().parent / "migrations" / "scheduler")


@hookimpl
def shutdown(server):
    scheduler = scheduler_of(server)
    if scheduler is not None:
        return scheduler.close()
    return None
