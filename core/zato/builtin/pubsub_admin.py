""" The pub/sub admin API (the `pubsub` plugin): what is in topics and queues, and the dead-letter
queue. Every call needs the admin credentials, like the rest of /zato/api. Topic names go in
paths percent-encoded (`/orders/new` is `%2Forders%2Fnew`).

    GET    /zato/api/pubsub/topics                               topics: depth, last message, queues
    GET    /zato/api/pubsub/topics/{topic}                       one topic
    GET    /zato/api/pubsub/topics/{topic}/messages              messages waiting in a topic
    GET    /zato/api/pubsub/subscriptions                        queues (one per subscription and topic)
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

from zato.builtin.core import check_admin
from zato.builtin.pubsub_message import message_from_row
from zato.server.http import HTTPError, HTTPRequest, HTTPResponse

PREFIX = "/zato/api/pubsub"
MAX_LIMIT = 1000


async def _runtime(request: HTTPRequest) -> Any:
    await check_admin(request)
    runtime = request.server.plugin_state.get("pubsub")
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


def _page(request: HTTPRequest) -> tuple[int, int, bool]:
    with_data = request.query.get("data", "true").lower() not in ("false", "0", "no")
    return _int_param(request, "limit", 50, MAX_LIMIT), _int_param(request, "offset", 0), with_data


def _message(row: dict[str, Any], with_data: bool = True, **extra: Any) -> dict[str, Any]:
    out = message_from_row(row, sub_key=extra.pop("sub_key", None),
                           delivery_count=extra.pop("delivery_count", 0)).to_dict(with_data=with_data)
    out.update(extra)
    return out


def _sub_info(sub: Any, depths: dict[str, dict[str, int]]) -> dict[str, Any]:
    return {"sub_key": sub.sub_key, "subscription": sub.name, "topic_name": sub.topic_name,
            "endpoint_name": sub.endpoint_name, "endpoint_type": sub.endpoint_type,
            "max_attempts": sub.max_attempts, **depths.get(sub.sub_key, {})}


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
            from zato.builtin.pubsub_message import iso_utc
            last = {**last, "pub_time_iso": iso_utc(last["pub_time"])}
        out.append({"name": name, "has_gd": topic.has_gd, "max_depth_gd": topic.max_depth_gd,
                    "max_depth_non_gd": topic.max_depth_non_gd, "depth_gd": stats[name]["depth"],
                    "depth_non_gd": runtime.ram_depth(name), "last_message": last,
                    "subscriptions": [_sub_info(runtime.subs[key], depths) for key in topic.sub_keys]})
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
    return HTTPResponse.json([_sub_info(runtime.subs[key], depths) for key in keys])


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


def _dead_filters(request: HTTPRequest, source: dict[str, Any]) -> tuple[str | None, str | None, list[str] | None]:
    sub_key = source.get("sub_key") or None
    topic = source.get("topic") or None
    msg_ids = source.get("msg_ids")
    if isinstance(msg_ids, str):
        msg_ids = [item for item in msg_ids.split(",") if item]
    if msg_ids is not None and (not isinstance(msg_ids, list) or not all(isinstance(m, str) for m in msg_ids)):
        raise HTTPError(400, "Error 400 Bad Request: msg_ids must be a list of message ids")
    everything = str(source.get("all", "")).lower() in ("true", "1", "yes")
    if not (sub_key or topic or msg_ids or everything):
        raise HTTPError(400, "Error 400 Bad Request: say which dead letters: sub_key, topic or msg_ids (or all=true "
                             "for every one)")
    return sub_key, topic, msg_ids


async def replay_dead(request: HTTPRequest) -> HTTPResponse:
    runtime = await _runtime(request)
    body = request.json() or {}
    if not isinstance(body, dict):
        raise HTTPError(400, "Error 400 Bad Request: the body must be a JSON object")
    sub_key, topic, msg_ids = _dead_filters(request, body)
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
    sub_key, topic, msg_ids = _dead_filters(request, request.query)
    purged = await _write(runtime, runtime.store.purge_dead, sub_key, topic, msg_ids)
    return HTTPResponse.json({"purged": purged})


async def statistics(request: HTTPRequest) -> HTTPResponse:
    runtime = await _runtime(request)
    return HTTPResponse.json(runtime.statistics())


ROUTES = [
    (f"{PREFIX}/topics", list_topics, ("GET",)),
    (f"{PREFIX}/topics/{{topic}}", get_topic, ("GET",)),
    (f"{PREFIX}/topics/{{topic}}/messages", topic_messages, ("GET",)),
    (f"{PREFIX}/subscriptions", list_subscriptions, ("GET",)),
    (f"{PREFIX}/subscriptions/{{sub_key}}/messages", queue_messages, ("GET",)),
    (f"{PREFIX}/subscriptions/{{sub_key}}/messages", clear_queue, ("DELETE",)),
    (f"{PREFIX}/subscriptions/{{sub_key}}/messages/{{msg_id}}", delete_queue_message, ("DELETE",)),
    (f"{PREFIX}/messages/{{msg_id}}", get_message, ("GET",)),
    (f"{PREFIX}/dlq", list_dead, ("GET",)),
    (f"{PREFIX}/dlq", purge_dead, ("DELETE",)),
    (f"{PREFIX}/dlq/replay", replay_dead, ("POST",)),
    (f"{PREFIX}/dlq/{{sub_key}}/{{msg_id}}", get_dead, ("GET",)),
    (f"{PREFIX}/dlq/{{sub_key}}/{{msg_id}}", delete_dead, ("DELETE",)),
    (f"{PREFIX}/statistics", statistics, ("GET",)),
]
