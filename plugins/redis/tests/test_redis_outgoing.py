""" Named Redis outgoing connections (`self.out.redis[name].conn`) against real redis-server
processes: the shared conformance suite, plain and async services, $NAME fields and secrets,
wrong passwords through the admin API's ping, and definitions that cannot work. """

from __future__ import annotations

import textwrap
import uuid

import httpx
import redis
import pytest
import trio

from zato.odb import ODB, sqlite_url
from zato.testing import admin_auth, create_test_server_dir, run_server
from zato.testing.conformance import OutgoingConnectionConformance
from zato_plugin_redis.connection import RedisConnection
from zato_plugin_redis.testing import RedisServer

from redis_fixtures import PASSWORD, client_ids, redis_server, redis_with_password, start_redis, \
    wait_until_gone  # noqa: F401 (fixtures)


class RedisPeer:
    """ The conformance suite's `Peer`: a redis-server with a password, stopped and started
    again on the same port. Connections are checked on the server itself: which clients are
    connected (CLIENT LIST) and which database a write went to. """

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.seen: dict[int, set[int]] = {}  # id(connection) -> Redis client ids it used

    def definition(self, name: str) -> dict:
        return {"host": "127.0.0.1", "port": self.server.port, "db": 0, "socket_timeout": 2}

    def secrets(self) -> dict:
        return {"password": PASSWORD}

    def use(self, connection: RedisConnection) -> None:
        key, value = f"conformance.{uuid.uuid4().hex}", uuid.uuid4().hex
        assert connection.conn.set(key, value) is True
        assert connection.conn.get(key) == value
        self.seen.setdefault(id(connection), set()).add(connection.conn.client_id())

    def edited(self, definition: dict) -> dict:
        return {**definition, "db": 1}

    def check_edit(self, connection: RedisConnection) -> None:
        key = f"edited.{uuid.uuid4().hex}"
        connection.conn.set(key, "in db 1")
        assert self.server.client(db=1).get(key) == "in db 1"
        assert self.server.client(db=0).get(key) is None

    def assert_closed(self, connection: RedisConnection) -> None:
        assert connection.closed
        wait_until_gone(self.server, self.seen.get(id(connection), set()))

    def bad_definitions(self) -> list:
        return [({"port": 6379}, "host"), ({"host": "127.0.0.1", "port": "six"}, "port"),
                ({"host": "127.0.0.1", "db": "first"}, "db"),
                ({"host": "127.0.0.1", "socket_timeout": "soon"}, "socket_timeout"),
                ({"host": "127.0.0.1", "use_tls": "perhaps"}, "use_tls"),
                ({"host": "127.0.0.1", "password": "in the body"}, "password")]

    async def stop(self) -> None:
        await trio.to_thread.run_sync(self.server.stop)

    async def start(self) -> None:
        await trio.to_thread.run_sync(self.server.start)


@pytest.fixture
def peer():
    server = start_redis(password=PASSWORD)
    yield RedisPeer(server)
    server.close()


class TestRedisConformance(OutgoingConnectionConformance):
    connection_type = "redis"
    object_type = "outgoing_redis"


# ################################################################################################

SERVICES = '''
from zato.server.service import Service


class SyncCache(Service):
    name = "t.redis.out.sync"

    def handle(self):
        conn = self.out.redis["cache"].conn
        conn.hset("user:1", mapping={"name": "Ann", "city": "Oslo"})
        self.response.payload = {"user": conn.hgetall("user:1"), "via_get": self.outgoing.redis.get("cache").conn.hget("user:1", "name")}


class AsyncCache(Service):
    name = "t.redis.out.async"

    async def handle(self):
        cache = self.out.redis["cache"]
        await cache.run(lambda conn: conn.rpush("queue", "a", "b"))
        self.response.payload = {"queue": await cache.run(lambda conn: conn.lrange("queue", 0, -1))}


class Raw(Service):
    name = "t.redis.out.raw"

    def handle(self):
        conn = self.out.redis["raw"].conn
        conn.set("k", "v")
        self.response.payload = {"type": type(conn.get("k")).__name__}
'''


def put_objects(server_dir, *objects):
    odb = ODB(sqlite_url(server_dir / "work" / "zato.db"))
    for object_type, name, data in objects:
        data = dict(data)
        odb.put_object(object_type, name, data, is_active=data.pop("is_active", True))
    odb.close()


async def test_services_use_named_connections_with_env_fields_and_an_env_secret(tmp_path, redis_with_password,
                                                                                monkeypatch):
    monkeypatch.setenv("ZATO_TEST_REDIS_PORT", str(redis_with_password.port))
    monkeypatch.setenv("ZATO_TEST_REDIS_PASSWORD", PASSWORD)
    base_dir = create_test_server_dir(tmp_path / "server", main={"graceful_timeout": 1})
    (base_dir / "pickup" / "redis_out_services.py").write_text(textwrap.dedent(SERVICES))
    port = "$ZATO_TEST_REDIS_PORT"
    put_objects(base_dir,
                ("outgoing_redis", "cache", {"host": "127.0.0.1", "port": port, "db": 2,
                                             "password": "$ZATO_TEST_REDIS_PASSWORD"}),
                ("outgoing_redis", "raw", {"host": "127.0.0.1", "port": port, "decode_responses": False,
                                           "password": "$ZATO_TEST_REDIS_PASSWORD"}))
    async with run_server(base_dir) as server:
        assert await server.invoke("t.redis.out.sync", {}) == {"user": {"name": "Ann", "city": "Oslo"}, "via_get": "Ann"}
        assert await server.invoke("t.redis.out.async", {}) == {"queue": ["a", "b"]}
        assert await server.invoke("t.redis.out.raw", {}) == {"type": "bytes"}
    assert redis_with_password.client(db=2).hgetall("user:1") == {"name": "Ann", "city": "Oslo"}
    assert redis_with_password.client(db=0).get("k") == "v"


async def test_ping_explains_a_wrong_password_without_showing_it(tmp_path, redis_with_password):
    base_dir = create_test_server_dir(tmp_path / "server")
    async with run_server(base_dir) as server:
        async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                                     headers={"content-type": "application/json"}) as admin:  # admin writes need it
            reply = await admin.post("/zato/api/objects/outgoing_redis",
                                     json={"name": "my cache", "host": "127.0.0.1", "port": redis_with_password.port})
            assert reply.status_code == 201, reply.text
            ping = (await admin.post("/zato/api/outgoing/redis/my%20cache/ping")).json()
            assert not ping["ok"]
            assert "Redis requires a password and none is set; set it with PUT " \
                   "/zato/api/objects/outgoing_redis/my%20cache/secrets/password" in ping["error"], ping
            reply = await admin.put("/zato/api/objects/outgoing_redis/my%20cache/secrets/password",
                                    json={"value": "wrong-password"})
            assert reply.status_code == 204, reply.text
            ping = (await admin.post("/zato/api/outgoing/redis/my%20cache/ping")).json()
            assert not ping["ok"] and ping["error"].startswith("AuthenticationError: self.out.redis['my cache']: ")
            assert "Redis refused the password" in ping["error"] and "wrong-password" not in ping["error"], ping
            listed = (await admin.get("/zato/api/objects/outgoing_redis/my%20cache")).json()
            assert listed["secrets_set"] == ["password"] and "wrong-password" not in str(listed)
            reply = await admin.put("/zato/api/objects/outgoing_redis/my%20cache/secrets/password",
                                    json={"value": PASSWORD})
            assert (await admin.post("/zato/api/outgoing/redis/my%20cache/ping")).json()["ok"]
    log = (base_dir / "logs" / "server.log").read_text() if (base_dir / "logs" / "server.log").exists() else ""
    assert "wrong-password" not in log and PASSWORD not in log


async def test_definitions_that_cannot_work_are_not_built_and_say_why(tmp_path, redis_server):
    base_dir = create_test_server_dir(tmp_path / "server")
    put_objects(base_dir, ("outgoing_redis", "far port", {"host": "127.0.0.1", "port": 70000}),
                ("outgoing_redis", "negative db", {"host": "127.0.0.1", "port": redis_server.port, "db": -1}),
                ("outgoing_redis", "no ca", {"host": "127.0.0.1", "port": redis_server.port, "use_tls": True,
                                             "tls_ca_file": str(tmp_path / "nowhere.pem")}),
                ("outgoing_redis", "fine", {"host": "127.0.0.1", "port": redis_server.port}))
    async with run_server(base_dir) as server:
        errors = server.outgoing_connections.errors
        assert "port = 70000 is not a TCP port (1-65535)" in errors[("redis", "far port")]
        assert "db = -1 is not a database number (0 or more)" in errors[("redis", "negative db")]
        assert "nowhere.pem' is not a file" in errors[("redis", "no ca")]
        connections = server.outgoing.map("out.redis")
        assert connections.names() == ["fine"]
        with pytest.raises(LookupError, match=r"no outgoing connection 'far port' in out.redis; known: 'fine'"):
            connections["far port"]
        assert (await server.outgoing_connections.ping("redis", "fine"))["ok"]


async def test_an_inactive_definition_is_not_connected(tmp_path, redis_server):
    base_dir = create_test_server_dir(tmp_path / "server")
    put_objects(base_dir, ("outgoing_redis", "off", {"host": "127.0.0.1", "port": redis_server.port,
                                                     "is_active": False}))
    before = await trio.to_thread.run_sync(client_ids, redis_server)
    async with run_server(base_dir) as server:
        assert "off" not in server.outgoing.map("out.redis")
    assert await trio.to_thread.run_sync(client_ids, redis_server) == before


async def test_an_acl_user_with_its_password_and_with_a_wrong_one(tmp_path, redis_with_password, monkeypatch):
    redis_with_password.client().acl_setuser("app", enabled=True, passwords=["+app-password"], keys=["app:*"],
                                             commands=["+@all"])
    monkeypatch.setenv("ZATO_TEST_APP_PASSWORD", "app-password")
    base_dir = create_test_server_dir(tmp_path / "server")
    app = {"host": "127.0.0.1", "port": redis_with_password.port, "username": "app"}
    put_objects(base_dir, ("outgoing_redis", "app", {**app, "password": "$ZATO_TEST_APP_PASSWORD"}),
                ("outgoing_redis", "app wrong", {**app, "password": "not-it"}))
    async with run_server(base_dir) as server:
        connections = server.outgoing.map("out.redis")
        await connections["app"].run(lambda conn: conn.set("app:greeting", "hello"))
        with pytest.raises(redis.ResponseError, match="no permissions"):  # the ACL applies: app:* keys only
            await connections["app"].run(lambda conn: conn.set("other", "x"))
        ping = await server.outgoing_connections.ping("redis", "app wrong")
        assert "Redis refused the username and password; check them" in ping["error"] and "not-it" not in ping["error"]
    assert redis_with_password.client().get("app:greeting") == "hello"
