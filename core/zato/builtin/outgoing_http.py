""" The `outgoing_http` plugin: plain HTTP outgoing connections (Zato's `outgoing_rest`).

    conn = self.out.plain_http["My Data Source"].conn
    data = conn.get(self.cid, {"user_id": 1}).data          # in a plain `def handle`
    data = (await conn.get(self.cid, {"user_id": 1})).data  # in an `async def handle`

`url_path` may hold `{param}` segments filled from `params`; the other params go to the query
string. Built on httpx with connection pooling: a sync client for plain services (they run in
worker threads) and an async one for async services, sharing the same settings.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from zato import hookimpl
from zato.registry import (
    ZATO_HTTP_SOAP_IGNORED, ZATO_NO_SECURITY, Connector, Field, ObjectType, OutgoingConnectionType, ZatoSpelling,
)
from zato.server.outgoing import BlockingCalls, OutgoingError

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("zato.outgoing.http")

# httpx is imported when the first connection is built, not when the plugin loads: a server
# without plain HTTP connections does not pay for it at start-up.

OBJECT_TYPE = "outgoing_rest"
PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

OUTGOING_REST = ObjectType(OBJECT_TYPE, (
    Field("name", required=True, description="What services look the connection up by: self.out.plain_http[name]"),
    Field("address", required=True, description="Scheme, host and port, e.g. https://api.example.com; may be $NAME",
          example="http://127.0.0.1:8080"),
    Field("url_path", default="/", example="/api/user/{user_id}",
          description="Path with optional {param} segments filled from params; the other params go to the query string"),
    Field("data_format", default="json", choices=("json", "text", "form"),
          description="How request data is sent and the reply read: json (dicts and lists are sent as JSON; the "
                      "reply's .data is the parsed body), text or form"),
    Field("timeout", "float", default=10.0, minimum=0, description="Seconds to wait for a connection and for each read"),
    Field("tls_verify", "bool", default=True, description="Verify the server's TLS certificate"),
    Field("security", references="security",
          description="A security definition with direction: outgoing (basic_auth or apikey) to authenticate with"),
    Field("pool_size", "int", default=10, minimum=1, description="Connections kept open to the address"),
    Field("is_active", "bool", default=True, description="An inactive connection is not built"),
), description="A plain HTTP outgoing connection",
    zato=ZatoSpelling("outgoing_rest", keys=("outconn_plain_http", "http_soap"),
                      when={"connection": ("outgoing", None), "transport": ("plain_http", None)},
                      fields={"host": "address", "security_name": "security", "sec_def": "security",
                              "validate_tls": "tls_verify"},
                      values={"security_name": {ZATO_NO_SECURITY: None, "": None},
                              "sec_def": {ZATO_NO_SECURITY: None, "": None}},
                      ignored=ZATO_HTTP_SOAP_IGNORED + ("method", "service", "service_name")))


class Response:
    """ What a call returns: `.status_code`, `.headers`, `.text`, `.content`, and `.data` (the
    parsed JSON body for json connections, or None). """

    def __init__(self, response: httpx.Response, data_format: str) -> None:
        self.status_code = response.status_code
        self.headers = response.headers
        self.content = response.content
        self.text = response.text
        self.data: Any = None
        if data_format == "json" and self.content:
            try:
                self.data = json.loads(self.content)
            except ValueError:
                self.data = None

    def json(self) -> Any:
        return json.loads(self.content)

    def __repr__(self) -> str:
        return f"<Response {self.status_code}>"


class PlainHTTPConnection:
    """ One outgoing plain HTTP connection (its `.conn` is itself, as Zato's accessor expects). """

    def __init__(self, server: Any, definition: dict[str, Any]) -> None:
        import httpx
        self.name = definition["name"]
        self.address = str(definition["address"]).rstrip("/")
        if not self.address.startswith(("http://", "https://")):
            raise ValueError(f"address {self.address!r} must start with http:// or https://")
        self.url_path = definition.get("url_path") or "/"
        self.data_format = definition.get("data_format") or "json"
        self.timeout = float(definition.get("timeout") or 10.0)
        self.definition = definition
        auth, headers = None, {}
        if definition.get("security"):
            from zato.server.credentials import outgoing_credentials
            credentials = outgoing_credentials(server, definition["security"])
            if credentials["header"]:  # an API key, sent in its header
                headers[credentials["header"]] = credentials["password"]
            else:
                auth = httpx.BasicAuth(credentials["username"] or "", credentials["password"])
        limits = httpx.Limits(max_connections=int(definition.get("pool_size") or 10),
                              max_keepalive_connections=int(definition.get("pool_size") or 10))
        self._options = {"auth": auth, "headers": headers, "timeout": httpx.Timeout(self.timeout), "limits": limits,
                         "verify": bool(definition.get("tls_verify", True)), "follow_redirects": False}
        self._sync: httpx.Client | None = None
        self._async: httpx.AsyncClient | None = None
        self._calls = BlockingCalls(f"outgoing plain_http {self.name!r}")  # async services use the async client

    @property
    def conn(self) -> "PlainHTTPConnection":
        return self

    # ############################################################################################

    def url(self, params: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        """ The full URL with path parameters filled in, and the params left for the query string. """
        params = dict(params or {})
        missing = [name for name in PATH_PARAM.findall(self.url_path) if name not in params]
        if missing:
            raise OutgoingError(f"outgoing plain_http {self.name!r}: url_path {self.url_path!r} needs "
                                f"{', '.join(missing)} in params")
        path = PATH_PARAM.sub(lambda m: quote(str(params.pop(m.group(1))), safe=""), self.url_path)
        return self.address + (path if path.startswith("/") else "/" + path), params

    def _body(self, data: Any, headers: dict[str, str]) -> dict[str, Any]:
        if data is None or data == "":
            return {}
        if isinstance(data, (bytes, str)):
            return {"content": data}
        if self.data_format == "form":
            return {"data": data}
        headers.setdefault("content-type", "application/json")
        return {"content": json.dumps(data)}

    def request(self, method: str, cid: str, data: Any = None, params: dict | None = None,
                headers: dict | None = None) -> Any:
        """ Sends one request. From a plain service it returns a `Response`; from an async
        service it returns an awaitable of one. """
        url, query = self.url(params)
        headers = {"x-zato-cid": cid or "", **(headers or {})}
        body = self._body(data, headers)
        return self._calls.call(self._request_sync, method, url, query, headers, body, on_loop=self._request_async)

    def _request_sync(self, method: str, url: str, query: dict, headers: dict, body: dict) -> Response:
        import httpx
        try:
            return Response(self._sync_client().request(method, url, params=query, headers=headers, **body),
                            self.data_format)
        except httpx.HTTPError as exc:
            raise self._error(method, url, exc) from exc

    async def _request_async(self, method: str, url: str, query: dict, headers: dict, body: dict) -> Response:
        import httpx
        try:
            reply = await self._async_client().request(method, url, params=query, headers=headers, **body)
        except httpx.HTTPError as exc:
            raise self._error(method, url, exc) from exc
        return Response(reply, self.data_format)

    def _error(self, method: str, url: str, exc: httpx.HTTPError) -> OutgoingError:
        import httpx
        if isinstance(exc, httpx.TimeoutException):
            reason = f"timed out after {self.timeout} s"
        elif isinstance(exc, httpx.ConnectError):
            reason = f"cannot connect ({exc}); is the server at {self.address} running?"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        return OutgoingError(f"outgoing plain_http {self.name!r}: {method} {url} {reason}")

    def get(self, cid: str, params: dict | None = None, headers: dict | None = None) -> Any:
        return self.request("GET", cid, None, params, headers)

    def delete(self, cid: str, params: dict | None = None, headers: dict | None = None) -> Any:
        return self.request("DELETE", cid, None, params, headers)

    def options(self, cid: str, params: dict | None = None, headers: dict | None = None) -> Any:
        return self.request("OPTIONS", cid, None, params, headers)

    def post(self, cid: str, data: Any = "", params: dict | None = None, headers: dict | None = None) -> Any:
        return self.request("POST", cid, data, params, headers)

    def put(self, cid: str, data: Any = "", params: dict | None = None, headers: dict | None = None) -> Any:
        return self.request("PUT", cid, data, params, headers)

    def patch(self, cid: str, data: Any = "", params: dict | None = None, headers: dict | None = None) -> Any:
        return self.request("PATCH", cid, data, params, headers)

    # ############################################################################################

    def _sync_client(self) -> httpx.Client:
        import httpx
        if self._sync is None:
            self._sync = httpx.Client(**self._options)
        return self._sync

    def _async_client(self) -> httpx.AsyncClient:
        import httpx
        if self._async is None:
            self._async = httpx.AsyncClient(**self._options)
        return self._async

    def ping(self) -> None:
        """ HEAD on the address: any HTTP answer means the server is reachable. """
        import httpx
        try:
            self._sync_client().head(self.address + "/")
        except httpx.HTTPError as exc:
            raise self._error("HEAD", self.address + "/", exc) from exc

    async def close(self) -> None:
        if self._async is not None:
            await self._async.aclose()
        if self._sync is not None:
            self._sync.close()


@hookimpl
def register_connectors(register):
    register(Connector(OUTGOING_REST, OutgoingConnectionType(
        "plain_http", OBJECT_TYPE, "out.plain_http", PlainHTTPConnection, "Plain HTTP (REST) connections")))
