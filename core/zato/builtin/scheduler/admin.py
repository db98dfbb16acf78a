""" The scheduler's admin API: the jobs with their next due time and last run, a job's history,
and execute now, with their OpenAPI descriptions. """

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import trio

from zato.objects import ObjectEnvError, runtime_view

from .jobs import (
    DEFAULT_HISTORY_LIMIT, KIND, MAX_HISTORY_LIMIT, OBJECT_TYPE, OUTCOME, SCHEDULER_TYPE, WAKE, InvalidJob, Job, _iso,
    make_clock,
)
from .runtime import _new_cid, scheduler_of
from .store import store_of

logger = logging.getLogger("zato.scheduler")

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
