""" The `rest` plugin: REST channels, which expose services over HTTP at a URL path.

Definitions are `channel_rest` objects in the configuration database. `RESTChannels.apply`
turns every active one into a route; the whole route table is swapped in at once.
"""

from __future__ import annotations

import logging
from typing import Any

from zato import hookimpl
from zato.common.rate_limiting import RATE_LIMIT_FIELDS, check_rate_limit_fields
from zato.registry import ZATO_HTTP_SOAP_IGNORED, ZATO_NO_SECURITY, ChannelType, Field, ObjectType, Setting, ZatoSpelling
from zato.server.http_channel import invoke_from_http
from zato.server.http import DEFAULT_SERVER_HEADER, HTTPRequest, HTTPResponse, Router

logger = logging.getLogger("zato.rest")

OBJECT_TYPE = "channel_rest"
DATA_FORMATS = ("json", "text", "form")
ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


CHANNEL_REST = ObjectType(OBJECT_TYPE, (
    Field("name", required=True, description="Unique name of the channel"),
    Field("url_path", required=True, description="Path with optional {param} segments", example="/api/user/{id}"),
    Field("service", required=True, references="service", description="Service invoked"),
    Field("methods", "list", default=list(ALL_METHODS), item_type="str", item_choices=ALL_METHODS, unique_items=True,
          description="Allowed HTTP methods (empty: all of them)"),
    Field("data_format", default="json", choices=DATA_FORMATS, description="json, text or form"),
    Field("security", references="security", description="Security definition protecting the channel"),
    Field("timeout", "float", minimum=0, description="Seconds the service may take before the caller gets 504"),
    *RATE_LIMIT_FIELDS,
    Field("is_active", "bool", default=True),
), description="A REST channel: exposes a service at a URL path", check=check_rate_limit_fields,
    zato=ZatoSpelling("channel_rest", keys=("channel_plain_http", "http_soap"),
                      when={"connection": ("channel", None), "transport": ("plain_http", None)},
                      fields={"service_name": "service", "security_name": "security", "sec_def": "security",
                              "method": "methods"},
                      values={"security_name": {ZATO_NO_SECURITY: None, "": None},
                              "sec_def": {ZATO_NO_SECURITY: None, "": None}, "method": {"": None}},
                      scalars=("method",), ignored=ZATO_HTTP_SOAP_IGNORED + ("host", "pool_size", "validate_tls")))


class RESTChannels:
    """ The runtime of REST channels in one worker. """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.definitions: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, str] = {}  # channel name -> why it is not routed

    def apply(self, objects: list[dict[str, Any]]) -> None:
        """ Routes every active definition; one that cannot be routed (a clash with another, or
        anything else that fails while building its route) is left out and logged (the others
        keep serving). """
        trial = Router()
        routes = []
        errors = {}
        for definition in objects:
            if not definition.get("is_active", True):
                continue
            name = definition.get("name")
            try:
                route = self._route(definition)
                trial.add(*route)
            except ValueError as exc:
                errors[name] = str(exc)
                logger.error("REST channel %r is not routed: %s; change its url_path or methods", name, exc)
                continue
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
                logger.exception("REST channel %r is not routed: its definition cannot be used (%s); correct it "
                                 "through the admin API or enmasse", name, errors[name])
                continue
            routes.append(route)
        self.server.set_routes("channel:rest", routes)
        self.definitions = {d.get("name"): d for d in objects}
        self.errors = errors

    def validate(self, definition: dict[str, Any]) -> list[str]:
        """ Why `definition` could not be routed beside the other active channels ([] if it can). """
        if not definition.get("is_active", True):
            return []
        trial = Router()
        for other in self.definitions.values():
            if other.get("name") != definition.get("name") and other.get("is_active", True) and \
                    other.get("name") not in self.errors:
                try:
                    trial.add(*self._route(other))
                except Exception:  # routed when applied, so not expected; never a reason to refuse this one
                    continue
        try:
            trial.add(*self._route(definition))
        except ValueError as exc:
            return [str(exc)]
        except Exception as exc:
            return [f"this definition cannot be routed ({type(exc).__name__}: {exc})"]
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
            rate_limits = server.rate_limits  # the rate_limit plugin's, if it is enabled
            if rate_limits.is_active:  # the user's limits, then this channel's
                await rate_limits.check_http(request, OBJECT_TYPE, name, security)
            return await invoke_from_http(request, service, channel=name, data_format=data_format, timeout=timeout,
                                          user=user, security=sec_def)

        return handle


def _check_server_header(value: str) -> None:
    if any(not (" " <= char <= "~") for char in value) or value != value.strip():
        raise ValueError("a Server header is printable ASCII without leading or trailing spaces")


@hookimpl
def register_server_config(register):
    # Read by the core's ASGIApp (zato.server.http) for every HTTP reply, the admin API's included
    register("http", {
        "server_header": Setting(DEFAULT_SERVER_HEADER, check=_check_server_header, allowed="printable ASCII, or "
                                 "empty for no Server header", doc="The Server header of every HTTP reply "
                                 "(Zato, as Zato sends, by default)"),
    }, doc="HTTP replies")


@hookimpl
def register_object_types(register):
    register(CHANNEL_REST)


@hookimpl
def register_channel_types(register):
    register(ChannelType("rest", OBJECT_TYPE, RESTChannels, "REST channels: services at URL paths"))
