""" What every HTTP channel does around a service: build its request from the HTTP request,
invoke it, and turn its response or error into an HTTP reply (Zato's JSON error shape, the
cid, no traceback: tracebacks go to the log). """

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qsl

import trio

from zato.common.exception import ClientHTTPError
from zato.server.http import HTTPError, HTTPRequest, HTTPResponse, parse_json
from zato.server.service import DeferredPayload, HTTPRequestInfo
from zato.server.service.simpleio import InputError, OutputError
from zato.server.deployment import ServiceNotFound

logger = logging.getLogger("zato.channel")


def parse_body(request: HTTPRequest, data_format: str, channel: str = "") -> tuple[Any, Any]:
    """ (payload, raw_request) for a data format: json, text or form. A JSON body is parsed only
    when the service reads it (`DeferredPayload`): `raw_request` takes any bytes. """
    body = request.body
    try:
        raw: Any = body.decode("utf-8")
    except UnicodeDecodeError:
        raw = body
    if data_format == "json":
        return (DeferredPayload(body, _parse_json_body, channel) if body else None), raw
    if data_format == "form":
        return dict(parse_qsl(raw if isinstance(raw, str) else "", keep_blank_values=True)), raw
    return raw, raw


def _parse_json_body(body: bytes, channel: str) -> Any:
    """ The payload of a channel whose data_format is json, or a 400 that says the body is not
    JSON, where (line and column), and what the caller or the channel's owner can do. """
    try:
        return parse_json(body)
    except HTTPError as exc:
        raise HTTPError(400, f"{exc.details}; channel {channel!r} has data_format json, so the body is parsed as "
                             f"JSON when its service reads self.request.payload or its SimpleIO input: send JSON, "
                             f"or set the channel's data_format to text to get the body as it is") from None


async def invoke_from_http(request: HTTPRequest, service: str, *, channel: str, data_format: str = "json",
                           timeout: float | None = None, user: str | None = None,
                           security: dict[str, Any] | None = None) -> HTTPResponse:
    server = request.server
    payload, raw = parse_body(request, data_format, channel)
    params = request.query
    params.update(request.path_params)
    http = HTTPRequestInfo(request.method, params, request.headers, request.path, user, security)
    timeout = timeout or server.service_timeout  # [main] service_timeout when the channel sets none
    try:
        response = await server.invoke_service(service, payload, cid=request.cid, channel=channel, raw_request=raw,
                                               http=http, timeout=timeout, channel_type="http-soap")
    except HTTPError:
        raise
    except ClientHTTPError as exc:  # raised by the service on purpose: its message is for the caller
        raise HTTPError(exc.status, f"Error {exc.status}: {exc.msg}" if exc.msg else None) from None
    except InputError as exc:
        raise HTTPError(400, f"Error 400 Bad Request: {exc}", extra={"errors": exc.errors}) from None
    except ServiceNotFound:
        logger.error("cid=%s channel %s: service %s is not deployed", request.cid, channel, service)
        raise HTTPError(500) from None
    except OutputError as exc:
        logger.error("cid=%s channel %s: service %s returned output that does not match its SimpleIO: %s",
                     request.cid, channel, service, exc)
        raise HTTPError(500) from None
    except trio.TooSlowError:
        logger.error("cid=%s channel %s: service %s did not finish within %s s", request.cid, channel, service,
                     timeout)
        raise HTTPError(504) from None
    except Exception:
        logger.exception("cid=%s channel %s: service %s raised", request.cid, channel, service)
        raise HTTPError(500) from None
    return to_http_response(response)


def to_http_response(response: Any) -> HTTPResponse:
    payload = response.payload
    content_type = response.content_type
    if isinstance(payload, bytes):
        body, default_type = payload, "application/octet-stream"
    elif isinstance(payload, str):
        body, default_type = payload.encode("utf-8"), "text/plain; charset=utf-8"
    else:
        body, default_type = _ENCODER.encode(payload).encode(), "application/json"
    headers = response.headers
    return HTTPResponse(int(response.status_code), body, content_type or default_type,
                        {str(k): str(v) for k, v in headers.items()} if headers else {})


# What json.dumps(payload, default=str) makes, without a new encoder per call (json.dumps makes
# one whenever it is given any argument)
_ENCODER = json.JSONEncoder(default=str)
