""" Outgoing WebSocket connections (object type `outgoing_wsx`): a server connects to a remote
WebSocket end - another Zato cluster's channel with `helpers.web-sockets-gateway`, or any
WebSocket server - and its services invoke remote services through it, as the
cluster-to-cluster article shows:

    with self.out.wsx.get('My WSX Outconn').conn.client() as client:
        response = client.invoke({'service': 'zato.helpers.echo', 'request': {'elem1': 'value1'}})

* **One live connection per definition** among all the workers of all the servers sharing the
  configuration database: the process holding the lease of the one_process task `wsx.outgoing`
  (`RemoteSessions`) connects, opens the session with the credentials of the definition's
  (outgoing) security definition, subscribes to the topics of `subscription_list`, and runs the
  hook services. It reconnects with back-off when the remote end goes away
  (`has_auto_reconnect`), and another process takes over within seconds if it dies.
* **Services in any process** invoke through it: `self.out.wsx[name]` is an `OutgoingWSX` in
  every worker; in the holder a call goes straight to the connection, elsewhere it is passed to
  the holder (zato_plugin_wsx.registry: a notification within the server, a request row across
  servers) and its answer comes back the same way. Where the holder is is in
  `zato_wsx_outgoing`, with each connection's state and last error (`GET /zato/api/wsx/outgoing`).
* **Hooks**: `on_connect_service_name`, `on_message_service_name`, `on_close_service_name` are
  services with `input_optional = (Opaque('ctx'),)`, invoked with `{"ctx": ctx}` (so
  `self.request.input.ctx`, and `self.request.raw_request['ctx']` as in Zato 3.2); `ctx` is a
  `HookCtx` (type `connect`, `message` or `close`; `data`; `conn`). For a Zato remote end,
  pub/sub deliveries (zwsx.psrq) reach on_message with `ctx.data.data` the list of messages
  (the article's fields), and the remote end's requests (zwsx.rqc) with its data; each is
  answered with a client-response carrying the hook's response, as Zato's client does. Hooks of
  one connection run one at a time, in the order frames arrived.
* A remote end that is not Zato (`is_zato` off): no session and no subscriptions; `send(msg)`
  sends the message as it is (JSON for dicts and lists), and on_message gets what arrives.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import trio

from zato.plugin_api import (
    Backoff, Field, ObjectType, OutgoingError, PluginState, ZatoSpelling, client_tls_context, in_trio_thread,
    outgoing_credentials,
)
from zato_plugin_wsx import protocol

logger = logging.getLogger("zato.wsx")

OBJECT_TYPE = "outgoing_wsx"
CONNECTION_TYPE = "wsx"
ACCESSOR = "out.wsx"
TASK = "outgoing"  # the one_process task of the plugin: lease task:wsx.outgoing
DEFAULT_TIMEOUT = 10.0
HOOK_QUEUE = 1000  # frames waiting for the on_message hook of one connection; past it the reader waits
RECONNECT = Backoff(initial=0.5, maximum=10.0)
SUBSCRIBE_SERVICE = "zato.pubsub.subscription.create-wsx-subscription"  # through the remote gateway, as Zato's client

SESSIONS: PluginState["RemoteSessions"] = PluginState("wsx.outgoing", "the outgoing WebSocket connections")

# What every row of Zato's zato_generic_connection carries that means nothing here
ZATO_GENERIC_FIELDS = ("id", "cluster_id", "is_internal", "is_channel", "is_outconn", "pool_size", "sec_use_rbac",
                       "cache_expiry", "port", "version", "extra", "username", "username_type", "secret",
                       "secret_type", "conn_def_id", "cache_id", "sec_tls_ca_cert_id", "socket_read_timeout",
                       "socket_write_timeout", "security_id", "max_wait_time", "max_msg_size",
                       "read_buffer_size", "recv_timeout", "should_log_messages", "should_validate", "is_audit_log_sent_active",
                       "is_audit_log_received_active", "max_len_messages_sent", "max_len_messages_received",
                       "max_bytes_per_message_sent", "max_bytes_per_message_received",
                       # the rest of Zato 3.2's generic-connection input (zato.generic.connection.create
                       # keeps every one of them in the row, null when unset, and exports it so)
                       "tenant_id", "client_id", "sec_tls_ca_cert_id", "oauth2_access_token", "consumer_key",
                       "consumer_secret", "is_rate_limit_active", "rate_limit_type", "rate_limit_def",
                       "rate_limit_check_parent_def", "hl7_version", "json_path", "data_encoding", "logging_level",
                       "start_seq", "end_seq", "oauth_def", "security_group_count", "security_group_member_count")


def check_outgoing(data: dict[str, Any], *, partial: bool) -> list[dict[str, str]]:
    address = data.get("address")
    if isinstance(address, str) and not address.startswith("$"):
        parts = urlsplit(address)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            return [{"field": "address", "error": f"{address!r} is not a ws:// or wss:// URL with a host; give e.g. "
                                                  f"ws://remote.example.com:17010/ws/gateway"}]
    return []


OUTGOING_WSX = ObjectType(OBJECT_TYPE, (
    Field("name", required=True, description="What services look the connection up by: self.out.wsx[name]"),
    Field("address", required=True, description="ws:// or wss:// URL of the remote end",
          example="ws://cluster2.example.com:17010/ws/gateway"),
    Field("is_zato", "bool", default=True, description="The remote end speaks Zato's WSX protocol (sessions, "
                                                       "invoke-service, pub/sub); off: messages are sent as they are"),
    Field("security", references="security", description="An outgoing security definition (Basic Auth or API "
                                                          "key) whose user and secret open the remote session"),
    Field("data_format", default="json", choices=("json",), description="Messages are JSON"),
    Field("has_auto_reconnect", "bool", default=True, description="Reconnect, with back-off, when the remote end "
                                                                  "goes away"),
    Field("on_connect_service_name", references="service", description="A service run after each connect (and "
                                                                       "reconnect), once the session is open"),
    Field("on_message_service_name", references="service", description="A service run for each message the "
                                                                       "remote end sends (pub/sub deliveries too)"),
    Field("on_close_service_name", references="service", description="A service run when the connection closes"),
    Field("subscription_list", default="", description="Remote pub/sub topics to subscribe to, one per line; "
                                                       "their messages reach on_message",
          example="/customer/new"),
    Field("ping_interval", "float", default=45.0, minimum=0.1, description="Seconds between WebSocket pings to "
                                                                           "the remote end"),
    Field("pings_missed_threshold", "int", default=2, minimum=1, description="Pings missed in a row after which "
                                                                             "the connection is reopened"),
    Field("timeout", "float", default=DEFAULT_TIMEOUT, minimum=0.001, description="Seconds to wait for connecting, "
                                                                                  "the session and each invoke"),
    Field("tls_ca_file", default="", description="PEM file of the certificate authorities to trust for wss:// "
                                                 "(a private CA); empty: the system's"),
    Field("is_active", "bool", default=True, description="An inactive connection is not opened"),
), description="An outgoing WebSocket connection: services invoke a remote Zato cluster's services (or send to "
               "any WebSocket server), hooks hear connects, messages and closes",
    check=check_outgoing, zato=ZatoSpelling(
        "zato_generic_connection", generic_type="outconn-wsx",
        fields={"security_def": "security", "security_name": "security", "sec_def": "security"},
        ignored=ZATO_GENERIC_FIELDS))


# ################################################################################################
# What hooks get


class HookData:
    """ `ctx.data` of a message: `data` (for pub/sub deliveries the list of messages), `id` and
    `timestamp` of the frame, `msg_type` (zwsx.psrq, zwsx.rqc; None from a non-Zato end). """
    __slots__ = ("data", "id", "timestamp", "msg_type")

    def __init__(self, data: Any, id: str | None = None, timestamp: str | None = None,
                 msg_type: str | None = None) -> None:
        self.data, self.id, self.timestamp, self.msg_type = data, id, timestamp, msg_type

    def __repr__(self) -> str:
        return f"<HookData {self.msg_type} id={self.id} data={self.data!r}>"


class HookCtx:
    """ `self.request.input.ctx` of a hook service: `type` (connect, message, close), `data`
    (a HookData for message), `code` and `reason` (for close: the Close frame's code, 1006 if
    none came, and why), `conn` (the connection's client: `invoke`, `send`), `conn_name`,
    `config` (the connection's definition). """
    __slots__ = ("type", "data", "conn", "conn_name", "config", "code", "reason")

    def __init__(self, type: str, conn: "OutgoingClient", data: Any = None, *, code: int | None = None,
                 reason: str = "") -> None:
        self.type, self.data, self.conn, self.conn_name = type, data, conn, conn.name
        self.config, self.code, self.reason = conn.connection.definition, code, reason

    def __repr__(self) -> str:
        return f"<HookCtx {self.type} {self.conn_name!r}>"


# ################################################################################################
# What services get: self.out.wsx[name] in every process


def create_outgoing(server: Any, definition: dict[str, Any]) -> "OutgoingWSX":
    return OutgoingWSX(server, definition)


class OutgoingWSX:
    """ `self.out.wsx[name]`; `.conn.client()` is a `OutgoingClient`. """

    def __init__(self, server: Any, definition: dict[str, Any]) -> None:
        self.server, self.definition, self.name = server, definition, definition["name"]
        self.timeout = float(definition.get("timeout") or DEFAULT_TIMEOUT)
        self.conn = self

    def client(self) -> "OutgoingClient":
        return OutgoingClient(self)

    async def call(self, action: str, data: Any, timeout: float | None) -> Any:
        """ `invoke` or `send` through the live connection, wherever it is. """
        timeout = self.timeout if timeout is None else float(timeout)
        sessions = SESSIONS.get(self.server)
        session = sessions.sessions.get(self.name) if sessions is not None else None
        if session is not None:
            return await session.call(action, data, timeout)
        return await _through_the_holder(self.server, self.name, action, data, timeout)

    def ping(self) -> None:
        """ Nothing to do here: the connection's state is in GET /zato/api/wsx/outgoing. """

    def close(self) -> None:
        pass


class OutgoingClient:
    """ `with conn.client() as client:` - `client.invoke(msg)` returns the remote service's
    response (a Zato end: `msg` is the gateway's input, `{"service": ..., "request": ...}`);
    `client.send(msg)` is the same for a Zato end and sends `msg` as it is to any other. From a
    plain `def` service both block; from an `async def` one they are awaited. """

    def __init__(self, connection: OutgoingWSX) -> None:
        self.connection, self.name = connection, connection.name

    def __enter__(self) -> "OutgoingClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    async def __aenter__(self) -> "OutgoingClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        return None

    def invoke(self, msg: Any, timeout: float | None = None) -> Any:
        return self._call("invoke", msg, timeout)

    def send(self, msg: Any, timeout: float | None = None) -> Any:
        return self._call("send", msg, timeout)

    def _call(self, action: str, msg: Any, timeout: float | None) -> Any:
        if in_trio_thread():
            return self.connection.call(action, msg, timeout)
        return trio.from_thread.run(self.connection.call, action, msg, timeout)


async def _through_the_holder(server: Any, name: str, action: str, data: Any, timeout: float) -> Any:
    from zato_plugin_wsx.registry import OUT_CALL, REGISTRY, REPLY_GRACE_SECONDS
    registry = REGISTRY.get(server)
    row = await registry.in_thread(registry.store.find_outgoing, name, time.time()) if registry is not None else None
    if row is None:
        raise OutgoingError(f"outgoing WebSocket connection {name!r} is not open in any process: no server holds it "
                            f"yet (it is starting, or the lease task:wsx.outgoing is being taken over); "
                            f"GET /zato/api/wsx/outgoing shows its state")
    answer = await registry.ask(row, OUT_CALL, {"name": name, "action": action, "data": data, "timeout": timeout},
                                timeout + REPLY_GRACE_SECONDS)
    if answer is None:
        raise OutgoingError(f"outgoing WebSocket connection {name!r} is held by process {row['server_pid']} of "
                            f"{row.get('server_config_name') or row['server_dir']!r} on {row['server_name']}, which "
                            f"did not answer within "
                            f"{timeout:g} s")
    status, body = answer
    if status != 200:
        raise OutgoingError(str(body))
    return body


# ################################################################################################
# The live connections, in the holder of the lease


class RemoteSession:
    """ One definition's connection: `run` connects, reconnects and runs the hooks until cancelled. """

    def __init__(self, server: Any, definition: dict[str, Any], sessions: "RemoteSessions") -> None:
        self.server, self.definition, self.sessions = server, definition, sessions
        self.name = definition["name"]
        self.is_zato = definition.get("is_zato", True) is not False
        self.timeout = float(definition.get("timeout") or DEFAULT_TIMEOUT)
        self.endpoint: Any = None  # a zato_plugin_wsx.client.RemoteEndpoint while connected
        self.state, self.since, self.last_error = "connecting", time.time(), ""
        self.scope = trio.CancelScope()
        self.client = OutgoingClient(OutgoingWSX(server, definition))
        self._hooks_send, self._hooks_receive = trio.open_memory_channel[Any](HOOK_QUEUE)

    def describe(self) -> str:
        return f"outgoing WebSocket connection {self.name!r} ({self.definition.get('address')})"

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.definition.get("address"), "state": self.state,
                "since": self.since, "last_error": self.last_error}

    def _why(self, exc: BaseException) -> str:
        """ What went wrong, without the connection's name (each message that shows it names it). """
        text = str(exc) if not isinstance(exc, trio.TooSlowError) else f"no answer within {self.timeout:g} s"
        prefix = self.describe() + ": "
        return text[len(prefix):] if text.startswith(prefix) else text

    def _set_state(self, state: str, error: str | None = None) -> None:
        """ `error`: the last error from now on ("" clears it); None keeps it. """
        self.state, self.since = state, time.time()
        if error is not None:
            self.last_error = error
        self.sessions.state_changed(self)

    # ############################################################################################

    async def run(self) -> None:
        with self.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._run_hooks)
                attempt = 0
                while True:
                    connected = await self._connect_once()
                    attempt = 1 if connected else attempt + 1
                    if self.definition.get("has_auto_reconnect", True) is False:
                        self._set_state("closed")
                        logger.info("%s closed; has_auto_reconnect is off, so it stays closed until its "
                                    "definition changes", self.describe())
                        await trio.sleep_forever()
                    delay = RECONNECT.delay(attempt)
                    if attempt == 1 or attempt % 10 == 0:  # an outage is logged once, then now and then
                        logger.warning("%s: %s; reconnecting in %.1f s (attempt %d)", self.describe(),
                                       self.last_error, delay, attempt)
                    await trio.sleep(delay)

    async def _connect_once(self) -> bool:
        """ One connection, from connect to close; True if its session opened. """
        from zato_plugin_wsx.client import RemoteEndpoint, RemoteError, RemoteGone
        self._set_state("connecting")
        opened, close_code = False, 1000
        try:
            address = self.definition["address"]
            tls = client_tls_context(verify=True, ca_file=self.definition.get("tls_ca_file") or None,
                                     peer="WebSocket") if address.startswith("wss:") else None
            self.endpoint = endpoint = await RemoteEndpoint.open(address, name=self.name, tls_context=tls,
                                                                 timeout=self.timeout)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, endpoint)
                if self.is_zato:
                    await self._open_session(endpoint)
                opened = True
                self._set_state("connected", "")
                logger.info("%s connected", self.describe())
                await self._hook("on_connect_service_name", HookCtx("connect", self.client))
                if self.is_zato:
                    await self._subscribe(endpoint)
                nursery.start_soon(self._ping, endpoint)
                await trio.sleep_forever()
        except (RemoteError, RemoteGone, OSError, trio.TooSlowError, ValueError, LookupError) as exc:
            self.last_error, close_code = self._why(exc), getattr(exc, "code", 1006)
        except BaseExceptionGroup as group:  # from the reader, the pinger or the session: the connection ended
            ended, rest = group.split((RemoteError, RemoteGone, OSError, trio.TooSlowError, ValueError, LookupError))
            if ended is None or rest is not None:
                raise
            first = _leaves(ended)[0]
            self.last_error, close_code = self._why(first), getattr(first, "code", 1006)
        finally:
            endpoint, self.endpoint = self.endpoint, None
            if endpoint is not None:
                await endpoint.aclose()
            if opened:
                self._set_state("disconnected", self.last_error)
                with trio.CancelScope(shield=True), trio.move_on_after(self.timeout):
                    await self._hook("on_close_service_name", HookCtx("close", self.client, code=close_code,
                                                                      reason=self.last_error))
        return opened

    async def _open_session(self, endpoint: Any) -> None:
        username = secret = None
        security = self.definition.get("security")
        if security:
            credentials = outgoing_credentials(self.server, security)  # OutgoingCredentialsError is a LookupError
            username, secret = credentials["username"] or security, credentials["password"]
        await endpoint.create_session(username, secret, client_id=client_id_of(self.name),
                                      client_name=f"{self.server.name} {self.name}", timeout=self.timeout)

    async def _subscribe(self, endpoint: Any) -> None:
        from zato_plugin_wsx.client import RemoteError
        for topic in topics_of(self.definition):
            try:
                await endpoint.invoke({"service": SUBSCRIBE_SERVICE, "request": {"topic_name": topic}}, self.timeout)
                logger.info("%s subscribed to remote topic %s", self.describe(), topic)
            except RemoteError as exc:
                logger.error("%s: could not subscribe to remote topic %r: %s", self.describe(), topic, exc)

    async def _read(self, endpoint: Any) -> None:
        async def on_frame(frame: Any) -> None:
            await self._hooks_send.send(frame)
        await endpoint.read_frames(on_frame)

    async def _ping(self, endpoint: Any) -> None:
        from zato_plugin_wsx.client import RemoteGone
        interval = float(self.definition.get("ping_interval") or 30)
        threshold = int(self.definition.get("pings_missed_threshold") or 2)
        missed, pongs = 0, endpoint.pongs
        while True:
            await trio.sleep(interval)
            missed = 0 if endpoint.pongs > pongs else missed + 1
            pongs = endpoint.pongs
            if missed >= threshold:
                raise RemoteGone(f"{self.describe()}: the remote end missed {missed} pings in a row", 4002)
            await endpoint.ping(protocol.ping_payload(protocol.new_id()))

    # ############################################################################################
    # Hooks

    async def _run_hooks(self) -> None:
        async for frame in self._hooks_receive:
            try:
                await self._on_frame(frame)
            except Exception:
                logger.exception("%s: a message from the remote end could not be handled", self.describe())

    async def _on_frame(self, frame: Any) -> None:
        meta = frame.get("meta") if isinstance(frame, dict) and self.is_zato else None
        if not isinstance(meta, dict):
            await self._hook("on_message_service_name", HookCtx("message", self.client, HookData(frame)))
            return
        msg_type = meta.get("msg_type")
        data = frame.get("data")
        if msg_type == protocol.PUBSUB_DELIVERY:
            data = data if isinstance(data, list) else [data]
        response = await self._hook("on_message_service_name", HookCtx("message", self.client, HookData(
            data, meta.get("id"), meta.get("timestamp"), msg_type)))
        endpoint = self.endpoint  # every request of the remote end is answered, as Zato's client does
        if msg_type in (protocol.SERVER_REQUEST, protocol.PUBSUB_DELIVERY) and endpoint is not None and \
                isinstance(meta.get("id"), str):
            await endpoint.respond(meta["id"], response)

    async def _hook(self, field: str, ctx: HookCtx) -> Any:
        service = self.definition.get(field)
        if not service:
            return None
        try:
            response = await self.server.invoke_service(service, {"ctx": ctx}, channel=self.name,
                                                        channel_type="web-socket", timeout=self.server.service_timeout)
            return response.payload
        except Exception as exc:
            logger.error("%s: hook service %r (%s, %s) failed: %s", self.describe(), service, field, ctx.type, exc,
                         exc_info=not isinstance(exc, trio.TooSlowError))
            return None

    # ############################################################################################
    # Calls of services

    async def call(self, action: str, data: Any, timeout: float) -> Any:
        from zato_plugin_wsx.client import RemoteError, RemoteGone
        endpoint = self.endpoint
        if endpoint is None or self.state != "connected":
            raise OutgoingError(f"{self.describe()} is not connected ({self.state}"
                                + (f"; last error: {self.last_error}" if self.last_error else "") + ")")
        try:
            if self.is_zato:
                return await endpoint.invoke(data, timeout)
            await endpoint.send_text(data if isinstance(data, str) else json.dumps(data))
            return None
        except trio.TooSlowError:
            raise OutgoingError(f"{self.describe()}: the remote end did not answer within {timeout:g} s") from None
        except (RemoteError, RemoteGone) as exc:
            raise OutgoingError(str(exc)) from None


class RemoteSessions:
    """ The live connections of every active definition, in the process holding the lease of the
    one_process task `wsx.outgoing`. `changed()` (the definitions changed) reopens those whose
    definition changed, opens new ones and closes removed ones. """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.sessions: dict[str, RemoteSession] = {}
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None

    def changed(self, *, credentials: bool = False) -> None:
        """ The definitions changed; `credentials`: a security definition did, so the
        connections with one reopen (with its new secret). """
        if credentials:
            for name, session in list(self.sessions.items()):
                if session.definition.get("security"):
                    session.scope.cancel()
                    del self.sessions[name]
        self._changed.set()

    def state_changed(self, session: RemoteSession) -> None:
        self._publish(session.status())

    def _publish(self, status: dict[str, Any]) -> None:
        from zato_plugin_wsx.registry import REGISTRY
        registry = REGISTRY.get(self.server)
        if registry is not None:  # written in the background, for the other processes
            registry.outgoing_changed(status)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        SESSIONS.set(self.server, self)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._apply()
                task_status.started()
                while True:
                    await self._changed.wait()
                    self._changed = trio.Event()
                    self._apply()
        finally:
            SESSIONS.clear(self.server)
            for name in self.sessions:
                self._publish({"name": name, "state": "gone"})

    def _apply(self) -> None:
        assert self._nursery is not None
        wanted = {name: definition for name, definition in self.server.config_objects.get(OBJECT_TYPE, {}).items()
                  if definition.get("is_active", True) is not False}
        for name, session in list(self.sessions.items()):
            if wanted.get(name) != session.definition:
                session.scope.cancel()
                del self.sessions[name]
                if name not in wanted:
                    self._publish({"name": name, "state": "gone"})
        for name, definition in wanted.items():
            if name not in self.sessions:
                session = self.sessions[name] = RemoteSession(self.server, definition, self)
                self._nursery.start_soon(session.run)


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    return [leaf for exc in group.exceptions for leaf in (_leaves(exc) if isinstance(exc, BaseExceptionGroup)
                                                          else [exc])]


def topics_of(definition: dict[str, Any]) -> list[str]:
    return [line.strip() for line in str(definition.get("subscription_list") or "").splitlines() if line.strip()]


def client_id_of(name: str) -> str:
    """ The client id the remote end knows this connection by (its pub/sub subscriber): the same
    after reconnects and whichever process holds the connection. """
    return f"zato.outconn-wsx.{name}"


def register_tasks(register: Any, server: Any) -> None:
    register(TASK, RemoteSessions(server).run, placement="one_process")


def on_objects_changed(server: Any, object_types: Any) -> None:
    sessions = SESSIONS.get(server)
    if sessions is None:
        return
    if object_types is None or OBJECT_TYPE in object_types or "security" in object_types:
        sessions.changed(credentials=object_types is None or "security" in object_types)

