""" What the `rate_limit` plugin limits and how one object's limits are compiled and counted:
the object types it covers, the errors callers see, definitions (`unreachable_lines`,
`definition_digest`) and `ObjectLimits`, one object's compiled lines with their counter keys. """

from __future__ import annotations

import hashlib
import ipaddress
import logging
from contextvars import ContextVar
from typing import Any

from zato.common.rate_limiting import LimitLine, normalise_type
from zato.server.http import HTTPError

logger = logging.getLogger("zato.rate_limit")

PLUGIN = "rate_limit"
SERVICE_SETTINGS = "service_settings"  # not "service": channels' `service` fields reference services by that name
CHANNEL_REST = "channel_rest"
SECURITY = "security"
LIMITED_TYPES = (SECURITY, CHANNEL_REST, SERVICE_SETTINGS)  # the order in which a request is checked

ADDRESS_CACHE_SIZE = 4096  # addresses remembered per object (what line each matches)

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
        """ The per-service check `Server.invoke_service` awaits (from `server.rate_limits.service_checks`). """
        return self.check(caller_address.get(), cid, channel, True)

    def __repr__(self) -> str:
        return f"<ObjectLimits {self.object_type} {self.name!r} {self.kind} lines={len(self.lines)}>"


def _via(channel: str, through: bool) -> str:
    if not channel:
        return ""
    return f" through channel {channel!r}" if through else f" to channel {channel!r}"
