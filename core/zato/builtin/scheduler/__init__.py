""" The `scheduler` plugin: one-time, interval-based and cron-style jobs that run services in the
background, never twice for the same due time and never under an old name or schedule.

Jobs are configuration objects of type `scheduler` (the enmasse key), managed like every object
through the admin API and enmasse. The plugin's parts:

* `jobs` - job types, misfire policies, run kinds and outcomes, the clocks, cron and interval
  arithmetic, `check_job` and `Job` (pure: no database, no server);
* `store` - its tables and `SchedulerStore`, every read and write (blocking, in worker threads);
* `runtime` - `Scheduler`, the scheduler of one worker process;
* `admin` - the admin API routes and their OpenAPI descriptions;
* `cli` - `zato scheduler list | execute | history`;
* `migrations` - the `scheduler` Alembic branch that makes its tables;
* this module - the hook implementations, and every public name re-exported.

What the scheduler keeps lives in two tables of the configuration database, beside the core's
lease (`zato.server.placement`, table `zato_lease`, lease name `scheduler`):

* the lease - which process schedules (`holder`), until when (`expires`), and an `epoch` that
  grows with every takeover. Every worker of every server process sharing the database competes
  for it; the holder renews it every `lease_seconds / 3`; when it dies, another one takes over
  once it expired. It is the core's placement lease, the one `one_process` tasks and listeners
  use too.
* `zato_scheduler_state` - per job (by its object id, never by name): the next due time, the
  last one claimed, how many runs were made, and a key of the schedule they were computed from.
* `zato_scheduler_run` - one row per claimed firing, unique per (job id, due time), with its
  cid, start, duration and outcome: the job's history, and the guarantee.

Why a firing never runs twice: a firing is claimed in one transaction that (1) updates the lease
row where holder and epoch are still ours (the fence, `placement.fenced`: a server that lost the
lease, even one whose clock is wrong, claims nothing, and in PostgreSQL the row lock orders claims
with a takeover), (2) checks that the job was not edited, deactivated or deleted since it was
read (its version; else the jobs are read again first: an edit, rename or deactivation takes
effect before the next firing, also when it was made through another server process), (3)
inserts the run row (unique per job and due time) and (4) moves the job's next due time on. Only
then is the service started, in the server's background nursery, each run in its own cancel
scope. A claimed run whose server dies is marked `lost` by the next holder: runs are at most once.

Time: the scheduler waits with `trio.sleep_until` (trio's clock, so `MockClock` drives tests) and
computes due times with a wall clock (`make_clock()` of this module, which tests replace with
one returning a `TrioClock`). Cron definitions (croniter) are evaluated in the job's IANA time
zone, across daylight-saving changes (see `cron_next`).
"""

from __future__ import annotations

import logging
from typing import Any

from zato import hookimpl

from .admin import (
    EXECUTE_JOB_OPENAPI, JOB_HISTORY_OPENAPI, LIST_JOBS_OPENAPI, execute_job, job_history, list_jobs,
)
from .cli import scheduler_command
from .jobs import (
    API, CHANNEL, DEFAULTS, INTERVAL_UNITS, JOB_TYPE, JOB_TYPES, KIND, LEASE_NAME, MISFIRE, MISFIRE_POLICIES,
    OBJECT_TYPE, OUTCOME, PLUGIN, SCHEDULER_TYPE, UTC, WAKE, InvalidJob, Job, SystemClock, TrioClock, check_job,
    cron_next, cron_problem, make_clock, parse_start_date, run_blocking, zone,
)
from .runtime import SCHEDULER, Plan, Scheduled, Scheduler, _settings, scheduler_of
from .store import STORE, LeaseLost, SchedulerStore, metadata, run_table, run_view, state_table, store_of

__all__ = [
    "API", "CHANNEL", "DEFAULTS", "INTERVAL_UNITS", "JOB_TYPE", "JOB_TYPES", "KIND", "LEASE_NAME", "MISFIRE",
    "MISFIRE_POLICIES", "OBJECT_TYPE", "OUTCOME", "PLUGIN", "SCHEDULER", "SCHEDULER_TYPE", "STORE", "UTC", "WAKE",
    "InvalidJob", "Job", "LeaseLost", "Plan", "Scheduled", "Scheduler", "SchedulerStore", "SystemClock", "TrioClock",
    "check_job", "cron_next", "cron_problem", "execute_job", "job_history", "list_jobs", "make_clock", "metadata",
    "parse_start_date", "run_blocking", "run_table", "run_view", "scheduler_command", "scheduler_of", "state_table",
    "store_of", "zone",
]

logger = logging.getLogger("zato.scheduler")


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
    scheduler = SCHEDULER.set(server, Scheduler(server, settings=settings, clock=make_clock()))
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


@hookimpl
def register_request_attributes(register):
    register("scheduler_job", "the job that started the service: name, id, job_type, due_time, kind, missed, cid")


@hookimpl
def register_cli_commands(cli):
    cli.add_command(scheduler_command)


@hookimpl
def register_migrations(register):
    """ The tables of this plugin: job state and run history (its lease is the core's). """
    from pathlib import Path
    register("scheduler", Path(__file__).resolve().parent / "migrations")


@hookimpl
def shutdown(server):
    scheduler = scheduler_of(server)
    if scheduler is not None:
        return scheduler.close()
    return None
