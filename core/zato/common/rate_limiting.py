""" The rate-limit fields Zato puts on REST channels, security definitions and service settings,
declared once with their syntax: object types that carry them add `RATE_LIMIT_FIELDS` to their
schema and `check_rate_limit_fields` as their check, so a bad definition is refused the same way
whether or not the `rate_limit` plugin is loaded. What a definition does - counting requests,
refusing callers - belongs to that plugin (zato.builtin.rate_limit, docs/rate-limiting.md).

A definition is an ordered list of `SOURCE = LIMIT` lines (`parse_definition`): SOURCE is `*`,
an IPv4/IPv6 address or a CIDR network; LIMIT is `N/m`, `N/h`, `N/d` or `*` (no limit). """

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from zato.config import as_bool
from zato.objects import is_env_reference
from zato.registry import Field

APPROXIMATE, EXACT = "APPROXIMATE", "EXACT"
RATE_LIMIT_TYPES = (APPROXIMATE, EXACT)
UNITS = {"m": (60, "minute"), "h": (3600, "hour"), "d": (86400, "day")}
ANY = "*"

SYNTAX = "SOURCE = LIMIT, e.g. `* = 100/m` or `10.0.0.0/8 = 5000/h`"

RATE_LIMIT_FIELDS = (
    Field("is_rate_limit_active", "bool", description="Whether rate_limit_def applies (default false)"),
    Field("rate_limit_type", description="APPROXIMATE (counted per process, fastest) or EXACT (shared by every "
                                         "process, never exceeded); default APPROXIMATE", example="APPROXIMATE"),
    Field("rate_limit_def", description="Lines of SOURCE = LIMIT: SOURCE is *, an IP address or a CIDR network; "
                                        "LIMIT is N/m, N/h, N/d or *. The first matching line applies; no match "
                                        "is 403", example="127.0.0.1 = *\n* = 100/m"),
    Field("rate_limit_check_parent_def", "bool", description="Kept for Zato compatibility; no parent objects "
                                                             "exist here, so it changes nothing"),
)


# ################################################################################################
# Definitions


@dataclass(frozen=True, slots=True)
class LimitLine:
    """ One `SOURCE = LIMIT` line of a definition. """
    number: int  # 1-based, counting blank and comment lines, as an editor shows it
    text: str  # as written, without surrounding blanks or a trailing comment
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None  # None: `*`, any address
    limit: int | None  # requests per window; None: `*`, no limit
    window: int  # seconds: 60, 3600 or 86400
    key: str = ""  # the counter's key, set when the object's limits are compiled

    @property
    def rate(self) -> str:
        """ The limit as written in a definition: `5/m` or `*`. """
        if self.limit is None:
            return ANY
        unit = next(u for u, (seconds, _) in UNITS.items() if seconds == self.window)
        return f"{self.limit}/{unit}"


class DefinitionError(ValueError):
    """ A definition does not parse; `errors` lists (line number, what is wrong), every one. """

    def __init__(self, errors: list[tuple[int, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"line {number}: {error}" for number, error in errors))


def parse_definition(text: str | None) -> list[LimitLine]:
    """ The lines of a definition, in order. Blank lines and `#` comments are skipped. Raises
    `DefinitionError` listing every bad line with its number and what to write instead. """
    lines: list[LimitLine] = []
    errors: list[tuple[int, str]] = []
    for number, raw in enumerate((text or "").splitlines(), 1):
        stripped = raw.split("#", 1)[0].strip()
        if not stripped:
            continue
        try:
            lines.append(_parse_line(number, stripped))
        except ValueError as exc:
            errors.append((number, f"`{stripped}`: {exc}"))
    if errors:
        raise DefinitionError(errors)
    return lines


def _parse_line(number: int, text: str) -> LimitLine:
    if text.count("=") != 1:
        raise ValueError(f"expected {SYNTAX}")
    source, rate = (part.strip() for part in text.split("="))
    if not source or not rate:
        raise ValueError(f"both sides of `=` are needed: {SYNTAX}")
    network = None if source == ANY else _parse_network(source)
    limit, window = _parse_rate(rate)
    return LimitLine(number, text, network, limit, window)


def _parse_network(source: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        # host bits are allowed, as Zato allowed them: 10.1.2.3/8 is the network 10.0.0.0/8
        return ipaddress.ip_network(source, strict=False)
    except ValueError:
        pass
    raise ValueError(f"{source!r} is not `*`, an IP address (10.1.2.3, 2001:db8::1) or a CIDR network "
                     f"(10.0.0.0/8, 2001:db8::/32)")


def _parse_rate(rate: str) -> tuple[int | None, int]:
    if rate == ANY:
        return None, UNITS["d"][0]
    count, slash, unit = rate.partition("/")
    count, unit = count.strip(), unit.strip()
    if not slash or not count:
        raise ValueError(f"the limit {rate!r} is not N/m, N/h, N/d (requests per minute, hour or day) or `*` "
                         f"(no limit)")
    if not count.isdigit():
        raise ValueError(f"the number of requests {count!r} is not a whole number (write 1000, not 1,000 or 1e3)")
    if unit not in UNITS:
        raise ValueError(f"the unit {unit!r} is not one of m (per minute), h (per hour) or d (per day)")
    return int(count), UNITS[unit][0]


def normalise_type(value: Any) -> str:
    """ `rate_limit_type` as APPROXIMATE or EXACT (empty means APPROXIMATE); ValueError otherwise. """
    if value is None or value == "":
        return APPROXIMATE
    kind = str(value).strip().upper()
    if kind not in RATE_LIMIT_TYPES:
        raise ValueError(f"{value!r} is not one of {', '.join(RATE_LIMIT_TYPES)}")
    return kind


def check_rate_limit_fields(data: dict[str, Any], partial: bool = False) -> list[dict[str, str]]:
    """ What is wrong with an object's rate-limit fields, as the admin API lists field errors
    (`[{"field": ..., "error": ...}]`); [] when they can be used. The `check` of every object
    type with these fields (`zato.registry.ObjectType.check`), so `zato.objects.validate` refuses
    a bad definition when it is created or changed (admin API, enmasse). `partial`: `data` holds
    only the fields being changed. A `$NAME` value is read from the environment when the object
    is loaded, and checked then. """
    def given(field: str) -> bool:
        return (field in data or not partial) and not is_env_reference(data.get(field))

    problems = []
    if given("rate_limit_type"):
        try:
            normalise_type(data.get("rate_limit_type"))
        except ValueError as exc:
            problems.append({"field": "rate_limit_type", "error": str(exc)})
    if given("rate_limit_def"):
        try:
            lines = parse_definition(data.get("rate_limit_def"))
        except DefinitionError as exc:
            problems.extend({"field": "rate_limit_def", "error": f"line {number}: {error}"}
                            for number, error in exc.errors)
        else:
            if not lines and given("is_rate_limit_active") and as_bool(data.get("is_rate_limit_active")):
                problems.append({"field": "rate_limit_def", "error": f"empty, so every request would be refused "
                                                                     f"(403); add lines of {SYNTAX}"})
    return problems
