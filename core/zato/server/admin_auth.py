""" Who may call the admin API: HTTP Basic Auth against [admin] in server.conf, or the local CLI's
token (work/cli-token), with failed logins throttled per address; and which body types an admin
write must declare. Every admin route of every plugin calls `check_admin` first. It lives in the
core, not in a plugin, so that plugins with admin routes import the core and not each other. """

from __future__ import annotations

import hmac
import logging

from zato.passwords import Verifier, client_address, login_throttle, parse_basic_auth, verify_off_loop
from zato.server.http import HTTPError, HTTPRequest

logger = logging.getLogger("zato.admin")

_verifier = Verifier()

CLI_TOKEN_HEADER = "x-zato-cli-token"

ADMIN_CHALLENGE = 'Basic realm="Zato admin API"'
WRITE_METHODS = frozenset(("POST", "PUT", "PATCH", "DELETE"))
JSON_BODY = ("application/json",)
SOURCE_BODY = ("text/x-python", "application/octet-stream")  # the deploy upload's body is a module's source


async def check_admin(request: HTTPRequest, *, body_types: tuple[str, ...] = JSON_BODY,
                      every_method: bool = False, untyped_from_programs: bool = False) -> str:
    """ The admin API's HTTP Basic Auth (or the local CLI's token); returns the user name or
    raises 401 (400 if a credential header is sent twice).

    Then a write (POST, PUT, PATCH, DELETE; any method with `every_method`, for calls that run
    services) must say its body is one of `body_types`, with or without a body, else 415: a web
    page can make a browser send text/plain, form types or no type at all to another site without
    asking first (and with the Basic Auth credentials the browser remembers), but not these.

    `untyped_from_programs`: no Content-Type at all is accepted from a caller that is not a
    browser (no `Origin`, no `Sec-Fetch-*` header, which every browser sends on such requests).
    Admin invoke needs it: Zato's own published client (`zato.client.APIClient`) sends its JSON
    with no Content-Type. """
    user = await _admin_user(request)
    if every_method or request.method in WRITE_METHODS:
        _check_body_type(request, body_types, untyped_from_programs)
    return user


async def _admin_user(request: HTTPRequest) -> str:
    cli_token = request.single_header("X-Zato-CLI-Token")
    if cli_token is not None:
        if request.server.cli_token and hmac.compare_digest(cli_token.encode(), request.server.cli_token.encode()):
            return "zato-cli"
        logger.warning("cid=%s admin API call refused: wrong CLI token from %s (%s %s)", request.cid,
                       client_address(request), request.method, request.path)
        raise HTTPError(401, headers={"www-authenticate": ADMIN_CHALLENGE})
    admin = request.server.config.admin
    credentials = parse_basic_auth(request.single_header("Authorization"))
    stored = admin.get("password_hash", "")
    if not stored:
        logger.warning("cid=%s admin API call refused: [admin] password_hash is empty; set one with "
                       "`zato set-admin-password DIR`", request.cid)
        raise HTTPError(401, headers={"www-authenticate": ADMIN_CHALLENGE})
    if credentials is None:
        raise HTTPError(401, headers={"www-authenticate": ADMIN_CHALLENGE})
    username, password = credentials
    known_user = hmac.compare_digest(username.encode(), str(admin.get("username") or "").encode())
    if known_user and _verifier.is_known(username, password, stored):  # no thread hop, no throttle
        return username
    throttle, client = login_throttle(request.server), client_address(request)
    await throttle.wait(client)
    # an unknown user is checked against a dummy hash: refused in the time a wrong password takes
    if await verify_off_loop(_verifier, username if known_user else None, password, stored):
        return username
    throttle.failed(client, "the admin API")
    # The user name as sent, quoted by %r so that it cannot forge a log line; never the password
    logger.warning("cid=%s admin API login refused: %s %r from %s (%s %s); repeated failures from one address "
                   "are slowed down", request.cid, "wrong password for user" if known_user else "unknown user",
                   username, client, request.method, request.path)
    raise HTTPError(401, headers={"www-authenticate": ADMIN_CHALLENGE})


BROWSER_HEADERS = ("origin", "sec-fetch-site", "sec-fetch-mode")


def _check_body_type(request: HTTPRequest, allowed: tuple[str, ...], untyped_from_programs: bool) -> None:
    given = request.headers.get("content-type")
    if given is not None and given.split(";", 1)[0].strip().lower() in allowed:
        return
    if given is None and untyped_from_programs and not any(name in request.headers for name in BROWSER_HEADERS):
        return
    got = f"Content-Type {given!r}" if given else "no Content-Type header"
    raise HTTPError(415, f"Error 415 Unsupported Media Type: {request.method} {request.path} needs Content-Type: "
                         f"{' or '.join(allowed)}, even without a body (it got {got}); the admin API refuses other "
                         f"types so that a web page cannot make a browser send it a request")


__all__ = ["ADMIN_CHALLENGE", "CLI_TOKEN_HEADER", "JSON_BODY", "SOURCE_BODY", "WRITE_METHODS", "check_admin"]
