""" Testing services without a running server.

`ServiceTester` builds the real `zato.server.server.Server` with the built-in plugins and an
in-memory configuration, but no HTTP, database or start-up phases, and invokes services through
the same `Server.invoke_service` a channel uses: SimpleIO parsing and output checks,
`handle_<METHOD>`, `before_handle`/`after_handle`, a plain `def` service in a worker thread and an
`async def` one on the trio loop, `self.invoke` of other services registered in the tester.

Outgoing connections get canned answers: `tester.outgoing("out.plain_http", "CRM",
CannedHTTP(json={...}))` makes `self.out.plain_http["CRM"].conn.get(self.cid)` in the service
return that answer, and records the call. `CannedSMTP` records the messages a service sends.

```python
tester = ServiceTester(GetUser)
result = await tester.invoke(GetUser, {"user_id": 1}, http_method="GET")   # in an async test
result = tester.invoke_sync("api.user.get", {"user_id": 1})                 # in a plain test
assert result.payload == {...}
```

The pytest fixtures `zato_service_tester`, `zato_invoke` and `zato_invoke_sync` (module
`zato.testing.pytest_plugin`) give a fresh tester per test.
"""

from __future__ import annotations

import json as json_module
import shutil
import sys
import tempfile
import weakref
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable

import trio

from zato.common.util import new_cid
from zato.config import Bunch, apply_schema
from zato.plugins import discover_plugins, load_plugins
from zato.registry import Kind
from zato.server.server import Server, ServerPaths, WorkerOptions
from zato.server.service import HTTPRequestInfo, Service, in_trio_thread
from zato.server.service.simpleio import SIOError
from zato.server.deployment import ServiceEntry, ServiceNotFound, service_name

__all__ = [
    "CannedHTTP", "CannedResponse", "CannedSMTP", "HTTPCall", "ServiceResult", "ServiceTester", "UnknownService",
]


class UnknownService(ServiceNotFound):
    """ A service the tester was asked to invoke was never added to it. """

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        listed = ", ".join(known) or "none yet"
        self.args = (f"no service {name!r} in this ServiceTester (it has: {listed}); add it with "
                     f"tester.add(TheServiceClass), tester.add('my_package.my_module') or "
                     f"tester.add(Path('pickup/my_file.py'))",)


@dataclass
class ServiceResult:
    """ What a service answered: its response's payload, status code, headers and content type. """
    payload: Any
    status_code: int
    headers: dict[str, str]
    content_type: str | None
    cid: str
    service: str


class _TesterServer(Server):
    """ The real server, with an error naming what the tester holds when a service is missing. """

    async def invoke_service(self, name: str, payload: Any = None, **kwargs: Any) -> Any:
        if name not in self.services.entries:
            raise UnknownService(name, self.services.names())
        return await super().invoke_service(name, payload, **kwargs)


class ServiceTester:
    """ Runs services as a server would, without one.

    `services` are added at once (see `add`). `config` sets server.conf sections
    (`{"main": {"sync_service_threads": 4}}`); `user_config` is what services read as
    `self.config`. Only the built-in plugins are loaded, plus the installed ones named in
    `plugins`. `base_dir` is the server directory services see (`self.server.base_dir`); by
    default a temporary one, removed when the tester is closed or garbage-collected.
    """

    def __init__(self, *services: Any, config: dict[str, dict[str, Any]] | None = None,
                 user_config: dict[str, Any] | None = None, plugins: Iterable[str] = (),
                 base_dir: Path | str | None = None) -> None:
        if base_dir is None:
            base_dir = tempfile.mkdtemp(prefix="zato-service-tester-")
            self._cleanup: Callable[[], Any] = weakref.finalize(self, shutil.rmtree, base_dir, True)
        else:
            Path(base_dir).mkdir(parents=True, exist_ok=True)
            self._cleanup = lambda: None
        self.server = _build_server(Path(base_dir), config or {}, user_config or {}, set(plugins))
        self._names: dict[type, str] = {}
        self.add(*services)

    # ############################################################################################
    # Services

    def add(self, *items: Any) -> list[str]:
        """ Adds services and returns their names. Each item is a `Service` subclass, a module
        (or its dotted name) whose services are all added, or the path of a `.py` file deployed
        as the server deploys `pickup/` files (so services get the same names as there). """
        names: list[str] = []
        for item in items:
            if isinstance(item, type) and issubclass(item, Service):
                names.append(self._add_class(item))
            elif isinstance(item, Path) or (isinstance(item, str) and item.endswith(".py")):
                names.extend(entry.name for entry in self._remember(self.server.services.deploy_file(Path(item))))
            elif isinstance(item, ModuleType):
                entries = self.server.services.entries_of(item, internal=False)
                self.server.services.add_entries(entries)
                names.extend(entry.name for entry in self._remember(entries))
            elif isinstance(item, str):
                entries = self.server.services.deploy_module(item, internal=False)
                names.extend(entry.name for entry in self._remember(entries))
            else:
                raise TypeError(f"tester.add() takes Service subclasses, modules, dotted module names or paths of "
                                f".py files, not {item!r}")
        return names

    def name_of(self, service: type[Service] | str) -> str:
        """ The name a service class is invoked by (adding it if it is not there yet); a name as it is. """
        if isinstance(service, str):
            return service
        if isinstance(service, type) and issubclass(service, Service):
            return self._names.get(service) or self._add_class(service)
        raise TypeError(f"a service is a Service subclass or a service name, not {service!r}")

    def _add_class(self, cls: type[Service]) -> str:
        if cls in self._names:
            return self._names[cls]
        module = sys.modules.get(cls.__module__)
        public_module = getattr(module, "__zato_service_module__", cls.__module__)
        entry = ServiceEntry(service_name(cls, public_module), cls.__module__, cls.__name__,
                             getattr(module, "__file__", "") or "", False).attach(cls)
        self.server.services.add_entries([entry])
        self._names[cls] = entry.name
        return entry.name

    def _remember(self, entries: list[ServiceEntry]) -> list[ServiceEntry]:
        for entry in entries:
            self._names[entry.cls] = entry.name
        return entries

    # ############################################################################################
    # Outgoing connections

    def outgoing(self, accessor: str, name: str, connection: Any) -> Any:
        """ Makes `connection` the outgoing connection `name` services reach through `accessor`
        (`"out.plain_http"`, `"email.smtp"`, `"out.sql"`...); returns it. The object is what the
        service's `self.out.plain_http[name]` (or `.get(name)`) returns, so it needs the shape the
        service uses: `CannedHTTP` and `CannedSMTP` have `.conn`, which is themselves. """
        self.server.outgoing.map(accessor).set(name, connection)
        if getattr(connection, "name", None) == "":  # a canned connection names itself in its errors
            connection.name = name
        return connection

    def set_kvdb(self, kvdb: Any) -> Any:
        """ What services get as `self.kvdb` (they use `self.kvdb.conn`). """
        self.server.service_attributes["kvdb"] = lambda service: kvdb
        return kvdb

    # ############################################################################################
    # Invoking

    async def invoke(self, service: type[Service] | str, payload: Any = None, *, http_method: str | None = None,
                     params: dict[str, Any] | None = None, headers: dict[str, str] | None = None, path: str = "",
                     channel: str = "invoke", raw_request: Any = None, cid: str | None = None,
                     timeout: float | None = None) -> ServiceResult:
        """ Invokes a service (its class or name) and returns what it answered. Its exceptions
        propagate: `InputError`/`OutputError` list every bad field, `UnknownService` lists what
        the tester holds, `trio.TooSlowError` after `timeout` seconds.

        `http_method`, `params` (path and query parameters), `headers` (names lower-cased) and
        `path` make it an HTTP request as a REST channel builds it: `handle_<http_method>` runs if the service has one,
        and SimpleIO reads `params` as well as `payload`. `raw_request` is what the service sees
        as `self.request.raw_request` (by default the payload). Work the service starts in the
        background (`self.invoke_async`) is waited for before this returns.
        """
        name = self.name_of(service)
        server = self.server
        server.trio_token = trio.lowlevel.current_trio_token()
        http = None
        if http_method is not None or params is not None or headers is not None or path:
            headers = {str(key).lower(): value for key, value in (headers or {}).items()}  # as channels give them
            http = HTTPRequestInfo((http_method or "").upper(), dict(params or {}), headers, path)
        cid = cid or new_cid()
        error: BaseException | None = None
        async with trio.open_nursery() as nursery:
            server.background_nursery = nursery
            try:
                response = await server.invoke_service(name, payload, cid=cid, channel=channel,
                                                       raw_request=raw_request, http=http, timeout=timeout)
            except SIOError as exc:
                exc.add_note(f"in service {name!r} (cid {cid}), invoked by ServiceTester")
                error = exc
            except Exception as exc:  # raised after the nursery, not wrapped in an exception group
                error = exc
        if error is not None:
            raise error
        return ServiceResult(response.payload, int(response.status_code), dict(response.headers),
                             response.content_type, cid, name)

    def invoke_sync(self, service: type[Service] | str, payload: Any = None, **kwargs: Any) -> ServiceResult:
        """ `invoke` for plain (not async) tests: runs it in a trio run of its own. """
        if in_trio_thread():
            raise RuntimeError("invoke_sync() was called inside a trio run (an async test); use "
                               "`await tester.invoke(...)` there")
        return trio.run(partial(self.invoke, service, payload, **kwargs))

    def close(self) -> None:
        """ Removes the temporary server directory (if the tester made one). """
        self._cleanup()

    def __enter__(self) -> "ServiceTester":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ServiceTester services={self.server.services.names()}>"


def _build_server(base_dir: Path, config: dict[str, dict[str, Any]], user_config: dict[str, Any],
                  plugins: set[str]) -> Server:
    installed = {info.name: info.builtin for info in discover_plugins()}
    missing = plugins - set(installed)
    if missing:
        raise ValueError(f"no such plugin installed: {', '.join(sorted(missing))}; installed: "
                         f"{', '.join(sorted(installed))}")
    loaded = load_plugins({name: builtin or name in plugins for name, builtin in installed.items()})
    server_config = Bunch({section: Bunch(values) for section, values in config.items()})
    server_config.setdefault("main", Bunch())
    server_config.setdefault("misc", Bunch())
    server_config["__path__"] = "ServiceTester(config=...)"
    warnings = apply_schema(server_config, loaded.registry.values(Kind.SERVER_CONFIG))
    if warnings:
        raise ValueError("; ".join(warnings))
    server = _TesterServer(ServerPaths(base_dir), server_config, loaded, WorkerOptions(write_runtime_file=False), [])
    server.user_config = _to_bunch(user_config)
    return server


def _to_bunch(value: Any) -> Any:
    """ Nested dicts as `Bunch`es, so services read them with attributes as they read config files. """
    if isinstance(value, dict):
        return Bunch({key: _to_bunch(item) for key, item in value.items()})
    return value


# ################################################################################################
# Canned outgoing connections


class _Awaitable:
    """ A result that is also awaitable (to itself), so service code gets it the same way whether
    it calls `conn.get(...)` from a plain `def handle` or awaits it from an `async def handle`. """

    def __await__(self):
        return self._itself().__await__()

    async def _itself(self) -> Any:
        return self


class _Headers(dict):
    """ HTTP headers: a dict whose lookups ignore case, as `requests`' are. """

    def __init__(self, items: dict[str, str] | None = None) -> None:
        super().__init__(items or {})
        self._lower = {key.lower(): key for key in self}

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(self._lower.get(key.lower(), key))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._lower

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default


class CannedResponse(_Awaitable):
    """ An HTTP response as Zato's plain HTTP connections return it: `text`, `content`, `data`
    (the parsed JSON, or None), `status_code`, `headers`, `ok` and `json()`. Give `text` or `json`. """

    def __init__(self, text: str | bytes | None = None, *, json: Any = ..., status_code: int = 200,
                 headers: dict[str, str] | None = None) -> None:
        headers = dict(headers or {})
        if json is not ...:
            if text is not None:
                raise ValueError("give a CannedResponse `text` or `json`, not both")
            text = json_module.dumps(json)
            headers.setdefault("Content-Type", "application/json")
        self.content = text.encode("utf-8") if isinstance(text, str) else (text or b"")
        self.text = self.content.decode("utf-8", "replace")
        self.status_code = status_code
        self.headers = _Headers(headers)
        try:
            self.data = json_module.loads(self.text) if self.text else None
        except ValueError:
            self.data = None

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    def json(self) -> Any:
        return json_module.loads(self.text)

    def __repr__(self) -> str:
        return f"<CannedResponse {self.status_code} {self.text[:60]!r}>"


@dataclass
class HTTPCall:
    """ One request a service made through a `CannedHTTP` connection. """
    method: str
    cid: str
    params: dict[str, Any] | None
    data: Any = None
    headers: dict[str, str] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


def _as_response(answer: Any) -> CannedResponse:
    if isinstance(answer, CannedResponse):
        return answer
    if isinstance(answer, (str, bytes)):
        return CannedResponse(answer)
    return CannedResponse(json=answer)


class CannedHTTP:
    """ An outgoing plain HTTP connection with canned answers, for `tester.outgoing("out.plain_http",
    name, CannedHTTP(...))`. Services use it as a real one: `self.out.plain_http[name].conn.get(cid,
    params)`, `.post(cid, data, params)`, `.put`, `.patch`, `.delete`, `.options`, `.ping()`.

    Answers, one of: `text` or `json` (with `status_code`, `headers`): the answer to every call;
    `answers`: one per call, in order (a `CannedResponse`, a str as text, anything else as JSON);
    `handler(call) -> answer` for answers that depend on the request (it may raise, e.g.
    `ConnectionError`, to test failures). Every call is recorded in `calls` (`HTTPCall`).
    """

    def __init__(self, text: str | bytes | None = None, *, json: Any = ..., status_code: int = 200,
                 headers: dict[str, str] | None = None, answers: Iterable[Any] | None = None,
                 handler: Callable[[HTTPCall], Any] | None = None, name: str = "") -> None:
        given = sum((text is not None or json is not ..., answers is not None, handler is not None))
        if given > 1:
            raise ValueError("give CannedHTTP one of: text/json, answers, handler")
        self.name = name
        self._answers = list(answers) if answers is not None else None
        self._handler = handler
        self._default = CannedResponse(text, json=json, status_code=status_code, headers=headers) \
            if (text is not None or json is not ...) else CannedResponse("", status_code=status_code, headers=headers)
        self.calls: list[HTTPCall] = []

    @property
    def conn(self) -> "CannedHTTP":
        """ `self.out.plain_http[name].conn`: the connection itself. """
        return self

    @property
    def last_call(self) -> HTTPCall:
        if not self.calls:
            raise AssertionError(f"CannedHTTP {self.name!r} was never called")
        return self.calls[-1]

    def _call(self, method: str, cid: str, params: Any, data: Any, headers: Any, kwargs: dict[str, Any]) -> CannedResponse:
        call = HTTPCall(method, cid, params, data, headers, kwargs)
        self.calls.append(call)
        if self._handler is not None:
            return _as_response(self._handler(call))
        if self._answers is not None:
            index = len(self.calls) - 1
            if index >= len(self._answers):
                raise AssertionError(f"CannedHTTP {self.name!r}: call {index + 1} ({method}) but only "
                                     f"{len(self._answers)} answers were given")
            return _as_response(self._answers[index])
        return self._default

    def get(self, cid: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
            **kwargs: Any) -> CannedResponse:
        return self._call("GET", cid, params, None, headers, kwargs)

    def delete(self, cid: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
               **kwargs: Any) -> CannedResponse:
        return self._call("DELETE", cid, params, None, headers, kwargs)

    def options(self, cid: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
                **kwargs: Any) -> CannedResponse:
        return self._call("OPTIONS", cid, params, None, headers, kwargs)

    def post(self, cid: str, data: Any = "", params: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None, **kwargs: Any) -> CannedResponse:
        return self._call("POST", cid, params, data, headers, kwargs)

    def put(self, cid: str, data: Any = "", params: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None, **kwargs: Any) -> CannedResponse:
        return self._call("PUT", cid, params, data, headers, kwargs)

    def patch(self, cid: str, data: Any = "", params: dict[str, Any] | None = None,
              headers: dict[str, str] | None = None, **kwargs: Any) -> CannedResponse:
        return self._call("PATCH", cid, params, data, headers, kwargs)

    def ping(self, cid: str = "") -> CannedResponse:
        return self._call("HEAD", cid, None, None, None, {})

    def __repr__(self) -> str:
        return f"<CannedHTTP {self.name!r} calls={len(self.calls)}>"


class _Sent(_Awaitable):
    def __bool__(self) -> bool:
        return True


class CannedSMTP:
    """ An outgoing SMTP connection that sends nothing and keeps each message in `sent`, for
    `tester.outgoing("email.smtp", name, CannedSMTP())`; services call
    `self.email.smtp[name].conn.send(message)` as with a real one. """

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.sent: list[Any] = []

    @property
    def conn(self) -> "CannedSMTP":
        return self

    def send(self, message: Any, from_: str | None = None) -> Any:
        self.sent.append(message)
        return _Sent()

    def __repr__(self) -> str:
        return f"<CannedSMTP {self.name!r} sent={len(self.sent)}>"
