""" What an outgoing connection sends for a security definition: its type, user name, clear
password (or key) and header.

Security definitions are `security` objects; the `security` plugin declares their schema, their
types and how they are stored, and the core checks callers against them
(`Server.authenticate`). The outgoing side lives here, in the core, so that every plugin with
outgoing connections (plain HTTP, SMTP, SQL...) reads credentials the same way and none of them
imports the `security` plugin: a connection's `security` field names a definition, and
`outgoing_credentials(server, name)` gives what to send or says what to fix. """

from __future__ import annotations

from typing import Any

from zato.objects import ENCRYPTED_PREFIX
from zato.passwords import PREFIX as HASH_PREFIX

SECURITY = "security"  # the object type of security definitions
APIKEY = "apikey"
OUTGOING = "outgoing"  # a definition's direction when outgoing connections send its password
DEFAULT_APIKEY_HEADER = "X-API-Key"  # Zato's API_Key.Default_Header
HOW_TO_SET = ("set it through the admin API: PUT /zato/api/objects/security/{name}/secrets/password with "
              "{{\"value\": \"...\"}} (only its scrypt hash is stored)")


class OutgoingCredentialsError(LookupError):
    """ A security definition cannot be used by an outgoing connection; the message says why. """


def apikey_header(definition: dict[str, Any]) -> str:
    """ The header an `apikey` definition reads (Zato 3.2 kept its name in `username`). """
    return definition.get("header") or definition.get("username") or DEFAULT_APIKEY_HEADER


def outgoing_credentials(server: Any, name: str) -> dict[str, Any]:
    """ What an outgoing connection sends for security definition `name`: `type`, `username`,
    `password` (clear) and `header` (the header carrying the key for an API key, else None).
    Raises `OutgoingCredentialsError` saying what to fix. """
    definition = server.config_objects.get(SECURITY, {}).get(name)
    if definition is None:
        raise OutgoingCredentialsError(f"security definition {name!r} does not exist or is inactive")
    if definition.get("direction") != OUTGOING:
        raise OutgoingCredentialsError(
            f"security definition {name!r} is for inbound use (its password is stored hashed and cannot be sent); "
            f"create one with direction: outgoing for outgoing connections")
    password = definition.get("password")
    if not password or str(password).startswith((ENCRYPTED_PREFIX, HASH_PREFIX + "$")):
        raise OutgoingCredentialsError(f"security definition {name!r} has no usable password; "
                                       + HOW_TO_SET.format(name=name))
    return {"type": definition.get("type"), "username": definition.get("username"), "password": password,
            "header": apikey_header(definition) if definition.get("type") == APIKEY else None}


__all__ = ["OutgoingCredentialsError", "apikey_header", "outgoing_credentials"]
