""" The `wsx` plugin: WebSocket channels speaking Zato's WSX protocol, on the server's own port.

* `channel_web_socket` definitions (admin API, enmasse, also under Zato's key `web_socket`):
  each active one is a WebSocket endpoint at its address's path. Clients open a session with
  `create-session` (credentials checked against the channel's security definition), invoke the
  channel's service with `invoke-service`, and answer the server's requests (`zwsx.rqc`) with
  `client-response`; tokens, session wait time and pings as in Zato (zato_plugin_wsx.connection).
* `self.request.wsx` in services invoked through a channel: the connection's ids and addresses.
* `self.wsx.channel[name].broadcast(data)` and `.invoke(pub_client_id, data)` in services.
* The admin API and `zato wsx ...` list, invoke and disconnect connections wherever they are
  open, in any worker of any server sharing the database (zato_plugin_wsx.admin,
  zato_plugin_wsx.registry).
* `outgoing_wsx` definitions: `self.out.wsx[name].conn.client()` invokes a remote cluster's
  services, hooks hear connects, messages and closes (zato_plugin_wsx.outgoing).
* `helpers.web-sockets-gateway`, Zato's gateway service, and pub/sub to WebSocket clients: the
  `wsx` delivery target (zato_plugin_wsx.gateway, zato_plugin_wsx.pubsub).

On once installed; `[deploy_internal] zato_plugin_wsx = False` in server.conf switches it off.
"""

from __future__ import annotations

from typing import Any

from zato.plugin_api import (
    ZATO_NO_SECURITY, ChannelType, Connector, Field, ObjectType, OutgoingConnectionType, PluginState, ZatoSpelling, hookimpl,
)

PLUGIN = "wsx"
OBJECT_TYPE = "channel_web_socket"
DATA_FORMATS = ("json",)
CHANNELS: PluginState = PluginState(PLUGIN, "the WebSocket channels of this worker")

# Zato's web_socket rows carry these too; they mean nothing here
ZATO_ONLY_FIELDS = ("id", "cluster_id", "is_internal", "is_out", "service_id", "security_id", "sec_type", "opaque1",
                    "is_audit_log_sent_active", "is_audit_log_received_active", "max_len_messages_sent",
                    "max_len_messages_received", "max_bytes_per_message_sent", "max_bytes_per_message_received",
                    "extra_properties")


def check_channel(data: dict[str, Any], *, partial: bool) -> list[dict[str, str]]:
    from zato_plugin_wsx.channels import address_problem
    problem = address_problem(data.get("address")) if "address" in data else None
    return [{"field": "address", "error": problem}] if problem else []


CHANNEL_WEB_SOCKET = ObjectType(OBJECT_TYPE, (
    Field("name", required=True, description="Unique name of the channel"),
    Field("address", required=True, description="ws://host:port/path: clients connect to this path on the "
                                                "server's own port", example="ws://0.0.0.0:17010/api/ws"),
    Field("service", required=True, references="service", description="The service invoke-service runs"),
    Field("security", references="security", description="Security definition (Basic Auth or API key) checking "
                                                         "create-session's username and secret; none: no "
                                                         "credentials needed"),
    Field("data_format", default="json", choices=DATA_FORMATS, description="Messages are JSON"),
    Field("new_token_wait_time", "float", default=5.0, minimum=0.001,
          description="Seconds a new connection has to open a session before it is closed"),
    Field("token_ttl", "float", default=3600.0, minimum=0.001,
          description="Seconds a session token lives after the client's last request, response or pong"),
    Field("ping_interval", "float", default=30.0, minimum=0.001,
          description="Seconds between WebSocket pings to each client"),
    Field("pings_missed_threshold", "int", default=2, minimum=1,
          description="Pings missed in a row after which the connection is closed (4002)"),
    Field("max_message_size", "int", default=1024 * 1024, minimum=64,
          description="The largest message accepted from a client, in bytes; a larger one is refused, the "
                      "connection goes on"),
    Field("hook_service", references="service", description="A service told of each connection opened and "
                                                            "closed: input event (connected, disconnected), "
                                                            "channel_name, pub_client_id, ext_client_id..."),
    Field("is_active", "bool", default=True,
          description="An inactive channel takes no connections; deactivating one closes the connections it has"),
), description="A WebSocket channel: clients open sessions and invoke a service with Zato's WSX protocol",
    check=check_channel,
    zato=ZatoSpelling("web_socket", fields={"service_name": "service", "sec_def": "security",
                                            "security_name": "security"}, ignored=ZATO_ONLY_FIELDS,
                      values={"sec_def": {ZATO_NO_SECURITY: None, "": None},
                              "security_name": {ZATO_NO_SECURITY: None, "": None}}))


def create_runtime(server: Any) -> Any:
    from zato_plugin_wsx.channels import WSXChannels
    return CHANNELS.set(server, WSXChannels(server))


@hookimpl
def register_server_config(register):
    from zato.plugin_api import Setting
    register(PLUGIN, {
        "gateway_service_allowed": Setting("", doc="Services WebSocket clients (and other clusters' outgoing "
                                                   "connections) may invoke through helpers.web-sockets-gateway, "
                                                   "comma-separated names or patterns such as api.*; also read "
                                                   "from Zato's [pubsub] wsx_gateway_service_allowed"),
    }, doc="WebSocket channels: what helpers.web-sockets-gateway lets clients invoke besides pub/sub's services.")


@hookimpl
def register_object_types(register):
    register(CHANNEL_WEB_SOCKET)


@hookimpl
def register_connectors(register):
    from zato_plugin_wsx import outgoing
    register(Connector(outgoing.OUTGOING_WSX, OutgoingConnectionType(
        outgoing.CONNECTION_TYPE, outgoing.OBJECT_TYPE, outgoing.ACCESSOR, outgoing.create_outgoing,
        "Outgoing WebSocket connections: invoke a remote Zato cluster's services, hooks for what it sends")))


@hookimpl
def config_objects_changed(server, object_types):
    from zato_plugin_wsx import outgoing
    outgoing.on_objects_changed(server, object_types)


@hookimpl
def register_channel_types(register):
    register(ChannelType("web_socket", OBJECT_TYPE, create_runtime,
                         "WebSocket clients speaking Zato's WSX protocol"))


@hookimpl
def register_request_attributes(register):
    register("wsx", "the WebSocket connection: channel_name, pub_client_id, ext_client_id, ext_client_name, "
                    "peer_address, connection_time, user; invoke_client(data)")


@hookimpl
def register_service_attributes(register):
    def provide(service: Any) -> Any:
        from zato_plugin_wsx.channels import WSXFacade
        return WSXFacade(CHANNELS.get(service.server))
    register("wsx", provide)


@hookimpl
def register_http_routes(register):
    from zato_plugin_wsx.admin import ROUTES
    for path, handler, methods, openapi in ROUTES:
        register(path, handler, methods=methods, openapi=openapi)


@hookimpl
def register_cli_commands(cli):
    from zato_plugin_wsx.admin import add_commands
    add_commands(cli)


@hookimpl
def register_migrations(register):
    from zato_plugin_wsx import registry
    registry.register_migrations(register)


@hookimpl
def register_notification_handlers(register):
    from zato_plugin_wsx import registry
    registry.register_notification_handlers(register)


@hookimpl
def register_tasks(register, server):
    from zato_plugin_wsx import outgoing, registry
    registry.register_tasks(register, server)
    outgoing.register_tasks(register, server)


@hookimpl
def register_pubsub_delivery_targets(register):
    from zato_plugin_wsx.pubsub import ENDPOINT_TYPE, deliver
    register(ENDPOINT_TYPE, deliver)


@hookimpl
def register_internal_services(register):
    register("zato_plugin_wsx.gateway")
