""" The `listeners` plugin: `GET /zato/api/listeners`, the state of every listener channel in the
worker that answers (running, backing off with its last error and next attempt, stopped,
invalid, standby) and its counts; `GET /zato/api/placements`, who holds each lease of work that
runs in one process (listener types, tasks, outgoing connection types, the scheduler). The
runtimes are the core's (zato.server.listeners, zato.server.placement); this plugin only
publishes them. See docs/channels.md.
"""

from __future__ import annotations

from zato import hookimpl
from zato.server.admin_auth import check_admin
from zato.server.http import HTTPRequest, HTTPResponse
from zato.server.listeners import COUNTS, listener_states
from zato.server.placement import all_leases, placements_of

PATH = "/zato/api/listeners"
PLACEMENTS_PATH = "/zato/api/placements"
CHANNEL = "admin.listeners"

_NULLABLE_NUMBER = {"type": ["number", "null"]}
_LISTENER = {
    "type": "object",
    "required": ["listener_type", "name", "state", "since", "last_error", "last_error_at", "next_attempt_at",
                 "restarts", "problems", *COUNTS],
    "properties": {
        "listener_type": {"type": "string", "description": "The listener (channel) type"},
        "name": {"type": "string", "description": "The definition's name (the services' `self.request.channel`)"},
        "state": {"type": "string", "enum": ["starting", "running", "backing_off", "stopped", "invalid", "standby"]},
        "since": {"type": "number", "description": "When it entered that state (Unix time)"},
        "last_error": {"type": ["string", "null"], "description": "Why its receiver last failed, kept after it recovers"},
        "last_error_at": _NULLABLE_NUMBER,
        "next_attempt_at": {**_NULLABLE_NUMBER, "description": "While backing off: when it opens its receiver again"},
        "restarts": {"type": "integer", "minimum": 0},
        "problems": {"type": "array", "items": {"type": "string"},
                     "description": "Why its definition is refused (state invalid), field by field"},
        **{count: {"type": "integer", "minimum": 0} for count in COUNTS},
    },
}
LISTENERS_OPENAPI = {"get": {
    "operationId": "listListeners", "tags": ["listeners"],
    "summary": "The state and counts of every listener channel in the worker that answers",
    "description": "Each worker runs its own listeners (a listener placed in one process runs in one worker and is "
                   "in standby in the others): `worker` says which one answered.",
    "responses": {"200": {"description": "This worker and its listeners", "content": {"application/json": {"schema": {
        "type": "object", "required": ["worker", "listeners"], "properties": {
            "worker": {"type": "object", "required": ["pid", "index"],
                       "properties": {"pid": {"type": "integer"}, "index": {"type": "integer"}}},
            "listeners": {"type": "array", "items": _LISTENER}}}}}}}}}


async def list_listeners(request: HTTPRequest) -> HTTPResponse:
    """ `GET /zato/api/listeners`. """
    request.trace.channel = CHANNEL
    await check_admin(request)
    return HTTPResponse.json(listener_states(request.server))


_LEASE = {
    "type": "object", "required": ["name", "holder", "epoch", "acquired", "expires", "held", "this_process"],
    "properties": {
        "name": {"type": "string", "description": "listener:<type>, task:<plugin>.<name>, outgoing:<type> or scheduler"},
        "holder": {"type": "string", "description": "host/pid/random of the process that holds or last held it"},
        "epoch": {"type": "integer", "description": "Grows at every take-over; fences the holder's writes"},
        "acquired": {"type": "string", "format": "date-time"},
        "expires": {"type": "string", "format": "date-time"},
        "held": {"type": "boolean", "description": "Unexpired: its holder runs the work now"},
        "this_process": {"type": "boolean", "description": "The worker that answers holds it"},
    },
}
PLACEMENTS_OPENAPI = {"get": {
    "operationId": "listPlacements", "tags": ["listeners"],
    "summary": "Who holds each lease of work that runs in exactly one process",
    "description": "Every lease in the configuration database, shared by all servers using it.",
    "responses": {"200": {"description": "This worker and every lease", "content": {"application/json": {"schema": {
        "type": "object", "required": ["worker", "leases"], "properties": {
            "worker": {"type": "object", "required": ["pid", "index"],
                       "properties": {"pid": {"type": "integer"}, "index": {"type": "integer"}}},
            "leases": {"type": "array", "items": _LEASE}}}}}}}}}


async def list_placements(request: HTTPRequest) -> HTTPResponse:
    """ `GET /zato/api/placements`. """
    import trio
    request.trace.channel = CHANNEL
    await check_admin(request)
    server = request.server
    mine = {name for name, placement in placements_of(server).items() if placement.holding}
    leases = await trio.to_thread.run_sync(all_leases, server.odb.engine)
    return HTTPResponse.json({"worker": {"pid": server.pid, "index": getattr(server.options, "worker_index", 0)},
                              "leases": [{**lease, "this_process": lease["name"] in mine} for lease in leases]})


@hookimpl
def register_http_routes(register):
    register(PATH, list_listeners, openapi=LISTENERS_OPENAPI)
    register(PLACEMENTS_PATH, list_placements, openapi=PLACEMENTS_OPENAPI)
