""" What service code imports: `from zato.server.service import Service` and the SimpleIO types.

A service is a class with `handle()`. A plain `def handle` runs in a worker thread (blocking
libraries are fine there); an `async def handle` runs on the trio loop. Both reach the same
API: `self.request`, `self.response`, `self.invoke`, `self.logger`, `self.server`...
"""

from __future__ import annotations

import contextvars
import logging
from types import MappingProxyType
from typing import Any, Mapping

import trio

from zato.config import Bunch

__all__ = [
    "AsIs", "Bool", "Date", "DateTime", "Decimal", "Dict", "Float", "Int", "List", "Opaque",
    "Service", "Text", "UUID",
]


# ################################################################################################
# SimpleIO element types


class SIOElem:
    """ A SimpleIO element: a name and the type its value is converted to. """
    type_name = "text"

    def __init__(self, name: str, default: Any = None) -> None:
        self.name = name
        self.default = default

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class AsIs(SIOElem):
    type_name = "as_is"


Opaque = AsIs


class Bool(SIOElem):
    type_name = "bool"


class Int(SIOElem):
    type_name = "int"


class Float(SIOElem):
    type_name = "float"


class Decimal(SIOElem):
    type_name = "decimal"


class Date(SIOElem):
    type_name = "date"


class DateTime(SIOElem):
    type_name = "datetime"


class Dict(SIOElem):
    type_name = "dict"


class List(SIOElem):
    type_name = "list"


class Text(SIOElem):
    type_name = "text"


class UUID(SIOElem):
    type_name = "uuid"


# ################################################################################################


class HTTPRequestInfo:
    """ `self.request.http`: method, parameters (path and query), headers, and who the caller
    authenticated as (`user`, by the security definition named `security`), if anyone. """
    __slots__ = ("method", "params", "headers", "path", "user", "security")

    def __init__(self, method: str = "", params: dict | None = None, headers: dict | None = None, path: str = "",
                 user: str | None = None, security: dict | None = None) -> None:
        self.method = method
        self.params = Bunch(params or {})
        self.headers = Bunch(headers or {})
        self.path = path
        self.user = user
        self.security = security


_NO_ATTRIBUTES: Mapping[str, Any] = MappingProxyType({})

# What the next `Request` made in this context takes as its `attributes` (then cleared, so that a
# service the channel's service invokes does not see them): how a listener channel passes its
# own attributes through `Server.invoke_service` (zato.server.listeners).
_next_attributes: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "zato_next_request_attributes", default=None)


def set_next_request_attributes(attributes: Mapping[str, Any]) -> contextvars.Token:
    """ The channel's attributes for the next `Request` made in this context (the service it is
    about to invoke); `reset_next_request_attributes(token)` afterwards. """
    clash = sorted(set(attributes) & set(Request.__slots__))
    if clash:
        raise ValueError(f"request attribute(s) {', '.join(clash)} would hide the Request attribute(s) of that "
                         f"name; name a channel's attribute after its plugin (self.request.ibm_mq)")
    return _next_attributes.set(MappingProxyType(dict(attributes)))


def reset_next_request_attributes(token: contextvars.Token) -> None:
    """ Undoes `set_next_request_attributes` (whether or not a `Request` took them). """
    _next_attributes.reset(token)


class Request:
    """ `self.request`: what the service was invoked with. `scheduler_job` describes the job that
    started it when `channel == "scheduler"` (name, id, job_type, due_time, kind), else None.

    `attributes` holds what the channel that invoked the service adds about itself, each one also
    readable as an attribute: a listener channel of the ibm_mq plugin gives `self.request.ibm_mq`
    (docs/channels.md). Services invoked by other services get none. """
    __slots__ = ("payload", "raw_request", "input", "http", "channel", "scheduler_job", "attributes")

    def __init__(self, payload: Any = None, raw_request: Any = None, http: HTTPRequestInfo | None = None,
                 channel: str = "invoke", scheduler_job: Any = None,
                 attributes: Mapping[str, Any] | None = None) -> None:
        self.payload = payload
        self.raw_request = raw_request if raw_request is not None else payload
        self.input = Bunch(payload) if isinstance(payload, dict) else Bunch()
        self.http = http or HTTPRequestInfo()
        self.channel = channel
        self.scheduler_job = scheduler_job
        if attributes is None:
            attributes = _next_attributes.get()
            if attributes is None:
                attributes = _NO_ATTRIBUTES
            else:
                _next_attributes.set(None)  # taken: the services this one invokes do not inherit them
        self.attributes = attributes

    def __getattr__(self, name: str) -> Any:
        # Called only for names that are not slots: a channel's own attribute (self.request.ibm_mq)
        try:
            attributes = object.__getattribute__(self, "attributes")
        except AttributeError:
            attributes = _NO_ATTRIBUTES
        try:
            return attributes[name]
        except KeyError:
            given = ", ".join(sorted(attributes)) or "none"
            try:
                channel = object.__getattribute__(self, "channel")
            except AttributeError:
                channel = "?"
            raise AttributeError(f"self.request has no attribute {name!r}: channel {channel!r} "
                                 f"gives {given} (a channel's plugin adds its own, e.g. self.request.ibm_mq)") from None


class Response:
    """ `self.response`: what the service answers with. """
    __slots__ = ("payload", "status_code", "headers", "content_type")

    def __init__(self) -> None:
        self.payload: Any = ""
        self.status_code = 200
        self.headers: dict[str, str] = {}
        self.content_type: str | None = None


def in_trio_thread() -> bool:
    """ True when called from the trio loop's own thread (an `async def handle`). """
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


class Service:
    """ Base class of every service. Subclasses implement `handle` (plain or `async def`). """

    name: str | None = None

    # Set by the server for each invocation
    server: Any = None
    cid: str = ""
    request: Request
    response: Response
    logger: logging.Logger = logging.getLogger("zato.service")  # per service once invoked (zato.service.<name>)

    def before_handle(self) -> Any:
        """ Runs before `handle`; may be `async def` in async services. """

    def handle(self) -> Any:
        """ The service's work. """

    def after_handle(self) -> Any:
        """ Runs after `handle` succeeded; may be `async def` in async services. """

    @property
    def wsgi_environ(self) -> dict[str, Any]:
        """ Zato's WSGI-style view of the HTTP request, for code that reads it: `REQUEST_METHOD`,
        `PATH_INFO`, `HTTP_<HEADER>` and `zato.sec_def` (the security definition that let the
        caller in: name, type, username). """
        http = self.request.http
        environ: dict[str, Any] = {"REQUEST_METHOD": http.method, "PATH_INFO": http.path}
        for name, value in http.headers.items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        if http.security:
            environ["zato.sec_def"] = Bunch(http.security)
        return environ

    @property
    def config(self) -> Any:
        """ User config: `self.config.<file>.<section>.<key>` for the files named under
        `[user_config]` in server.conf (`user` is config/user.conf by default). """
        return self.server.user_config

    # Outgoing connections, by Zato's accessors (zato.server.outgoing)

    @property
    def out(self) -> Any:
        """ `self.out.plain_http[name].conn`, `self.out.wsx.get(name)`... """
        return self.server.outgoing.namespace("out")

    outgoing = out  # `self.outgoing.sql.get(name)`, `self.outgoing.ftp.get(name)`...

    @property
    def email(self) -> Any:
        """ `self.email.smtp[name].conn.send(message)` """
        return self.server.outgoing.namespace("email")

    @property
    def cloud(self) -> Any:
        """ `self.cloud.dropbox[name].conn.client` """
        return self.server.outgoing.namespace("cloud")

    @property
    def kvdb(self) -> Any:
        """ `self.kvdb.conn`: the server's key-value database (the Redis plugin). """
        kvdb = self.server.outgoing.kvdb
        if kvdb is None:
            raise AttributeError("self.kvdb needs the redis plugin: install zato-plugin-redis and enable it")
        return kvdb

    @property
    def pubsub(self) -> Any:
        """ `self.pubsub.publish(topic_or_service, data=...)`: durable publish/subscribe (the
        pubsub plugin, zato.builtin.pubsub; docs/pubsub.md). The core imports no plugin: the
        plugin keeps its runtime in `server.plugin_state["pubsub"]` from ON_STARTING on, and that
        runtime's `api_for(service)` is what services get. """
        runtime = getattr(self.server, "plugin_state", {}).get("pubsub")
        if runtime is None:
            raise AttributeError("self.pubsub needs the pubsub plugin: it is switched off ([plugins] pubsub = False in "
                                 "server.conf) or the server has not reached the ON_STARTING phase")
        return runtime.api_for(self)

    # Invocation patterns (zato.server.service.patterns)

    @property
    def patterns(self) -> Any:
        """ `self.patterns.fanout`, `.parallel`, `.invoke_retry` """
        from zato.server.service.patterns import Patterns
        return Patterns(self)

    def invoke_async(self, name: str, payload: Any = None, callback: str | None = None, **kwargs: Any) -> Any:
        """ Starts another service in the background and returns its cid at once (RAM only: lost
        if the server stops). `callback`, a service name, gets the result. """
        from zato.server.service.patterns import invoke_async
        return invoke_async(self, name, payload, callback, **kwargs)

    def invoke(self, name: str, payload: Any = None, **kwargs: Any) -> Any:
        """ Invokes another service and returns its response payload; its exceptions propagate.

        From a plain `def handle` this blocks until the result is there; from an
        `async def handle` it returns an awaitable: `result = await self.invoke(...)`.
        """
        kwargs.setdefault("cid", self.cid)
        return self.server.invoke(name, payload, **kwargs)

    def __repr__(self) -> str:
        return f"<service {self.name} cid={self.cid}>"
