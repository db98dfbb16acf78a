""" `self.kvdb.conn`: the server's Redis from [kvdb] in server.conf, against real redis-server
processes: $NAME values, plain and async services, AUTH, an outage, a Unix socket, TLS, bad
config, [kvdb] enabled = False and closing at shutdown. """

from __future__ import annotations

import textwrap
from types import SimpleNamespace

import pytest
import redis
import trio

from zato.config import ConfigError
from zato.server.service import Service
from zato.server.startup_callable import StartupError
from zato.testing import create_test_server_dir, run_server, set_config_value
from zato_plugin_redis import KVDB
from zato_plugin_redis.connection import BlockingCallError, KVDBDisabledError, RedisConnection

from redis_fixtures import PASSWORD, client_ids, eventually, redis_server, redis_with_password, start_redis, \
    wait_until_gone  # noqa: F401 (fixtures)

SERVICES = '''
from zato.server.service import Service


class SyncData(Service):
    """ As in the scheduler article: the data goes to Redis through self.kvdb.conn. """
    name = "t.redis.sync"

    def handle(self):
        data = self.request.payload["data"]
        self.kvdb.conn.set("sync.data", data)
        self.response.payload = {"stored": self.kvdb.conn.get("sync.data")}


class AsyncRead(Service):
    name = "t.redis.async"

    async def handle(self):
        value = await self.kvdb.run(lambda conn: conn.get("sync.data"))
        counter = await self.kvdb.run(lambda conn, key: conn.incrby(key, 5), "t.counter")
        self.response.payload = {"value": value, "counter": counter}


class AsyncBlocking(Service):
    name = "t.redis.async-blocking"

    async def handle(self):
        self.kvdb.conn.get("sync.data")
'''


def make_server_dir(tmp_path, **kvdb):
    base_dir = create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 1})
    (base_dir / "pickup" / "kvdb_services.py").write_text(textwrap.dedent(SERVICES))
    for key, value in kvdb.items():
        set_config_value(base_dir, "kvdb", key, value)
    return base_dir


async def test_kvdb_from_server_conf_with_env_values_in_a_plain_service(tmp_path, redis_with_password, monkeypatch):
    monkeypatch.setenv("ZATO_TEST_REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("ZATO_TEST_REDIS_PORT", str(redis_with_password.port))
    monkeypatch.setenv("ZATO_TEST_REDIS_PASSWORD", PASSWORD)
    base_dir = make_server_dir(tmp_path, host="$ZATO_TEST_REDIS_HOST", port="$ZATO_TEST_REDIS_PORT", db=3,
                               password="$ZATO_TEST_REDIS_PASSWORD")
    async with run_server(base_dir) as server:
        assert server.config.kvdb.port == redis_with_password.port  # typed by the plugin's declaration
        result = await server.invoke("t.redis.sync", {"data": "new data, ünïcode"})
        assert result == {"stored": "new data, ünïcode"}  # text, as decode_responses = True
    assert redis_with_password.client(db=3).get("sync.data") == "new data, ünïcode"
    assert redis_with_password.client(db=0).get("sync.data") is None  # db 3 it is


async def test_an_async_service_uses_run_and_a_blocking_call_is_refused(tmp_path, redis_server):
    base_dir = make_server_dir(tmp_path, port=redis_server.port)
    redis_server.client().set("sync.data", "from outside")
    async with run_server(base_dir) as server:
        assert await server.invoke("t.redis.async", {}) == {"value": "from outside", "counter": 5}
        assert (await server.invoke("t.redis.async", {}))["counter"] == 10
        with pytest.raises(BlockingCallError, match=r"self\.kvdb\.conn blocks, and this is an async def handle on the "
                                                    r"trio loop; .*"
                                                    r"await self\.kvdb\.run\(lambda conn: conn\.get\('key'\)\)"):
            await server.invoke("t.redis.async-blocking", {})
    assert redis_server.client().get("t.counter") == "10"


async def test_auth_with_a_wrong_password_and_with_none(tmp_path, redis_with_password):
    port = redis_with_password.port
    base_dir = make_server_dir(tmp_path, port=port, password="not-the-password")
    conf = str(base_dir / "config" / "server.conf")
    async with run_server(base_dir) as server:
        with pytest.raises(redis.AuthenticationError) as info:
            await server.invoke("t.redis.sync", {"data": "x"})
        message = str(info.value)
        assert message.startswith(f"self.kvdb: redis://127.0.0.1:{port} db 0: ")
        assert f"Redis refused the password; check it (set [kvdb] password in {conf}" in message
        assert "not-the-password" not in message  # never shown
    set_config_value(base_dir, "kvdb", "password", "")
    async with run_server(base_dir) as server:
        with pytest.raises(redis.AuthenticationError, match=r"Redis requires a password and none is set; set \[kvdb\] "
                                                            r"password in .*server\.conf"):
            await server.invoke("t.redis.sync", {"data": "x"})
    set_config_value(base_dir, "kvdb", "password", PASSWORD)
    async with run_server(base_dir) as server:
        assert await server.invoke("t.redis.sync", {"data": "x"}) == {"stored": "x"}


async def test_redis_going_away_and_coming_back(tmp_path):
    redis_server = start_redis()
    try:
        base_dir = make_server_dir(tmp_path, port=redis_server.port)
        async with run_server(base_dir) as server:
            kvdb = KVDB.get(server)
            assert await server.invoke("t.redis.sync", {"data": "before"}) == {"stored": "before"}
            await trio.to_thread.run_sync(redis_server.stop)
            with pytest.raises(redis.ConnectionError, match=rf"self\.kvdb: redis://127\.0\.0\.1:{redis_server.port} "
                                                            r"db 0: .*is Redis running there and reachable"):
                await server.invoke("t.redis.sync", {"data": "during"})
            with pytest.raises(redis.ConnectionError):
                await trio.to_thread.run_sync(kvdb.ping)
            await trio.to_thread.run_sync(redis_server.start)
            await trio.to_thread.run_sync(eventually, kvdb.ping)
            assert await server.invoke("t.redis.sync", {"data": "after"}) == {"stored": "after"}
    finally:
        redis_server.close()


async def test_unix_socket(tmp_path):
    redis_server = start_redis(unix_socket=True)
    try:
        base_dir = make_server_dir(tmp_path, unix_socket_path=redis_server.unix_socket_path, port=1)
        async with run_server(base_dir) as server:
            assert KVDB.get(server).address == f"unix socket {redis_server.unix_socket_path} db 0"
            assert await server.invoke("t.redis.sync", {"data": "via socket"}) == {"stored": "via socket"}
        assert redis_server.client().get("sync.data") == "via socket"
    finally:
        redis_server.close()


async def test_tls_with_a_ca_file_and_refused_without_it(tmp_path):
    redis_server = start_redis(tls=True)
    try:
        base_dir = make_server_dir(tmp_path, port=redis_server.port, use_tls=True, tls_ca_file=redis_server.ca_file)
        async with run_server(base_dir) as server:
            assert KVDB.get(server).address.startswith("rediss://127.0.0.1:")
            assert await server.invoke("t.redis.sync", {"data": "over tls"}) == {"stored": "over tls"}
        assert redis_server.client().get("sync.data") == "over tls"

        set_config_value(base_dir, "kvdb", "tls_ca_file", "")  # the system's authorities do not know this one
        async with run_server(base_dir) as server:
            with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
                await server.invoke("t.redis.sync", {"data": "x"})

        set_config_value(base_dir, "kvdb", "use_tls", False)  # plain text to a TLS port gets no answer
        set_config_value(base_dir, "kvdb", "socket_timeout", 0.5)
        async with run_server(base_dir) as server:
            with pytest.raises(redis.RedisError, match=r"self\.kvdb: redis://"):
                await server.invoke("t.redis.sync", {"data": "x"})
    finally:
        redis_server.close()


async def test_bad_kvdb_config_stops_start_up_naming_the_key(tmp_path):
    base_dir = make_server_dir(tmp_path, port=70000)
    with pytest.raises(ConfigError, match=r"server\.conf: \[kvdb\] port = '70000': too large; allowed: an integer "
                                          r"from 1 to 65535"):
        async with run_server(base_dir):
            pass
    set_config_value(base_dir, "kvdb", "port", 6379)
    set_config_value(base_dir, "kvdb", "tls_ca_file", str(tmp_path / "missing.pem"))
    set_config_value(base_dir, "kvdb", "use_tls", True)
    with pytest.raises(StartupError, match=r"tls_ca_file = '.*missing\.pem' is not a file"):
        async with run_server(base_dir):
            pass


async def test_kvdb_switched_off_says_how_to_switch_it_on(tmp_path, redis_server):
    base_dir = make_server_dir(tmp_path, port=redis_server.port, enabled=False)
    before = await trio.to_thread.run_sync(client_ids, redis_server)
    async with run_server(base_dir) as server:
        with pytest.raises(KVDBDisabledError, match=r"self\.kvdb is switched off: \[kvdb\] enabled = False in "
                                                    r".*server\.conf; set enabled = True there"):
            await server.invoke("t.redis.sync", {"data": "x"})
        assert not isinstance(KVDB.get(server), RedisConnection)
        assert await trio.to_thread.run_sync(client_ids, redis_server) == before  # nothing connected


async def test_nothing_connects_at_start_up_and_the_kvdb_closes_at_shutdown(tmp_path, redis_server):
    base_dir = make_server_dir(tmp_path, port=redis_server.port)
    before = await trio.to_thread.run_sync(client_ids, redis_server)
    async with run_server(base_dir) as server:
        kvdb = KVDB.get(server)
        assert await trio.to_thread.run_sync(client_ids, redis_server) == before  # lazy: no connection yet
        await server.invoke("t.redis.sync", {"data": "x"})
        used = await trio.to_thread.run_sync(client_ids, redis_server) - before
        assert used  # the pooled connection
    assert kvdb.closed
    await trio.to_thread.run_sync(wait_until_gone, redis_server, used)
    with pytest.raises(redis.ConnectionError, match=r"self\.kvdb .* was closed"):
        kvdb.conn.get("sync.data")


async def test_run_uses_at_most_its_own_threads(tmp_path, redis_server):
    """ 25 blocking calls at once through run(): 20 run (each holding a pooled connection, BLPOP
    on an empty list), 5 wait their turn; pushing 25 items lets all of them finish. """
    from zato_plugin_redis.connection import RUN_THREADS
    base_dir = make_server_dir(tmp_path, port=redis_server.port)
    async with run_server(base_dir) as server:
        kvdb = KVDB.get(server)
        popped = []

        async def pop():
            popped.append(await kvdb.run(lambda conn: conn.blpop("t.jobs", 4)))

        limiter = kvdb._calls.limiter()  # the one of this connection's run()
        async with trio.open_nursery() as nursery:
            for _ in range(RUN_THREADS + 5):
                nursery.start_soon(pop)
            with trio.fail_after(10):
                while limiter.borrowed_tokens < RUN_THREADS:
                    await trio.sleep(0.01)
            await trio.sleep(0.2)  # had the limit not held, more calls would have started by now
            assert limiter.borrowed_tokens == RUN_THREADS and limiter.statistics().tasks_waiting == 5
            await trio.to_thread.run_sync(lambda: redis_server.client().rpush("t.jobs", *range(RUN_THREADS + 5)))
        assert sorted(int(value) for _, value in popped) == list(range(RUN_THREADS + 5))


class SyncData(Service):
    name = "t.redis.tester.sync"

    def handle(self):
        self.kvdb.conn.set("sync.data", self.request.payload["data"])


def test_the_readme_way_with_the_service_tester(zato_service_tester, zato_invoke_sync, redis_server):
    zato_service_tester.set_kvdb(SimpleNamespace(conn=redis_server.client()))
    zato_invoke_sync(SyncData, {"data": "x"})
    assert redis_server.client().get("sync.data") == "x"
