""" What service code imports: `from zato.server.service import Service` and the SimpleIO types.

A service is a class with `handle()`. A plain `def handle` runs in a worker thread (blocking
libraries are fine there); an `async def handle` runs on the trio loop. Both reach the same
API: `self.request`, `self.response`, `self.invoke`, `self.logger`, `self.server`...
"""

from __future__ import annotations

import logging
import sys
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

# Attributes of Zato's services (self.X) and requests (self.request.X) that plugins provide here ->
# the plugin; one that is missing is a zato.plugins.PluginNotEnabled saying what to install or
# which [deploy_internal] line to switch on
PLUGIN_ATTRIBUTES = {
    "pubsub": "pubsub",
    "kvdb": "redis",
    "cache": "cache",
    "broker_client": "essentials",
}
PLUGIN_REQUEST_ATTRIBUTES = {
    "ibm_mq": "ibm_mq",
    "wsx": "wsx",
}


def _plugin_imported(name: str) -> bool:
    from zato.plugins import plugin_module
    return plugin_module(name) in sys.modules


def _plugin_not_enabled(what: str, name: str, server: Any) -> AttributeError:
    from zato.plugins import plugin_not_enabled  # not at import: the plugin machinery is not needed until then
    return plugin_not_enabled(what, name, server)

def request_attributes(declared: Mapping[str, Any], given: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """ The attributes of one request: each name plugins declared (`register_request_attributes`)
    as None, then what the channel gives. `declared` is the server's mapping of every declared
    name to None, shared by the requests to which no channel adds anything. """
    if not given:
        return declared
    undeclared = sorted(set(given) - set(declared))
    if undeclared:
        raise ValueError(f"request attribute(s) {', '.join(undeclared)} not declared by any enabled plugin; a "
                         f"channel's plugin declares the attributes it adds in its register_request_attributes hook "
                         f"(declared: {', '.join(sorted(declared)) or 'none'})")
    return MappingProxyType({**declared, **given})


class DeferredPayload:
    """ A request body that is parsed only when the service asks for it (`self.request.payload`,
    `self.request.input`, SimpleIO input), so that a service reading `self.request.raw_request`
    gets any bytes, JSON or not. `parse(body, channel)` returns the payload or raises (an
    HTTPError 400 saying what is wrong); it runs once and its result or error is kept. """
    __slots__ = ("body", "parse", "channel", "_value", "_error")

    def __init__(self, body: Any, parse: Any, channel: str) -> None:
        self.body = body
        self.parse = parse
        self.channel = channel
        self._value = _NOT_PARSED
        self._error: BaseException | None = None

    def value(self) -> Any:
        if self._value is _NOT_PARSED:
            if self._error is not None:
                raise self._error
            try:
                self._value = self.parse(self.body, self.channel)
            except Exception as exc:
                self._error = exc
                raise
        return self._value

    def __repr__(self) -> str:
        return f"<DeferredPayload of channel {self.channel!r}, {len(self.body)} bytes>"


_NOT_PARSED = object()


class Request:
    """ `self.request`: what the service was invoked with.

    `attributes` holds what the channel that invoked the service adds about itself, each one also
    readable as an attribute: a listener channel of the ibm_mq plugin gives `self.request.ibm_mq`,
    the scheduler `self.request.scheduler_job` (docs/channels.md). Each name a plugin declares
    (`register_request_attributes`) is None in requests of other channels, and services invoked
    by other services get none of them.

    A channel may give a `DeferredPayload`: its body is parsed the first time `payload` or
    `input` is read (a REST channel's JSON), so a service that reads only `raw_request` works
    with any body. """
    __slots__ = ("_payload", "raw_request", "_input", "http", "channel", "channel_type", "attributes")

    def __init__(self, payload: Any = None, raw_request: Any = None, http: HTTPRequestInfo | None = None,
                 channel: str = "invoke", attributes: Mapping[str, Any] = _NO_ATTRIBUTES,
                 channel_type: str = "invoke") -> None:
        self.channel_type = channel_type
        self._payload = payload
        if type(payload) is DeferredPayload:
            self.raw_request = raw_request if raw_request is not None else payload.body
            self._input = _NOT_PARSED  # made from the payload when first read
        else:
            self.raw_request = raw_request if raw_request is not None else payload
            self._input = Bunch(payload) if isinstance(payload, dict) else Bunch()
        self.http = http or HTTPRequestInfo()
        self.channel = channel
        self.attributes = attributes

    @property
    def payload(self) -> Any:
        payload = self._payload
        if type(payload) is DeferredPayload:
            payload = self._payload = payload.value()
        return payload

    @payload.setter
    def payload(self, value: Any) -> None:
        self._payload = value

    @property
    def input(self) -> Any:
        value = self._input
        if value is _NOT_PARSED:
            payload = self.payload
            value = self._input = Bunch(payload) if isinstance(payload, dict) else Bunch()
        return value

    @input.setter
    def input(self, value: Any) -> None:
        self._input = value

    def __getattr__(self, name: str) -> Any:
        # Called only for names that are not slots: a channel's own attribute (self.request.ibm_mq)
        try:
            attributes = object.__getattribute__(self, "attributes")
        except AttributeError:
            attributes = _NO_ATTRIBUTES
        try:
            return attributes[name]
        except KeyError:
            if name in PLUGIN_REQUEST_ATTRIBUTES and (attributes or not _plugin_imported(PLUGIN_REQUEST_ATTRIBUTES[name])):
                # its plugin declares it (None in requests of other channels) when on: it is off
                raise _plugin_not_enabled(f"self.request.{name}", PLUGIN_REQUEST_ATTRIBUTES[name], None) from None
            given = ", ".join(sorted(key for key, value in attributes.items() if value is not None)) or "none"
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


class ChannelInfo:
    """ `self.channel`: the channel that invoked a service, as Zato's services see it. `name` is
    the channel's name; `type` is Zato's name of its kind: `http-soap` (REST), `web-socket`,
    `scheduler`, `invoke` (another service, the admin API, the CLI). """
    __slots__ = ("name", "type")

    def __init__(self, name: str, type: str) -> None:
        self.name, self.type = name, type

    def __repr__(self) -> str:
        return f"<ChannelInfo {self.type} {self.name!r}>"


class Service:
    """ Base class of every service. Subclasses implement `handle` (plain or `async def`). """

    name: str | None = None

    # Set by the server for each invocation
    server: Any = None
    cid: str = ""
    request: Request
    response: Response
    logger: logging.Logger = logging.getLogger("zato.service")  # per service once invoked (zato.service.<name>)

    @classmethod
    def get_name(cls) -> str:
        """ The service's name, as Zato's `get_name()`: its `name`, or `module.class-name`. """
        from zato.server.deployment import service_name
        module = sys.modules.get(cls.__module__)
        return service_name(cls, getattr(module, "__zato_service_module__", cls.__module__))

    def before_handle(self) -> Any:
        """ Runs before `handle`; may be `async def` in async services. """

    def handle(self) -> Any:
        """ The service's work. """

    def after_handle(self) -> Any:
        """ Runs after `handle` succeeded; may be `async def` in async services. """

    @property
    def channel(self) -> ChannelInfo:
        """ The channel that invoked this service: `self.channel.type == 'web-socket'`... """
        return ChannelInfo(self.request.channel, self.request.channel_type)

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

    def __getattr__(self, name: str) -> Any:
        # Called only for names a service does not have: one a plugin provides (self.pubsub from
        # the pubsub plugin, self.kvdb from zato-plugin-redis; the register_service_attributes hook)
        provide = getattr(self.server, "service_attributes", _NO_ATTRIBUTES).get(name)
        if provide is None:
            if name.startswith("__"):
                raise AttributeError(name)
            for klass in type(self).__mro__:
                if name in klass.__dict__:
                    # The class has it, and it raised AttributeError itself (a property reading an
                    # attribute that is missing): run it again so that its own error is what is seen
                    return klass.__dict__[name].__get__(self, type(self))
            needs = PLUGIN_ATTRIBUTES.get(name)
            if needs:
                raise _plugin_not_enabled(f"self.{name}", needs, self.server)
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return provide(self)

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
