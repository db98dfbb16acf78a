""" The plugin's object types, with Zato's field names: connection definitions
(`definition_ibm_mq`), channels that listen on queues (`channel_ibm_mq`) and outgoing
connections that put messages (`outgoing_ibm_mq`). Enmasse also reads them under Zato's own keys
(`def_jms_wmq`, `channel_jms_wmq`, `outconn_jms_wmq`, with `def_name` and `service_name`). """

from __future__ import annotations

import re
from typing import Any

from zato.plugin_api import Field, ObjectType, ZatoSpelling

DEFINITION = "definition_ibm_mq"
CHANNEL = "channel_ibm_mq"
OUTGOING = "outgoing_ibm_mq"

# JMS delivery modes, as Zato's outgoing connections take them
NON_PERSISTENT, PERSISTENT = 1, 2

# What MQ allows in queue manager, queue and channel names (48 characters; channels 20)
_MQ_NAME = re.compile(r"^[A-Za-z0-9._/%]+$")

# Fields of Zato's definitions that have no meaning here: accepted from Zato's enmasse files, not kept
ZATO_ONLY_DEFINITION_FIELDS = ("cache_open_send_queues", "cache_open_receive_queues", "use_shared_connections",
                               "dynamic_queue_template", "needs_mcd", "id", "cluster_id")


def _check_mq_name(data: dict[str, Any], field: str, maximum: int, what: str) -> list[dict[str, str]]:
    value = data.get(field)
    if not isinstance(value, str) or not value or value.startswith("$"):
        return []  # missing: the schema says so; $NAME: checked once resolved
    if len(value) > maximum or not _MQ_NAME.match(value):
        return [{"field": field, "error": f"{value!r} is not a valid MQ {what} name: at most {maximum} characters "
                                         f"of A-Z, a-z, 0-9, '.', '_', '/' and '%'"}]
    return []


def check_definition(data: dict[str, Any], partial: bool = False) -> list[dict[str, str]]:
    problems = _check_mq_name(data, "queue_manager", 48, "queue manager") + _check_mq_name(data, "channel", 20,
                                                                                           "channel")
    if data.get("ssl") is True and not data.get("ssl_cipher_spec"):
        problems.append({"field": "ssl_cipher_spec", "error": "ssl is on: name the channel's cipher spec (as its "
                                                              "SSLCIPH), e.g. ANY_TLS12_OR_HIGHER"})
    return problems


def check_channel(data: dict[str, Any], partial: bool = False) -> list[dict[str, str]]:
    return _check_mq_name(data, "queue", 48, "queue") + _check_mq_name(data, "backout_queue", 48, "queue")


DEFINITION_TYPE = ObjectType(DEFINITION, (
    Field("name", required=True, description="What channels and outgoing connections name as their definition"),
    Field("host", required=True, description="Host name or address of the queue manager's listener; may be $NAME",
          example="mq.example.com"),
    Field("port", "int", default=1414, minimum=1, maximum=65535, description="The listener's TCP port"),
    Field("queue_manager", required=True, description="The queue manager's name", example="QM1"),
    Field("channel", required=True, description="The server-connection (SVRCONN) channel", example="DEV.APP.SVRCONN"),
    Field("username", default="", description="The user the connection authenticates as (MQCSP); empty: none"),
    Field("password", secret=True, description="The user's password; stored encrypted, or $NAME"),
    Field("ssl", "bool", default=False, description="Connect over TLS"),
    Field("ssl_cipher_spec", default="", description="With ssl: the channel's cipher spec (its SSLCIPH)",
          example="ANY_TLS12_OR_HIGHER"),
    Field("ssl_key_repository", default="", description="With ssl: the key repository's stem (without .kdb)",
          example="/var/mqm/ssl/key"),
    Field("max_chars_printed", "int", default=100, minimum=0,
          description="At most this many characters of a message's data in logs/ibm-mq.log"),
    Field("use_jms", "bool", default=False, description="Kept for Zato compatibility: messages are read and put "
                                                        "without JMS (MQRFH2) headers either way"),
    Field("is_active", "bool", default=True, description="Kept for Zato compatibility; a definition is always usable"),
), "A connection definition: how to reach one queue manager, shared by channels and outgoing connections.",
    check=check_definition, zato=ZatoSpelling("def_jms_wmq", ignored=ZATO_ONLY_DEFINITION_FIELDS))

CHANNEL_TYPE = ObjectType(CHANNEL, (
    Field("name", required=True, description="The channel's name: self.request.channel in the service"),
    Field("is_active", "bool", default=True, description="An inactive channel takes nothing off its queue"),
    Field("definition", required=True, references=DEFINITION, description="The connection definition to use"),
    Field("queue", required=True, description="The queue to take messages off", example="DEV.QUEUE.1"),
    Field("service", required=True, references="service", description="The service each message is given to"),
    Field("data_format", default="", choices=("", "json", "xml"),
          description="'json': the payload is the message's data parsed as JSON; empty: the data as text (or bytes)"),
    Field("wait_interval", "int", default=1000, minimum=1, maximum=60_000,
          description="Milliseconds each MQGET waits for a message (MQGMO_WAIT) before it asks again"),
    Field("backout_threshold", "int", default=0, minimum=0,
          description="Deliveries of a message before it is moved to the backout queue; 0: the queue's own "
                      "BOTHRESH (and 3 if the queue has none)"),
    Field("backout_queue", default="", description="Where a message past the backout threshold goes; empty: the "
                                                   "queue's BOQNAME, else the queue manager's dead-letter queue"),
), "A channel that takes messages off an IBM MQ queue, under syncpoint, and gives each to a service.",
    check=check_channel, zato=ZatoSpelling("channel_jms_wmq", fields={"def_name": "definition",
                                                                     "service_name": "service"},
                                           ignored=("id", "def_id", "cluster_id", "service_id")))

OUTGOING_TYPE = ObjectType(OUTGOING, (
    Field("name", required=True, description="What services name: self.outgoing.ibm_mq.send(msg, name, queue)"),
    Field("is_active", "bool", default=True, description="An inactive connection cannot be used"),
    Field("definition", required=True, references=DEFINITION, description="The connection definition to use"),
    Field("delivery_mode", "int", default=PERSISTENT, choices=(NON_PERSISTENT, PERSISTENT),
          description="1: non-persistent, 2: persistent (JMS delivery modes, as in Zato)"),
    Field("priority", "int", default=5, minimum=0, maximum=9, description="Message priority, 0-9"),
    Field("expiration", "int", minimum=1, description="Milliseconds until a message expires; empty: never"),
), "An outgoing connection that puts messages on IBM MQ queues: self.outgoing.ibm_mq.send(msg, name, queue).",
    zato=ZatoSpelling("outconn_jms_wmq", fields={"def_name": "definition"},
                      ignored=("id", "def_id", "cluster_id", "def_name_full_text")))

OBJECT_TYPES = (DEFINITION_TYPE, CHANNEL_TYPE, OUTGOING_TYPE)
