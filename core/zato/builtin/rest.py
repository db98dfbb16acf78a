""" The `rest` plugin: REST channels, which expose services over HTTP at a URL path.

Definitions are `channel_rest` objects in the configuration database. `RESTChannels.apply`
turns every active one into a route; the whole route table is swapped in at once.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from zato import hookimpl
from zato.registry import ChannelType, Field, ObjectType
from zato.server.channel import invoke_from_http
from zato.server.http import HTTPRequest, HTTPResponse, Router

logger = logging.getLogger("zato.rest")

OBJECT_TYPE = "channel_rest"
DATA_FORMATS = ("json", "text", "form")
ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def check_channel(data: dict[str, Any], partial: bool = False) -> list[dict[str, str]]:
    """ Checks beyond the schema: the rate-limit fields, by the rate_limit plugin when it is loaded
    (switched off, it is never imported, and the fields mean nothing). """
    rate_limit = sys.modules.get("zato.builtin.rate_limit")
    return rate_limit.definition_problems(data, partial) if rate_limit is not None else []


CHANNEL_REST = ObjectType(OBJECT_TYPE, (
    Field("name", required=True, description="Unique name of the channel"),
    Field("url_path", required=True, description="Path with optional {param} segments", example="/api/user/{id}"),
    Field("service", required=True, references="service", description="Service invoked"),
    Field("methods", "list", default=list(ALL_METHODS), description="Allowed HTTP methods"),
    Field("data_format", default="json", choices=DATA_FORMATS, description="json, text or form"),
    Field("security", references="security", description="Security definition protecting the channel"),
    Field("timeout", "float", description="Seconds the service may take before the caller gets 504"),
    # Rate limits, read by the rate_limit plugin (docs/rate-limiting.md); the same four fields as in Zato
    Field("is_rate_limit_active", "bool", description="Whether rate_limit_def applies (default false)"),
    Field("rate_limit_type", description="APPROXIMATE (counted per process, fastest) or EXACT (shared by every "
                                         "process, never exceeded); default APPROXIMATE", example="APPROXIMATE"),
    Field("rate_limit_def", description="Lines of SOURCE = LIMIT: SOURCE is *, an IP address or a CIDR network; "
                                        "LIMIT is N/m, N/h, N/d or *. The first matching line applies; no match "
                                        "is 403", example="127.0.0.1 = *\n* = 100/m"),
    Field("rate_limit_check_parent_def", "bool", description="Kept for Zato compatibility; no parent objects "
                                                             "exist here, so it changes nothing"),
    Field("is_active", "bool", default=True),
), description="A REST channel: exposes a service at a URL path", check=check_channel)


class RESTChannels:
    """ The runtime of REST channels in one worker. """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.definitions: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, str] = {}  # channel name -> why it is not routed

    def apply(self, objects: list[dict[str, Any]]) -> None:
        """ Routes every active definition; one that clashes with another is left out and logged
        (the others keep serving). """
        trial = Router()
        routes = []
        errors = {}
        for definition in objects:
            if not definition.get("is_active", True):
                continue
            route = self._route(definition)
            try:
                trial.add(*route)
            except ValueError as exc:
                errors[definition["name"]] = str(exc)
                logger.error("REST channel %r is not routed: %s; change its url_path or methods",
                             definition["name"], exc)
                continue
            routes.append(route)
        self.server.set_routes("channel:rest", routes)
        self.definitions = {d["name"]: d for d in objects}
        self.errors = errors

    def validate(self, definition: dict[str, Any]) -> list[str]:
        """ Why `definition` could not be routed beside the other active channels ([] if it can). """
        if not definition.get("is_active", True):
            return []
        trial = Router()
        for other in self.definitions.values():
            if other["name"] != definition["name"] and other.get("is_active", True) and \
                    other["name"] not in self.errors:
                trial.add(*self._route(other))
        try:
            trial.add(*self._route(definition))
        except ValueError as exc:
            return [str(exc)]
        return []

    def _route(self, definition: dict[str, Any]) -> tuple[str, tuple[str, ...], Any, str]:
        methods = tuple(m.upper() for m in (definition.get("methods") or ALL_METHODS))
        return definition["url_path"], methods, self._handler(definition), definition["name"]

    def _handler(self, definition: dict[str, Any]):
        server = self.server
        service = definition["service"]
        data_format = definition.get("data_format") or "json"
        name = definition["name"]
        security = definition.get("security")
        timeout = definition.get("timeout") or None

        async def handle(request: HTTPRequest) -> HTTPResponse:
            request.trace.channel = name
            request.trace.service = service
            user = sec_def = None
            if security:
                user = await server.authenticate(request, security)
                definition = server.config_objects.get("security", {}).get(security, {})
                sec_def = {"name": security, "type": definition.get("type"), "username": definition.get("username")}
            rate_limits = server.plugin_state.get("rate_limit")  # the rate_limit plugin, if enabled
            if rate_limits is not None and rate_limits.is_active:  # the user's limits, then this channel's
                await rate_limits.check_http(request, OBJECT_TYPE, name, security)
            return await invoke_from_http(request, service, channel=name, data_format=data_format, timeout=timeout,
                                          user=user, security=sec_def)

        return handle


@hookimpl
def register_object_types(register):
    register(CHANNEL_REST)


@hookimpl
def register_channel_types(register):
    register(ChannelType("rest", OBJECT_TYPE, RESTChannels, "REST channels: services at URL paths"))
