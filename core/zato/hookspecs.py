""" The plugin contract: every hook a Zato plugin may implement, grouped by the phase in which
the core calls it.

Rules that hold for every hook (see docs/plugins.md for examples):

* The core always calls hooks with keyword arguments. A spec's arguments are the contract:
  they may be added to, never renamed or removed. An implementation may accept fewer
  arguments than the spec names (pluggy passes only the ones it asks for).
* pluggy is synchronous. A hook returns plain values or an awaitable; the core awaits
  awaitables in one place (`zato.plugins.await_maybe`). A hook never starts a task: long-lived
  work is handed over as `async def run(*, task_status)` through `register_tasks`, and the
  core starts it in a nursery it owns.
* `register_<things>(register)` hooks add things by calling `register(...)`. The core owns
  `register`: it rejects duplicate names (naming both plugins) and remembers which plugin
  registered what, which `zato plugins list` shows.
* After loading, the core calls `pm.check_pending()`, so a misspelt hook implementation
  stops start-up instead of being silently ignored.
"""

from __future__ import annotations

import pluggy

from zato import PROJECT_NAME

hookspec = pluggy.HookspecMarker(PROJECT_NAME)

# ################################################################################################
# Phase 1 - loading. Called once per process right after plugins are loaded, before the
# configuration database is opened. Implementations must be cheap: they run on every start.
# ################################################################################################


@hookspec
def register_server_config(register):
    """ Declare the server.conf sections and keys this plugin reads.

    Called once after loading. `register(section, keys, *, free_form=False, doc='')`:

    * `section` - the INI section name, e.g. `"kvdb"`.
    * `keys` - a mapping of key name to its default value, or to a `zato.registry.Setting`
      (the default and what it allows: `minimum`, `maximum`, `choices`, `check`...); the
      default's type (`bool`, `int`, `float`, `list` or `str`) is the type the value is
      converted to.
    * `free_form` - True for sections whose keys are chosen by users (e.g. `[user_config]`).

    Declared keys get defaults and types, and a value a `Setting` refuses stops start-up with
    an error naming the file, section, key and the allowed values; a key or section nobody
    declared is warned about at start-up, with the nearest known name. Returns nothing.
    """


@hookspec
def register_object_types(register):
    """ Declare the configuration object types this plugin owns (with their schema).

    `register(object_type)` with a `zato.registry.ObjectType`: its `name` (e.g.
    `"channel_rest"`), its `fields` (`zato.registry.Field`: name, type, default, required,
    secret, references, description). Objects of registered types are stored in the
    configuration database and get validation (and, as later issues add them, the admin API
    and enmasse) from the core. Returns nothing.
    """


@hookspec
def register_connectors(register):
    """ Declare outgoing connectors, each in one call: the object type its definitions are stored
    as and the connection type built from them. The way to add an outgoing connection type;
    `register_object_types` stays for object types without one.

    Called once after loading, after `register_object_types`. `register(connector)` with a
    `zato.registry.Connector(object_type, connection_type)`: `object_type` is a
    `zato.registry.ObjectType` (as in `register_object_types`), `connection_type` a
    `zato.registry.OutgoingConnectionType` (as in `register_outgoing_connection_types`) whose
    `object_type` is that ObjectType's name. The core records them under `Kind.OBJECT_TYPES` and
    `Kind.OUTGOING_CONNECTION_TYPES`, credited to the plugin; a connection type for another
    object type, or a name already registered, stops loading with a `RegistrationError` naming
    the plugin and the names. Returns nothing.
    """


@hookspec
def register_channel_types(register):
    """ Declare channel types: the ways requests reach services (REST, WebSockets, queues...).

    `register(channel_type)` with a `zato.registry.ChannelType`: `name`, the `object_type`
    its definitions are stored as, and `create(server)` returning the channel's runtime
    object. The runtime's `apply(objects)` is called with every active definition at start
    (before `run`) and whenever a definition of its type changes; if the runtime has
    `async def run(*, task_status)`, the core starts it in the server's intake lifetime and
    cancels it when the server stops; an optional `validate(data)` returns problems (text)
    that make the admin API refuse a definition. Returns nothing.

    A channel that listens (a queue, WebSocket peers, a poller) registers a
    `zato.registry.ListenerType` instead, a `ChannelType` whose runtime is the core's
    (`zato.server.listeners.ListenerRuntime`). The plugin provides:

    - `object_type`, and `placement`: `"every_worker"` or `"one_process"`;
    - `open(server, definition)`: an async context manager (name it `open_<thing>`) yielding a
      receiver for one active definition, with `async receive()` (the next item, cancel-safe;
      raising says the backend failed), `to_invocation(item)` (a
      `zato.server.listeners.Invocation`: service, payload, `attributes` that services read as
      `self.request.<name>`), `async ack(item)`, `async nack(item, error)` and optionally
      `async dead_letter(item, error)`;
    - optionally `validate(definition)`, returning `{"field": ..., "error": ...}` problems, and
      `failure_policy` (`FailurePolicy`) and `restart` (`Backoff`) in place of the defaults.

    The core owns the rest: one task per active definition, items handed to services one at a
    time, restarts with bounded, jittered exponential back-off, live edits (the old receiver
    stops once its item in hand is done, then the new one opens), draining on stop (what cannot
    finish by `[main] graceful_timeout` is nacked), retries of a failing service then its
    dead-letter destination, and each listener's state and counts (`GET /zato/api/listeners`,
    Prometheus). The whole contract is in docs/channels.md.
    """


@hookspec
def register_outgoing_connection_types(register):
    """ Declare outgoing connection types: the ways services reach other systems. A new
    connector registers its object type and connection type together through
    `register_connectors`; this hook stays for compatibility.

    `register(outconn_type)` with a `zato.registry.OutgoingConnectionType`: `name`, the
    `object_type` its definitions are stored as, the `accessor` path through which services
    reach it (e.g. `"out.plain_http"`), and `create(server, definition)` returning a
    connection object with `ping()` and `close()`; optionally a `facade` and a `placement`
    (`"every_worker"`, the default, or `"one_process"`: built only in the process holding the
    lease `outgoing:<name>`). Returns nothing.
    """


@hookspec
def register_rate_limiter_backends(register):
    """ Declare rate limiter backends (where request counters live).

    `register(backend)` with a `zato.registry.RateLimiterBackend`: `name` (e.g.
    `"approximate"`, `"exact"`, `"redis"`) and `create(server)` returning an object with
    `async def hit(key, limit, window_seconds) -> bool` (True: allowed). Returns nothing.
    """


@hookspec
def register_security_types(register):
    """ Declare security definition types: how a caller proves who it is (HTTP Basic Auth,
    API keys...).

    `register(security_type)` with a `zato.registry.SecurityType`: `name` (the value of a
    security definition's `type` field, e.g. `"basic_auth"`) and
    `check(definition, request)`, which returns the authenticated user name or raises
    `zato.server.http.HTTPError` (401 with `WWW-Authenticate`, or 403); it may return an
    awaitable. Channels call it through `server.authenticate(request, security_name)`.
    Returns nothing.
    """


@hookspec
def register_internal_services(register):
    """ Contribute internal services, deployed at start-up.

    `register(module_name)` with the dotted name of a module holding `Service` subclasses.
    Modules are named, not imported, so that the start-up cache can deploy them lazily:
    a cached start does not import them until a service is first invoked. Returns nothing.
    """


@hookspec
def register_http_routes(register):
    """ Contribute HTTP endpoints served by the core's ASGI application.

    `register(path, handler, *, methods=("GET",), openapi=None)`: `path` may hold `{name}`
    parameters, `handler` is `async def handler(request: zato.server.http.HTTPRequest) ->
    HTTPResponse`. `openapi` maps each of the route's methods, in lower case, to its OpenAPI 3.1
    operation object (`summary`, `parameters`, `requestBody`, `responses` with every status the
    handler returns); a route under `/zato/` that has one is in the admin API's OpenAPI document
    (`GET /zato/api/openapi.json`), with the error responses every admin call shares added. A
    key that is not one of `methods` is refused at registration. Returns nothing.
    """


@hookspec
def register_asgi_mounts(register):
    """ Serve a whole ASGI application (a dashboard, a Starlette or Django app, a catch-all)
    under a path prefix, with streaming responses and WebSockets.

    Called once after loading. `register(prefix, app, *, description="")`:

    * `prefix` - where the application lives, e.g. `"/dashboard"` (a trailing `/` is dropped).
      It takes `prefix` and every path under `prefix + "/"`, for HTTP and WebSocket
      connections, before the core's routes are looked at; the longest prefix wins. `"/"` is a
      catch-all: it gets what no route and no other mount takes, except paths under `/zato/`.
      A prefix that is or is under `/zato` is refused (the admin API lives there), and so is one
      with `{parameters}`, `?`, `#`, empty, `.` or `..` segments.
    * `app` - an ASGI 3 application, `async def app(scope, receive, send)`. Its scope is the
      server's with `root_path` set to the prefix (`""` for `"/"`); `path` stays the full path,
      as the ASGI spec says, so the app routes on `path[len(root_path):]`.
      `scope["extensions"]["zato"]` holds `cid`, `server` and `prefix`. Every
      `http.response.body` message reaches the client as it is sent (`more_body=True` streams).
      The core adds `X-Zato-CID` to the response; an exception is logged with the cid and the
      prefix and answered with a 500 if no response started (the connection is closed if one
      did); the server goes on. Lifespan events are not passed on: start what the app needs in
      `startup_phase` or `register_tasks`.

    Two plugins mounting one prefix stop loading with a `RegistrationError` naming both; each
    mount is in the registry as a `zato.registry.ASGIMount` (`Kind.ASGI_MOUNTS`, by prefix).
    A WebSocket connection under no mount is refused (a 404 denial response, or
    `websocket.close` code 1008 where the server cannot send one). Returns nothing.
    """


@hookspec
def register_cli_commands(cli):
    """ Add commands to the `zato` command line.

    `cli` is the top-level `click.Group`; add commands or sub-groups to it with
    `cli.add_command(...)` or `@cli.command()`. Called when the CLI starts, with every
    installed plugin that is not switched off in the server.conf of the directory being
    worked on (when one is named). Returns nothing.
    """


@hookspec
def register_notification_handlers(register):
    """ Handle notifications sent between the worker processes of a server.

    `register(action, handler)`: `handler(server, payload)` (plain or `async def`) runs in
    every worker, including the one that sent it, when any worker calls
    `await server.notify(action, payload)`; `payload` is JSON-serialisable. This is how a
    change made through one worker (config, deployed code) reaches all of them. Returns nothing.
    """


@hookspec
def register_service_attributes(register):
    """ Give every service an attribute of the plugin's own, as `self.pubsub` or `self.kvdb`.

    `register(name, provide)`: `provide(service)` returns what `self.<name>` is in that service
    (called on each access, so it can depend on the invocation, e.g. `runtime.api_for(service)`);
    it raises AttributeError, saying why, when the attribute cannot be given (its backend is
    switched off...). `name` must not be an attribute every service already has. Returns nothing.
    """


@hookspec
def register_request_attributes(register):
    """ Declare what the plugin's channels add to the requests they make, as `self.request.ibm_mq`.

    `register(name, description="")`: a channel of the plugin may then pass `name` in
    `attributes` (`Server.invoke_service(..., attributes={name: value})`, or a listener's
    `Invocation(attributes=...)`); in requests of other channels `self.request.<name>` is None.
    Two plugins declaring one name is a start-up error naming both, and a channel passing an
    undeclared name is refused. Returns nothing.
    """


@hookspec
def register_pubsub_delivery_targets(register):
    """ Declare how pub/sub messages reach subscribers of an endpoint type (a WebSocket client,
    a queue): the pub/sub plugin then delivers to endpoints of that type with the same retries,
    back-off, dead letters and leases as to services.

    Called once after loading, like every `register_*` hook. `register(endpoint_type, deliver)`:
    `endpoint_type` is the `endpoint_type` of `pubsub_endpoint` objects it serves (a lower-case
    identifier, e.g. `wsx`; the pub/sub plugin registers `service`), `deliver` an
    `async def deliver(server, subscription, message, cid)` that hands one `PubSubMessage` to the
    subscriber, or raises: a failed attempt, retried under the subscription's policy. Two plugins
    registering one endpoint type is a start-up error naming both. Subscriptions of an endpoint
    type nobody registered are reported (`GET /zato/api/pubsub/...` problems) and their messages
    stay queued. Returns nothing.
    """


@hookspec
def register_deployable_files(register):
    """ Let users deploy files other than `.py` like services: `register(DeployableFile(".bst",
    deploy, undeploy, "BST definitions"))` (`zato.registry.DeployableFile`). The hot deploy
    plugin then takes such files from the pickup directory, `zato deploy` and the admin API's
    upload, and hands each to `deploy(server, file_name, source)` in one worker; a
    `DeploymentError` refuses it with file and line. Returns nothing.
    """


@hookspec
def register_migrations(register):
    """ Bring tables of the plugin's own into the configuration database.

    Called once after loading, like every `register_*` hook. `register(branch_label, directory)`:

    * `branch_label` - the branch's name, usually the plugin's (1-40 lower-case letters, digits
      and `_`, starting with a letter; `zato` is the core's). It names the branch's version table,
      `alembic_version_<branch_label>`, so it never changes once released.
    * `directory` - the directory holding the branch's Alembic revision scripts (`revision`,
      `down_revision`, `upgrade()`, `downgrade()`), e.g. `Path(__file__).parent / "migrations"`.

    `ODB.upgrade()` (the supervisor calls it once before starting the workers; a single-process
    server before it starts) upgrades the core's own chain first, then every branch of an enabled
    plugin to its heads. A plugin switched off is not upgraded and its tables are never dropped;
    its branch is upgraded when it is switched on again. A malformed label or a missing directory
    stops loading, naming the plugin. Returns nothing.
    """


@hookspec(firstresult=True)
def notification_transport(server):
    """ Provide the transport that carries notifications between worker processes.

    Return an object with `async def publish(message: bytes)` and
    `async def run(deliver, *, task_status)` (calls `await deliver(message)` for each message
    published by another worker), or None to leave the choice to other plugins. First
    non-None result wins; it must be returned synchronously. The core's default links the
    workers of one machine through their supervisor; a plugin may carry the same messages
    over PostgreSQL or Redis between machines.
    """


# ################################################################################################
# Phase 2 - start-up. The server goes through Zato's start-up phases, in this order:
# FS_CONFIG_ONLY, IMPL_BEFORE_RUN, ON_STARTING, BEFORE_POST_FORK, AFTER_POST_FORK,
# IN_PROCESS_FIRST or IN_PROCESS_OTHER, AFTER_STARTED (see docs/startup.md).
# ################################################################################################


@hookspec
def startup_phase(phase, ctx):
    """ Take part in a start-up phase.

    Called once per phase per process, after the user's `startup_callable`s for the same
    phase. `phase` is one of `zato.common.SERVER_STARTUP.PHASE`; `ctx` is the
    `zato.server.startup_callable.PhaseCtx` the user callables get (`phase`, `args`,
    `kwargs`). May return an awaitable, which the core awaits before the next phase; an
    exception stops start-up with an error naming the plugin and the phase.
    """


@hookspec
def register_tasks(register, server):
    """ Hand long-running work to the core.

    Called once per worker after services are deployed, before `AFTER_STARTED`.
    `register(name, run)` with `async def run(*, task_status=trio.TASK_STATUS_IGNORED)`;
    the core starts it with `nursery.start(run)`, so a failure before `task_status.started()`
    stops start-up. Tasks live in the worker's longest lifetime: at stop they are cancelled last,
    after intake stopped, background work drained, `shutdown` hooks ran and outgoing connections
    closed (docs/architecture.md). Returns nothing.

    `register(name, run, placement="one_process")` runs the task in exactly one process among
    all the workers of all the servers sharing the configuration database: the holder of the
    fenced lease `task:<plugin>.<name>` (`zato.server.placement`). Elsewhere it waits, competing
    for the lease; the core starts `run` in whichever process takes it over (at once when the
    holder stops, within `[main] placement_lease_seconds` when it dies) and cancels it where
    the lease is lost. Its writes that must not outlive the lease go through the fenced
    transaction `zato.server.placement.placements_of(server)["task:<plugin>.<name>"].fenced()`
    (in a worker thread), which commits only while the lease is held. The default,
    `"every_worker"`, runs it in every worker.
    """


@hookspec
def config_objects_changed(server, object_types):
    """ React to configuration objects that changed while the server runs.

    Called in every worker after objects were created, edited or deleted (through the admin
    API or enmasse) and `server.config_objects` holds their new state; `object_types` is the
    sorted list of object type names that changed. Channel types are re-applied by the core
    before this hook runs; plugins that keep their own runtimes (outgoing connections, jobs)
    rebuild them here. May return an awaitable. Returns nothing.
    """


# ################################################################################################
# Phase 3 - shutdown.
# ################################################################################################


@hookspec
def shutdown(server):
    """ Release what the plugin holds (connections, files) when a worker stops.

    Called once, after intake stopped (HTTP and listener channels: requests and items in hand
    finished or timed out) and background work drained, last loaded plugin first, and before
    outgoing connections close and plugin tasks are cancelled. May return an awaitable; it runs shielded from cancellation within
    the server's shutdown deadline. Exceptions are logged and do not stop other plugins'
    shutdown.
    """
