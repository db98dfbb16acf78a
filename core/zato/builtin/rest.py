""" The `rest` plugin: REST channels, which expose services over HTTP at a URL path.

Definitions are `channel_rest` objects in the configuration database. `RESTChannels.apply`
turns every active one into a route; the whole route table is swapped in at once.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qsl

from zato import hookimpl
from zato.registry import ChannelType, Field, ObjectType
from zato.server.http import HTTPError, HTTPRequest, HTTPResponse
from zato.server.service import HTTPRequestInfo

logger = logging.getLogger("zato.rest")

OBJECT_TYPE = "channel_rest"
DATA_FORMATS = ("json", "text", "form")
ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

CHANNEL_REST = ObjectType(OBJECT_TYPE, (
    Field("name", required=True, description="Unique name of the channel"),
    Field("url_path", required=True, description="Path with optional {param} segments", example="/api/user/{id}"),
    Field("service", required=True, references="service", description="Service invoked"),
    Field("methods", "list", default=list(ALL_METHODS), description="Allowed HTTP methods"),
    Field("data_format", default="json", description="json, text or form"),
    Field("security", references="security", description="Security definition protecting the channel"),
    Field("is_active", "bool", default=True),
), description="A REST channel: exposes a service at a URL path")


class RESTChannels:
    """ The runtime of REST channels in one worker. """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.definitions: dict[str, dict[str, Any]] = {}

    def apply(self, objects: list[dict[str, Any]]) -> None:
        routes = []
        for definition in objects:
            if not definition.get("is_active", True):
                continue
            methods = tuple(m.upper() for m in (definition.get("methods") or ALL_METHODS))
            handler = self._handler(definition)
            routes.append((definition["url_path"], methods, handler, definition["name"]))
        self.server.set_routes("channel:rest", routes)
        self.definitions = {d["name"]: d for d in objects}

    def _handler(self, definition: dict[str, Any]):
        server = self.server
        service = definition["service"]
        data_format = definition.get("data_format") or "json"
        name = definition["name"]
        security = definition.get("security")

        async def handle(request: HTTPRequest) -> HTTPResponse:
            request.trace.channel = name
            request.trace.service = service
            if security:
                await server.authenticate(request, security)
            payload, raw = _parse_body(request, data_format)
            params = request.query
            params.update(request.path_params)
            http = HTTPRequestInfo(request.method, params, request.headers, request.path)
            try:
                response = await server.invoke_service(service, payload, cid=request.cid, channel="rest",
                                                       raw_request=raw, http=http)
            except HTTPError:
                raise
            except KeyError as exc:
                if service not in server.services:
                    logger.error("cid=%s channel %s: service %s is not deployed", request.cid, name, service)
                    raise HTTPError(500) from None
                logger.exception("cid=%s channel %s: service %s raised %r", request.cid, name, service, exc)
                raise HTTPError(500) from None
            except Exception:
                logger.exception("cid=%s channel %s: service %s raised", request.cid, name, service)
                raise HTTPError(500) from None
            return to_http_response(response)

        return handle


def _parse_body(request: HTTPRequest, data_format: str) -> tuple[Any, Any]:
    body = request.body
    try:
        raw: Any = body.decode("utf-8")
    except UnicodeDecodeError:
        raw = body
    if data_format == "json":
        return (request.json() if body else None), raw
    if data_format == "form":
        return dict(parse_qsl(raw if isinstance(raw, str) else "", keep_blank_values=True)), raw
    return raw, raw


def to_http_response(response: Any) -> HTTPResponse:
    payload = response.payload
    content_type = response.content_type
    if isinstance(payload, bytes):
        body, default_type = payload, "application/octet-stream"
    elif isinstance(payload, str):
        body, default_type = payload.encode("utf-8"), "text/plain; charset=utf-8"
    else:
        body, default_type = json.dumps(payload).encode(), "application/json"
    return HTTPResponse(response.status_code, body, content_type or default_type, dict(response.headers))


@hookimpl
def register_object_types(register):
    register(CHANNEL_REST)


@hookimpl
def register_channel_types(register):
    register(ChannelType("rest", OBJECT_TYPE, RESTChannels, "REST channels: services at URL paths"))
