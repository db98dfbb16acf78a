""" The `redis` plugin: Redis for services, on redis-py.

* `self.kvdb.conn` - the server's own Redis, configured in server.conf (`[kvdb]`), as in Zato:
  a `redis.Redis` client. Nothing connects at start-up: a server with no Redis starts and
  serves; a service that uses `self.kvdb` gets an error naming `[kvdb]` and the file.
* `self.out.redis[name].conn` - named Redis outgoing connections (object type
  `outgoing_redis`, through the admin API or enmasse; the password is a secret).

Plain services call the client directly (they run in a worker thread); `async def` services
use `await self.kvdb.run(lambda conn: conn.get("key"))`, which runs the call in a worker
thread (redis-py's asyncio client does not run under trio).

This module is imported at every start of a server that enables the plugin, so it stays light:
redis-py is imported in a worker thread when the first client is built.
"""

from __future__ import annotations

from typing import Any

from zato.plugin_api import (
    SERVER_STARTUP, Connector, Field, ObjectType, OutgoingConnectionType, PluginState, Setting, ZatoSpelling, hookimpl,
)

PHASE = SERVER_STARTUP.PHASE

OBJECT_TYPE = "outgoing_redis"
CONNECTION_TYPE = "redis"
ACCESSOR = "out.redis"
KVDB_SECTION = "kvdb"

# The server's own Redis (self.kvdb): a RedisConnection, or a DisabledKVDB saying why there is none
KVDB = PluginState[Any]("redis.kvdb", missing="self.kvdb is not ready: the redis plugin has not started in this server")

# [kvdb] in server.conf: key -> default (its type is the key's type). README.md describes each.
KVDB_DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "host": "127.0.0.1",
    "port": 6379,
    "db": 0,
    "username": "",
    "password": "",
    "unix_socket_path": "",
    "socket_timeout": 5.0,
    "use_tls": False,
    "tls_ca_file": "",
    "tls_verify": True,
    "decode_responses": True,
}

OUTGOING_REDIS = ObjectType(OBJECT_TYPE, (
    Field("name", required=True, description="What services look the connection up by: self.out.redis[name] (or "
                                             "self.outgoing.redis.get(name))"),
    Field("host", required=True, description="Host name or address of the Redis server; may be $NAME",
          example="redis.example.com"),
    Field("port", "int", default=6379, description="TCP port, 1-65535; may be $NAME"),
    Field("db", "int", default=0, description="Database number (SELECT), 0 or more"),
    Field("username", default="", description="ACL user name; empty for the default user"),
    Field("password", secret=True, description="The password (AUTH); stored encrypted, or $NAME"),
    Field("socket_timeout", "float", default=5.0, minimum=0, description="Seconds to wait for a connection and for each reply"),
    Field("use_tls", "bool", default=False, description="Connect with TLS (rediss://)"),
    Field("tls_ca_file", default="", description="PEM file of the certificate authorities to trust; empty: the "
                                                 "system's"),
    Field("tls_verify", "bool", default=True, description="Verify the server's certificate and host name"),
    Field("decode_responses", "bool", default=True, description="Replies as text (str); False: as bytes"),
    Field("is_active", "bool", default=True, description="An inactive connection is not built"),
), description="A Redis outgoing connection: self.out.redis[name].conn is a redis-py client",
    zato=ZatoSpelling("outconn_redis", ignored=("id", "cluster_id", "use_redis_sentinels", "redis_sentinels",
                                                "redis_sentinels_master", "opaque1")))


@hookimpl
def register_server_config(register):
    allowed = {  # what each key allows beyond its type (README.md describes each)
        "port": Setting(KVDB_DEFAULTS["port"], minimum=1, maximum=65535),
        "db": Setting(KVDB_DEFAULTS["db"], minimum=0, maximum=1_000_000),
        "password": Setting(KVDB_DEFAULTS["password"], secret=True),
        "socket_timeout": Setting(KVDB_DEFAULTS["socket_timeout"], exclusive_minimum=0, maximum=3600),
    }
    register(KVDB_SECTION, {key: allowed.get(key, default) for key, default in KVDB_DEFAULTS.items()},
             doc="The server's Redis, self.kvdb.conn in services (zato-plugin-redis). enabled = False switches "
                 "self.kvdb off.")


@hookimpl
def register_connectors(register):
    register(Connector(OUTGOING_REDIS, OutgoingConnectionType(
        CONNECTION_TYPE, OBJECT_TYPE, ACCESSOR, create_outgoing, "Redis connections (redis-py clients)")))


def create_outgoing(server: Any, definition: dict[str, Any]) -> Any:
    """ Builds one named connection (the core calls this in a worker thread). """
    from zato_plugin_redis.connection import create_outgoing as create
    return create(server, definition)


@hookimpl
def startup_phase(phase, ctx):
    # IMPL_BEFORE_RUN: the server object exists; user start-up callables of every later phase
    # (and every service) find self.kvdb ready.
    if phase == PHASE.IMPL_BEFORE_RUN:
        return _start_kvdb(ctx.kwargs["server"])
    return None


async def _start_kvdb(server: Any) -> None:
    import trio

    from zato_plugin_redis.connection import create_kvdb
    KVDB.set(server, await trio.to_thread.run_sync(create_kvdb, server))


@hookimpl
def register_service_attributes(register):
    register("kvdb", _kvdb_of)


def _kvdb_of(service: Any) -> Any:
    kvdb = KVDB.get(service.server)
    if kvdb is None:
        raise AttributeError(KVDB.missing)
    return kvdb


@hookimpl
def shutdown(server):
    kvdb = KVDB.get(server)
    close = getattr(type(kvdb), "close", None)
    if close is None:
        return None
    import trio
    return trio.to_thread.run_sync(kvdb.close)
