""" The server's HTTP face: request and response objects, the router and the ASGI application
that hypercorn serves, which also hands HTTP and WebSocket connections to the ASGI applications
plugins mount (`register_asgi_mounts`).

Kept small and direct on purpose: every request goes through `ASGIApp.__call__`, so each
allocation here is paid per request. Every reply carries `X-Zato-CID`; errors use Zato's JSON
shape `{"result": "Error", "cid": ..., "details": ...}` and never carry a traceback.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Awaitable, Callable
from time import perf_counter
from urllib.parse import parse_qsl, unquote

from zato.common.util import new_cid
from zato.registry import ADMIN_PREFIX

logger = logging.getLogger("zato.http")

Handler = Callable[["HTTPRequest"], Awaitable["HTTPResponse"]]

JSON_CONTENT_TYPE = "application/json"
PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
NO_REPEATED_HEADERS: frozenset[str] = frozenset()
DEFAULT_SERVER_HEADER = "Zato"  # as Zato sends; [http] server_header in server.conf
# The reason phrase of each status, for the HTTP/1.1 status line (`HTTP/1.1 404 Not Found`)
REASON_PHRASES: dict[int, bytes] = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}


class HTTPError(Exception):
    """ Raised by handlers to answer with an error status and Zato's JSON error body. """

    def __init__(self, status: int, details: str | None = None, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        self.status = status
        self.details = details or f"Error {status} {HTTPStatus(status).phrase}"
        self.headers = headers or {}
        self.extra = extra or {}  # more keys of the JSON error body, e.g. "errors"
        super().__init__(self.details)


class _NotJSON(ValueError):
    """ NaN, Infinity or -Infinity: Python's json module reads them, JSON has no such values. """


def _refuse_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not a JSON value (JSON has no NaN or Infinity); send a number, a string or null")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)  # module-level: as cheap as json.loads


def parse_json(data: bytes | str, what: str = "the body") -> Any:
    """ JSON sent by a caller, or HTTPError 400 saying what is wrong with `what`: not JSON,
    NaN/Infinity (not JSON either), or nested too deeply to parse (a RecursionError, which would
    otherwise be a 500). The one parser for JSON from outside the server. """
    try:
        if not isinstance(data, str):
            data = data.decode(json.detect_encoding(data), "surrogatepass")
        return _DECODER.decode(data)
    except RecursionError:
        raise HTTPError(400, f"Error 400 Bad Request: {what} is nested too deeply to be parsed; send JSON with "
                             f"fewer levels of arrays and objects") from None
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise HTTPError(400, f"Error 400 Bad Request: {what} is not valid JSON ({exc})") from None


class RequestTrace:
    """ What a handler tells the observer about a request: the channel and the service. """
    __slots__ = ("channel", "service")

    def __init__(self) -> None:
        self.channel = ""
        self.service = ""


@dataclass(slots=True)
class HTTPRequest:
    method: str
    path: str
    query_string: bytes
    headers: dict[str, str]
    body: bytes
    client: tuple[str, int] | None
    cid: str
    path_params: dict[str, str] = field(default_factory=dict)
    scope: dict[str, Any] | None = None
    server: Any = None
    trace: RequestTrace | None = None
    repeated_headers: frozenset[str] = NO_REPEATED_HEADERS  # lower-case names sent more than once

    @property
    def query(self) -> dict[str, str]:
        if not self.query_string:
            return {}
        return dict(parse_qsl(self.query_string.decode("latin-1"), keep_blank_values=True))

    def json(self) -> Any:
        if not self.body:
            return None
        return parse_json(self.body)

    def single_header(self, name: str) -> str | None:
        """ The value of header `name` (any case), or None; 400 if it was sent more than once.
        For credentials: with two values, which one a check used would be a guess (`headers`
        keeps the last, as services see it). """
        key = name.lower()
        if key in self.repeated_headers:
            raise HTTPError(400, f"Error 400 Bad Request: the {name} header was sent more than once; send it once")
        return self.headers.get(key)


@dataclass(slots=True)
class HTTPResponse:
    status: int = 200
    body: bytes = b""
    content_type: str = JSON_CONTENT_TYPE
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> "HTTPResponse":
        return cls(status, json.dumps(data).encode(), JSON_CONTENT_TYPE, headers or {})


def error_response(status: int, cid: str, details: str | None = None, headers: dict[str, str] | None = None,
                   extra: dict[str, Any] | None = None) -> HTTPResponse:
    details = details or f"Error {status} {HTTPStatus(status).phrase}"
    return HTTPResponse.json({"result": "Error", "cid": cid, "details": details, **(extra or {})}, status, headers)


# ################################################################################################


@dataclass
class Route:
    """ One path with a handler per method. """
    path: str
    handlers: dict[str, Handler]
    param_names: tuple[str, ...] = ()
    name: str = ""


class _Node:
    __slots__ = ("static", "param", "route")

    def __init__(self) -> None:
        self.static: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.route: Route | None = None


class Router:
    """ Maps paths (with `{param}` segments) to routes through a segment trie, so a lookup
    costs the number of segments in the path, not the number of routes. Static segments win
    over parameters. Routes are added into a new trie and swapped in whole (`replace`), so a
    lookup never sees a half-built table.
    """

    def __init__(self) -> None:
        self._root = _Node()
        self._exact: dict[str, Route] = {}
        self._routes: dict[str, Route] = {}

    def add(self, path: str, methods: tuple[str, ...], handler: Handler, name: str = "") -> None:
        self._insert(self._root, self._exact, self._routes, path, methods, handler, name)

    def replace(self, routes: list[tuple[str, tuple[str, ...], Handler, str]]) -> None:
        """ Swaps in a whole new table. """
        root, exact, by_path = _Node(), {}, {}
        for path, methods, handler, name in routes:
            self._insert(root, exact, by_path, path, methods, handler, name)
        self._root, self._exact, self._routes = root, exact, by_path

    def routes(self) -> list[Route]:
        return list(self._routes.values())

    @staticmethod
    def _insert(root: _Node, exact: dict[str, Route], by_path: dict[str, Route], path: str,
                methods: tuple[str, ...], handler: Handler, name: str) -> None:
        if not path.startswith("/"):
            raise ValueError(f"a URL path must start with '/': {path!r}")
        node = root
        params: list[str] = []
        for segment in path.strip("/").split("/"):
            match = PARAM.match(segment)
            if match:
                params.append(match.group(1))
                node.param = node.param or _Node()
                node = node.param
            else:
                node = node.static.setdefault(segment, _Node())
        route = node.route
        if route is None:
            route = node.route = Route(path, {}, tuple(params), name)
            by_path[path] = route
        elif route.param_names != tuple(params):
            raise ValueError(f"{path!r} clashes with {route.path!r}: same shape, other parameter names")
        for method in methods:
            if method in route.handlers:
                raise ValueError(f"{method} {path} is already routed (to {route.name or route.path})")
            route.handlers[method] = handler
        if not params:
            exact[path.rstrip("/") or "/"] = route

    def match(self, path: str, raw_path: bytes | None = None) -> tuple[Route | None, dict[str, str]]:
        """ The route for a path, and its parameters. With `raw_path` (percent-encoded, as ASGI
        gives it) a parameter may hold an encoded `/`: `/api/objects/channel_rest/%2Fapi%2Fx`. """
        if raw_path is not None and b"%" in raw_path:
            segments = [unquote(part) for part in raw_path.decode("latin-1").strip("/").split("/")]
        else:
            route = self._exact.get(path.rstrip("/") or "/")
            if route is not None:
                return route, {}
            segments = path.strip("/").split("/")
        values: list[str] = []
        node = self._match(self._root, segments, 0, values)
        if node is None:
            return None, {}
        return node, dict(zip(node.param_names, values))

    def _match(self, node: _Node, segments: list[str], index: int, values: list[str]) -> Route | None:
        if index == len(segments):
            return node.route
        segment = segments[index]
        child = node.static.get(segment)
        if child is not None:
            found = self._match(child, segments, index + 1, values)
            if found is not None:
                return found
        if node.param is not None and segment:
            values.append(segment)
            found = self._match(node.param, segments, index + 1, values)
            if found is not None:
                return found
            values.pop()
        return None


# ################################################################################################


class ASGIApp:
    """ The ASGI application: routing, body limits, CIDs and error replies. """

    def __init__(self, router: Router, *, server: Any = None, max_body_size: int = 10 * 1024 * 1024,
                 observer: Callable[..., None] | None = None) -> None:
        self.router = router
        self.server = server
        self.max_body_size = max_body_size
        # observer(trace, method, path, status, seconds, cid): called after every reply
        self.observer = observer
        # Mounted ASGI applications (`set_mounts`), longest prefix first; empty when there are
        # none, so that an ordinary request pays one truth test for them
        self._mounts: tuple[Mount, ...] = ()
        self._catch_all: Mount | None = None  # the mount at "/": what no route takes
        # WebSocket endpoints at exact paths, set while the server runs (`set_websocket_endpoint`)
        self._websocket_endpoints: dict[str, Mount] = {}
        # The Server header of every reply, hypercorn's own included ("" for none); read once
        http_config = (getattr(server, "config", None) or {}).get("http") or {}
        self.server_header = str(http_config.get("server_header", DEFAULT_SERVER_HEADER))
        self._websocket_hint: str | None = None  # `_websocket_plugin_hint`
        install_http_protocol()

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        kind = scope["type"]
        if kind == "http":
            if self._mounts:
                mount = self._mount_for(scope["path"])
                if mount is not None:
                    return await self._serve_mount(mount, scope, receive, send)
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    def set_mounts(self, mounts: list[tuple[str, Callable, str]]) -> None:
        """ Swaps in the mounted ASGI applications, as (prefix, app, plugin) with prefixes as
        `zato.registry.ASGIMount` keeps them (no trailing `/`; `/` is the catch-all). """
        by_prefix = [Mount(prefix, app, plugin) for prefix, app, plugin in mounts]
        self._catch_all = next((mount for mount in by_prefix if mount.prefix == "/"), None)
        self._mounts = tuple(sorted((mount for mount in by_prefix if mount.prefix != "/"),
                                    key=lambda mount: len(mount.prefix), reverse=True))

    def set_websocket_endpoint(self, path: str, app: Callable | None, plugin: str) -> None:
        """ Serves WebSockets at exactly `path` with the ASGI application `app` (None: no longer),
        for endpoints that come and go while the server runs, such as the wsx plugin's
        channel_web_socket definitions. They are looked at before the mounts; paths under
        /zato/ are refused. """
        if _is_admin_path(path):
            raise ValueError(f"WebSocket endpoint {path!r} is under /zato/, which belongs to the core's admin routes")
        if app is None:
            self._websocket_endpoints.pop(path, None)
            return
        endpoint = Mount(path, app, plugin)
        endpoint.root_path = ""  # the whole path is the endpoint's own
        endpoint.channel = f"websocket:{path}"
        self._websocket_endpoints[path] = endpoint

    def _mount_for(self, path: str) -> Mount | None:
        for mount in self._mounts:
            if path.startswith(mount.under) or path == mount.prefix:
                return mount
        return None

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        cid = new_cid()
        started = perf_counter()
        trace = RequestTrace()
        try:
            response = await self._dispatch(scope, receive, cid, trace)
        except _ToCatchAll:
            return await self._serve_mount(self._catch_all, scope, receive, send, cid)
        except HTTPError as exc:
            response = error_response(exc.status, cid, exc.details, exc.headers, exc.extra)
        except Exception:
            logger.exception("cid=%s unhandled error in %s %s", cid, scope.get("method"), scope.get("path"))
            response = error_response(500, cid)
        await _send_response(send, response, cid)
        if self.observer is not None:
            self.observer(trace, scope["method"], scope["path"], response.status, perf_counter() - started, cid)

    async def _dispatch(self, scope: dict[str, Any], receive: Callable, cid: str, trace: RequestTrace) -> HTTPResponse:
        route, params = self.router.match(scope["path"], scope.get("raw_path"))
        if route is None:
            if self._catch_all is not None and not _is_admin_path(scope["path"]):
                raise _ToCatchAll
            raise HTTPError(404)
        method = scope["method"]
        handler = route.handlers.get(method)
        if handler is None:
            if method == "HEAD" and "GET" in route.handlers:
                handler = route.handlers["GET"]
            else:
                raise HTTPError(405, headers={"allow": ", ".join(sorted(route.handlers))})
        raw_headers = scope["headers"]
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in raw_headers}
        # fewer names than headers: some were repeated (the last value is kept, as before)
        repeated = _repeated(raw_headers) if len(headers) != len(raw_headers) else NO_REPEATED_HEADERS
        body = await self._read_body(receive, headers)
        request = HTTPRequest(method, scope["path"], scope.get("query_string", b""), headers, body,
                              scope.get("client"), cid, params, scope, self.server, trace, repeated)
        return await handler(request)

    async def _read_body(self, receive: Callable, headers: dict[str, str]) -> bytes:
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_size:
            raise HTTPError(413, f"Error 413 Content Too Large: the body is over {self.max_body_size} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.max_body_size:
                    raise HTTPError(413, f"Error 413 Content Too Large: the body is over {self.max_body_size} bytes")
                chunks.append(chunk)
            if not message.get("more_body"):
                break
        return b"".join(chunks) if len(chunks) != 1 else chunks[0]

    # ############################################################################################
    # Mounted ASGI applications and WebSockets

    async def _websocket(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        """ A WebSocket goes to the endpoint at its path, the mount its path is under, or the
        catch-all; any other is refused before the handshake completes. """
        path = scope["path"]
        mount = self._websocket_endpoints.get(path) if self._websocket_endpoints else None
        if mount is None and self._mounts:
            mount = self._mount_for(path)
        if mount is None and self._catch_all is not None and not _is_admin_path(path):
            mount = self._catch_all
        if mount is not None:
            return await self._serve_mount(mount, scope, receive, send)
        cid = new_cid()
        details = (f"Error 404 Not Found: no WebSocket endpoint at {path}: no WebSocket channel and no application "
                   f"a plugin mounts takes that path")
        if _is_admin_path(path) or self._has_websocket_plugin():
            logger.info("cid=%s WebSocket upgrade to %s refused (404): no WebSocket channel at that path", cid, path)
            details += "; connect to the path in the address of a WebSocket channel (channel_web_socket)"
        else:
            hint = self._websocket_plugin_hint()
            logger.warning("cid=%s WebSocket upgrade to %s refused (404): this server has no WebSocket channels; "
                           "%s", cid, path, hint)
            details += f"; this server has no WebSocket channels: {hint}"
        await _deny_websocket(scope, send, 404, cid, details)

    def _has_websocket_plugin(self) -> bool:
        """ Whether the plugin of WebSocket channels is loaded (asked only when refusing one). """
        loaded = getattr(self.server, "plugins", None)
        return any(info.name == WEBSOCKET_PLUGIN and info.loaded for info in getattr(loaded, "plugins", ()))

    def _websocket_plugin_hint(self) -> str:
        """ What to install and switch on for WebSocket channels, worked out at the first refusal
        (it looks at the installed distributions) and kept: plugins do not change while serving. """
        hint = self._websocket_hint
        if hint is None:
            from zato.plugins import plugin_needed
            loaded = getattr(self.server, "plugins", None)
            hint = self._websocket_hint = plugin_needed(
                "a WebSocket channel", WEBSOCKET_PLUGIN,
                loaded=loaded.enabled_names() if hasattr(loaded, "enabled_names") else ())
        return hint

    async def _serve_mount(self, mount: Mount, scope: dict[str, Any], receive: Callable, send: Callable,
                           cid: str | None = None) -> None:
        """ Hands one connection to a mounted application, and answers for it if it fails:
        nothing it raises reaches hypercorn. """
        cid = cid or new_cid()
        started = perf_counter()
        # The scope is hypercorn's, made for this request or connection and not used again: it is
        # changed in place (a copy would live as long as each WebSocket connection)
        if mount.root_path:
            scope["root_path"] = scope.get("root_path", "") + mount.root_path
        extensions = scope.get("extensions")
        if extensions is None:
            extensions = scope["extensions"] = {}
        extensions["zato"] = {"cid": cid, "server": self.server, "prefix": mount.prefix,
                              "websocket_ping": True}  # zato.server.websocket_pings
        reply = _MountReply(send, cid)
        try:
            await mount.app(scope, receive, reply.send)
        except Exception:
            logger.exception("cid=%s the ASGI application mounted at %s by plugin %r failed on %s %s", cid,
                             mount.prefix, mount.plugin, scope.get("method", "WebSocket"), scope["path"])
            await self._answer_for_failed_mount(scope, reply, cid)
        else:
            if reply.status == 0:
                logger.error("cid=%s the ASGI application mounted at %s by plugin %r returned without answering "
                             "%s %s", cid, mount.prefix, mount.plugin, scope.get("method", "WebSocket"), scope["path"])
                await self._answer_for_failed_mount(scope, reply, cid)
        if self.observer is not None and scope["type"] == "http":
            trace = RequestTrace()
            trace.channel = mount.channel
            self.observer(trace, scope["method"], scope["path"], reply.status, perf_counter() - started, cid)

    async def _answer_for_failed_mount(self, scope: dict[str, Any], reply: "_MountReply", cid: str) -> None:
        """ A 500 if nothing was answered yet; once a response started, hypercorn closes the
        connection when the application is done, so a client sees the body is cut short. """
        try:
            if scope["type"] == "http":
                if reply.status == 0:
                    reply.status = 500
                    await _send_response(reply.raw_send, error_response(500, cid), cid)
            elif reply.status == 0:
                reply.status = 500
                await _deny_websocket(scope, reply.raw_send, 500, cid)
            elif reply.status == 101 and not reply.closed:
                await reply.raw_send({"type": "websocket.close", "code": 1011})  # internal error
        except Exception:  # the client went away or the application left the stream in a state we cannot answer in
            logger.warning("cid=%s could not answer for the failed ASGI application (response already started)", cid)


@dataclass(slots=True)
class Mount:
    """ One mounted ASGI application, as `ASGIApp` matches it. """
    prefix: str
    app: Callable
    plugin: str
    under: str = ""  # prefix + "/": what paths under it start with
    root_path: str = ""  # what the app's scope["root_path"] gets ("" for the catch-all)
    channel: str = ""  # the channel name in request logs and metrics

    def __post_init__(self) -> None:
        self.root_path = "" if self.prefix == "/" else self.prefix
        self.under = self.root_path + "/"
        self.channel = f"asgi_mount:{self.prefix}"


class _ToCatchAll(Exception):
    """ No route matched and a catch-all application is mounted: `_http` hands it the request. """


class _MountReply:
    """ The `send` a mounted application gets: adds X-Zato-CID to its response and remembers
    what was answered (the status: 0 before any answer, 101 for an accepted WebSocket). """
    __slots__ = ("raw_send", "cid", "status", "closed")

    def __init__(self, send: Callable, cid: str) -> None:
        self.raw_send = send
        self.cid = cid
        self.status = 0
        self.closed = False

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind in _ANSWERS:
            if kind == "websocket.close":
                self.closed = True
                self.status = self.status or 403  # closed before accept: the handshake is refused with 403
            else:
                self.status = 101 if kind == "websocket.accept" else int(message.get("status", 200))
                message = {**message, "headers": [*message.get("headers", ()), (b"x-zato-cid", self.cid.encode())]}
        await self.raw_send(message)


_ANSWERS = frozenset(("http.response.start", "websocket.accept", "websocket.http.response.start", "websocket.close"))


def _is_admin_path(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_UNDER)


ADMIN_UNDER = ADMIN_PREFIX + "/"  # zato.registry refuses mounts there; the catch-all never gets these paths


async def _send_response(send: Callable, response: HTTPResponse, cid: str) -> None:
    """ Every response of ours, as ASGI messages: its headers with Content-Type, Content-Length
    and X-Zato-CID first. """
    headers = [(b"content-type", response.content_type.encode("latin-1")),
               (b"content-length", str(len(response.body)).encode()), (b"x-zato-cid", cid.encode())]
    for name, value in response.headers.items():
        headers.append((name.lower().encode("latin-1"), str(value).encode("latin-1")))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


async def _deny_websocket(scope: dict[str, Any], send: Callable, status: int, cid: str, details: str | None = None) -> None:
    """ Refuses a WebSocket handshake: an HTTP denial response with Zato's JSON error where the
    server supports the ASGI extension for it, else `websocket.close` (code 1008, policy
    violation), which servers answer with a 403. """
    try:
        if "websocket.http.response" in (scope.get("extensions") or {}):
            response = error_response(status, cid, details)
            await send({"type": "websocket.http.response.start", "status": status, "headers": [
                (b"content-type", response.content_type.encode("latin-1")),
                (b"content-length", str(len(response.body)).encode()), (b"x-zato-cid", cid.encode())]})
            await send({"type": "websocket.http.response.body", "body": response.body})
        else:
            await send({"type": "websocket.close", "code": 1008})
    except Exception:  # the client is gone: nothing to refuse any more
        logger.info("cid=%s could not refuse WebSocket %s: the connection is gone", cid, scope.get("path"))


def _repeated(raw_headers: list[tuple[bytes, bytes]]) -> frozenset[str]:
    seen: set[str] = set()
    repeated = set()
    for name, _ in raw_headers:
        key = name.decode("latin-1")
        if key in seen:
            repeated.add(key)
        seen.add(key)
    return frozenset(repeated)


# ################################################################################################
# The HTTP/1.1 protocol: reason phrases on the status line and our Server header


WEBSOCKET_PLUGIN = "wsx"  # the plugin of WebSocket channels (distribution zato-plugin-wsx)


def install_http_protocol() -> None:
    """ Makes hypercorn's HTTP/1.1 connections send a reason phrase on each status line (h11
    sends `HTTP/1.1 200 ` without one, which some clients and proxies show or log as it is) and
    the Server header of the ASGIApp they serve (`[http] server_header`) instead of
    `hypercorn-h11`, on hypercorn's own replies too (400 for a malformed request...). Other
    ASGI applications that hypercorn serves in this process keep its header. Called when an
    ASGIApp is made; the protocol is zato.server.http_transport's, with its cheaper transport. """
    from zato.server import http_transport
    http_transport.install()


def _use_server_header(config: Any, app: Any) -> None:
    """ Once per hypercorn Config: its responses carry our ASGIApp's Server header (none if it
    is ""); a Config serving another application is left as it is. """
    header = app.server_header if isinstance(app, ASGIApp) else None
    config._zato_server_header = header
    if header is None:
        return
    config.include_server_header = False
    if header:
        hypercorn_headers = config.response_headers  # Date and Alt-Svc, as hypercorn makes them
        ours = [(b"server", header.encode("latin-1"))]
        config.response_headers = lambda protocol: hypercorn_headers(protocol) + ours
