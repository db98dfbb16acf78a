""" The `security` plugin: security definitions that protect channels, HTTP Basic Auth
(`basic_auth`) and API keys in a header (`apikey`), as in Zato.

Definitions are `security` objects in the configuration database; a REST channel names one in
its `security` field. The password (or key) is a secret field with `secret_storage="hash"`, so
the generic object model (`zato.objects`, the admin API's `PUT .../secrets/password`) keeps it
only as a scrypt hash; `prepare_secret_fields` and `store_definition` do the same for callers
that store definitions themselves. A `$NAME` reference keeps the secret in the environment.

A definition whose password sits in the database in clear (written by hand, or by a tool that
bypassed the calls above) is refused, never hashed on load: the server does not rewrite its
configuration database on its own. Every request it protects gets 401, and the log says why at
start, after each configuration change and on each refused request.

Checking a request: a credential header sent more than once is refused (400); user names are
compared with `hmac.compare_digest`; passwords and keys are verified with scrypt in a worker
thread under the process's one `zato.passwords.hashing_limiter()` (shared with the admin API),
and a success is remembered by `zato.passwords.Verifier` under an HMAC of (identity, secret,
stored hash), so the next request with the same credentials costs a lookup on the loop. A
header that passed is also remembered per loaded definition (`AcceptedCredentials`, as a keyed
MAC, never the header itself), so a request repeating it skips the checks altogether.
Failures are never remembered; a new hash makes the old entries unreachable. Failed attempts
count in the server's `zato.passwords.LoginThrottle`, per client address.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

import trio

from zato import hookimpl
from zato.common import SERVER_STARTUP
from zato.objects import ENCRYPTED_PREFIX, ObjectValidationError, is_env_reference, store_secret, validate
from zato.common.rate_limiting import RATE_LIMIT_FIELDS, check_rate_limit_fields
from zato.registry import Field, ObjectType, SecurityType, ZatoSpelling
from zato.passwords import (
    PREFIX as HASH_PREFIX, Verifier, client_address, hashing_limiter, login_throttle, parse_basic_auth, verify_off_loop,
    verify_password,
)
from zato.server.credentials import (
    APIKEY, DEFAULT_APIKEY_HEADER, HOW_TO_SET, OUTGOING, SECURITY as OBJECT_TYPE, OutgoingCredentialsError, apikey_header,
    outgoing_credentials,
)
from zato.server.http import HTTPError, HTTPRequest
from zato.server.plugin_state import PluginState

logger = logging.getLogger("zato.security")

BASIC_AUTH = "basic_auth"
SECURITY_TYPES = (BASIC_AUTH, APIKEY)
INBOUND = "inbound"
DIRECTIONS = (INBOUND, OUTGOING)

DEFAULT_REALM = "API"  # Zato web-admin's default realm
APIKEY_CHALLENGE = "zato-apikey"  # what Zato sends in WWW-Authenticate for API keys

HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # an RFC 9110 token
STORAGE_KEYS = ("id", "name", "is_active", "_meta")  # kept in columns, not in an object's data


SECURITY = ObjectType(OBJECT_TYPE, (
    Field("name", required=True, description="Unique name of the definition; channels name it in `security`"),
    Field("type", required=True, description="basic_auth or apikey", example=BASIC_AUTH),
    Field("username", description="basic_auth: the user name callers send (compared exactly)", example="my.user"),
    Field("direction", default="inbound", choices=DIRECTIONS,
          description="inbound: checks callers of channels (the password is stored as a scrypt hash); outgoing: "
                      "sent by outgoing connections (the password is stored encrypted, as it must be sent)"),
    Field("password", secret=True, secret_storage=lambda data: "encrypt" if data.get("direction") == "outgoing"
          else "hash", description="The password (basic_auth) or the key (apikey); stored as a scrypt hash for "
                                   "inbound definitions, encrypted for outgoing ones"),
    Field("realm", description=f"basic_auth: the realm in WWW-Authenticate ({DEFAULT_REALM} if empty)"),
    Field("header", description=f"apikey: the HTTP header carrying the key ({DEFAULT_APIKEY_HEADER} if empty)",
          example=DEFAULT_APIKEY_HEADER),
    *RATE_LIMIT_FIELDS,
    Field("is_active", "bool", default=True),
), description="A security definition: how callers of a channel prove who they are",
    check=check_rate_limit_fields,
    # Zato's apikey keeps its header in `username`, which apikey_header reads as Zato does
    zato=ZatoSpelling("security", keys=("def_sec",), when={"type": SECURITY_TYPES}, fields={"type": "type"},
                      ignored=("id", "cluster_id", "sec_type", "is_internal", "password_type")))


class SecurityDefinitionError(ValueError):
    """ A security definition that cannot be stored as given. """


# ################################################################################################
# Definitions and their stored form


def is_password_hash(value: Any) -> bool:
    """ True if `value` has the form `zato.passwords.hash_password` produces. """
    if not isinstance(value, str):
        return False
    parts = value.split("$")
    return len(parts) == 6 and parts[0] == HASH_PREFIX and all(part.isdigit() for part in parts[1:4])


def type_problem(definition: dict[str, Any]) -> str | None:
    """ What a definition of one of this plugin's types lacks, apart from its secret, or None. """
    sec_type = definition.get("type")
    if definition.get("direction", "inbound") not in DIRECTIONS:
        return f"has direction {definition.get('direction')!r}, which is not one of {', '.join(DIRECTIONS)}"
    if sec_type not in SECURITY_TYPES:
        return f"has type {sec_type!r}, which is not one of {', '.join(SECURITY_TYPES)}"
    if sec_type == BASIC_AUTH and not definition.get("username"):
        return "needs a username (the user name callers send)"
    if sec_type == APIKEY and not HEADER_NAME.match(apikey_header(definition)):
        return f"has header {apikey_header(definition)!r}, which is not a valid HTTP header name (e.g. X-API-Key)"
    return None


def secret_problem(definition: dict[str, Any], *, from_environment: bool = False) -> str | None:
    """ Why a definition's password cannot be used, or None. `from_environment`: the value was
    read from the environment variable a `$NAME` reference names, so it is not stored. """
    name = definition.get("name")
    password = definition.get("password")
    if not password:
        return "has no password set, so it is refused; " + HOW_TO_SET.format(name=name)
    if definition.get("direction") == OUTGOING:
        if from_environment or (isinstance(password, str) and password.startswith(ENCRYPTED_PREFIX)):
            return None
        return ("is an outgoing definition whose password is not stored encrypted (was its direction changed?); "
                "set the password again: " + HOW_TO_SET.format(name=name))
    if from_environment or is_password_hash(password):
        return None
    if isinstance(password, str) and password.startswith(HASH_PREFIX + "$"):
        return "has a password that is not a valid scrypt hash, so it is refused; " + HOW_TO_SET.format(name=name)
    return ("holds its password in clear in the configuration database, so it is refused until it is set "
            "again; " + HOW_TO_SET.format(name=name))


def prepare_secret_fields(definition: dict[str, Any], box: Any = None) -> dict[str, Any]:
    """ The form in which a definition is stored: checked against the `security` schema and its
    type, a clear `password` replaced by its scrypt hash (the same as the admin API stores).
    A password that is a hash already, or a `$NAME` reference, is kept as it is. Raises
    `SecurityDefinitionError` saying what is wrong. Runs scrypt: call it from a worker thread.

    A definition without a password may be stored (the secret is set later with its own call);
    it refuses every request until then. An `apikey` definition in Zato 3.2's form (the header
    name in `username`) gets the name moved to `header`.
    """
    try:
        prepared = validate(SECURITY, definition, allow_secrets=True)
    except ObjectValidationError as exc:
        raise SecurityDefinitionError(str(exc)) from None
    where = f"security definition {prepared.get('name')!r}"
    if prepared.get("type") == APIKEY and not prepared.get("header") and prepared.get("username"):
        prepared["header"] = prepared.pop("username")
    problem = type_problem(prepared)
    if problem is not None:
        raise SecurityDefinitionError(f"{where} {problem}")
    password = prepared.get("password")
    if password is not None:
        if not isinstance(password, str) or not password:
            raise SecurityDefinitionError(f"{where}: the password (or key) must be a non-empty string; leave it out "
                                          f"to set it later")
        if prepared.get("direction") == OUTGOING:
            if not (password.startswith(ENCRYPTED_PREFIX) or is_env_reference(password)):
                if box is None:
                    raise SecurityDefinitionError(f"{where}: an outgoing definition's password is stored encrypted; "
                                                  f"pass the server's key (zato.objects.SecretBox)")
                prepared["password"] = store_secret(SECURITY.field("password"), password, box, prepared)
        elif not (is_password_hash(password) or is_env_reference(password)):
            prepared["password"] = store_secret(SECURITY.field("password"), password, None, prepared)
    return prepared


def store_definition(odb: Any, name: str, *, is_active: bool = True, box: Any = None, **fields: Any) -> dict[str, Any]:
    """ `prepare_secret_fields`, then writes the definition to the configuration database
    (`zato.odb.ODB`), replacing one of the same name. Returns what was stored. Blocking (scrypt
    and SQL): call it from a worker thread in the server. """
    data = prepare_secret_fields({**fields, "name": name}, box)
    data = {key: value for key, value in data.items() if key not in STORAGE_KEYS}
    odb.put_object(OBJECT_TYPE, name, data, is_active=is_active)
    return data


# ################################################################################################
# Per-worker state


class AcceptedCredentials:
    """ The credential headers that passed every check of one loaded definition, so that the
    next request sending the same header costs one keyed hash and a set lookup instead of the
    whole check (the definition's checks, base64, the user name's compare, the `Verifier`'s HMAC).

    A header is remembered only as its BLAKE2b MAC under a per-process random key (the header
    holds the password in base64; it is never kept), and only after a success against a stored
    scrypt hash (never a failure, never a secret from the environment, which is checked afresh).
    An instance belongs to one definition dict: a configuration reload makes new dicts (a new
    password, user name, type or direction), so `accepted_credentials` starts a new instance for
    them, and `refresh_stored_state` drops them all after any change of definitions. """
    __slots__ = ("definition", "user", "_key", "_tokens")

    MAX_HEADERS = 1000  # per definition: many users' headers (or one user's changing headers) start over

    def __init__(self, definition: dict[str, Any], user: str) -> None:
        self.definition = definition  # held, so that its id is not reused while this is in use
        self.user = user
        self._key = os.urandom(32)
        self._tokens: set[bytes] = set()

    def _token(self, header: str) -> bytes:
        return hashlib.blake2b(header.encode("utf-8", "surrogatepass"), key=self._key, digest_size=32).digest()

    def knows(self, header: str) -> bool:
        # a set lookup of MACs: its timing depends on MACs under a secret key, never on the header
        return self._token(header) in self._tokens

    def remember(self, header: str) -> None:
        if len(self._tokens) >= self.MAX_HEADERS:
            self._tokens.clear()
        self._tokens.add(self._token(header))


@dataclass
class SecurityState:
    """ Per worker: remembered successes, and which definitions keep their password in the
    environment (`$NAME` in the database). """
    verifier: Verifier = field(default_factory=Verifier)
    env_references: dict[str, str] = field(default_factory=dict)  # definition name -> variable
    accepted: dict[str, AcceptedCredentials] = field(default_factory=dict)  # definition name -> its headers


STATE = PluginState[SecurityState]("security")


def security_state(server: Any) -> SecurityState:
    return STATE.get_or_create(server, SecurityState)


def _scan_stored(server: Any) -> dict[str, str]:
    """ Blocking: reads the stored definitions (not the loaded ones, whose `$NAME` references are
    already replaced by values), logs every one that cannot authenticate anyone, and returns
    which keep their password in the environment. """
    env_references = {}
    for stored in server.odb.list_objects(OBJECT_TYPE, active_only=False):
        if stored.get("type") not in SECURITY_TYPES:
            continue  # another plugin's type
        if is_env_reference(stored.get("password")):
            env_references[stored["name"]] = stored["password"][1:]
        in_environment = is_env_reference(stored.get("password"))
        problem = type_problem(stored) or secret_problem(stored, from_environment=in_environment)
        if problem is not None:
            inactive = "" if stored.get("is_active", True) else " (inactive)"
            # a definition created before its secret is set is normal for a moment; the rest is not
            level = logging.WARNING if not stored.get("password") else logging.ERROR
            logger.log(level, "security definition %r%s %s", stored["name"], inactive, problem)
    return env_references


async def refresh_stored_state(server: Any) -> None:
    state = security_state(server)
    state.env_references = await trio.to_thread.run_sync(_scan_stored, server)
    state.accepted = {}  # remembered headers belong to the definitions as they were


def accepted_credentials(server: Any, definition: dict[str, Any]) -> AcceptedCredentials | None:
    """ The headers remembered for this loaded definition, or None (none yet, or remembered for
    an earlier version of it). """
    accepted = security_state(server).accepted.get(definition.get("name"))
    return accepted if accepted is not None and accepted.definition is definition else None


def _remember_accepted(request: HTTPRequest, definition: dict[str, Any], header: str, user: str, secret: str) -> None:
    """ After a success: the header is remembered if the secret is a stored hash (a `$NAME`
    secret is compared afresh every time, since the environment can change). """
    state = security_state(request.server)
    name = definition.get("name")
    if not is_password_hash(secret) or name in state.env_references:
        return
    accepted = state.accepted.get(name)
    if accepted is None or accepted.definition is not definition:
        accepted = state.accepted[name] = AcceptedCredentials(definition, user)
    accepted.remember(header)


# ################################################################################################
# Checking requests


def _usable_secret(request: HTTPRequest, definition: dict[str, Any], challenge: str) -> str:
    """ The stored hash (or, for a `$NAME` reference, the environment's value) to check against;
    raises 401 if the definition cannot authenticate anyone. """
    name = definition.get("name")
    if definition.get("direction") == OUTGOING:
        logger.error("cid=%s security definition %r is for outgoing connections (its password is sent, not checked); "
                     "a channel needs one with direction: inbound", request.cid, name)
        raise HTTPError(401, headers={"www-authenticate": challenge})
    variable = security_state(request.server).env_references.get(name)
    password = definition.get("password")
    from_environment = variable is not None and password is not None and os.environ.get(variable) == password
    problem = type_problem(definition) or secret_problem(definition, from_environment=from_environment)
    if problem is not None:
        logger.error("cid=%s security definition %r %s", request.cid, name, problem)
        raise HTTPError(401, headers={"www-authenticate": challenge})
    return password


def _target(definition: dict[str, Any]) -> str:
    return f"security definition {definition.get('name')!r}"


async def _verify(request: HTTPRequest, definition: dict[str, Any], identity: str, given: str, secret: str) -> bool:
    """ A remembered success answers at once; anything else waits out the client address's
    throttle delay first, and a failure counts in it. """
    verifier = security_state(request.server).verifier
    if is_password_hash(secret) and verifier.is_known(identity, given, secret):
        return True
    throttle, client = login_throttle(request.server), client_address(request)
    await throttle.wait(client)
    if is_password_hash(secret):
        ok = await verify_off_loop(verifier, identity, given, secret)
    else:  # from the environment, never stored: compare in constant time
        ok = hmac.compare_digest(given.encode(), secret.encode())
    if not ok:
        throttle.failed(client, _target(definition))
    return ok


async def _spend_verification_time(request: HTTPRequest, definition: dict[str, Any], given: str, secret: str) -> None:
    """ Runs scrypt without remembering the result, so that a wrong user name takes as long to
    refuse as a wrong password and timing does not tell which user names exist. Counts as a
    failed login. """
    throttle, client = login_throttle(request.server), client_address(request)
    await throttle.wait(client)
    if is_password_hash(secret):
        await trio.to_thread.run_sync(verify_password, given, secret, limiter=hashing_limiter())
    throttle.failed(client, _target(definition))


def _refuse(request: HTTPRequest, definition: dict[str, Any], reason: str, challenge: str) -> HTTPError:
    logger.warning("cid=%s security definition %r (%s) refused the request to %s: %s", request.cid,
                   definition.get("name"), definition.get("type"), request.path, reason)
    return HTTPError(401, headers={"www-authenticate": challenge})


def basic_auth_challenge(definition: dict[str, Any]) -> str:
    realm = str(definition.get("realm") or DEFAULT_REALM).replace("\\", "\\\\").replace('"', '\\"')
    return f'Basic realm="{realm}"'


async def check_basic_auth(definition: dict[str, Any], request: HTTPRequest) -> str:
    """ HTTP Basic Auth: returns the user name, or raises 401 with `WWW-Authenticate: Basic realm=...`. """
    accepted = accepted_credentials(request.server, definition)
    if accepted is not None:  # this definition let a request in before: the same header, the same answer
        header = request.single_header("Authorization")
        if header is not None and accepted.knows(header):
            return accepted.user
    challenge = basic_auth_challenge(definition)
    secret = _usable_secret(request, definition, challenge)
    header = request.single_header("Authorization")
    credentials = parse_basic_auth(header)
    if credentials is None:
        reason = "no Authorization header" if header is None else \
            "the Authorization header is not Basic base64(user:password)"
        raise _refuse(request, definition, reason, challenge)
    username, password = credentials
    expected = definition["username"]
    if not hmac.compare_digest(username.encode(), expected.encode()):
        await _spend_verification_time(request, definition, password, secret)
        raise _refuse(request, definition, "unknown user name", challenge)
    if not await _verify(request, definition, expected, password, secret):
        raise _refuse(request, definition, f"wrong password for user {expected!r}", challenge)
    _remember_accepted(request, definition, header, expected, secret)
    return expected


async def check_apikey(definition: dict[str, Any], request: HTTPRequest) -> str:
    """ An API key in a header: returns the definition's name (an API key names no user), or
    raises 401 with `WWW-Authenticate: zato-apikey`, as Zato does. """
    accepted = accepted_credentials(request.server, definition)
    if accepted is not None:  # this definition let a request in before: the same key, the same answer
        key = request.single_header(apikey_header(definition))
        if key and accepted.knows(key):
            return accepted.user
    secret = _usable_secret(request, definition, APIKEY_CHALLENGE)
    header = apikey_header(definition)
    key = request.single_header(header)
    if not key:
        raise _refuse(request, definition, f"no {header} header", APIKEY_CHALLENGE)
    if not await _verify(request, definition, definition["name"], key, secret):
        raise _refuse(request, definition, f"wrong key in the {header} header", APIKEY_CHALLENGE)
    _remember_accepted(request, definition, key, definition["name"], secret)
    return definition["name"]


# ################################################################################################
# Hooks


@hookimpl
def register_object_types(register):
    register(SECURITY)


@hookimpl
def register_security_types(register):
    register(SecurityType(BASIC_AUTH, check_basic_auth, "HTTP Basic Auth: a user name and a password"))
    register(SecurityType(APIKEY, check_apikey, f"An API key in an HTTP header ({DEFAULT_APIKEY_HEADER} by default)"))


@hookimpl
def startup_phase(phase, ctx):
    """ Before channels exist: which definitions keep their password in the environment, and
    which ones will refuse every request (logged). """
    if phase == SERVER_STARTUP.PHASE.ON_STARTING:
        return refresh_stored_state(ctx.kwargs["server"])
    return None


@hookimpl
def config_objects_changed(server, object_types):
    if OBJECT_TYPE in object_types:
        return refresh_stored_state(server)
    return None


# ################################################################################################
# Outgoing use: the core's `zato.server.credentials.outgoing_credentials(server, name)` (and its
# `OutgoingCredentialsError`), imported above, so that connections of any plugin read them alike.
