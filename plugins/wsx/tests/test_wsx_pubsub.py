""" Pub/sub to WebSocket clients in a running server: subscribing through Zato's gateway,
deliveries as zwsx.psrq with the message's fields, a subscription that outlives its connection
(guaranteed-delivery messages published while the client was away reach it when it comes back
with the same client id), unsubscribing, and the gateway's allowed list. """

from __future__ import annotations

import sqlite3
from contextlib import asynccontextmanager
from datetime import datetime, timezone

import pytest
import trio

from wsx_fixtures import PASSWORD, USER, admin, create_channel, wsx_server
from zato_plugin_wsx import pubsub as wsx_pubsub
from zato_plugin_wsx.testing import WSXClient

TOPIC = "/wsx/news"
GATEWAY = "helpers.web-sockets-gateway"

@asynccontextmanager
async def gateway_server(tmp_path):
    """ A server with a channel whose service is the gateway, and the topic. """
    async with wsx_server(tmp_path) as server:
        await create_channel(server, service=GATEWAY)
        async with admin(server) as api:
            reply = await api.post("/zato/api/objects/pubsub_topic", json={"name": TOPIC})
            assert reply.status_code == 201, reply.text
        yield server


async def client(server, client_id):
    connection = await WSXClient.connect(server.address, "/ws/test")
    opened = await connection.create_session(USER, PASSWORD, client_id=client_id)
    assert opened["meta"]["msg_type"] == "zwsx.rspa", opened
    return connection


async def gateway(connection, service, request=None):
    return await connection.invoke({"service": service, "request": request or {}})


async def publish(server, data, **options):
    """ Through pub/sub's publish service (self.pubsub.publish). """
    return (await server.invoke("zato.pubsub.publish.publish", {"topic_name": TOPIC, "data": data,
                                                                 **options}))["msg_id"]


async def subscribe(connection, topic=TOPIC):
    """ Through the gateway, as a Zato client does; returns the sub_key. """
    reply = await gateway(connection, "zato.pubsub.pubapi.subscribe-wsx", {"topic_name": topic})
    assert reply["meta"]["msg_type"] == "zwsx.rspok", reply
    return reply["data"]["sub_key"]


async def next_delivery(connection):
    return await connection.receive_until(lambda frame: frame["meta"]["msg_type"] == "zwsx.psrq")


async def test_a_subscribed_client_gets_messages_as_psrq_with_the_pubsub_fields(tmp_path):
    async with gateway_server(tmp_path) as server:
        with trio.fail_after(30):
            subscriber = await client(server, "crm-1")
            subscribed = await gateway(subscriber, "zato.pubsub.pubapi.subscribe-wsx", {"topic_name": TOPIC})
            msg_id = await publish(server, {"order": 1}, priority=7)
            delivery = await next_delivery(subscriber)
            await subscriber.respond(delivery, "thanks")  # Zato's clients may answer; it is not needed
            publisher = await client(server, "shop-1")  # a client publishes through the gateway, Zato's name
            published = await gateway(publisher, "zato.pubsub.pubapi.publish-message",
                                      {"topic_name": TOPIC, "data": "text from a client"})
            second = await next_delivery(subscriber)
            async with admin(server) as api:
                listed = (await api.get("/zato/api/wsx/connections", params={"ext_client_id": "crm-1"})).json()
            for connection in (subscriber, publisher):
                await connection.aclose()
    assert subscribed["meta"]["msg_type"] == "zwsx.rspok", subscribed
    sub_key = subscribed["data"]["sub_key"]
    assert sub_key.startswith("zpsk.wsx.")
    meta, data = delivery["meta"], delivery["data"]
    assert meta["msg_type"] == "zwsx.psrq" and meta["id"] == msg_id and msg_id.startswith("zpsm")
    assert "in_reply_to" not in meta and "status" not in meta
    assert data["msg_id"] == msg_id and data["topic_name"] == TOPIC and data["data"] == {"order": 1}
    assert data["sub_key"] == sub_key and data["priority"] == 7 and data["has_gd"] is True
    assert data["delivery_count"] == 1 and data["mime_type"] == "application/json" and data["size"] == 12
    assert data["expiration"] > 0 and data["pub_time_iso"] < data["expiration_time_iso"]
    assert not data["pub_time_iso"].endswith(("Z", "+00:00"))
    assert published["meta"]["msg_type"] == "zwsx.rspok" and second["meta"]["id"] == published["data"]["msg_id"]
    assert second["data"]["data"] == "text from a client" and second["data"]["mime_type"] == "text/plain"
    assert TOPIC in listed["connections"][0]["subscriptions"]


async def test_messages_published_while_the_client_was_away_reach_it_when_it_reconnects(tmp_path):
    async with gateway_server(tmp_path) as server:
        with trio.fail_after(30):
            first = await client(server, "mobile-7")
            sub_key = await subscribe(first)
            async with admin(server) as api:
                [subscribed] = (await api.get("/zato/api/wsx/connections",
                                              params={"ext_client_id": "mobile-7"})).json()["connections"]
            await first.aclose()
            while wsx_pubsub.connections_of(server, wsx_pubsub.endpoint_name("wsx.test", "mobile-7")):
                await trio.sleep(0.01)
            away = [await publish(server, f"while away {n}") for n in range(3)]
            await trio.sleep(0.5)
            other = await client(server, "someone-else")  # another client id is another subscriber
            again = await client(server, "mobile-7")
            async with admin(server) as api:  # before any delivery: the topic is listed from the start
                at_reconnect = (await api.get("/zato/api/wsx/connections", params={"ext_client_id": "mobile-7"})).json()
            started = trio.current_time()
            received = [await next_delivery(again) for _ in away]
            took = trio.current_time() - started
            resumed = await gateway(again, "zato.pubsub.resume-wsx-subscription", {"sub_key": sub_key})
            async with admin(server) as api:
                after = (await api.get("/zato/api/wsx/connections", params={"ext_client_id": "mobile-7"})).json()
            with trio.move_on_after(0.5):
                stray = await next_delivery(other)
                pytest.fail(f"a client that never subscribed got {stray}")
            for connection in (again, other):
                await connection.aclose()
    assert sorted(frame["meta"]["id"] for frame in received) == sorted(away)
    assert {frame["data"]["sub_key"] for frame in received} == {sub_key}
    assert took < 2, f"the reconnected client waited {took:.2f} s for its messages"
    assert resumed["data"] == {"sub_key": sub_key, "topic_name": TOPIC}
    # the reconnected client lists its topic with the time it subscribed, on its first connection
    assert set(subscribed["subscriptions"]) == {TOPIC}, subscribed
    for listed in (at_reconnect, after):
        [row] = listed["connections"]
        assert row["pub_client_id"] != subscribed["pub_client_id"]
        assert row["subscriptions"] == subscribed["subscriptions"], row
        assert utc(row["subscriptions"][TOPIC]) < utc(row["connection_time"]), row


def utc(iso):
    value = datetime.fromisoformat(iso)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


async def test_a_client_away_longer_than_a_delivery_waits_gets_its_message_on_the_retry(tmp_path, monkeypatch):
    monkeypatch.setattr(wsx_pubsub, "CLIENT_WAIT_SECONDS", 0.2)
    async with gateway_server(tmp_path) as server:
        with trio.fail_after(30):
            first = await client(server, "laptop-3")
            await subscribe(first)
            await first.aclose()
            msg_id = await publish(server, "after the first attempt failed")
            await trio.sleep(0.6)  # the first attempt gave up: the message waits for its retry
            again = await client(server, "laptop-3")
            started = trio.current_time()
            delivery = await next_delivery(again)
            took = trio.current_time() - started
            await again.aclose()
    assert delivery["meta"]["id"] == msg_id and delivery["data"]["delivery_count"] == 2
    assert took < wsx_pubsub.SUBSCRIPTION_DEFAULTS["retry_max_seconds"] + 1


async def test_an_unsubscribed_client_gets_nothing(tmp_path):
    async with gateway_server(tmp_path) as server:
        with trio.fail_after(30):
            leaving = await client(server, "leaving")
            staying = await client(server, "staying")
            sub_key = await subscribe(leaving)
            await gateway(staying, "zato.pubsub.subscription.create-wsx-subscription", {"topic_name_list": [TOPIC]})
            gone = await gateway(leaving, "zato.pubsub.pubapi.unsubscribe", {"sub_key": sub_key})
            msg_id = await publish(server, "only for who stayed")
            delivered = await next_delivery(staying)
            with trio.move_on_after(1):
                stray = await next_delivery(leaving)
                pytest.fail(f"an unsubscribed client got {stray}")
            async with admin(server) as api:
                endpoints = (await api.get("/zato/api/objects/pubsub_endpoint")).json()
            for connection in (leaving, staying):
                await connection.aclose()
    assert gone["data"] == {"unsubscribed": [TOPIC]} and delivered["meta"]["id"] == msg_id
    assert [e["name"] for e in endpoints if e["name"].startswith("wsx/")] == ["wsx/wsx.test/staying"]


async def test_unsubscribing_deletes_what_was_still_queued_for_the_client(tmp_path, monkeypatch):
    # The client goes away; a message waits for its retry (30 s away); the client comes back and
    # unsubscribes before it: the message is gone with the subscription, and subscribing again
    # starts from new messages.
    monkeypatch.setattr(wsx_pubsub, "CLIENT_WAIT_SECONDS", 0.1)
    monkeypatch.setitem(wsx_pubsub.SUBSCRIPTION_DEFAULTS, "retry_seconds", 30.0)
    monkeypatch.setitem(wsx_pubsub.SUBSCRIPTION_DEFAULTS, "retry_max_seconds", 30.0)
    async with gateway_server(tmp_path) as server:
        with trio.fail_after(30):
            first = await client(server, "tablet-9")
            sub_key = await subscribe(first)
            await first.aclose()
            old = await publish(server, "queued while away")
            await trio.sleep(0.5)  # its first attempt gave up: it waits in the queue
            assert queued(server, sub_key) == [old]
            again = await client(server, "tablet-9")
            gone = await gateway(again, "zato.pubsub.pubapi.unsubscribe", {"sub_key": sub_key})
            left = queued(server, sub_key)
            assert await subscribe(again) == sub_key  # the same queue, by the same names
            new = await publish(server, "after subscribing again")
            delivered = await next_delivery(again)
            await again.aclose()
    assert gone["data"] == {"unsubscribed": [TOPIC]}
    assert left == [] and delivered["meta"]["id"] == new


def queued(server, sub_key):
    """ The msg_ids waiting in one queue, as the database holds them. """
    with sqlite3.connect(server.paths.base_dir / "work" / "zato.db") as db:
        return [row[0] for row in db.execute("SELECT msg_id FROM zato_pubsub_delivery WHERE sub_key = ?", (sub_key,))]


async def test_the_gateway_runs_only_allowed_services_and_checks_the_subscription_input(tmp_path):
    async with gateway_server(tmp_path) as server:
        with trio.fail_after(30):
            connection = await client(server, "curious")
            ping = await gateway(connection, "zato.ping")
            not_allowed = await gateway(connection, "wsx.echo", {"x": 1})
            unknown_topic = await gateway(connection, "zato.pubsub.pubapi.subscribe-wsx", {"topic_name": "/nope"})
            close_unsub = await gateway(connection, "zato.pubsub.pubapi.subscribe-wsx",
                                        {"topic_name": TOPIC, "unsub_on_wsx_close": True})
            both = await gateway(connection, "zato.pubsub.subscription.create-wsx-subscription",
                                 {"topic_name": TOPIC, "topic_name_list": [TOPIC]})
            await connection.aclose()
    assert ping["data"] == {"pong": "zato"}
    assert not_allowed["meta"]["status"] == 403
    assert not_allowed["meta"]["error_message"] == "You are not allowed to access this resource"
    assert unknown_topic["meta"]["status"] == 404 and "/nope" in unknown_topic["meta"]["error_message"]
    assert close_unsub["meta"]["status"] == 400 and "outlives" in close_unsub["meta"]["error_message"]
    assert both["meta"]["error_message"] == "Cannot provide both topic_name and topic_name_list on input"


async def test_zatos_pubsub_wsx_gateway_service_allowed_lets_services_through_the_gateway(tmp_path):
    # server.conf as Zato spells it: [pubsub] wsx_gateway_service_allowed = ...
    async with wsx_server(tmp_path, pubsub={"wsx_gateway_service_allowed": "wsx.echo, wsx.async-*"}) as server:
        await create_channel(server, service=GATEWAY)
        with trio.fail_after(30):
            connection = await client(server, "allowed")
            echoed = await gateway(connection, "wsx.echo", {"x": 1})
            by_pattern = await gateway(connection, "wsx.async-echo", {"y": 2})
            refused = await gateway(connection, "wsx.broadcast", {"channel": "wsx.test", "news": "no"})
            await connection.aclose()
    assert echoed["meta"]["msg_type"] == "zwsx.rspok", echoed
    assert echoed["data"]["echo"] == {"x": 1} and echoed["data"]["ext_client_id"] == "allowed"
    assert by_pattern["meta"]["msg_type"] == "zwsx.rspok" and by_pattern["data"] == {"echo": {"y": 2}}, by_pattern
    assert refused["meta"]["status"] == 403, refused
