""" What plugins register through the `register_<things>` hooks, and the registry that owns it.

Each registered thing is a small frozen dataclass; the `Registry` keeps them by kind and name,
rejects duplicates naming both plugins, and remembers which plugin registered what.
"""

from __future__ import annotations

import re

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable, Mapping


# The key under which channel and outgoing connection runtimes find the objects a definition's
# fields name (zato.server.config_objects.with_references)
REFERENCES = "_references"


class RegistrationError(Exception):
    """ A plugin registered something twice or registered something malformed. """


@dataclass(frozen=True)
class Field:
    """ One field of a configuration object type. """
    name: str
    type: str = "str"  # str, int, float, bool, list, dict, datetime
    default: Any = None
    required: bool = False
    secret: bool = False
    # "encrypt" (the server needs it in clear) or "hash" (only checked), or a function of the
    # object's data returning one of them (zato.objects.storage_of)
    secret_storage: Any = "encrypt"
    references: str | None = None  # object type this field names an object of ("service": a service)
    description: str = ""
    example: Any = None
    choices: tuple[Any, ...] | None = None  # the only values allowed (a `$NAME` reference is checked when loaded)
    # Constraints checked by zato.objects.validate and published in the OpenAPI schema
    # (zato.objects.field_schema); every one of them is optional:
    minimum: float | None = None  # int, float: the smallest value allowed
    maximum: float | None = None  # int, float: the largest value allowed
    min_length: int | None = None  # str: characters (a required str is at least 1); list: items
    max_length: int | None = None  # str: characters; list: items
    item_type: str | None = None  # list: the type of every item (str, int, float, bool, dict); None: any JSON value
    item_choices: tuple[Any, ...] | None = None  # list: the only item values allowed
    unique_items: bool = False  # list: no item given twice


ZATO_NONE = "ZATO_NONE"  # how Zato's exports say "no value" (security_def: ZATO_NONE): the field is left out
ZATO_NO_SECURITY = "zato-no-security"  # how Zato's REST rows say "no security definition"

# Fields of Zato 3.2's `http_soap` rows (REST channels and outgoing connections alike) that mean
# nothing here: database ids, SOAP, RBAC, caching, audit logs, parameter priorities
ZATO_HTTP_SOAP_IGNORED = (
    "id", "cluster_id", "is_internal", "service_id", "security_id", "sec_type", "sec_use_rbac", "has_rbac",
    "sec_tls_ca_cert_id", "sec_tls_ca_cert_name", "ping_method", "merge_url_params_req", "url_params_pri",
    "params_pri", "serialization_type", "content_type", "content_encoding", "data_encoding", "cache_id", "cache_name",
    "cache_type", "cache_expiry", "match_slash", "http_accept", "soap_action", "soap_version", "hl7_version",
    "json_path", "should_parse_on_input", "should_validate", "should_return_errors", "is_audit_log_sent_active",
    "is_audit_log_received_active", "max_len_messages_sent", "max_len_messages_received",
    "max_bytes_per_message_sent", "max_bytes_per_message_received", "opaque1", "is_source_external",
)


@dataclass(frozen=True)
class ZatoSpelling:
    """ How Zato's own enmasse files name an object type: its top-level `key` (`def_jms_wmq`; the
    key `zato enmasse export --format zato` writes) and the other keys Zato's files put the same
    rows under (`keys`: `channel_plain_http`, `http_soap`), its field names that differ from ours
    (`fields`: Zato's name -> ours, e.g. `{"def_name": "definition"}`; several Zato names may give
    one of ours, the first is the one exported), Zato's values that differ from ours (`values`:
    Zato's field -> {Zato's value: ours}; a value mapped to None leaves the field out, as Zato's
    `zato-no-security` does), and its fields that mean nothing here (`ignored`: accepted from
    Zato's files, dropped and reported, e.g. database ids).

    `when` tells rows apart where Zato keeps several types under one key (`http_soap` holds REST
    channels and outgoing connections): field -> the values a row of this type has (None: the
    field may be left out). A row whose values differ is not of this type; the fields named there
    only choose the type and are dropped, unless `fields` maps them (`{"type": "type"}` keeps one).

    Zato's generic connections share one key, `zato_generic_connection`, told apart by each row's
    `type_`: such a type gives that key and its `generic_type` (`cloud-dropbox`, `outconn-wsx`). """
    key: str
    fields: Mapping[str, str] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()
    generic_type: str = ""
    keys: tuple[str, ...] = ()
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    values: Mapping[str, Mapping[Any, Any]] = field(default_factory=dict)
    # Zato fields holding one value where ours holds a list (`method: GET` -> `methods: [GET]`):
    # exported only when our list has exactly one item
    scalars: tuple[str, ...] = ()

    @property
    def all_keys(self) -> tuple[str, ...]:
        """ Every top-level key Zato's files put rows of this type under, the exported one first. """
        return (self.key, *(key for key in self.keys if key != self.key))

    def matches(self, row: Mapping[str, Any]) -> bool:
        """ Whether a row under one of the keys is of this type (see `when`). """
        return all(row.get(name) in accepted for name, accepted in self.when.items())

    def is_dropped(self, key: str, value: Any) -> bool:
        """ Whether a field of a Zato row is left out of ours without a word: it only chooses the
        type, holds Zato's "no value", or is a generic connection's `type_`. """
        return ((key in self.when and key not in self.fields) or (self.generic_type and key == "type_")
                or value == ZATO_NONE)

    def ignored_in(self, row: Mapping[str, Any]) -> list[str]:
        """ The Zato-only fields of a row that hold something: empty, false and 0 ones (Zato writes
        every field it has) say nothing worth reporting. """
        return [key for key, value in row.items()
                if key in self.ignored and not self.is_dropped(key, value) and value not in (None, "", [], {}, 0)]

    def translate(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """ A row of Zato's spelling in ours (a field given both ways keeps ours). """
        out: dict[str, Any] = {}
        for key, value in row.items():
            if key in self.ignored or self.is_dropped(key, value):
                continue
            translated = self.values.get(key, {})
            if isinstance(value, (str, int, float, bool)) and value in translated:
                value = translated[value]
                if value is None:
                    continue
            if key in self.scalars and not isinstance(value, list):
                value = [value]
            ours = self.fields.get(key, key)
            if ours in out and ours != key:
                continue
            out[ours] = value
        return out

    def to_zato(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """ An object of ours in Zato's spelling (the reverse of `translate`): each of our fields
        under the first Zato name that gives it, values as Zato writes them. """
        zato_names: dict[str, str] = {}
        for zato_name, ours in self.fields.items():
            zato_names.setdefault(ours, zato_name)
        out: dict[str, Any] = {}
        for ours, value in data.items():
            zato_name = zato_names.get(ours, ours)
            if zato_name in self.scalars:
                if not (isinstance(value, list) and len(value) == 1):
                    continue
                value = value[0]
            reverse = {v: k for k, v in self.values.get(zato_name, {}).items() if v is not None}
            if isinstance(value, (str, int, float, bool)) and value in reverse:
                value = reverse[value]
            out[zato_name] = value
        return out


@dataclass(frozen=True)
class ObjectType:
    """ A configuration object type (REST channel, security definition, SQL pool...). """
    name: str
    fields: tuple[Field, ...]
    description: str = ""
    # Optional checks beyond the schema (a cron expression, a time zone name...):
    # `check(data, partial=...)` returns a list of {"field": ..., "error": ...}; see zato.objects.validate
    check: Callable[..., list[dict[str, str]]] | None = None
    zato: ZatoSpelling | None = None  # how Zato's enmasse files name it, if they name it otherwise

    def field(self, name: str) -> Field:
        for item in self.fields:
            if item.name == name:
                return item
        raise KeyError(name)


@dataclass(frozen=True)
class ChannelType:
    """ A way requests reach services. `create(server)` returns the channel's runtime. """
    name: str
    object_type: str
    create: Callable[[Any], Any]
    description: str = ""


PLACEMENTS = ("every_worker", "one_process")


@dataclass(frozen=True, kw_only=True)
class ListenerType(ChannelType):
    """ A channel that listens (a queue, a WebSocket peer, a poller): the plugin only opens a
    receiver per active definition; the core's `zato.server.listeners.ListenerRuntime` owns the
    task per definition, its restarts, live edits, draining, retries and dead letters, and its
    state. Registered through `register_channel_types` like any channel type; `create` is filled
    in. The contract is in docs/channels.md.

    `open(server, definition)` returns an async context manager (write it as `open_<thing>`)
    yielding a receiver: `async receive()` (the next item; raising says the backend failed),
    `to_invocation(item)` (a `zato.server.listeners.Invocation`), `async ack(item)`,
    `async nack(item, error)` and, optionally, `async dead_letter(item, error)`.
    `validate(definition)` (optional) returns problems as `{"field": ..., "error": ...}`.
    `failure_policy` and `restart` are `zato.server.listeners.FailurePolicy` and `Backoff`
    (None: the core's defaults). """
    create: Callable[[Any], Any] | None = field(default=None, compare=False, repr=False)  # filled in: a ListenerRuntime
    open: Callable[[Any, dict], Any]
    placement: str = "every_worker"  # or "one_process"
    validate: Callable[[dict], list[dict[str, str]]] | None = None
    failure_policy: Any = None
    restart: Any = None

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise RegistrationError(f"listener type {self.name!r}: placement {self.placement!r} is not one of "
                                    f"{', '.join(PLACEMENTS)}")
        if not callable(self.open):
            raise RegistrationError(f"listener type {self.name!r}: open must be a callable "
                                    f"open(server, definition) returning an async context manager")
        # filled in, or re-bound after dataclasses.replace() (which passes the old object's bound method)
        if self.create is None or getattr(self.create, "__func__", None) is ListenerType._create_runtime:
            object.__setattr__(self, "create", self._create_runtime)

    def _create_runtime(self, server: Any) -> Any:
        from zato.server.listeners import ListenerRuntime  # the core's runtime; imported when a server uses it
        return ListenerRuntime(server, self)


@dataclass(frozen=True)
class OutgoingConnectionType:
    """ A way services reach other systems. `create(server, definition)` returns a connection.

    Services reach the connections through `accessor` (`"out.redis"`: `self.out.redis[name]`).
    `facade(connections)`, optional, is what the accessor gives instead of the map of connections
    by name: a call such as `self.outgoing.ibm_mq.send(msg, conn_name, queue)`; `connections` is
    that map (`[name]`, `.get(name)`, `names()`), kept up to date as definitions change.
    `placement`: `"every_worker"` (each worker builds its own connections) or `"one_process"`
    (only the process holding the lease `outgoing:<name>` among all sharing the configuration
    database builds them - a connection that must exist once, such as one subscribed to a remote
    cluster; elsewhere the map says which process holds them). """
    name: str
    object_type: str
    accessor: str
    create: Callable[[Any, dict], Any]
    description: str = ""
    facade: Callable[[Any], Any] | None = None
    placement: str = "every_worker"
    aliases: tuple[str, ...] = ()  # other accessor paths giving the same (Zato's spellings: "out.wmq")

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise RegistrationError(f"outgoing connection type {self.name!r}: placement {self.placement!r} is not "
                                    f"one of {', '.join(PLACEMENTS)}")


@dataclass(frozen=True)
class Connector:
    """ An outgoing connector in one registration (`register_connectors`): the object type its
    definitions are stored as and the connection type built from them. `register` records each
    under its own kind (`Kind.OBJECT_TYPES`, `Kind.OUTGOING_CONNECTION_TYPES`), credited to the
    plugin, and refuses a connection type whose `object_type` is not `object_type.name`. """
    object_type: ObjectType
    connection_type: OutgoingConnectionType

    def mismatch(self) -> str | None:
        """ Why the two parts do not fit together, or None. """
        if self.connection_type.object_type == self.object_type.name:
            return None
        return (f"connector {self.connection_type.name!r}: its OutgoingConnectionType is for object type "
                f"{self.connection_type.object_type!r}, but its ObjectType is {self.object_type.name!r}; "
                f"give OutgoingConnectionType the ObjectType's name (object_type={self.object_type.name!r})")


@dataclass(frozen=True)
class RateLimiterBackend:
    """ Where rate-limit counters live. `create(server)` returns the limiter. """
    name: str
    create: Callable[[Any], Any]
    description: str = ""


@dataclass(frozen=True)
class DeployableFile:
    """ Files other than `.py` that users deploy like services - from the pickup directory,
    `zato deploy DIR FILE` and the admin API's upload - by their `suffix` (`".bst"`). The hot
    deploy plugin calls `await deploy(server, file_name, source)` in the one worker taking the
    change (worker 1 for pickup/, at start for every such file there too, and any worker for an
    upload), which returns the names of what it deployed, or raises
    `zato.server.deployment.DeploymentError(message, file=..., line=...)` to refuse the file (the
    message says what is wrong; hot deploy reports it with file and line and keeps what was
    deployed). `await undeploy(server, file_name)` when the file is deleted, returning the names
    undeployed. The plugin makes what it deployed reach every worker and server itself, e.g. as
    configuration objects. `name` is the suffix. """
    suffix: str
    deploy: Callable[[Any, str, bytes], Any]
    undeploy: Callable[[Any, str], Any]
    description: str = ""

    @property
    def name(self) -> str:
        return self.suffix

    def __post_init__(self) -> None:
        if not re.fullmatch(r"\.[a-z0-9]{1,16}", self.suffix) or self.suffix == ".py":
            raise RegistrationError(f"deployable file suffix {self.suffix!r} must be a dot and 1 to 16 lowercase "
                                    f"letters or digits, other than .py (e.g. .bst)")


@dataclass(frozen=True)
class SecurityType:
    """ A way callers authenticate. `check(definition, request)` returns the user name or raises
    `HTTPError` (401/403). """
    name: str
    check: Callable[[dict, Any], Any]
    description: str = ""


@dataclass(frozen=True)
class HTTPRoute:
    """ An HTTP endpoint a plugin serves. `openapi` maps each method (lower case, `"post"`) to
    its OpenAPI 3.1 operation object (summary, parameters, requestBody, responses...); the admin
    API's OpenAPI document (`GET /zato/api/openapi.json`) includes every route that has one. """
    path: str
    handler: Callable[..., Any]
    methods: tuple[str, ...] = ("GET",)
    openapi: dict[str, dict[str, Any]] | None = field(default=None, compare=False)


# A mount may not take these paths: the core's admin API and its other routes live there.
ADMIN_PREFIX = "/zato"


@dataclass(frozen=True)
class ASGIMount:
    """ A whole ASGI application a plugin serves under a path prefix (`register_asgi_mounts`).

    `app` is an ASGI 3 application, `async def app(scope, receive, send)`. It gets every HTTP
    and WebSocket connection whose path is `prefix` or under `prefix + "/"` (segment by
    segment: `/dashboard` takes `/dashboard/x`, never `/dashboards`), before the core's routes
    are looked at. `prefix="/"` is a catch-all: it gets what no route and no other mount takes,
    except paths under `/zato/`. `prefix` is kept without its trailing `/`; it may not be, or be
    under, `/zato`, and it holds no `{parameters}`, `?`, `#`, empty, `.` or `..` segments. """
    prefix: str
    app: Callable[..., Any]
    description: str = ""

    def __post_init__(self) -> None:
        prefix = self.prefix
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise RegistrationError(f"ASGI mount prefix {prefix!r} must be a text starting with '/', e.g. '/dashboard'")
        normalised = prefix.rstrip("/") or "/"
        segments = normalised.strip("/").split("/") if normalised != "/" else []
        bad = [segment for segment in segments if segment in ("", ".", "..") or any(c in segment for c in "{}?#")]
        if bad:
            raise RegistrationError(f"ASGI mount prefix {prefix!r} has the segment {bad[0]!r}; a prefix is plain "
                                    f"segments without '{{}}', '?', '#', empty, '.' or '..' ones, e.g. '/dashboard'")
        if normalised == ADMIN_PREFIX or normalised.startswith(ADMIN_PREFIX + "/"):
            raise RegistrationError(f"ASGI mount prefix {prefix!r} is under {ADMIN_PREFIX}/, which belongs to the "
                                    f"core's admin routes; mount the application under a prefix of its own, e.g. "
                                    f"'/{segments[-1] if len(segments) > 1 else 'dashboard'}'")
        if not callable(self.app):
            raise RegistrationError(f"ASGI mount {prefix!r}: app must be an ASGI application, "
                                    f"async def app(scope, receive, send); got {self.app!r}")
        object.__setattr__(self, "prefix", normalised)


@dataclass(frozen=True)
class Setting:
    """ A server.conf key's default and the values it allows, used in place of a plain default in
    `register_server_config`: `register("main", {"workers": Setting(1, minimum=1, maximum=256)})`.

    The type of `default` (bool, int, float, str, list) is the key's type. `minimum`/`maximum`
    bound numbers inclusively, `exclusive_minimum` from below exclusively (`> 0`); `choices`
    lists the only values allowed (text compared without case); `non_empty` refuses "" (or an
    empty list); `check(value)` raises ValueError saying what is wrong, for what the other
    options cannot say (a URL, a module name), and `allowed` describes for the error message
    what it accepts. `secret` keeps the value out of error messages. The core checks every value
    when it reads server.conf, and a value that is refused stops start-up with a `ConfigError`
    naming the file, section, key and what is allowed.
    """
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    choices: tuple[Any, ...] | None = None
    non_empty: bool = False
    check: Callable[[Any], Any] | None = None
    allowed: str = ""
    secret: bool = False  # a password or a URL with one: error messages do not show the value
    doc: str = ""

    def describe(self) -> str:
        """ What the key allows, in words: "an integer from 1 to 256", "one of: DEBUG, INFO". """
        if self.allowed:
            return self.allowed
        if self.choices is not None:
            return "one of: " + ", ".join(str(choice) for choice in self.choices)
        kind = _KIND_NAMES.get(type(self.default), type(self.default).__name__)
        bounds = []
        if self.exclusive_minimum is not None:
            bounds.append(f"> {_number(self.exclusive_minimum)}")
        if self.minimum is not None and self.maximum is not None:
            bounds.append(f"from {_number(self.minimum)} to {_number(self.maximum)}")
        elif self.minimum is not None:
            bounds.append(f">= {_number(self.minimum)}")
        elif self.maximum is not None:
            bounds.append(f"<= {_number(self.maximum)}")
        if self.non_empty:
            kind = f"a non-empty {kind.split(' ', 1)[1]}" if kind.startswith("a ") else f"non-empty {kind}"
        return f"{kind} {' and '.join(bounds)}".strip()


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a text",
               list: "a comma-separated list"}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def as_setting(value: Any) -> Setting:
    """ A key's declaration as a `Setting` (a plain default allows any value of its type). """
    return value if isinstance(value, Setting) else Setting(value)


@dataclass(frozen=True)
class ServerConfigSection:
    name: str
    keys: dict[str, Any]  # key -> a plain default or a `Setting`
    free_form: bool = False
    doc: str = ""

    def setting(self, key: str) -> Setting:
        return as_setting(self.keys[key])

    def defaults(self) -> dict[str, Any]:
        """ Each key's default value. """
        return {key: as_setting(value).default for key, value in self.keys.items()}


@dataclass(frozen=True)
class Task:
    name: str
    run: Callable[..., Any]
    placement: str = "every_worker"  # or "one_process": only in the holder of the lease task:<name>


class Kind(StrEnum):
    """ The kinds of things the registry keeps, one per `register_<kind>` hook. A misspelt kind
    is an error (`Registry` refuses it) rather than an empty answer. """
    SERVER_CONFIG = "server_config"
    OBJECT_TYPES = "object_types"
    CHANNEL_TYPES = "channel_types"
    OUTGOING_CONNECTION_TYPES = "outgoing_connection_types"
    RATE_LIMITER_BACKENDS = "rate_limiter_backends"
    SECURITY_TYPES = "security_types"
    INTERNAL_SERVICES = "internal_services"
    HTTP_ROUTES = "http_routes"
    ASGI_MOUNTS = "asgi_mounts"
    NOTIFICATION_HANDLERS = "notification_handlers"
    MIGRATIONS = "migrations"
    SERVICE_ATTRIBUTES = "service_attributes"
    REQUEST_ATTRIBUTES = "request_attributes"
    PUBSUB_DELIVERY_TARGETS = "pubsub_delivery_targets"
    DEPLOYABLE_FILES = "deployable_files"


def _kind(kind: str) -> Kind:
    try:
        return Kind(kind)
    except ValueError:
        raise ValueError(f"unknown registry kind {kind!r}; the kinds are "
                         f"{', '.join(k.value for k in Kind)} (zato.registry.Kind)") from None


@dataclass
class Registered:
    value: Any
    plugin: str


@dataclass
class Registry:
    """ Everything plugins registered, by kind (`Kind.CHANNEL_TYPES`...) and name. """
    kinds: dict[Kind, dict[str, Registered]] = field(default_factory=dict)

    def add(self, kind: Kind, name: str, value: Any, plugin: str) -> None:
        items = self.kinds.setdefault(_kind(kind), {})
        if name in items:
            other = items[name].plugin
            raise RegistrationError(
                f"{kind}: {name!r} is registered by plugin {other!r} and again by plugin {plugin!r}; "
                f"switch one of them off in the [deploy_internal] section of server.conf")
        items[name] = Registered(value, plugin)

    def get(self, kind: Kind, name: str) -> Any:
        return self.kinds[_kind(kind)][name].value

    def values(self, kind: Kind) -> list[Any]:
        return [item.value for item in self.kinds.get(_kind(kind), {}).values()]

    def items(self, kind: Kind) -> dict[str, Any]:
        return {name: item.value for name, item in self.kinds.get(_kind(kind), {}).items()}

    def plugin_of(self, kind: Kind, name: str) -> str:
        return self.kinds[_kind(kind)][name].plugin

    def by_plugin(self, plugin: str) -> dict[str, list[str]]:
        """ What one plugin registered: kind -> names. """
        out: dict[str, list[str]] = {}
        for kind, items in self.kinds.items():
            for name, item in items.items():
                if item.plugin == plugin:
                    out.setdefault(kind, []).append(name)
        return out
