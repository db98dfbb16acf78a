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

import ipaddress
import math

import trio

from zato import hookimpl
from zato.common import SERVER_STARTUP
from zato.common.rate_limiting import (  # noqa: F401 - re-exported: the syntax is the core's
    ANY, APPROXIMATE, EXACT, RATE_LIMIT_FIELDS, RATE_LIMIT_TYPES, SYNTAX, UNITS, DefinitionError, LimitLine,
    check_rate_limit_fields as definition_problems, normalise_type, parse_definition,
)
from zato.registry import Field, ObjectType, RateLimiterBackend

from .backends import (
    EXACT_DB_THREADS, ApproximateLimiter, DatabaseLimiter, counters_metadata, counters_table, create_approximate,
    create_exact,
)
from .checks import (
    DEFAULT_FORWARDED_FOR, RATE_LIMITS, AddressResolver, RateLimits, parse_forwarded_hop, rate_limits, setup,
)
from .limits import (
    ADDRESS_CACHE_SIZE, CHANNEL_REST, LIMITED_TYPES, PLUGIN, SECURITY, SERVICE_SETTINGS, AddressNotAllowed,
    ObjectLimits, RateLimitError, RateLimitExceeded, RateLimitReached, RateLimitUnavailable, caller_address,
    definition_digest, logger, parse_address, unreachable_lines,
)

__all__ = [
    "ADDRESS_CACHE_SIZE", "ANY", "APPROXIMATE", "CHANNEL_REST", "DEFAULT_FORWARDED_FOR", "DEFAULT_PRUNE_INTERVAL",
    "EXACT", "EXACT_DB_THREADS", "LIMITED_TYPES", "PLUGIN", "RATE_LIMITS", "RATE_LIMIT_FIELDS", "RATE_LIMIT_TYPES",
    "SECURITY", "SERVICE_SETTINGS", "SERVICE_SETTINGS_TYPE", "SYNTAX", "UNITS", "AddressNotAllowed",
    "AddressResolver", "ApproximateLimiter", "DatabaseLimiter", "DefinitionError", "LimitLine", "ObjectLimits",
    "RateLimitError", "RateLimitExceeded", "RateLimitReached", "RateLimitUnavailable", "RateLimits",
    "caller_address", "counters_metadata", "counters_table", "create_approximate", "create_exact",
    "definition_digest", "definition_problems", "logger", "normalise_type", "parse_address", "parse_definition",
    "parse_forwarded_hop", "rate_limits", "setup", "unreachable_lines",
]

DEFAULT_PRUNE_INTERVAL = 60.0


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
    register("rate_limit", Path(__file__).resolve().parent / "migrations")


@hookimpl
def shutdown(server):
    state = rate_limits(server)
    if state is not None:
        return state.close()
    return None
