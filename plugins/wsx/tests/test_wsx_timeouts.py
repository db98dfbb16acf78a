""" The timeouts of Zato's WebSocket timeouts article, on trio's MockClock: one connection driven
through its ASGI messages (what hypercorn would pass), so that seconds and hours pass at once.
The session wait time, the token's TTL extended by requests, responses and Pongs, and missed
pings counted only in a row, closing with 4002 past the threshold. """

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from zato_plugin_wsx.connection import PING, PONG, ChannelSettings, Pinger, WSXConnection


class Peer:
    """ The client side of one connection, as ASGI messages; answers pings when told to. """

    def __init__(self, settings: ChannelSettings) -> None:
        self.to_app, self.from_client = trio.open_memory_channel(100)
        self.sent: list[dict[str, Any]] = []  # what the app sent
        self.answer_pings = True
        self.closed_at: float | None = None
        self.close_code: int | None = None

        async def invoke_service(name, payload, **kwargs):
            return SimpleNamespace(payload={"ok": payload})
        server = SimpleNamespace(config_objects={}, background_nursery=None, service_timeout=None,
                                 invoke_service=invoke_service)
        self.pinger = Pinger()
        self.connection = WSXConnection(server, settings, {"client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 1)},
                                        self.app_send, lambda c: None, lambda c: None, self.pinger)

    async def app_send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == PING and self.answer_pings:
            await self.to_app.send({"type": PONG, "bytes": message["bytes"]})
        elif message["type"] == "websocket.close":
            self.closed_at, self.close_code = trio.current_time(), message["code"]

    async def frame(self, action: str, msg_id: str, **meta: Any) -> None:
        meta = {"action": action, "id": msg_id, "timestamp": "2026-12-02T00:00:00", **meta}
        await self.to_app.send({"type": "websocket.receive", "text": json.dumps({"meta": meta, "data": {}})})

    def frames(self) -> list[dict[str, Any]]:
        return [json.loads(m["text"]) for m in self.sent if m["type"] == "websocket.send"]

    def token(self) -> str:
        return next(f["data"]["token"] for f in self.frames() if f["meta"]["msg_type"] == "zwsx.rspa")

    def pings(self) -> int:
        return sum(m["type"] == PING for m in self.sent)


async def run(peer: Peer, script) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(peer.pinger.run)
        nursery.start_soon(peer.connection.serve, peer.from_client.receive)
        await script()
        await trio.sleep(0)
        nursery.cancel_scope.cancel()


def settings(**changes: Any) -> ChannelSettings:
    return ChannelSettings(**{"name": "t", "path": "/t", "service": "s", "ping_interval": 10**6, **changes})


async def test_no_session_within_the_wait_time_closes_the_connection(autojump_clock):
    peer = Peer(settings(new_token_wait_time=5))

    async def script():
        await trio.sleep(4.9)
        assert peer.closed_at is None
        await trio.sleep(0.2)
    await run(peer, script)
    assert peer.closed_at == pytest.approx(5) and peer.close_code == 1008
    assert peer.frames()[-1]["meta"]["msg_type"] == "zwsx.merr"


async def test_a_session_in_time_is_kept(autojump_clock):
    peer = Peer(settings(new_token_wait_time=5))

    async def script():
        await trio.sleep(4)
        await peer.frame("create-session", "s1")
        await trio.sleep(100)
    await run(peer, script)
    assert peer.closed_at is None and peer.frames()[0]["meta"]["msg_type"] == "zwsx.rspa"


async def test_requests_and_responses_extend_the_token_by_its_ttl_from_their_arrival(autojump_clock):
    peer = Peer(settings(token_ttl=100))

    async def script():
        await peer.frame("create-session", "s1")
        await trio.sleep(1)
        token = peer.token()
        await trio.sleep(59)                                   # t=60: valid until 101
        await peer.frame("invoke-service", "r1", token=token)  # now valid until 160
        await trio.sleep(90)                                   # t=150
        await peer.frame("client-response", "c1", token=token, in_reply_to="nothing")  # until 250
        await trio.sleep(99)                                   # t=249
        await peer.frame("invoke-service", "r2", token=token)  # until 349
        await trio.sleep(101)                                  # t=350: expired 1 s ago
        await peer.frame("invoke-service", "r3", token=token)
        await trio.sleep(1)
    await run(peer, script)
    types = [(f["meta"].get("in_reply_to"), f["meta"]["msg_type"]) for f in peer.frames()]
    assert types == [("s1", "zwsx.rspa"), ("r1", "zwsx.rspok"), ("r2", "zwsx.rspok"), (None, "zwsx.merr")]
    assert peer.closed_at == pytest.approx(350) and peer.close_code == 1008


async def test_a_pong_extends_the_token_as_in_the_articles_example(autojump_clock):
    # A token issued at 15:00:00 with a TTL of 3600 s; pings every 30 s; the Pong at 15:00:30
    # makes it valid until 16:00:30, and so on while the client answers.
    peer = Peer(settings(token_ttl=3600, ping_interval=30))

    async def script():
        await peer.frame("create-session", "s1")
        await trio.sleep(1)
        token = peer.token()
        await trio.sleep(3600 * 3)  # three hours without a request: the Pongs alone keep it
        await peer.frame("invoke-service", "r1", token=token)
        await trio.sleep(1)
    await run(peer, script)
    assert [f["meta"]["msg_type"] for f in peer.frames()] == ["zwsx.rspa", "zwsx.rspok"]
    assert peer.pings() == 3600 * 3 // 30


async def test_consecutive_missed_pings_close_the_connection_with_4002(autojump_clock):
    peer = Peer(settings(ping_interval=10, pings_missed_threshold=3))

    async def script():
        await peer.frame("create-session", "s1")
        peer.answer_pings = False
        await trio.sleep(100)
    await run(peer, script)
    # pings at 10, 20, 30; at 20, 30 and 40 the one before is missed: the third one closes it
    assert peer.closed_at == pytest.approx(40) and peer.close_code == 4002
    assert peer.pings() == 3


async def test_a_pong_resets_the_count_of_missed_pings(autojump_clock):
    peer = Peer(settings(ping_interval=10, pings_missed_threshold=2))

    async def script():
        await peer.frame("create-session", "s1")
        peer.answer_pings = False
        await trio.sleep(25)              # the ping at 10 missed (counted at 20), the one at 20 unanswered
        assert peer.connection.pings_missed == 1
        peer.answer_pings = True          # the ping at 30 is answered
        await peer.to_app.send({"type": PONG, "bytes": peer.connection.outstanding_ping})  # and the one at 20
        await trio.sleep(10)
        assert peer.connection.pings_missed == 0
        peer.answer_pings = False
        await trio.sleep(17)              # t=52: the ping at 40 unanswered, missed at 50: one in a row
        assert peer.closed_at is None and peer.connection.pings_missed == 1
        await trio.sleep(10)              # t=62: the ping at 50 missed at 60, two in a row
    await run(peer, script)
    assert peer.closed_at == pytest.approx(60) and peer.close_code == 4002


@pytest.mark.parametrize("past_expiry, accepted", [(-0.001, True), (0.001, False)])
async def test_a_pong_at_15_00_30_789_makes_the_token_valid_up_to_16_00_30_789(autojump_clock, past_expiry, accepted):
    # The article's example exactly: a token issued at 15:00:00 with a TTL of 3600 s (to 16:00:00),
    # a ping interval of 30 s; the ping at 15:00:30 is answered at 15:00:30.789, so the token is
    # valid up to 16:00:30.789. No other Pong comes (and missed pings do not close it here):
    # a request a millisecond before that is served, one a millisecond after is refused.
    peer = Peer(settings(token_ttl=3600, ping_interval=30, pings_missed_threshold=10**6))
    peer.answer_pings = False
    seen = {}

    async def script():
        await peer.frame("create-session", "s1")
        while peer.connection.token is None:
            await trio.sleep(0)
        issued = trio.current_time()  # 15:00:00
        seen["issued"] = peer.connection.expires_at - issued
        await trio.sleep_until(issued + 30.789)
        seen["pings"], seen["before"] = peer.pings(), peer.connection.expires_at - issued
        await peer.to_app.send({"type": PONG, "bytes": peer.connection.outstanding_ping})  # 15:00:30.789
        await trio.sleep(0.000001)
        seen["after"] = peer.connection.expires_at - issued
        await trio.sleep_until(issued + 3630.789 + past_expiry)
        await peer.frame("invoke-service", "r1", token=peer.token())
        await trio.sleep(0.000001)
        seen["closed_at"] = None if peer.closed_at is None else peer.closed_at - issued
    await run(peer, script)
    assert seen["issued"] == 3600                                  # valid to 16:00:00
    assert seen["pings"] == 1 and seen["before"] == 3600           # the ping at 15:00:30, unanswered yet
    assert seen["after"] == pytest.approx(3630.789, abs=1e-9)      # 16:00:30.789
    answer = peer.frames()[-1]["meta"]
    if accepted:
        assert answer["msg_type"] == "zwsx.rspok" and answer["in_reply_to"] == "r1" and seen["closed_at"] is None
    else:
        assert answer["msg_type"] == "zwsx.merr" and answer["status"] == 403
        assert seen["closed_at"] == pytest.approx(3630.790, abs=1e-6) and peer.close_code == 1008
