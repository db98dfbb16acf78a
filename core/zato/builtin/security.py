""" The `security` plugin: security definitions that protect channels, HTTP Basic Auth
(`basic_auth`) and API keys in a header (`apikey`), as in Zato.

Definitions are `security` objects in the configuration database; a REST channel names one in
its `security` field. Secrets are never stored in clear: `prepare_secret_fields` turns the
clear `password` a caller gives into `password_hash` (scrypt, `zato.security.hash_password`)
and drops the clear value; `store_definition` does that and writes the definition. A
definition found in the database with a clear `password` is refused (every request gets 401)
and logged at start and on each refused request, until its secret is set again, e.g. with
`zato security set-password DIR NAME`. The server never rewrites the database on its own.

Checking a request: user names are compared with `hmac.compare_digest`; passwords and keys
are verified with scrypt in a worker thread (at most `VERIFY_CONCURRENCY` at once: each
scrypt run takes 16 MB), and a success is remembered by `zato.security.Verifier` under an HMAC
of (identity, secret, stored hash), so the next request with the same credentials costs a
hash lookup. Failures are never remembered, and a new hash makes old entries unreachable.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

import trio

from zato import hookimpl
from zato.common import SERVER_STARTUP
from zato.registry import Field, ObjectType, SecurityType
from zato.security import PREFIX as HASH_PREFIX, Verifier, hash_password, parse_basic_auth, verify_password
from zato.server.http import HTTPError, HTTPRequest

logger = logging.getLogger("zato.security")

OBJECT_TYPE = "security"
BASIC_AUTH = "basic_auth"
APIKEY = "apikey"
SECURITY_TYPES = (BASIC_AUTH, APIKEY)

DEFAULT_REALM = "API"  # Zato web-admin's default realm
DEFAULT_APIKEY_HEADER = "X-API-Key"  # Zato's API_Key.Default_Header
APIKEY_CHALLENGE = "zato-apikey"  # what Zato sends in WWW-Authenticate for API keys

# Concurrent scrypt verifications per worker; each takes 16 MB and a CPU for tens of ms.
VERIFY_CONCURRENCY = max(2, os.cpu_count() or 2)

HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # an RFC 9110 token
STORAGE_KEYS = ("id", "name", "is_active", "_meta")  # kept in columns, not in an object's data

SECURITY = ObjectType(OBJECT_TYPE, (
    Field("name", required=True, description="Unique name of the definition; channels name it in `security`"),
    Field("type", required=True, description="basic_auth or apikey", example=BASIC_AUTH),
    Field("username", description="basic_auth: the user name callers send", example="my.user"),
    Field("password", secret=True, description="The password (basic_auth) or the key (apikey). Input only: "
                                               "stored as password_hash, never in clear"),
    Field("password_hash", description="scrypt hash of the password or key, made by prepare_secret_fields; "
                                       "never set by hand"),
    Field("realm", default=DEFAULT_REALM, description="basic_auth: the realm in WWW-Authenticate"),
    Field("header", default=DEFAULT_APIKEY_HEADER, description="apikey: the HTTP header carrying the key"),
    Field("is_active", "bool", default=True),
), description="A security definition: how callers of a channel prove who they are")


class SecurityDefinitionError(ValueError):
    """ A security definition that cannot be stored as given. """


# ################################################################################################
# Storing definitions


def prepare_secret_fields(definition: dict[str, Any]) -> dict[str, Any]:
    """ The form in which a definition is stored: its clear `password` replaced by
    `password_hash`. Checks the type and the fields the type needs; raises
    `SecurityDefinitionError` saying what is wrong. Runs scrypt: call it from a worker thread.

    A definition without `password` keeps the `password_hash` it has (if any); a definition
    with neither is stored but refuses every request until a secret is set. An `apikey`
    definition in Zato 3.2's form (the header name in `username`) gets it moved to `header`.
    """
    prepared = dict(definition)
    name = prepared.get("name") or "(unnamed)"
    where = f"security definition {name!r}"
    sec_type = prepared.get("type")
    if sec_type not in SECURITY_TYPES:
        raise SecurityDefinitionError(f"{where}: type {sec_type!r} is not one of {', '.join(SECURITY_TYPES)}")

    if sec_type == BASIC_AUTH:
        if not isinstance(prepared.get("username"), str) or not prepared["username"]:
            raise SecurityDefinitionError(f"{where}: basic_auth needs a username (the user name callers send)")
        prepared.setdefault("realm", DEFAULT_REALM)
    else:
        if not prepared.get("header") and prepared.get("username"):
            prepared["header"] = prepared.pop("username")  # Zato 3.2 kept the header name in username
        header = prepared.setdefault("header", DEFAULT_APIKEY_HEADER)
        if not isinstance(header, str) or not HEADER_NAME.match(header):
            raise SecurityDefinitionError(f"{where}: header {header!r} is not a valid HTTP header name; use e.g. "
                                          f"{DEFAULT_APIKEY_HEADER}")

    password = prepared.pop("password", None)
    if password is not None:
        if not isinstance(password, str) or not password:
            raise SecurityDefinitionError(f"{where}: the password (or key) must be a non-empty string")
        prepared["password_hash"] = hash_password(password)
    elif prepared.get("password_hash") is not None and not is_password_hash(prepared["password_hash"]):
        raise SecurityDefinitionError(f"{where}: password_hash is not a scrypt hash; give the secret as `password` "
                                      f"and it will be hashed")
    return prepared


def store_definition(odb: Any, name: str, *, is_active: bool = True, **fields: Any) -> dict[str, Any]:
    """ Hashes the definition's secret and writes it to the configuration database (`zato.odb.ODB`),
    replacing a definition of the same name. Returns what was stored. Blocking (scrypt and SQL):
    call it from a worker thread in the server. """
    data = prepare_secret_fields({**fields, "name": name})
    data = {key: value for key, value in data.items() if key not in STORAGE_KEYS}
    odb.put_object(OBJECT_TYPE, name, data, is_active=is_active)
    return data


def is_password_hash(value: Any) -> bool:
    """ True if `value` has the form `zato.security.hash_password` produces. """
    if not isinstance(value, str):
        return False
    parts = value.split("$")
    return len(parts) == 6 and parts[0] == HASH_PREFIX and all(part.isdigit() for part in parts[1:4])


def stored_secret_problem(definition: dict[str, Any]) -> str | None:
    """ Why a stored definition cannot authenticate anyone, or None if its secret is usable. """
    if definition.get("password"):
        return ("holds its password in clear in the configuration database, so it is refused; set the password "
                "again (e.g. `zato security set-password DIR NAME`), which keeps only a scrypt hash")
    if not definition.get("password_hash"):
        return "has no password set, so it is refused; set one (e.g. `zato security set-password DIR NAME`)"
    if not is_password_hash(definition["password_hash"]):
        return ("has a password_hash that is not a scrypt hash, so it is refused; set the password again "
                "(e.g. `zato security set-password DIR NAME`)")
    if definition.get("type") == BASIC_AUTH and not definition.get("username"):
        return "has no username, so it is refused; store it again with the user name callers send"
    if definition.get("type") == APIKEY and not HEADER_NAME.match(apikey_header(definition)):
        return f"has an invalid header name {apikey_header(definition)!r}, so it is refused; store it again"
    return None


def apikey_header(definition: dict[str, Any]) -> str:
    """ The header an `apikey` definition reads (Zato 3.2 kept its name in `username`). """
    return definition.get("header") or definition.get("username") or DEFAULT_APIKEY_HEADER


# ################################################################################################
# Checking requests


@dataclass
class _VerifierState:
    """ Per worker: remembered successes and the bound on concurrent scrypt runs. """
    verifier: Verifier = field(default_factory=Verifier)
    limiter: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(VERIFY_CONCURRENCY))


def _state(server: Any) -> _VerifierState:
    state = server.plugin_state.get("security")
    if state is None:
        state = server.plugin_state["security"] = _VerifierState()
    return state


async def _verify(request: HTTPRequest, identity: str, secret: str, stored: str) -> bool:
    state = _state(request.server)
    if state.verifier.is_known(identity, secret, stored):
        return True
    return await trio.to_thread.run_sync(state.verifier.verify, identity, secret, stored, limiter=state.limiter)


async def _spend_verification_time(request: HTTPRequest, secret: str, stored: str) -> None:
    """ Runs scrypt without remembering the result, so that a wrong user name takes as long
    to refuse as a wrong password and timing does not tell which user names exist. """
    await trio.to_thread.run_sync(verify_password, secret, stored, limiter=_state(request.server).limiter)


def _refuse(request: HTTPRequest, definition: dict[str, Any], reason: str, challenge: str) -> HTTPError:
    logger.warning("cid=%s security definition %r (%s) refused the request to %s: %s", request.cid,
                   definition.get("name"), definition.get("type"), request.path, reason)
    return HTTPError(401, headers={"www-authenticate": challenge})


def _usable_hash(request: HTTPRequest, definition: dict[str, Any], challenge: str) -> str:
    problem = stored_secret_problem(definition)
    if problem is not None:
        logger.error("cid=%s security definition %r %s", request.cid, definition.get("name"), problem)
        raise HTTPError(401, headers={"www-authenticate": challenge})
    return definition["password_hash"]


def basic_auth_challenge(definition: dict[str, Any]) -> str:
    realm = str(definition.get("realm") or DEFAULT_REALM).replace("\\", "\\\\").replace('"', '\\"')
    return f'Basic realm="{realm}"'


async def check_basic_auth(definition: dict[str, Any], request: HTTPRequest) -> str:
    """ HTTP Basic Auth: returns the user name, or raises 401 with `WWW-Authenticate: Basic realm=...`. """
    challenge = basic_auth_challenge(definition)
    stored = _usable_hash(request, definition, challenge)
    header = request.headers.get("authorization")
    credentials = parse_basic_auth(header)
    if credentials is None:
        reason = "no Authorization header" if header is None else \
            "the Authorization header is not Basic base64(user:password)"
        raise _refuse(request, definition, reason, challenge)
    username, password = credentials
    expected = definition["username"]
    if not hmac.compare_digest(username.encode(), expected.encode()):
        await _spend_verification_time(request, password, stored)
        raise _refuse(request, definition, "unknown user name", challenge)
    if not await _verify(request, expected, password, stored):
        raise _refuse(request, definition, f"wrong password for user {expected!r}", challenge)
    return expected


async def check_apikey(definition: dict[str, Any], request: HTTPRequest) -> str:
    """ An API key in a header: returns the definition's name (API keys name no user), or raises
    401 with `WWW-Authenticate: zato-apikey`, as Zato does. """
    stored = _usable_hash(request, definition, APIKEY_CHALLENGE)
    header = apikey_header(definition)
    key = request.headers.get(header.lower())
    if not key:
        raise _refuse(request, definition, f"no {header} header", APIKEY_CHALLENGE)
    if not await _verify(request, definition["name"], key, stored):
        raise _refuse(request, definition, f"wrong key in the {header} header", APIKEY_CHALLENGE)
    return definition["name"]


# ################################################################################################
# Hooks


@hookimpl
def register_object_types(register):
    register(SECURITY)


@hookimpl
def register_security_types(register):
    register(SecurityType(BASIC_AUTH, check_basic_auth, "HTTP Basic Auth: a user name and a password"))
    register(SecurityType(APIKEY, check_apikey, "An API key in an HTTP header (X-API-Key by default)"))


@hookimpl
def startup_phase(phase, ctx):
    """ Says at start which definitions will refuse every request, and why. """
    if phase != SERVER_STARTUP.PHASE.ON_STARTING:
        return
    for name, definition in ctx.kwargs["server"].config_objects.get(OBJECT_TYPE, {}).items():
        if definition.get("type") in SECURITY_TYPES:
            problem = stored_secret_problem(definition)
            if problem is not None:
                logger.error("security definition %r %s", name, problem)


@hookimpl
def register_cli_commands(cli):
    import click

    @cli.group("security")
    def security_group() -> None:
        """ Security definitions (HTTP Basic Auth, API keys). """

    @security_group.command("set-password")
    @click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
    @click.argument("name")
    @click.password_option("--password", envvar="ZATO_SECURITY_PASSWORD",
                           help="The new password or API key. Env: ZATO_SECURITY_PASSWORD.")
    def set_password(base_dir: str, name: str, password: str) -> None:
        """ Set the password (basic_auth) or key (apikey) of security definition NAME; only its
        scrypt hash is stored. Restart the server to apply it. """
        from zato.odb import ODB
        from zato.server.server import ServerPaths, database_url, read_server_config

        paths = ServerPaths(base_dir)
        if not paths.server_conf.exists():
            raise click.ClickException(f"{paths.base_dir} is not a server directory ({paths.server_conf} is missing)")
        odb = ODB(database_url(paths, read_server_config(paths)))
        try:
            found = {d["name"]: d for d in odb.list_objects(OBJECT_TYPE, active_only=False)}
            if name not in found:
                raise click.ClickException(f"no security definition named {name!r} in {odb.url}; "
                                           f"known: {', '.join(sorted(found)) or 'none'}")
            definition = found[name]
            fields = {key: value for key, value in definition.items() if key not in STORAGE_KEYS}
            try:
                store_definition(odb, name, is_active=definition["is_active"], **{**fields, "password": password})
            except SecurityDefinitionError as exc:
                raise click.ClickException(str(exc)) from None
        finally:
            odb.close()
        click.echo(f"password of security definition {name!r} set (stored as a scrypt hash); restart the server "
                   f"to apply it")
