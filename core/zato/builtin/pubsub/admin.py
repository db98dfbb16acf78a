""" The pub/sub admin API (the `pubsub` plugin): what is in topics and queues, and the dead-letter
queue. Every call needs the admin credentials, like the rest of /zato/api. Topic names go in
paths percent-encoded (`/orders/new` is `%2Forders%2Fnew`).

    GET    /zato/api/pubsub/topics                               topics: depth, last message, queues
    GET    /zato/api/pubsub/topics/{topic}                       one topic
    GET    /zato/api/pubsub/topics/{topic}/messages              messages waiting in a topic
    GET    /zato/api/pubsub/subscriptions                        queues (one per subscription and topic),
                                                                 their failure policy and delivery counts
    GET    /zato/api/pubsub/subscriptions/{sub_key}/messages     browse a queue, in delivery order
    DELETE /zato/api/pubsub/subscriptions/{sub_key}/messages     empty a queue
    DELETE /zato/api/pubsub/subscriptions/{sub_key}/messages/{msg_id}   delete one message from a queue
    GET    /zato/api/pubsub/messages/{msg_id}                    one message and the queues it waits in
    GET    /zato/api/pubsub/dlq                                  dead letters (?sub_key=, ?topic=)
    GET    /zato/api/pubsub/dlq/{sub_key}/{msg_id}               one dead letter, its data and last error
    POST   /zato/api/pubsub/dlq/replay                           back to their queues: {"sub_key", "topic",
                                                                 "msg_ids"} (at least one) or {"all": true}
    DELETE /zato/api/pubsub/dlq/{sub_key}/{msg_id}               delete one dead letter
    DELETE /zato/api/pubsub/dlq                                  purge: ?sub_key=, ?topic= or ?all=true
    GET    /zato/api/pubsub/statistics                           counters of the worker that answers

`limit` (default 50, at most 1000) and `offset` page the lists; `data=false` leaves message data
out of them. Non-GD messages live in the RAM of the worker that got them and are only counted
(`depth_non_gd`, that worker's).
"""

from __future__ import annotations

import time
from typing import Any

import trio

from zato.builtin.pubsub import RUNTIME
from zato.builtin.pubsub.message import message_from_row
from zato.builtin.pubsub.runtime import COUNTS
from zato.server.admin_auth import check_admin
from zato.server.http import HTTPError, HTTPRequest, HTTPResponse

PREFIX = "/zato/api/pubsub"
MAX_LIMIT = 1000
MAX_OFFSET = 2**53  # what every database here takes as a row offset
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")


async def _runtime(request: HTTPRequest) -> Any:
    await check_admin(request)
    runtime = RUNTIME.get(request.server)
    if runtime is None:
        raise HTTPError(503, "Error 503 Service Unavailable: pub/sub is not running in this server")
    return runtime


def _int_param(request: HTTPRequest, name: str, default: int, maximum: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPError(400, f"Error 400 Bad Request: {name} must be a whole number, not {raw!r}") from None
    if value < 0 or (maximum is not None and value > maximum):
        raise HTTPError(400, f"Error 400 Bad Request: {name} must be from 0 to {maximum if maximum else 'any'}")
    return value


def _flag(source: Any, name: str, default: bool) -> bool:
    raw = source.get(name)
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in TRUE + FALSE:
        return raw.lower() in TRUE
    raise HTTPError(400, f"Error 400 Bad Request: {name} must be true or false, not {str(raw)[:100]!r}",
                    extra={"errors": [{"field": name, "error": "expected true or false"}]})


def _page(request: HTTPRequest) -> tuple[int, int, bool]:
    with_data = _flag(request.query, "data", True)
    return _int_param(request, "limit", 50, MAX_LIMIT), _int_param(request, "offset", 0, MAX_OFFSET), with_data


def _message(row: dict[str, Any], with_data: bool = True, **extra: Any) -> dict[str, Any]:
    out = message_from_row(row, sub_key=extra.pop("sub_key", None),
                           delivery_count=extra.pop("delivery_count", 0)).to_dict(with_data=with_data)
    out.update(extra)
    return out


def _sub_info(runtime: Any, sub: Any, depths: dict[str, dict[str, int]]) -> dict[str, Any]:
    policy = sub.policy
    backoff = policy.backoff
    return {"sub_key": sub.sub_key, "subscription": sub.name, "topic_name": sub.topic_name,
            "endpoint_name": sub.endpoint_name, "endpoint_type": sub.endpoint_type,
            "max_attempts": sub.max_attempts, **depths.get(sub.sub_key, {}),
            "failure_policy": {"attempts": policy.attempts, "timeout": policy.timeout,
                               "backoff": None if backoff is None else {
                                   "initial": backoff.initial, "maximum": backoff.maximum,
                                   "multiplier": backoff.multiplier, "jitter": backoff.jitter}},
            "counts": runtime.counts_of(sub.sub_key)}


async def _read(runtime: Any, fn: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


async def _write(runtime: Any, fn: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args, limiter=runtime._db_limiter)


async def _topic_infos(runtime: Any, names: list[str]) -> list[dict[str, Any]]:
    stats = await _read(runtime, runtime.store.topic_stats, names)
    sub_keys = [key for name in names for key in runtime.topics[name].sub_keys]
    depths = await _read(runtime, runtime.store.queue_depths, sub_keys, time.time()) if sub_keys else {}
    out = []
    for name in names:
        topic = runtime.topics[name]
        last = stats[name]["last_message"]
        mine = runtime.last_published.get(name)  # more recent than the database by up to a second
        if mine is not None and (last is None or mine["pub_time"] >= last["pub_time"]):
            last = mine
        if last is not None:
            from zato.builtin.pubsub.message import iso_utc
            last = {**last, "pub_time_iso": iso_utc(last["pub_time"])}
        out.append({"name": name, "has_gd": topic.has_gd, "max_depth_gd": topic.max_depth_gd,
                    "max_depth_non_gd": topic.max_depth_non_gd, "depth_gd": stats[name]["depth"],
                    "depth_non_gd": runtime.ram_depth(name), "last_message": last,
                    "subscriptions": [_sub_info(runtime, runtime.subs[key], depths) for key in topic.sub_keys]})
    return out


def _topic_name(request: HTTPRequest, runtime: Any) -> str:
    name = request.path_params["topic"]
    if name not in runtime.topics:
        raise HTTPError(404, f"Error 404 Not Found: no active topic named {name!r}")
    return name


def _sub_key(request: HTTPRequest, runtime: Any) -> str:
    sub_key = request.path_params["sub_key"]
    if sub_key not in runtime.subs:
        raise HTTPError(404, f"Error 404 Not Found: no subscription queue with sub_key {sub_key!r}; "
                             f"GET {PREFIX}/subscriptions lists them")
    return sub_key


# ################################################################################################
# Topics and queues


async def list_topics(request: HTTPRequest) -> HTTPResponse:
    runtime = await _runtime(request)
    return HTTPResponse.json(await _topic_infos(runtime, sorted(runtime.topics)))


async def get_topic(request: HTTPRequest) -> HTTPResponse:
    runtime = await _runtime(request)
    return HTTPResponse.json((await _topic_infos(runtime, [_topic_name(request, runtime)]))[0])


async def topic_messages(request: HTTPRequest) -> HTTPResponse:
    runtime = await _runtime(request)
    name = _topic_name(request, runtime)
    limit, offset, with_data = _page(request)
    rows = await _read(runtime, runtime.store.browse_topic, name, limit, offset)
    return HTTPResponse.json([_message(row, with_data) for row in rows])


async def list_subscriptions(request: HTTPRequest) -> HTTPResponse:
    runtime = await _runtime(request)
    keys = sorted(runtime.subs)
    depths = await _read(runtime, runtime.store.queue_depths, keys, time.time()) if keys else {}
    return HTTPResponse.json([_sub_info(runtime, runtime.subs[key], depths) for key in keys])


async def queue_messages(request: HTTPRequest) -> HTTPResponse:
    runtime = await _runtime(request)
    sub_key = _sub_key(request, runtime)
    limit, offset, with_data = _page(request)
    rows = await _read(runtime, runtime.store.browse_queue, sub_key, limit, offset)
    now = time.time()
    return HTTPResponse.json([_message(
        row, with_data, sub_key=sub_key, delivery_count=row["delivery_count"], is_claimed=row["claimed_until"] > now,
        next_attempt_at=row["next_attempt_at"] or None, last_error=row["last_error"]) for row in rows])


async def delete_queue_message(request: HTTPRequest) -> HTTPResponse:
    runtime = await _runtime(request)
    sub_key = _sub_key(request, runtime)
    msg_id = request.path_params["msg_id"]
    deleted = await _write(runtime, runtime.store.delete_from_queue, sub_key, [msg_id])
    if not deleted:
        raise HTTPError(404, f"Error 404 Not Found: message {msg_id!r} is not in queue {sub_key!r}")
    return HTTPResponse(204, b"")


async def clear_queue(request: HTTPRequest) -> HTTPResponse:
    runtime = await _runtime(request)
    sub_key = _sub_key(request, runtime)
    deleted = await _write(runtime, runtime.store.delete_from_queue, sub_key, None)
    return HTTPResponse.json({"deleted": deleted})


async def get_message(request: HTTPRequest) -> HTTPResponse:
    runtime = await _runtime(request)
    msg_id = request.path_params["msg_id"]
    row, queues = await _read(runtime, runtime.store.get_message, msg_id)
    if row is None:
        raise HTTPError(404, f"Error 404 Not Found: no message {msg_id!r} is waiting for delivery (delivered "
                             f"messages are not kept; see also {PREFIX}/dlq)")
    out = _message(row)
    out["queues"] = [{"sub_key": q["sub_key"], "delivery_count": q["delivery_count"],
                      "next_attempt_at": q["next_attempt_at"] or None, "last_error": q["last_error"]} for q in queues]
    return HTTPResponse.json(out)


# ################################################################################################
# Dead letters


def _dead_view(row: dict[str, Any], with_data: bool) -> dict[str, Any]:
    stored = row["message"]
    message = _message(stored, with_data, sub_key=row["sub_key"], delivery_count=row["delivery_count"]) \
        if "data" in stored else {**stored, "sub_key": row["sub_key"], "delivery_count": row["delivery_count"]}
    return {**message, "last_error": row["last_error"], "dead_at": row["dead_at"]}


async def list_dead(request: HTTPRequest) -> HTTPResponse:
    runtime = await _runtime(request)
    limit, offset, with_data = _page(request)
    rows = await _read(runtime, runtime.store.dead_letters, request.query.get("sub_key") or None,
                       request.query.get("topic") or None, limit, offset, with_data)
    return HTTPResponse.json([_dead_view(row, with_data) for row in rows])


async def get_dead(request: HTTPRequest) -> HTTPResponse:
    runtime = await _runtime(request)
    sub_key, msg_id = request.path_params["sub_key"], request.path_params["msg_id"]
    row = await _read(runtime, runtime.store.dead_letter, sub_key, msg_id)
    if row is None:
        raise HTTPError(404, f"Error 404 Not Found: no dead letter {msg_id!r} in queue {sub_key!r}")
    return HTTPResponse.json(_dead_view(row, True))


def _dead_filters(source: Any, *, in_query: bool) -> tuple[str | None, str | None, list[str] | None]:
    """ Which dead letters a replay (its JSON body) or a purge (its query) names: each filter given
    must be non-empty, and at least one of sub_key, topic and msg_ids, or all=true, is needed. """
    errors = []
    for name in ("sub_key", "topic"):
        if name in source and not (isinstance(source[name], str) and source[name]):
            errors.append({"field": name, "error": "expected a non-empty string"})
    msg_ids = source.get("msg_ids")
    if in_query and isinstance(msg_ids, str):
        msg_ids = [item for item in msg_ids.split(",") if item]
    if "msg_ids" in source and not (isinstance(msg_ids, list) and msg_ids and
                                    all(isinstance(m, str) and m for m in msg_ids)):
        errors.append({"field": "msg_ids", "error": "expected message ids, comma-separated" if in_query else
                       "expected a non-empty list of message ids"})
    everything = False
    if in_query:
        everything = _flag(source, "all", False)
    elif "all" in source and not isinstance(source["all"], bool):
        errors.append({"field": "all", "error": "expected true or false"})
    else:
        everything = source.get("all", False)
    if errors:
        raise HTTPError(400, "Error 400 Bad Request: " + "; ".join(f"{e['field']}: {e['error']}" for e in errors),
                        extra={"errors": errors})
    sub_key, topic = source.get("sub_key"), source.get("topic")
    if not (sub_key or topic or msg_ids or everything):
        raise HTTPError(400, "Error 400 Bad Request: say which dead letters: sub_key, topic or msg_ids (or all=true "
                             "for every one)")
    return sub_key, topic, msg_ids


async def replay_dead(request: HTTPRequest) -> HTTPResponse:
    runtime = await _runtime(request)
    body = request.json()
    body = {} if body is None else body
    if not isinstance(body, dict):
        raise HTTPError(400, "Error 400 Bad Request: the body must be a JSON object")
    sub_key, topic, msg_ids = _dead_filters(body, in_query=False)
    replayed = await _write(runtime, runtime.store.replay_dead, sub_key, topic, msg_ids, time.time())
    for key in ([sub_key] if sub_key else list(runtime.subs)):
        if key in runtime.runners:
            runtime.want_claim(key)
    return HTTPResponse.json({"replayed": replayed})


async def delete_dead(request: HTTPRequest) -> HTTPResponse:
    runtime = await _runtime(request)
    sub_key, msg_id = request.path_params["sub_key"], request.path_params["msg_id"]
    deleted = await _write(runtime, runtime.store.purge_dead, sub_key, None, [msg_id])
    if not deleted:
        raise HTTPError(404, f"Error 404 Not Found: no dead letter {msg_id!r} in queue {sub_key!r}")
    return HTTPResponse(204, b"")


async def purge_dead(request: HTTPRequest) -> HTTPResponse:
    runtime = await _runtime(request)
    sub_key, topic, msg_ids = _dead_filters(request.query, in_query=True)
    purged = await _write(runtime, runtime.store.purge_dead, sub_key, topic, msg_ids)
    return HTTPResponse.json({"purged": purged})


async def statistics(request: HTTPRequest) -> HTTPResponse:
    runtime = await _runtime(request)
    return HTTPResponse.json(runtime.statistics())


# ################################################################################################
# OpenAPI operations of the routes (in the admin API's document, GET /zato/api/openapi.json)

_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_NOT_RUNNING = {"$ref": "#/components/responses/ServiceUnavailable"}
_NUMBER_OR_NULL = {"type": ["number", "null"]}
_TEXT_OR_NULL = {"type": ["string", "null"]}
_MESSAGE = {
    "type": "object", "required": ["msg_id", "topic_name"],
    "description": "A message as subscribers get it; the data is `data` (a JSON value) or `data_base64` (bytes), "
                   "left out with data=false",
    "properties": {
        "msg_id": {"type": "string"}, "topic_name": {"type": "string"}, "data": {},
        "data_base64": {"type": "string"}, "mime_type": {"type": "string"}, "size": {"type": "integer"},
        "priority": {"type": "integer", "minimum": 1, "maximum": 9}, "pub_time": {"type": "number"},
        "pub_time_iso": {"type": "string"}, "expiration": {"type": "integer", "description": "milliseconds"},
        "expiration_time": {"type": "number"}, "expiration_time_iso": {"type": "string"},
        "has_gd": {"type": "boolean"}, "delivery_count": {"type": "integer"}, "sub_key": _TEXT_OR_NULL,
        "correl_id": _TEXT_OR_NULL, "in_reply_to": _TEXT_OR_NULL, "ext_client_id": _TEXT_OR_NULL,
        "published_by": _TEXT_OR_NULL, "server_name": _TEXT_OR_NULL, "server_pid": {"type": ["integer", "null"]},
        "zato_ctx": {}, "user_ctx": {}}}
_QUEUED = {"allOf": [_MESSAGE, {"type": "object", "required": ["is_claimed", "next_attempt_at", "last_error"],
                                "properties": {"is_claimed": {"type": "boolean"}, "next_attempt_at": _NUMBER_OR_NULL,
                                               "last_error": _TEXT_OR_NULL}}]}
_WAITING = {"allOf": [_MESSAGE, {"type": "object", "required": ["queues"], "properties": {"queues": {
    "type": "array", "items": {"type": "object", "required": ["sub_key", "delivery_count"], "properties": {
        "sub_key": {"type": "string"}, "delivery_count": {"type": "integer"}, "next_attempt_at": _NUMBER_OR_NULL,
        "last_error": _TEXT_OR_NULL}}}}}]}
_DEAD = {"type": "object", "required": ["msg_id", "sub_key", "delivery_count", "last_error", "dead_at"],
         "description": "A dead letter: its message (without data when listed with data=false), the last error",
         "properties": {**_MESSAGE["properties"], "sub_key": {"type": "string"}, "last_error": _TEXT_OR_NULL,
                        "dead_at": {"type": "number"}}}
_SUBSCRIPTION = {"type": "object", "required": ["sub_key", "subscription", "topic_name", "endpoint_name",
                                                "endpoint_type", "max_attempts"], "properties": {
    "sub_key": {"type": "string"}, "subscription": {"type": "string"}, "topic_name": {"type": "string"},
    "endpoint_name": {"type": "string"}, "endpoint_type": {"type": "string"}, "max_attempts": {"type": "integer"},
    "depth": {"type": "integer"}, "in_flight": {"type": "integer"}, "dead": {"type": "integer"},
    "failure_policy": {"type": "object", "description": "The core's failure policy made of the subscription's "
                                                        "max_attempts, retry_* and delivery_timeout",
                       "properties": {"attempts": {"type": "integer"}, "timeout": {"type": ["number", "null"]},
                                      "backoff": {"type": ["object", "null"], "description": "null: at once",
                                                  "properties": {name: {"type": "number"} for name in
                                                                 ("initial", "maximum", "multiplier", "jitter")}}}},
    "counts": {"type": "object", "description": "Delivery outcomes of this queue in the worker that answers, "
                                                "since it started",
               "properties": {name: {"type": "integer", "minimum": 0} for name in COUNTS}}}}
_TOPIC = {"type": "object", "required": ["name", "has_gd", "max_depth_gd", "max_depth_non_gd", "depth_gd",
                                         "depth_non_gd", "last_message", "subscriptions"], "properties": {
    "name": {"type": "string"}, "has_gd": {"type": "boolean"}, "max_depth_gd": {"type": "integer"},
    "max_depth_non_gd": {"type": "integer"}, "depth_gd": {"type": "integer"},
    "depth_non_gd": {"type": "integer", "description": "non-GD messages in the RAM of the worker that answers"},
    "last_message": {"type": ["object", "null"], "properties": {"msg_id": {"type": "string"},
                                                                "pub_time": {"type": "number"},
                                                                "pub_time_iso": {"type": "string"}}},
    "subscriptions": {"type": "array", "items": _SUBSCRIPTION}}}


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1}}


_TOPIC_PARAM = _path("topic", "the topic's name, percent-encoded (/orders/new is %2Forders%2Fnew)")
_SUB_KEY_PARAM = _path("sub_key", "a subscription queue's sub_key (GET /zato/api/pubsub/subscriptions lists them)")
_MSG_ID_PARAM = _path("msg_id", "a message id")
_PAGE = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT, "default": 50}},
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}},
    {"name": "data", "in": "query", "description": "false leaves message data out",
     "schema": {"type": "string", "enum": [*TRUE, *FALSE], "default": "true"}}]
_FILTERS = [{"name": "sub_key", "in": "query", "schema": {"type": "string"}, "description": "one queue's"},
            {"name": "topic", "in": "query", "schema": {"type": "string"}, "description": "one topic's"}]
_PURGE_FILTERS = [
    {"name": "sub_key", "in": "query", "schema": {"type": "string", "minLength": 1}, "description": "one queue's"},
    {"name": "topic", "in": "query", "schema": {"type": "string", "minLength": 1}, "description": "one topic's"},
    {"name": "msg_ids", "in": "query", "schema": {"type": "string", "pattern": "[^,]"},
     "description": "message ids, comma-separated"},
    {"name": "all", "in": "query", "schema": {"type": "string", "enum": [*TRUE, *FALSE]},
     "description": "true: every dead letter"}]


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _count(name: str, description: str) -> dict[str, Any]:
    return _json(description, {"type": "object", "required": [name], "properties": {name: {"type": "integer"}}})


def _operation(operation_id: str, summary: str, responses: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"operationId": operation_id, "tags": ["pubsub"], "summary": summary,
            "responses": {**responses, "503": _NOT_RUNNING}, **more}


_BAD_PAGE = {"description": "limit, offset or data is not a number or flag in range", "content": _ERROR}
_NO_TOPIC = {"description": "No active topic of that name", "content": _ERROR}
_NO_QUEUE = {"description": "No subscription queue with that sub_key", "content": _ERROR}
_DEAD_SELECTION = {"description": "Nothing says which dead letters (sub_key, topic, msg_ids or all), or one of "
                                  "them is of the wrong type", "content": _ERROR}

OPENAPI = {
    "list_topics": {"get": _operation("pubsub_list_topics", "Topics: depth, last message, queues",
                                      {"200": _json("Every active topic", {"type": "array", "items": _TOPIC})})},
    "get_topic": {"get": _operation("pubsub_get_topic", "One topic", {"200": _json("The topic", _TOPIC),
                                                                      "404": _NO_TOPIC}, parameters=[_TOPIC_PARAM])},
    "topic_messages": {"get": _operation(
        "pubsub_topic_messages", "Messages waiting in a topic",
        {"200": _json("A page of messages", {"type": "array", "items": _MESSAGE}), "400": _BAD_PAGE,
         "404": _NO_TOPIC}, parameters=[_TOPIC_PARAM, *_PAGE])},
    "list_subscriptions": {"get": _operation(
        "pubsub_list_subscriptions", "Queues: one per subscription and topic",
        {"200": _json("Every queue with its depth", {"type": "array", "items": _SUBSCRIPTION})})},
    "queue_messages": {"get": _operation(
        "pubsub_queue_messages", "Browse a queue, in delivery order",
        {"200": _json("A page of the queue", {"type": "array", "items": _QUEUED}), "400": _BAD_PAGE,
         "404": _NO_QUEUE}, parameters=[_SUB_KEY_PARAM, *_PAGE])},
    "clear_queue": {"delete": _operation(
        "pubsub_clear_queue", "Empty a queue", {"200": _count("deleted", "How many messages were deleted"),
                                                "404": _NO_QUEUE}, parameters=[_SUB_KEY_PARAM])},
    "delete_queue_message": {"delete": _operation(
        "pubsub_delete_queue_message", "Delete one message from a queue",
        {"204": {"description": "Deleted"}, "404": {"description": "No such queue, or the message is not in it",
                                                     "content": _ERROR}}, parameters=[_SUB_KEY_PARAM, _MSG_ID_PARAM])},
    "get_message": {"get": _operation(
        "pubsub_get_message", "One message and the queues it waits in",
        {"200": _json("The message", _WAITING), "404": {"description": "No such message is waiting for delivery",
                                                         "content": _ERROR}}, parameters=[_MSG_ID_PARAM])},
    "list_dead": {"get": _operation(
        "pubsub_list_dead", "Dead letters, oldest first",
        {"200": _json("A page of dead letters", {"type": "array", "items": _DEAD}), "400": _BAD_PAGE},
        parameters=[*_FILTERS, *_PAGE])},
    "purge_dead": {"delete": _operation(
        "pubsub_purge_dead", "Purge dead letters (say which: sub_key, topic, msg_ids or all=true)",
        {"200": _count("purged", "How many dead letters were deleted"), "400": _DEAD_SELECTION},
        description="At least one of sub_key, topic and msg_ids (all must match), or all=true, is needed.",
        parameters=_PURGE_FILTERS)},
    "replay_dead": {"post": _operation(
        "pubsub_replay_dead", "Put dead letters back in their queues, as new",
        {"200": _count("replayed", "How many dead letters went back to their queues"), "400": _DEAD_SELECTION},
        requestBody={"required": True, "content": {"application/json": {"schema": {
            "type": "object", "description": "at least one of sub_key, topic and msg_ids (all must match), or "
                                             "all: true",
            "properties": {"sub_key": {"type": "string", "minLength": 1}, "topic": {"type": "string", "minLength": 1},
                           "msg_ids": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                           "all": {"type": "boolean"}},
            "anyOf": [{"required": ["sub_key"]}, {"required": ["topic"]}, {"required": ["msg_ids"]},
                      {"required": ["all"], "properties": {"all": {"const": True}}}]}}}})},
    "get_dead": {"get": _operation(
        "pubsub_get_dead", "One dead letter, its data and last error",
        {"200": _json("The dead letter", _DEAD), "404": {"description": "No such dead letter", "content": _ERROR}},
        parameters=[_SUB_KEY_PARAM, _MSG_ID_PARAM])},
    "delete_dead": {"delete": _operation(
        "pubsub_delete_dead", "Delete one dead letter",
        {"204": {"description": "Deleted"}, "404": {"description": "No such dead letter", "content": _ERROR}},
        parameters=[_SUB_KEY_PARAM, _MSG_ID_PARAM])},
    "statistics": {"get": _operation(
        "pubsub_statistics", "Counters of the worker that answers",
        {"200": _json("Counters", {"type": "object", "additionalProperties": {"type": "integer"}})})},
}


# (path, handler, methods, OpenAPI operations): registered by the pubsub plugin
ROUTES = [
    (f"{PREFIX}/topics", list_topics, ("GET",), OPENAPI["list_topics"]),
    (f"{PREFIX}/topics/{{topic}}", get_topic, ("GET",), OPENAPI["get_topic"]),
    (f"{PREFIX}/topics/{{topic}}/messages", topic_messages, ("GET",), OPENAPI["topic_messages"]),
    (f"{PREFIX}/subscriptions", list_subscriptions, ("GET",), OPENAPI["list_subscriptions"]),
    (f"{PREFIX}/subscriptions/{{sub_key}}/messages", queue_messages, ("GET",), OPENAPI["queue_messages"]),
    (f"{PREFIX}/subscriptions/{{sub_key}}/messages", clear_queue, ("DELETE",), OPENAPI["clear_queue"]),
    (f"{PREFIX}/subscriptions/{{sub_key}}/messages/{{msg_id}}", delete_queue_message, ("DELETE",),
     OPENAPI["delete_queue_message"]),
    (f"{PREFIX}/messages/{{msg_id}}", get_message, ("GET",), OPENAPI["get_message"]),
    (f"{PREFIX}/dlq", list_dead, ("GET",), OPENAPI["list_dead"]),
    (f"{PREFIX}/dlq", purge_dead, ("DELETE",), OPENAPI["purge_dead"]),
    (f"{PREFIX}/dlq/replay", replay_dead, ("POST",), OPENAPI["replay_dead"]),
    (f"{PREFIX}/dlq/{{sub_key}}/{{msg_id}}", get_dead, ("GET",), OPENAPI["get_dead"]),
    (f"{PREFIX}/dlq/{{sub_key}}/{{msg_id}}", delete_dead, ("DELETE",), OPENAPI["delete_dead"]),
    (f"{PREFIX}/statistics", statistics, ("GET",), OPENAPI["statistics"]),
]
