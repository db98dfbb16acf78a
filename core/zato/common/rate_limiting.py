""" The rate-limit fields Zato puts on REST channels, security definitions and service settings,
declared once. Their meaning and checks belong to the `rate_limit` plugin
(zato.builtin.rate_limit, docs/rate-limiting.md); object types that carry them add
`RATE_LIMIT_FIELDS` to their schema and `check_rate_limit_fields` as their check. """

from __future__ import annotations

import sys
from typing import Any

from zato.registry import Field

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


def check_rate_limit_fields(data: dict[str, Any], partial: bool = False) -> list[dict[str, str]]:
    """ The rate-limit fields checked by the rate_limit plugin when it is loaded (switched off, it
    is never imported, and the fields mean nothing). """
    rate_limit = sys.modules.get("zato.builtin.rate_limit")
    return rate_limit.definition_problems(data, partial) if rate_limit is not None else []
