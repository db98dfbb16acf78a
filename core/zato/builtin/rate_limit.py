""" The `rate_limit` plugin: API rate limits on REST channels, security definitions (users) and
services, per IP address or network, counted approximately (in each process's memory) or
exactly (shared by every process using the configuration database).

A definition is an ordered list of `SOURCE = LIMIT` lines (`parse_definition`): SOURCE is `*`,
an IPv4/IPv6 address or a CIDR network; LIMIT is `N/m`, `N/h`, `N/d` or `*` (no limit). The
first line matching the caller's address applies; an address no line matches is refused with
403. Objects carry the definition in four fields, as in Zato: `is_rate_limit_active`,
`rate_limit_type` (`APPROXIMATE` or `EXACT`), `rate_limit_def` and
`rate_limit_check_parent_def`. REST channels (`channel_rest`) and security definitions
(`security`) have them in their own schemas; services get them through this plugin's
`service_settings` objects, named after the service.

Checks run in the order security definition -> channel -> service (`RateLimits.check_http`,
called by the REST channel right after authentication, then `Server.invoke_service` for every
invocation of a service with limits, whatever the channel). A request refused by one check is
never counted by a later one. Over the limit: `RateLimitExceeded` (HTTP 429 with Zato's JSON
error body and the cid; the limit itself is only in the server log).

Counters live in rate limiter backends (the `register_rate_limiter_backends` hook):
`approximate` (`ApproximateLimiter`, a fixed-window counter per key in this process) and
`exact` (`DatabaseLimiter`, one row per key in the configuration database, changed by a
single atomic conditional UPDATE). Every backend counts fixed windows aligned to the epoch
(calendar minutes, hours and days in UTC). Counters are keyed by object, a digest of its
definition and the line number, so editing a definition starts new counters.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
from contextvars import ContextVar
from dataclasses import replace
from typing import Any, Callable

import trio
from sqlalchemy import (
    BigInteger, Column, Index, Integer, MetaData, String, Table, bindparam, case, delete, or_, update,
)

from zato import hookimpl
from zato.common import SERVER_STARTUP
from zato.config import as_bool
from zato.odb import InsertIgnoringConflicts, open_engine
from zato.plugins import await_maybe
from zato.common.rate_limiting import (
    ANY, APPROXIMATE, EXACT, RATE_LIMIT_FIELDS, RATE_LIMIT_TYPES, SYNTAX, UNITS, DefinitionError, LimitLine,
    check_rate_limit_fields as definition_problems, normalise_type, parse_definition,
)
from zato.registry import Field, ObjectType, RateLimiterBackend
from zato.server.http import HTTPError

logger = logging.getLogger("zato.rate_limit")

PLUGIN = "rate_limit"
SERVICE_SETTINGS = "service_settings"  # not "service": channels' `service` fields reference services by that name
CHANNEL_REST = "channel_rest"
SECURITY = "security"
LIMITED_TYPES = (SECURITY, CHANNEL_REST, SERVICE_SETTINGS)  # the order in which a request is checked

DEFAULT_FORWARDED_FOR = "X-Forwarded-For"
DEFAULT_PRUNE_INTERVAL = 60.0
ADDRESS_CACHE_SIZE = 4096  # addresses remembered per object (what line each matches)
EXACT_DB_THREADS = 8  # concurrent counter updates per worker (each holds one of the pool's connections)

# The caller's address, set by `RateLimits.check_http` for the service checks of the same request
# (a service invoked from that request's service included). None: not from HTTP (scheduler...).
caller_address: ContextVar[str | None] = ContextVar("zato_rate_limit_caller_address", default=None)


# ################################################################################################
# Errors callers see


class RateLimitError(HTTPError):
    """ A request refused by rate limiting. The HTTP reply names no limit; the log does. """


class RateLimitExceeded(RateLimitError):
    """ A limit was reached: HTTP 429. Services invoking a limited service get this exception. """

    def __init__(self, object_type: str, name: str, line: "LimitLine") -> None:
        super().__init__(429)
        self.object_type = object_type
        self.name = name
        self.line = line


RateLimitReached = RateLimitExceeded  # Zato's name (zato.common.rate_limiting.common.RateLimitReached)


class AddressNotAllowed(RateLimitError):
    """ No line of a definition matches the caller's address, or the definition cannot be used
    (invalid, or its backend is missing): HTTP 403. """

    def __init__(self, object_type: str, name: str, address: str | None) -> None:
        super().__init__(403)
        self.object_type = object_type
        self.name = name
        self.address = address


class RateLimitUnavailable(RateLimitError):
    """ The backend holding the counters failed (e.g. the database is down): HTTP 503. """

    def __init__(self) -> None:
        super().__init__(503)


# ################################################################################################
# Definitions
# The syntax of a definition and its checks are the core's (zato.common.rate_limiting), so an
# object's fields are checked the same way whether or not this plugin is loaded.


def unreachable_lines(lines: list[LimitLine]) -> list[tuple[LimitLine, LimitLine]]:
    """ (line, the earlier line that always matches first) for lines that can never apply. """
    found = []
    for index, line in enumerate(lines):
        for earlier in lines[:index]:
            if earlier.network is None or (line.network is not None and line.network.version ==
                                           earlier.network.version and line.network.subnet_of(earlier.network)):
                found.append((line, earlier))
                break
    return found


def definition_digest(data: dict[str, Any]) -> str:
    """ Identifies a definition's text and type: counters are keyed by it, so an edit resets them. """
    source = f"{normalise_type(data.get('rate_limit_type'))}\n{data.get('rate_limit_def') or ''}"
    return hashlib.blake2b(source.encode("utf-8"), digest_size=8).hexdigest()


# ################################################################################################
# Addresses


def parse_address(address: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """ An address as matched against definitions (IPv4-mapped IPv6 as IPv4), or None. """
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_forwarded_hop(hop: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """ One X-Forwarded-For entry: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1` or `[2001:db8::1]:80`. """
    hop = hop.strip()
    if hop.startswith("["):
        hop = hop[1:].split("]", 1)[0]
    elif hop.count(":") == 1:
        hop = hop.split(":", 1)[0]
    return parse_address(hop)


class AddressResolver:
    """ Which address a request counts against: the peer's, or - only when the peer is a
    trusted proxy - the client's as the X-Forwarded-For header (or the configured one) says.
    Walks that header from the right, over trusted proxies, to the first address that is not
    one; a malformed entry stops the walk at the last trusted hop. """

    def __init__(self, trusted_proxies: list[str], header: str = DEFAULT_FORWARDED_FOR) -> None:
        self.networks = []
        for entry in trusted_proxies:
            try:
                self.networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ValueError(f"[{PLUGIN}] trusted_proxies: {entry!r} is not an IP address or a CIDR network; "
                                 f"list them separated by commas, e.g. 127.0.0.1, 10.0.0.0/8") from None
        self.header = (header or DEFAULT_FORWARDED_FOR).strip().lower()
        self._header_bytes = self.header.encode("latin-1")
        self._trusted: dict[str, bool] = {}

    def is_trusted(self, address: str) -> bool:
        known = self._trusted.get(address)
        if known is None:
            ip = parse_address(address)
            known = ip is not None and any(ip in network for network in self.networks)
            if len(self._trusted) >= ADDRESS_CACHE_SIZE:
                self._trusted.clear()
            self._trusted[address] = known
        return known

    def address_of(self, request: Any) -> str | None:
        peer = request.client[0] if request.client else None
        if not self.networks or peer is None or not self.is_trusted(peer):
            return peer
        scope = request.scope
        if scope is not None:  # every header line, in order: a proxy may add its own line
            values = [value.decode("latin-1") for name, value in scope.get("headers", ()) if name == self._header_bytes]
        else:
            values = [request.headers[self.header]] if self.header in request.headers else []
        client = peer
        for hop in reversed([hop for value in values for hop in value.split(",")]):
            ip = parse_forwarded_hop(hop)
            if ip is None:
                break
            client = str(ip)
            if not self.is_trusted(client):
                break
        return client


# ################################################################################################
# Backends


class ApproximateLimiter:
    """ The `approximate` backend: a fixed-window counter per key in this process's memory.

    Exact within one process; a server with N workers (or N servers) counts in each of them, so
    up to N x the limit may pass in one window. As with every fixed window, a burst straddling
    a window's end may see up to twice the limit within one window's length. """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._counters: dict[str, list[float]] = {}  # key -> [window start, window end, hits]

    async def hit(self, key: str, limit: int, window_seconds: int) -> bool:
        return self.hit_nowait(key, limit, window_seconds)

    def hit_nowait(self, key: str, limit: int, window_seconds: int) -> bool:
        """ `hit` without a coroutine: it never waits for anything. """
        now = self.clock()
        counter = self._counters.get(key)
        if counter is not None and counter[0] <= now < counter[1]:
            if counter[2] >= limit:
                return False
            counter[2] += 1
            return True
        if limit < 1:
            return False
        start = now - now % window_seconds
        self._counters[key] = [start, start + window_seconds, 1]
        return True

    async def prune(self) -> int:
        """ Forgets counters whose window is over; returns how many. """
        now = self.clock()
        stale = [key for key, counter in self._counters.items() if counter[1] <= now]
        for key in stale:
            del self._counters[key]
        return len(stale)

    def statistics(self) -> dict[str, int]:
        return {"counters": len(self._counters)}


counters_metadata = MetaData()

# Created by the `rate_limit` migration branch (zato/builtin/migrations/rate_limit).
counters_table = Table(
    "zato_rate_limit_counter", counters_metadata,
    Column("key", String(1000), primary_key=True),  # object type, name, definition digest, line
    Column("window_start", BigInteger, nullable=False),  # epoch seconds
    Column("hits", Integer, nullable=False),
    Column("expires_at", BigInteger, nullable=False),  # window_start + window length: pruned after that
    Index("ix_zato_rate_limit_counter_expires_at", "expires_at"),
)


class DatabaseLimiter:
    """ The `exact` backend: one row per key in the configuration database (SQLite or
    PostgreSQL), shared by every worker and every server using that database.

    One hit is one transaction: `UPDATE ... SET hits = hits + 1 (or 1 in a new window) WHERE
    key = :key AND (window_start <> :start OR hits < :limit)`. The database serialises updates of
    a row (SQLite: one writer at a time; PostgreSQL: a row lock, and the WHERE re-checked on the
    row's newest version), so the limit is never exceeded, not by one request. A key without a
    row yet is inserted (`ON CONFLICT DO NOTHING`), then updated if someone else inserted it
    first. Calls are blocking: they run in worker threads, at most `EXACT_DB_THREADS` at once.

    On SQLite the counters' connections use `synchronous = NORMAL` (WAL): a commit is not
    flushed to disk each time, which loses no counter when the process dies, only when the
    machine does. """

    def __init__(self, url: str, clock: Callable[[], float] = time.time, threads: int = EXACT_DB_THREADS) -> None:
        self.url = url
        self.clock = clock
        self.engine = open_engine(url, synchronous="NORMAL")
        self.threads = trio.CapacityLimiter(threads)
        self._count_one = _count_one_statement(self.engine.dialect.update_returning)
        self._insert_new = InsertIgnoringConflicts(self.engine.dialect, counters_table, (counters_table.c.key,),
                                                   conflict_on=("key",))

    async def hit(self, key: str, limit: int, window_seconds: int) -> bool:
        return await trio.to_thread.run_sync(self.hit_blocking, key, limit, window_seconds, limiter=self.threads)

    def hit_blocking(self, key: str, limit: int, window_seconds: int) -> bool:
        if limit < 1:
            return False
        now = self.clock()
        start = int(now // window_seconds) * window_seconds
        end = start + window_seconds
        counted = {"counter": key, "start": start, "end": end, "limit": limit}
        with self.engine.begin() as conn:
            if self._count_one(conn, counted):
                return True
            if self._insert_new(conn, [{"key": key, "window_start": start, "hits": 1, "expires_at": end}]):
                return True
            # someone inserted the row between our update and insert: count against it
            return self._count_one(conn, counted)

    async def prune(self) -> int:
        """ Deletes counters whose window is over; returns how many. """
        return await trio.to_thread.run_sync(self.prune_blocking, limiter=self.threads)

    def prune_blocking(self) -> int:
        with self.engine.begin() as conn:
            return conn.execute(delete(counters_table).where(counters_table.c.expires_at <= self.clock())).rowcount

    def close(self) -> None:
        self.engine.dispose()


def _count_one_statement(returning: bool) -> Callable[[Any, dict[str, Any]], bool]:
    """ count(conn, {counter, start, end, limit}) -> True if one request was counted: +1 in the
    current window while under the limit, or 1 in a new window. Built once, so it is compiled once
    and reused with new values. """
    table = counters_table
    statement = update(table).where(
        table.c.key == bindparam("counter"),
        or_(table.c.window_start != bindparam("start"), table.c.hits < bindparam("limit")),
    ).values(hits=case((table.c.window_start == bindparam("start"), table.c.hits + 1), else_=1),
             window_start=bindparam("start"), expires_at=bindparam("end"))
    if returning:  # psycopg does not always set rowcount: RETURNING says for sure
        statement = statement.returning(table.c.hits)

        def count_returning(conn: Any, values: dict[str, Any]) -> bool:
            return conn.execute(statement, values).first() is not None
        return count_returning

    def count_rowcount(conn: Any, values: dict[str, Any]) -> bool:
        return conn.execute(statement, values).rowcount == 1
    return count_rowcount




def create_approximate(server: Any) -> ApproximateLimiter:
    return ApproximateLimiter()


def create_exact(server: Any) -> DatabaseLimiter:
    return DatabaseLimiter(server.odb.url)


# ################################################################################################
# One object's limits


class ObjectLimits:
    """ The compiled limits of one object: its lines (each with its counter key), the backend
    that counts them, and which line each address seen so far matches. An object whose
    definition cannot be used (`problem`) refuses every request with 403.

    `check` is on every request's path: nothing is formatted unless a request is refused, and a
    backend with a synchronous `hit_nowait` (in this process's memory) is called without a
    coroutine. """

    __slots__ = ("object_type", "name", "kind", "backend_name", "backend", "lines", "problem", "_matches",
                 "_hit_nowait")

    def __init__(self, object_type: str, name: str, kind: str, backend_name: str, backend: Any,
                 lines: list[LimitLine], problem: str | None = None) -> None:
        self.object_type = object_type
        self.name = name
        self.kind = kind  # APPROXIMATE or EXACT
        self.backend_name = backend_name
        self.backend = backend
        self.lines = lines
        self.problem = problem
        self._matches: dict[str | None, LimitLine | None] = {}
        self._hit_nowait = getattr(backend, "hit_nowait", None)

    def match(self, address: str | None) -> LimitLine | None:
        """ The first line matching `address` (None: not an HTTP caller, only `*` matches). """
        try:
            return self._matches[address]
        except KeyError:
            pass
        ip = parse_address(address)
        found = None
        for line in self.lines:
            if line.network is None or (ip is not None and ip in line.network):
                found = line
                break
        if len(self._matches) >= ADDRESS_CACHE_SIZE:
            self._matches.clear()
        self._matches[address] = found
        return found

    async def check(self, address: str | None, cid: str, channel: str = "", through: bool = False) -> None:
        """ Counts one request from `address`; raises `RateLimitExceeded` (429),
        `AddressNotAllowed` (403) or `RateLimitUnavailable` (503), logging why. `channel` is
        named in the log: the one a user's request went to, or (`through`) the one a service
        was invoked through. """
        line = self.match(address) if self.problem is None else None
        if line is None:
            raise self._refuse_address(address, cid, channel, through)
        if line.limit is None:
            return
        try:
            if self._hit_nowait is not None:
                allowed = self._hit_nowait(line.key, line.limit, line.window)
            else:
                allowed = await self.backend.hit(line.key, line.limit, line.window)
        except Exception as exc:
            logger.error("cid=%s rate limiter backend %r failed checking %s %r: %s: %s; request%s from %s refused "
                         "with 503", cid, self.backend_name, self.object_type, self.name, type(exc).__name__, exc,
                         _via(channel, through), address or "(no address)")
            raise RateLimitUnavailable() from None
        if not allowed:
            logger.warning("cid=%s Max. rate limit of %s reached for %s %r (rate_limit_def line %d: `%s`, %s); "
                           "request%s from %s refused with 429", cid, line.rate, self.object_type, self.name,
                           line.number, line.text, self.kind.lower(), _via(channel, through),
                           address or "(none: not an HTTP request)")
            raise RateLimitExceeded(self.object_type, self.name, line)

    def _refuse_address(self, address: str | None, cid: str, channel: str, through: bool) -> AddressNotAllowed:
        if self.problem is not None:
            logger.error("cid=%s %s %r cannot check rate limits: %s; request%s from %s refused with 403",
                         cid, self.object_type, self.name, self.problem, _via(channel, through),
                         address or "(no address)")
        else:
            logger.warning("cid=%s address %s matches no line of the rate_limit_def of %s %r (%s); request%s "
                           "refused with 403", cid, address or "(none: not an HTTP request)", self.object_type,
                           self.name, "; ".join(f"line {item.number}: `{item.text}`" for item in self.lines),
                           _via(channel, through))
        return AddressNotAllowed(self.object_type, self.name, address)

    def check_service(self, cid: str, channel: str) -> Any:
        """ The per-service check `Server.invoke_service` awaits (from `server.service_rate_limits`). """
        return self.check(caller_address.get(), cid, channel, True)

    def __repr__(self) -> str:
        return f"<ObjectLimits {self.object_type} {self.name!r} {self.kind} lines={len(self.lines)}>"


def _via(channel: str, through: bool) -> str:
    if not channel:
        return ""
    return f" through channel {channel!r}" if through else f" to channel {channel!r}"


# ################################################################################################
# Per-worker state


class RateLimits:
    """ Per worker (`server.plugin_state["rate_limit"]`): the compiled limits of every object
    with active limits, the backends that count them and how caller addresses are found. """

    def __init__(self, server: Any, resolver: AddressResolver, backend_names: dict[str, str]) -> None:
        self.server = server
        self.resolver = resolver
        self.backend_names = backend_names  # APPROXIMATE/EXACT -> backend name
        self.backends: dict[str, Any] = {}  # created when first used
        self.by_type: dict[str, dict[str, ObjectLimits]] = {object_type: {} for object_type in LIMITED_TYPES}
        self.is_active = False  # any object has active limits: the REST channel calls check_http
        self.has_service_limits = False  # check_http tells service checks the caller's address
        self.clock: Callable[[], float] | None = None  # tests: every backend's clock (set_clock)

    # ############################################################################################
    # Checking requests

    async def check_http(self, request: Any, channel_type: str, channel: str, security: str | None) -> None:
        """ The security definition's limits, then the channel's; remembers the caller's address
        for the service checks of this request. Called by HTTP channels (`channel_type` is their
        object type, e.g. channel_rest) right after authentication succeeded, so a caller that
        fails it never counts against a user's limit, and only when `is_active`. `request` needs
        `client`, `scope`, `headers` and `cid`, as `zato.server.http.HTTPRequest` has them. """
        address = self.resolver.address_of(request)
        if self.has_service_limits:
            caller_address.set(address)
        if security:
            limits = self.by_type[SECURITY].get(security)
            if limits is not None:
                await limits.check(address, request.cid, channel)
        limits = self.by_type.get(channel_type, _NO_LIMITS).get(channel)
        if limits is not None:
            await limits.check(address, request.cid)

    # ############################################################################################
    # Building limits from configuration objects

    def backend(self, name: str) -> Any:
        """ The backend registered under `name`, created on first use. """
        backend = self.backends.get(name)
        if backend is None:
            backend = self.backends[name] = self.server.registry.get("rate_limiter_backends", name).create(self.server)
            if self.clock is not None and hasattr(backend, "clock"):
                backend.clock = self.clock
        return backend

    def set_clock(self, clock: Callable[[], float]) -> None:
        """ Makes every backend count time with `clock` (tests: `trio.testing.MockClock().current_time`). """
        self.clock = clock
        for backend in self.backends.values():
            if hasattr(backend, "clock"):
                backend.clock = clock

    def compile(self, object_type: str, data: dict[str, Any]) -> ObjectLimits:
        """ One object's limits; problems are logged here and make it refuse every request. """
        name = data["name"]
        where = f"{object_type} {name!r}"
        problems = definition_problems(data)
        kind = APPROXIMATE if any(p["field"] == "rate_limit_type" for p in problems) else \
            normalise_type(data.get("rate_limit_type"))
        backend_name = self.backend_names[kind]
        backend = self.backend(backend_name)  # `setup` checked that every configured backend is registered
        if problems:
            problem = "; ".join(f"{p['field']}: {p['error']}" for p in problems)
            logger.error("%s has rate limits that cannot be used: %s. Every request it covers is refused with 403 "
                         "until it is fixed (PUT or PATCH /zato/api/objects/%s/{name} with a corrected "
                         "rate_limit_def, or enmasse)", where, problem, object_type)
            return ObjectLimits(object_type, name, kind, backend_name, backend, [], problem)
        lines = parse_definition(data.get("rate_limit_def"))
        for line, earlier in unreachable_lines(lines):
            logger.warning("%s: rate_limit_def line %d `%s` never applies: line %d `%s` matches its addresses first "
                           "(list the most specific lines first)", where, line.number, line.text, earlier.number,
                           earlier.text)
        digest = definition_digest(data)
        keyed = [replace(line, key=f"{object_type}:{name}:{digest}:{line.number}") for line in lines]
        return ObjectLimits(object_type, name, kind, backend_name, backend, keyed)

    def rebuild(self, object_types: set[str] | None = None) -> None:
        """ Recompiles the limits of every active object of `object_types` (all if None). """
        for object_type in LIMITED_TYPES:
            if object_types is not None and object_type not in object_types:
                continue
            compiled = {}
            for name, data in self.server.config_objects.get(object_type, {}).items():
                if as_bool(data.get("is_rate_limit_active")):
                    compiled[name] = self.compile(object_type, data)
                elif data.get("rate_limit_def"):
                    problems = definition_problems(data)
                    if problems:
                        logger.warning("%s %r: rate_limit_def is not active and would not parse: %s", object_type,
                                       name, "; ".join(p["error"] for p in problems))
            self.by_type[object_type] = compiled
        self.server.service_rate_limits = {name: limits.check_service
                                           for name, limits in self.by_type[SERVICE_SETTINGS].items()}
        self.is_active = any(self.by_type.values())
        self.has_service_limits = bool(self.by_type[SERVICE_SETTINGS])
        counts = {t: len(items) for t, items in self.by_type.items() if items}
        logger.info("rate limits: %s", ", ".join(f"{count} {t}" for t, count in counts.items()) or "none active")

    async def prune(self) -> None:
        for name, backend in list(self.backends.items()):
            if hasattr(backend, "prune"):
                try:
                    await await_maybe(backend.prune())
                except Exception:
                    logger.exception("rate limiter backend %r failed to prune old counters; trying again later", name)

    async def close(self) -> None:
        for name, backend in self.backends.items():
            if hasattr(backend, "close"):
                try:
                    await await_maybe(backend.close())
                except Exception:
                    logger.exception("rate limiter backend %r failed to close", name)
        self.backends.clear()


_NO_LIMITS: dict[str, ObjectLimits] = {}


def rate_limits(server: Any) -> RateLimits | None:
    """ This worker's rate limits (None before ON_STARTING or with the plugin switched off). """
    return server.plugin_state.get(PLUGIN)


def setup(server: Any) -> RateLimits:
    """ Builds this worker's rate limits from server.conf and the loaded objects. """
    config = server.config.get(PLUGIN) or {}
    trusted = config.get("trusted_proxies") or []
    if isinstance(trusted, str):
        trusted = [item for item in trusted.split(",") if item.strip()]
    resolver = AddressResolver(trusted, config.get("forwarded_for_header") or DEFAULT_FORWARDED_FOR)
    backend_names = {APPROXIMATE: config.get("approximate_backend") or "approximate",
                     EXACT: config.get("exact_backend") or "exact"}
    registered = server.registry.items("rate_limiter_backends")
    for kind, name in backend_names.items():
        if name not in registered:
            raise ValueError(f"[{PLUGIN}] {kind.lower()}_backend = {name}: no enabled plugin registers a rate limiter "
                             f"backend named {name!r} (registered: {', '.join(sorted(registered)) or 'none'}); "
                             f"enable its plugin or change the setting in server.conf")
    state = server.plugin_state[PLUGIN] = RateLimits(server, resolver, backend_names)
    state.rebuild()
    return state


# ################################################################################################
# Hooks


SERVICE_SETTINGS_TYPE = ObjectType(SERVICE_SETTINGS, (
    Field("name", required=True, description="The name of the service these settings are for", example="api.sample"),
    *RATE_LIMIT_FIELDS,
    Field("is_active", "bool", default=True),
), description="Settings of one service, by its name: rate limits that apply whatever the channel",
    check=definition_problems)


@hookimpl
def register_server_config(register):
    import re

    from zato.registry import Setting

    def check_proxies(entries: list[str]) -> None:
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or a CIDR network") from None

    def check_header(name: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]*", name.strip()):
            raise ValueError("not an HTTP header name")

    register(PLUGIN, {
        "trusted_proxies": Setting([], check=check_proxies, allowed="IP addresses or CIDR networks separated by "
                                   "commas, e.g. 127.0.0.1, 10.0.0.0/8", doc="Proxies whose forwarded-for header "
                                                                              "is believed"),
        "forwarded_for_header": Setting(DEFAULT_FORWARDED_FOR, check=check_header, allowed="an HTTP header name",
                                        doc="The header naming the client behind a trusted proxy"),
        "approximate_backend": Setting("approximate", doc="The rate limiter backend counting APPROXIMATE limits"),
        "exact_backend": Setting("exact", doc="The rate limiter backend counting EXACT limits"),
        "prune_interval": Setting(DEFAULT_PRUNE_INTERVAL, exclusive_minimum=0, maximum=86400,
                                  doc="Seconds between two prunings of old counters"),
    }, doc="Rate limiting: proxies whose forwarded-for header is believed (addresses or CIDR networks), that "
           "header's name, the backends counting APPROXIMATE and EXACT limits, seconds between prunings of old "
           "counters.")


@hookimpl
def register_object_types(register):
    register(SERVICE_SETTINGS_TYPE)


@hookimpl
def register_rate_limiter_backends(register):
    register(RateLimiterBackend("approximate", create_approximate,
                                "Counters in each process's memory: fastest; N workers may let N x the limit through"))
    register(RateLimiterBackend("exact", create_exact,
                                "Counters in the configuration database, shared by every process; never exceeded"))


@hookimpl
def startup_phase(phase, ctx):
    if phase == SERVER_STARTUP.PHASE.ON_STARTING:  # objects are loaded; nothing is invoked yet
        setup(ctx.kwargs["server"])


@hookimpl
def config_objects_changed(server, object_types):
    state = rate_limits(server)
    if state is not None and set(object_types) & set(LIMITED_TYPES):
        state.rebuild(set(object_types))


@hookimpl
def register_tasks(register, server):
    interval = float((server.config.get(PLUGIN) or {}).get("prune_interval", DEFAULT_PRUNE_INTERVAL))
    if not math.isfinite(interval) or interval <= 0:
        return  # never: counters of windows that are over are reset when next hit, but never removed

    async def prune_old_counters(*, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        while True:
            await trio.sleep(interval)
            state = rate_limits(server)
            if state is not None:
                await state.prune()

    register("prune_old_counters", prune_old_counters)


@hookimpl
def register_migrations(register):
    """ The tables of this plugin: the exact backend's counters. """
    from pathlib import Path
    register("rate_limit", Path(__file__).resolve().parent / "migrations" / "rate_limit")


@hookimpl
def shutdown(server):
    state = rate_limits(server)
    if state is not None:
        return state.close()
    return None
