""" Checking requests against rate limits, per worker: which address a request counts against
(`AddressResolver`), every active object's compiled limits (`RateLimits`, built by `setup` from
server.conf and the loaded objects) and the checks HTTP channels and services call. """

from __future__ import annotations

import ipaddress
import logging
from dataclasses import replace
from typing import Any, Callable

from zato.common.rate_limiting import APPROXIMATE, EXACT, check_rate_limit_fields as definition_problems, \
    normalise_type, parse_definition
from zato.config import as_bool
from zato.plugins import await_maybe
from zato.registry import Kind
from zato.server.plugin_state import PluginState

from .limits import (
    ADDRESS_CACHE_SIZE, LIMITED_TYPES, PLUGIN, SECURITY, SERVICE_SETTINGS, ObjectLimits, caller_address,
    definition_digest, parse_address, unreachable_lines,
)

logger = logging.getLogger("zato.rate_limit")

RATE_LIMITS = PluginState["RateLimits"](PLUGIN)
DEFAULT_FORWARDED_FOR = "X-Forwarded-For"


# ################################################################################################
# Addresses


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
# Per-worker state


class RateLimits:
    """ Per worker (`RATE_LIMITS`): the compiled limits of every object
    with active limits, the backends that count them and how caller addresses are found. """

    def __init__(self, server: Any, resolver: AddressResolver, backend_names: dict[str, str]) -> None:
        self.server = server
        self.resolver = resolver
        self.backend_names = backend_names  # APPROXIMATE/EXACT -> backend name
        self.backends: dict[str, Any] = {}  # created when first used
        self.by_type: dict[str, dict[str, ObjectLimits]] = {object_type: {} for object_type in LIMITED_TYPES}
        self.is_active = False  # any object has active limits: the REST channel calls check_http
        self.service_checks: dict[str, Callable[[str, str], Any]] = {}  # service -> what invoke_service awaits
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
            backend = self.backends[name] = self.server.registry.get(Kind.RATE_LIMITER_BACKENDS, name).create(self.server)
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
        self.service_checks = {name: limits.check_service for name, limits in self.by_type[SERVICE_SETTINGS].items()}
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
    return RATE_LIMITS.get(server)


def setup(server: Any) -> RateLimits:
    """ Builds this worker's rate limits from server.conf and the loaded objects. """
    config = server.config.get(PLUGIN) or {}
    trusted = config.get("trusted_proxies") or []
    if isinstance(trusted, str):
        trusted = [item for item in trusted.split(",") if item.strip()]
    resolver = AddressResolver(trusted, config.get("forwarded_for_header") or DEFAULT_FORWARDED_FOR)
    backend_names = {APPROXIMATE: config.get("approximate_backend") or "approximate",
                     EXACT: config.get("exact_backend") or "exact"}
    registered = server.registry.items(Kind.RATE_LIMITER_BACKENDS)
    for kind, name in backend_names.items():
        if name not in registered:
            raise ValueError(f"[{PLUGIN}] {kind.lower()}_backend = {name}: no enabled plugin registers a rate limiter "
                             f"backend named {name!r} (registered: {', '.join(sorted(registered)) or 'none'}); "
                             f"enable its plugin or change the setting in server.conf")
    state = RATE_LIMITS.set(server, RateLimits(server, resolver, backend_names))
    server.rate_limits = state  # what HTTP channels and invoke_service check
    state.rebuild()
    return state
