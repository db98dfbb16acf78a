""" The one module a plugin author imports from: `from zato.plugin_api import ...`.

Everything a plugin needs from the core is here, under the names below; the rest of `zato.*`
is the core's own business and may change. Service code keeps Zato's import paths
(`zato.server.service.Service`, `zato.common.api`, `zato.common.exception`), and plugins may
use those too. tests/test_plugin_api.py checks that the plugins under plugins/ import nothing
else from `zato`.

Hooks (the contract is `zato.hookspecs`, documented in docs/plugins.md)
    hookimpl              decorates a hook implementation: `@hookimpl def register_object_types(register)`
    SERVER_STARTUP        the start-up phases `startup_phase(server, phase)` is called with

What a plugin registers (`register(...)` in its `register_<things>` hooks)
    ObjectType, Field     a configuration object type and its fields (the schema is data:
                          description, default, example, choices, ranges)
    ZatoSpelling          how Zato's enmasse files name an object type (`ObjectType(zato=...)`):
                          its key and other keys, its field names and values, which rows of a shared
                          key are of the type (`when`), its fields that mean nothing here
    ZATO_NO_SECURITY      Zato's "no security definition" value (`values={"sec_def": {ZATO_NO_SECURITY: None}}`)
    OutgoingConnectionType  a connection type: `create(server, definition)` builds one, services reach
                          it through its accessor (`self.out.redis[name]`)
    Connector             an ObjectType and its OutgoingConnectionType in one registration
                          (`register_connectors`), the way to add an outgoing connector
    ChannelType           a way requests reach services: `create(server)` returns its runtime
    ListenerType          a channel that listens (a queue, a poller): the plugin opens a receiver per
                          definition, the core owns the rest (docs/channels.md)
    Invocation, Backoff, FailurePolicy   what a receiver maps an item to; restart and retry
                          policies (from `zato.server.listeners`, imported on first use)
    SecurityType, RateLimiterBackend, HTTPRoute, Task
    ASGIMount             a whole ASGI application under a path prefix (`register_asgi_mounts`)
    DeployableFile, DeploymentError   files other than .py deployed like services (`register_deployable_files`),
                          and what their `deploy` raises to refuse one with file and line
    ServerConfigSection, Setting   a server.conf section and its keys (default, range, choices)
    RegistrationError     what `register` raises for a duplicate name or a bad registration
    Kind                  the registry's kinds (`server.registry.items(Kind.OBJECT_TYPES)`)

A plugin's runtime objects
    PluginState           one slot per runtime object, declared at module level:
                          `STATE = PluginState[MyRuntime]("my_plugin")`, then `STATE.set(server, obj)`,
                          `STATE.get(server)`, `STATE.require(server)`, `STATE.get_or_create(server, make)`
    PluginStateMissing    what `require` raises when the plugin has not started in that server
    PUBSUB_QUEUES, PubSubQueues   pub/sub's queues for plugins whose clients subscribe:
                          `await PUBSUB_QUEUES.require(server).clear(sub_key)`

Outgoing connections and blocking libraries
    BlockingCalls         a resource's worker threads: `call(fn, *args)` blocks in a plain `def`
                          service and returns an awaitable in an `async def` one; `refuse_on_loop`
                          stops a blocking method from stalling the trio loop
    BlockingCallError     what `refuse_on_loop` raises (an `OutgoingError` and a `RuntimeError`)
    OutgoingError         an outgoing connection failed: say which one, what it did and why
    outgoing_credentials  `outgoing_credentials(server, security_name)`: the user and clear secret an
                          outgoing connection sends for a security definition (direction outgoing),
                          or OutgoingCredentialsError (a LookupError) saying what to fix
    ConnectionNotFound    no connection of that name
    call_plain_or_async   awaits `fn()` if it is `async def`, else runs it in a worker thread
    in_trio_thread        True on the trio loop's own thread (an `async def handle`)
    client_tls_context    `client_tls_context(verify=..., ca_file=..., peer="FTP")`: an outgoing
                          connection's TLS context (a private CA's file alone, or the system's)

Admin API routes and CLI commands of a plugin (imported on first use)
    HTTPRequest, HTTPResponse, HTTPError   what a `register_http_routes` handler takes, returns, raises
    check_admin           `await check_admin(request)`: the admin credentials, throttled, or 401
    ServiceNotFound, InputError   what `server.invoke_service` raises for a service that is not
                          deployed and for input its SimpleIO refused (channels answer them)
    server_paths, admin_request, describe_error   a CLI command calling the admin API of the server
                          running in a directory (with the local CLI token), and its error in one line

A feature's own log file
    feature_log_file      `feature_log_file("zato.ibm_mq.mq", server.paths.logs_dir / "ibm-mq.log")`: a logger
                          writing there alone, not to server.log

Configuration values
    as_bool, to_bool, to_int, to_float   server.conf's conversions (`to_*` with messages for users)
    setting_number        a connection's numeric setting with its default, range check and a message
                          naming the field: `setting_number(d, "port", int, 21, check=..., expected=...)`
    is_env_reference      True for a `$NAME` value (read from the environment when loaded)
    secret_call           `secret_call("outgoing_ftp", name, "password")`: the admin API call that
                          sets that secret, for error messages that say how to set it
    ConfigError           a configuration file or value that cannot be used

The test kit (imported on first use, so a server that loads a plugin does not load it)
    run_server            a server in this trio run: `async with run_server(base_dir) as server`
    ServerProcess         a server as a real process, on a free port
    ExternalProcess, ProcessExited   any other program a test needs (start, wait until it answers,
                          SIGTERM then SIGKILL)
    create_test_server_dir, set_config_value, admin_auth, ADMIN_PASSWORD
    make_test_certificates, TestCertificates   a private CA and a server certificate it signed
                          (localhost, 127.0.0.1), and a CA that signed nothing, for TLS test peers
    ServiceTester         runs services without a server, with canned outgoing answers
    OutgoingConnectionConformance   the suite every outgoing connection type passes
    ListenerConformance   the suite every listener type passes
    conformance           the module `zato.testing.conformance` itself
"""

from __future__ import annotations

from typing import Any

from zato import hookimpl
from zato.common import SERVER_STARTUP
from zato.config import ConfigError, as_bool, setting_number, to_bool, to_float, to_int
from zato.objects import is_env_reference, secret_call
from zato.registry import (
    ASGIMount, ChannelType, Connector, DeployableFile, Field, HTTPRoute, Kind, ListenerType, ObjectType, OutgoingConnectionType, RateLimiterBackend, RegistrationError,
    ZATO_NO_SECURITY, SecurityType, ServerConfigSection, Setting, Task, ZatoSpelling,
)
from zato.server.outgoing import (
    BlockingCallError, BlockingCalls, ConnectionNotFound, OutgoingError, call_plain_or_async, client_tls_context,
)
from zato.server.logs import feature_log_file
from zato.server.plugin_state import PluginState, PluginStateMissing
from zato.server.pubsub_queues import PUBSUB_QUEUES, PubSubQueues
from zato.server.service import in_trio_thread

# name -> the test-kit module it comes from, imported on first use
_TEST_KIT = {
    "run_server": "zato.testing", "ServerProcess": "zato.testing", "ExternalProcess": "zato.testing",
    "ProcessExited": "zato.testing", "create_test_server_dir": "zato.testing", "set_config_value": "zato.testing",
    "admin_auth": "zato.testing", "ADMIN_PASSWORD": "zato.testing", "ServiceTester": "zato.testing",
    "make_test_certificates": "zato.testing", "TestCertificates": "zato.testing",
    "OutgoingConnectionConformance": "zato.testing.conformance", "ListenerConformance": "zato.testing.conformance",
}
# name -> the core module it comes from, imported on first use (only plugins with listeners, admin
# routes or commands need them)
_ON_FIRST_USE = {"Invocation": "zato.server.listeners", "Backoff": "zato.server.listeners",
                 "FailurePolicy": "zato.server.listeners",
                 "HTTPRequest": "zato.server.http", "HTTPResponse": "zato.server.http", "HTTPError": "zato.server.http",
                 "check_admin": "zato.server.admin_auth",
                 "ServiceNotFound": "zato.server.deployment", "DeploymentError": "zato.server.deployment", "InputError": "zato.server.service.simpleio",
                 "admin_request": "zato.cli.admin_client", "describe_error": "zato.cli.admin_client",
                 "server_paths": "zato.cli.admin_client",
                 "outgoing_credentials": "zato.server.credentials", "OutgoingCredentialsError": "zato.server.credentials"}


def __getattr__(name: str) -> Any:
    import importlib
    if name == "conformance":
        return importlib.import_module("zato.testing.conformance")
    if name in _TEST_KIT or name in _ON_FIRST_USE:
        return getattr(importlib.import_module(_TEST_KIT.get(name) or _ON_FIRST_USE[name]), name)
    raise AttributeError(f"module 'zato.plugin_api' has no attribute {name!r}; what a plugin can import is listed "
                         f"in its __all__ (and in its docstring)")


__all__ = [
    # hooks
    "hookimpl", "SERVER_STARTUP",
    # registrations
    "ASGIMount", "ChannelType", "Connector", "DeployableFile", "Field", "HTTPRoute", "ListenerType", *_ON_FIRST_USE, "ObjectType", "OutgoingConnectionType", "RateLimiterBackend",
    "RegistrationError", "SecurityType", "ServerConfigSection", "Setting", "Task", "Kind", "ZatoSpelling", "ZATO_NO_SECURITY",
    # a plugin's runtime objects
    "PluginState", "PluginStateMissing", "PUBSUB_QUEUES", "PubSubQueues",
    # outgoing connections and blocking libraries
    "BlockingCallError", "BlockingCalls", "ConnectionNotFound", "OutgoingError", "call_plain_or_async",
    "client_tls_context",
    "in_trio_thread",
    # a feature's own log file
    "feature_log_file",
    # configuration values
    "ConfigError", "as_bool", "to_bool", "to_float", "to_int", "setting_number", "is_env_reference", "secret_call",
    # the test kit
    *_TEST_KIT, "conformance",
]
