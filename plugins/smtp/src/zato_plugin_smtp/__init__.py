""" The `smtp` plugin: outgoing SMTP e-mail connections (Zato's `email_smtp`), reached by
services as `self.email.smtp[name].conn`.

    from zato.common.api import SMTPMessage

    message = SMTPMessage()
    message.subject = "New data"
    message.body = "Check attached data"
    message.to = "ops@example.com"
    message.attach("data.txt", data)
    self.email.smtp["My SMTP"].conn.send(message)         # in a plain `def handle`
    await self.email.smtp["My SMTP"].conn.send(message)   # in an `async def handle`

See README.md for every field of a connection.
"""

from __future__ import annotations

from zato.plugin_api import Connector, Field, ObjectType, OutgoingConnectionType, ZatoSpelling, hookimpl

from zato_plugin_smtp.connection import (
    DEFAULT_PORT, DEFAULT_TIMEOUT, DEFAULT_TLS_MODE, TLS_MODES, TLS_NONE, TLS_SSL, TLS_STARTTLS, SMTPConnection,
)

__all__ = ["CONNECTION_TYPE", "EMAIL_SMTP", "OBJECT_TYPE", "SMTPConnection"]

OBJECT_TYPE = "email_smtp"
CONNECTION_TYPE = "smtp"
ACCESSOR = "email.smtp"

# Zato's `mode` values -> our tls_mode (upper case accepted too; the last of each is what a Zato export writes)
ZATO_MODES = {"PLAIN": TLS_NONE, "SSL": TLS_SSL, "STARTTLS": TLS_STARTTLS,
              "plain": TLS_NONE, "ssl": TLS_SSL, "starttls": TLS_STARTTLS}

EMAIL_SMTP = ObjectType(OBJECT_TYPE, (
    Field("name", required=True, description="What services look the connection up by: self.email.smtp[name]"),
    Field("host", required=True, description="The SMTP server's host name or IP address; may be $NAME (read from "
                                             "the environment)",
          example="smtp.example.com"),
    Field("port", "int", default=DEFAULT_PORT, minimum=1, maximum=65535, description="TCP port: 25 or 587 for starttls and none, 465 for ssl",
          example=587),
    Field("tls_mode", default=DEFAULT_TLS_MODE, choices=TLS_MODES,
          description=f"{', '.join(TLS_MODES)}: none is plain SMTP, starttls upgrades the session to TLS before "
                      f"logging in (refused if the server does not offer it), ssl is TLS from the first byte",
          example="starttls"),
    Field("username", description="User to log in as (SMTP AUTH); empty: no login", example="zato"),
    Field("password", secret=True, description="Password of username; stored encrypted, never returned or logged"),
    Field("timeout", "float", default=DEFAULT_TIMEOUT, minimum=0,
          description="Seconds to wait for the connection and for each reply of the server"),
    Field("default_from", description="Sender of messages that set no from_ of their own",
          example="Zato <zato@example.com>"),
    Field("tls_verify", "bool", default=True,
          description="Verify the server's certificate and host name (turn off for tests only)"),
    Field("tls_ca_file", description="PEM file with the CA certificate(s) to trust instead of the system's "
                                     "(for servers with certificates from a private CA)",
          example="/etc/zato/smtp-ca.pem"),
    Field("is_active", "bool", default=True, description="Inactive connections are not built"),
), description="An outgoing SMTP connection for sending e-mail",
    zato=ZatoSpelling(OBJECT_TYPE, fields={"mode": "tls_mode"}, values={"mode": ZATO_MODES},
                      ignored=("id", "cluster_id", "is_debug", "ping_address", "opaque1")))


@hookimpl
def register_connectors(register):
    register(Connector(EMAIL_SMTP, OutgoingConnectionType(
        CONNECTION_TYPE, OBJECT_TYPE, ACCESSOR, SMTPConnection, "SMTP e-mail (self.email.smtp[name].conn.send(message))")))
