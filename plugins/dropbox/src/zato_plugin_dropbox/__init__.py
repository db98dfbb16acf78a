""" The `dropbox` plugin: Dropbox connections for services, on the official `dropbox` SDK.

* `self.cloud.dropbox[name].conn` - named Dropbox connections (object type `cloud_dropbox`,
  through the admin API or enmasse): `.client` is the SDK's `dropbox.Dropbox`, built with the
  definition's settings; `.upload(path, data)` uploads bytes or a file object (in an upload
  session above `UPLOAD_SESSION_THRESHOLD`), paths relative to `default_directory`.

Plain services call the client directly (they run in a worker thread); `async def` services
use `await conn.run(lambda client: client.files_list_folder(""))`, which runs the call in a
worker thread. The plugin is on once installed; `zato_plugin_dropbox = False` under `[deploy_internal]` in server.conf switches it off.

This module is imported at every start of a server that enables the plugin, so it stays light:
the SDK is imported in a worker thread when the first connection is built.
"""

from __future__ import annotations

from typing import Any

from zato.plugin_api import Connector, Field, ObjectType, OutgoingConnectionType, ZatoSpelling, hookimpl

OBJECT_TYPE = "cloud_dropbox"
CONNECTION_TYPE = "dropbox"
ACCESSOR = "cloud.dropbox"
# What every row of Zato's zato_generic_connection carries that means nothing for a Dropbox connection
ZATO_GENERIC_FIELDS = ("id", "cluster_id", "is_internal", "is_channel", "is_outconn", "pool_size", "sec_use_rbac",
                       "cache_expiry", "address", "port", "data_format", "version", "extra", "username",
                       "username_type", "secret_type", "conn_def_id", "cache_id", "oauth2_access_token_expiration",
                       # Zato's scopes asked for on refresh: the SDK's default (the app's own) is used here
                       "default_scope",
                       # the rest of Zato 3.2's generic-connection input (zato.generic.connection.create
                       # keeps every one of them in the row, null when unset, and exports it so)
                       "tenant_id", "client_id", "security_id", "sec_tls_ca_cert_id", "consumer_key",
                       "consumer_secret", "is_rate_limit_active", "rate_limit_type", "rate_limit_def",
                       "rate_limit_check_parent_def", "is_audit_log_sent_active", "is_audit_log_received_active",
                       "max_len_messages_sent", "max_len_messages_received", "max_bytes_per_message_sent",
                       "max_bytes_per_message_received", "hl7_version", "json_path", "data_encoding", "max_msg_size",
                       "read_buffer_size", "recv_timeout", "logging_level", "should_log_messages", "start_seq",
                       "end_seq", "max_wait_time", "oauth_def", "ping_interval", "pings_missed_threshold",
                       "socket_read_timeout", "socket_write_timeout", "security_group_count",
                       "security_group_member_count")


def check_dropbox(data: dict[str, Any], *, partial: bool) -> list[dict[str, str]]:
    """ What the schema cannot say: http_headers as `Name: value` lines, default_directory absolute. """
    errors = []
    headers = data.get("http_headers")
    if isinstance(headers, str) and not headers.startswith("$"):
        for number, line in enumerate(headers.splitlines(), 1):
            if line.strip() and (":" not in line or not line.split(":", 1)[0].strip()):
                errors.append({"field": "http_headers", "error": f"line {number} ({line.strip()!r}) is not "
                                                                 f"`Name: value`; give one header a line"})
    directory = data.get("default_directory")
    if isinstance(directory, str) and directory.strip() and not directory.strip().startswith(("/", "$")):
        errors.append({"field": "default_directory", "error": f"{directory!r} does not start with /; give a folder "
                                                              f"such as /reports, or leave it empty for the root"})
    return errors


CLOUD_DROPBOX = ObjectType(OBJECT_TYPE, (
    Field("name", required=True, description="What services look the connection up by: self.cloud.dropbox[name]"),
    Field("user_agent", required=True, description="Sent to Dropbox in User-Agent (before the SDK's own), naming "
                                                   "your application", example="ACME-Integrations/1.0"),
    Field("oauth2_access_token", secret=True, description="A long-lived access token; set it with PUT "
                                                         "/zato/api/objects/cloud_dropbox/{name}/secrets/"
                                                         "oauth2_access_token (never shown again)"),
    Field("app_key", default="", description="The app's key, with oauth2_refresh_token for short-lived tokens "
                                             "that the SDK refreshes"),
    Field("app_secret", secret=True, description="The app's secret (with app_key and oauth2_refresh_token)"),
    Field("oauth2_refresh_token", secret=True, description="A refresh token (offline access), with app_key: the "
                                                          "SDK gets short-lived access tokens with it"),
    Field("timeout", "float", default=30.0, minimum=0, description="Seconds to wait for each answer of Dropbox"),
    Field("max_retries_on_error", "int", default=4, minimum=0, description="Retries of a call Dropbox answered "
                                                                         "with a 5xx error (exponential back-off)"),
    Field("max_retries_on_rate_limit", "int", default=3, minimum=0, description="Retries of a call Dropbox "
                                                                              "rate-limited (429), each after "
                                                                              "its Retry-After"),
    Field("default_directory", default="", description="The folder paths in conn.upload are relative to; empty: "
                                                       "the root", example="/reports"),
    Field("http_headers", default="", description="Extra HTTP headers of every API call, one `Name: value` a line",
          example="X-Request-Source: zato"),
    Field("tls_ca_file", default="", description="PEM file of the certificate authorities to trust (a private "
                                                 "proxy or a test server); empty: the system's"),
    Field("is_active", "bool", default=True, description="An inactive connection is not built"),
), description="A Dropbox connection: self.cloud.dropbox[name].conn.client is the SDK's dropbox.Dropbox",
    check=check_dropbox, zato=ZatoSpelling(
        "zato_generic_connection", generic_type="cloud-dropbox", fields={"secret": "oauth2_access_token"},
        ignored=ZATO_GENERIC_FIELDS))


@hookimpl
def register_connectors(register):
    register(Connector(CLOUD_DROPBOX, OutgoingConnectionType(
        CONNECTION_TYPE, OBJECT_TYPE, ACCESSOR, create_outgoing, "Dropbox connections (dropbox.Dropbox clients)")))


def create_outgoing(server: Any, definition: dict[str, Any]) -> Any:
    """ Builds one named connection (the core calls this in a worker thread). """
    from zato_plugin_dropbox.connection import create_outgoing as create
    return create(server, definition)
