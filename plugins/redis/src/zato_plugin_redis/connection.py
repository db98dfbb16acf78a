""" Redis connections as services use them: `self.kvdb` and `self.out.redis[name]` are each a
`RedisConnection`, whose `.conn` is a redis-py client (`ZatoRedis`, a `redis.Redis`).

* Plain services call `.conn` directly: they run in a worker thread.
* `async def` services call `await .run(fn, *args)`: `fn(conn, *args)` runs in a worker thread.
  Calling `.conn` from the trio loop itself raises `BlockingCallError` at once, rather than
  stopping every other request of the server while Redis answers.
* Nothing connects when a connection is built: redis-py connects on the first command and
  reconnects on a later one after Redis went away (a command on a broken pooled connection is
  retried twice on a new one, 50-250 ms apart, then fails).
* Errors stay redis-py's exceptions (`redis.ConnectionError`, `redis.AuthenticationError`,
  `redis.TimeoutError`), their messages extended with which connection it was, where it is
  configured and what to check.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from typing import Any, Callable, Mapping

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from zato.plugin_api import BlockingCallError, BlockingCalls, secret_call, setting_number  # noqa: F401 (BlockingCallError: raised from here)

logger = logging.getLogger("zato.redis")

DEFAULTS = {"port": 6379, "db": 0, "socket_timeout": 5.0}  # for fields a stored object does not have
RETRIES = 2  # a command on a broken connection is tried on a new one this many times more
BACKOFF_BASE = 0.05
BACKOFF_CAP = 0.25
RUN_THREADS = 20  # worker threads one connection's run() may use at once


class KVDBDisabledError(AttributeError):
    """ `self.kvdb` was used on a server whose `[kvdb] enabled` is False. """


class ZatoRedis(redis.Redis):
    """ A `redis.Redis` that refuses to block the trio loop, refuses calls once its connection
    was closed, and says in its errors which connection failed and what to check. """

    _zato_connection: "RedisConnection | None" = None

    def execute_command(self, *args: Any, **options: Any) -> Any:
        connection = self._zato_connection
        if connection is not None:
            connection.check_usable()
        try:
            return super().execute_command(*args, **options)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if connection is not None:
                connection.explain(exc)
            raise


class RedisConnection:
    """ One Redis client with its settings: `.conn` (the redis-py client), `.run(fn, *args)` for
    async services, `.ping()` and `.close()` for the server. """

    def __init__(self, settings: Mapping[str, Any], *, accessor: str, where: str, password_hint: str) -> None:
        """ `accessor`: how services reach it (`self.kvdb`); `where`: where it is configured;
        `password_hint`: how to set its password. """
        self.accessor = accessor
        self.where = where
        self.password_hint = password_hint
        options = redis_options(settings, f"{accessor} ({where})")
        self.address = (f"unix socket {options['unix_socket_path']}" if options.get("unix_socket_path") else
                        f"{'rediss' if options.get('ssl') else 'redis'}://{options['host']}:{options['port']}")
        self.address += f" db {options['db']}"
        self.username = options.get("username") or ""
        self.has_password = bool(options.get("password"))
        self.socket_timeout = options["socket_timeout"]
        self.closed = False
        self._calls = BlockingCalls(accessor, threads=RUN_THREADS)  # run()'s worker threads
        self.conn = ZatoRedis(**options)
        self.conn._zato_connection = self

    # ############################################################################################

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """ For `async def` services: `value = await self.kvdb.run(lambda conn: conn.get("key"))`.
        `fn(conn, *args)` runs in a worker thread; its result (or exception) is returned. At most
        `RUN_THREADS` calls of one connection run at once (a slow Redis ties up its own threads,
        not everybody's); the others wait their turn. From a plain `def handle` it calls
        `fn(conn, *args)` at once, in the service's own thread. """
        return self._calls.call(partial(fn, self.conn, *args))

    def ping(self) -> None:
        """ PING: raises (with the reason) unless Redis answers, authenticated. """
        self.conn.ping()

    def close(self) -> None:
        """ Disconnects every pooled connection; later calls are refused. """
        self.closed = True
        self.conn.connection_pool.disconnect()
        logger.info("%s (%s) closed", self.accessor, self.address)

    # ############################################################################################

    def check_usable(self) -> None:
        if self.closed:
            raise redis.ConnectionError(
                f"{self.accessor} ({self.address}) was closed (its definition was edited or deleted, or the server "
                f"is stopping); get the connection again through {self.accessor} for each use, do not keep it")
        self._calls.refuse_on_loop(
            f"{self.accessor}.conn", f"called here it would stop the whole server while Redis answers; use "
            f"`await {self.accessor}.run(lambda conn: conn.get('key'))`, which runs it in a worker thread, or make "
            f"handle a plain def")

    def explain(self, exc: BaseException) -> None:
        """ Extends a redis-py error's message (in place: its type stays) with which connection
        failed and what to check. """
        reason = str(exc)
        if reason.startswith(f"{self.accessor}: "):  # explained already (a nested call)
            return
        if isinstance(exc, redis.AuthenticationError):
            if self.has_password:
                what = "username and password; check them" if self.username else "password; check it"
                hint = f"Redis refused the {what} ({self.password_hint})"
            else:
                hint = f"Redis requires a password and none is set; {self.password_hint}"
        elif isinstance(exc, redis.TimeoutError):
            hint = f"no answer within socket_timeout = {self.socket_timeout} s"
        else:
            hint = "is Redis running there and reachable from this server?"
        exc.args = (f"{self.accessor}: {self.address}: {reason} - {hint} (configured in {self.where})",)

    def __repr__(self) -> str:
        return f"<RedisConnection {self.accessor} {self.address}{' closed' if self.closed else ''}>"


class DisabledKVDB:
    """ What `self.kvdb` is when `[kvdb] enabled = False`: any use says how to switch it on. """

    def __init__(self, server_conf: str) -> None:
        self._message = (f"self.kvdb is switched off: [kvdb] enabled = False in {server_conf}; set enabled = True "
                         f"there, with the host, port, db and password of your Redis, and restart the server")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise KVDBDisabledError(self._message)

    def __repr__(self) -> str:
        return "<self.kvdb switched off: [kvdb] enabled = False>"


# ################################################################################################


def redis_options(settings: Mapping[str, Any], where: str) -> dict[str, Any]:
    """ redis-py's client options from our settings ([kvdb] or an `outgoing_redis` object);
    a value that cannot work raises ValueError naming the field. """
    def number(field: str, kind: type, check: Callable[[Any], bool], expected: str) -> Any:
        return setting_number(settings, field, kind, kind(DEFAULTS[field]), check=check, expected=expected,
                              where=where)

    host = str(settings.get("host") or "").strip()
    unix_socket_path = str(settings.get("unix_socket_path") or "").strip()
    if not host and not unix_socket_path:
        raise ValueError(f"{where}: host is empty; give the host name or address of the Redis server")
    options: dict[str, Any] = {
        "host": host or "127.0.0.1",
        "port": number("port", int, lambda v: 0 < v < 65536, "a TCP port (1-65535)"),
        "db": number("db", int, lambda v: v >= 0, "a database number (0 or more)"),
        "socket_timeout": number("socket_timeout", float, lambda v: v > 0, "a number of seconds above 0"),
        "decode_responses": settings.get("decode_responses") is not False,
        "retry": Retry(ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), RETRIES,
                       supported_errors=(redis.ConnectionError,)),
    }
    options["socket_connect_timeout"] = options["socket_timeout"]
    if settings.get("username"):
        options["username"] = str(settings["username"])
    if settings.get("password"):
        options["password"] = str(settings["password"])
    if unix_socket_path:
        options["unix_socket_path"] = unix_socket_path
        if settings.get("use_tls"):
            raise ValueError(f"{where}: use_tls = True does not go with unix_socket_path; use one or the other")
    elif settings.get("use_tls"):
        verify = settings.get("tls_verify") is not False
        ca_file = str(settings.get("tls_ca_file") or "").strip()
        if ca_file and not os.path.isfile(ca_file):
            raise ValueError(f"{where}: tls_ca_file = {ca_file!r} is not a file; give a PEM file of the certificate "
                             f"authorities to trust, or leave it empty to trust the system's")
        options.update(ssl=True, ssl_cert_reqs="required" if verify else "none", ssl_check_hostname=verify)
        if ca_file:
            options["ssl_ca_certs"] = ca_file
    return options


def create_kvdb(server: Any) -> RedisConnection | DisabledKVDB:
    """ `self.kvdb` from `[kvdb]` in server.conf (blocking: runs in a worker thread). """
    config = server.config.get("kvdb") or {}
    server_conf = str(server.paths.server_conf)
    if not config.get("enabled", True):
        logger.info("self.kvdb is switched off ([kvdb] enabled = False)")
        return DisabledKVDB(server_conf)
    kvdb = RedisConnection(config, accessor="self.kvdb", where=f"[kvdb] in {server_conf}",
                           password_hint=f"set [kvdb] password in {server_conf} (it may be $NAME)")
    logger.info("self.kvdb.conn is Redis at %s%s (from [kvdb]; it connects on first use)", kvdb.address,
                " with a password" if kvdb.has_password else "")
    return kvdb


def create_outgoing(server: Any, definition: Mapping[str, Any]) -> RedisConnection:
    """ `self.out.redis[name]` from an `outgoing_redis` object (blocking: runs in a worker thread). """
    name = definition["name"]
    quoted = name.replace("'", "\\'")
    return RedisConnection(
        definition, accessor=f"self.out.redis['{quoted}']", where=f"outgoing_redis {name!r}",
        password_hint=f"set it with {secret_call('outgoing_redis', name, 'password')}")


