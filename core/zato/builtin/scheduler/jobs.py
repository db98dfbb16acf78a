""" The scheduler's jobs: their types and what a run's history records (`JOB_TYPE`, `MISFIRE`,
`KIND`, `OUTCOME`), the clocks, cron and interval arithmetic, the checks beyond the schema
(`check_job`), the object type, and `Job`, one definition checked and parsed. Pure functions and
values: nothing here touches the database or the server.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Callable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import trio

from zato.objects import is_env_reference
from zato.registry import Field, ObjectType, ZatoSpelling

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
        elif interval_problem(data):
            bad("seconds", interval_problem(data))
    if job_type == JOB_TYPE.CRON_STYLE and not _present(data.get("cron_definition")):
        bad("cron_definition", "a cron_style job needs cron_definition, e.g. '0 9 * * mon-fri'")
    return errors


def interval_problem(data: Mapping[str, Any]) -> str | None:
    """ Why an interval cannot be used (longer than Python's dates reach), or None. """
    try:
        interval = timedelta(**{name: int(data.get(name) or 0) for name in INTERVAL_UNITS if _present(data.get(name))
                                and isinstance(data.get(name), (int, float))})
    except (OverflowError, ValueError):
        return "the interval is too long: weeks, days, hours, minutes and seconds together must stay under 999,999,999 days"
    if interval > timedelta(days=MAX_INTERVAL_DAYS):
        return f"the interval is too long: at most {MAX_INTERVAL_DAYS:,} days (about 10,000 years)"
    return None


MAX_INTERVAL_DAYS = 3_650_000

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
), "Scheduler jobs: services run in the background, once, every interval or on a cron definition", check_job,
    zato=ZatoSpelling("scheduler", fields={"service_name": "service"},
                      ignored=("id", "cluster_id", "service_id", "definition_text", "job_type_friendly")))


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
