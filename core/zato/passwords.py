""" Password hashing for secrets kept at rest: scrypt (memory-hard), compared in constant time.

Stored form: `scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`. Verifying costs tens of milliseconds
on purpose; `Verifier` remembers successful checks (keyed by an HMAC under a per-process key,
never the password itself) so that authenticating every request stays cheap.

In the server, scrypt runs in worker threads under one small `hashing_limiter()` per process
(shared by the admin API and every security definition), so that wrong passwords sent in
parallel cannot take the CPU from the trio loop; `verify_off_loop` checks the remembered
successes on the loop first. `dummy_hash()` is what unknown user names are checked against, so
that they take as long to refuse as wrong passwords. `LoginThrottle` delays the attempts of a
client address after a few failures.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from typing import Callable

import trio

logger = logging.getLogger("zato.security")

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
PREFIX = "scrypt"


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return "$".join((PREFIX, str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()))


def verify_password(password: str, stored: str) -> bool:
    try:
        prefix, n, r, p, salt, expected = stored.split("$")
        if prefix != PREFIX:
            return False
        digest = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, base64.b64decode(expected))


def new_password(length: int = 24) -> str:
    return secrets.token_urlsafe(length)


class Verifier:
    """ Verifies passwords against stored hashes, remembering successes for this process. """

    def __init__(self) -> None:
        self._key = os.urandom(32)
        self._known: set[bytes] = set()

    def _token(self, username: str, password: str, stored: str) -> bytes:
        return hmac.new(self._key, f"{username}\0{password}\0{stored}".encode(), hashlib.sha256).digest()

    def is_known(self, username: str, password: str, stored: str) -> bool:
        """ True if these credentials verified against `stored` before in this process (no scrypt run). """
        return self._token(username, password, stored) in self._known

    def verify(self, username: str, password: str, stored: str) -> bool:
        token = self._token(username, password, stored)
        if token in self._known:
            return True
        if verify_password(password, stored):
            if len(self._known) > 10_000:
                self._known.clear()
            self._known.add(token)
            return True
        return False


def parse_basic_auth(header: str | None) -> tuple[str, str] | None:
    """ `Basic base64(user:password)` -> (user, password), or None if absent or malformed. """
    if not header or not header[:6].lower() == "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


# ################################################################################################
# Checking passwords in the server without starving it


# Concurrent scrypt runs per process: each takes a CPU for tens of milliseconds (and 16 MB), so
# half the CPUs at most, leaving the rest to the trio loop and to services.
HASHING_THREADS = max(1, (os.cpu_count() or 2) // 2)

_hashing_limiter: trio.lowlevel.RunVar = trio.lowlevel.RunVar("zato_hashing_limiter")
_dummy_hash: str | None = None
_dummy_lock = threading.Lock()


def hashing_limiter() -> trio.CapacityLimiter:
    """ The one limiter for password hashing in this process (in this trio run). Not trio's
    default thread limiter: requests must not wait behind password checks for a thread. """
    try:
        return _hashing_limiter.get()
    except LookupError:
        limiter = trio.CapacityLimiter(HASHING_THREADS)
        _hashing_limiter.set(limiter)
        return limiter


def dummy_hash() -> str:
    """ A hash of a random password, made once per process on first use (with the same scrypt
    parameters as real ones): an unknown user name is checked against it, so that refusing it
    costs what refusing a wrong password costs. Blocking: call it from a worker thread. """
    global _dummy_hash
    with _dummy_lock:
        if _dummy_hash is None:
            _dummy_hash = hash_password(new_password())
        return _dummy_hash


def _refuse_after_dummy_check(password: str) -> bool:
    verify_password(password, dummy_hash())
    return False


async def verify_off_loop(verifier: Verifier, username: str | None, password: str, stored: str) -> bool:
    """ Checks a password against a stored hash: a remembered success on the loop (no thread
    hop), anything else in a worker thread under `hashing_limiter()`. `username=None`: the user
    is unknown, so the password is checked against `dummy_hash()` and refused. """
    if username is None:
        return await trio.to_thread.run_sync(_refuse_after_dummy_check, password, limiter=hashing_limiter())
    if verifier.is_known(username, password, stored):
        return True
    return await trio.to_thread.run_sync(verifier.verify, username, password, stored, limiter=hashing_limiter())


class LoginThrottle:
    """ Failed logins per client address: after `free_failures` in a row, each further attempt
    from that address waits first (`first_delay`, doubling up to `max_delay`). An address that
    fails nothing for `quiet_period` seconds is forgotten. At most `max_clients` addresses are
    remembered (the least recently failing go first), so many addresses cannot grow it without
    limit. A success does not reset the count (a client could otherwise mix its own valid
    credentials in with its guesses); the quiet period does. One warning per burst. """

    def __init__(self, *, free_failures: int = 5, first_delay: float = 0.1, max_delay: float = 4.0,
                 quiet_period: float = 60.0, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free_failures = free_failures
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.quiet_period = quiet_period
        self.max_clients = max_clients
        self.clock = clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # address -> (failures, last at)

    def __len__(self) -> int:
        return len(self._failures)

    def delay_after(self, failures: int) -> float:
        """ How long an attempt waits after `failures` failures in a row. """
        if failures < self.free_failures:
            return 0.0
        return min(self.max_delay, self.first_delay * 2 ** (failures - self.free_failures))

    def _current(self, client: str) -> int:
        entry = self._failures.get(client)
        if entry is None:
            return 0
        if self.clock() - entry[1] > self.quiet_period:
            del self._failures[client]
            return 0
        return entry[0]

    def delay(self, client: str) -> float:
        """ How long the next attempt from `client` waits before its credentials are checked. """
        return self.delay_after(self._current(client))

    def failed(self, client: str, what: str) -> None:
        """ Records a failed login from `client` (to `what`, for the log). """
        failures = self._current(client) + 1
        self._failures[client] = (failures, self.clock())
        self._failures.move_to_end(client)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)
        if failures == self.free_failures:
            logger.warning("client %s: %d failed logins in a row (the latest to %s); its further attempts are "
                           "delayed, up to %.0f s each, until it fails nothing for %.0f s", client, failures, what,
                           self.max_delay, self.quiet_period)

    async def wait(self, client: str) -> None:
        delay = self.delay(client)
        if delay:
            await trio.sleep(delay)


def client_address(request: object) -> str:
    """ The address a request came from, the key of `LoginThrottle`. """
    client = getattr(request, "client", None)
    return str(client[0]) if client else "unknown"


def login_throttle(server: object) -> LoginThrottle:
    """ The server's throttle, shared by the admin API and every security definition. """
    state = server.plugin_state  # type: ignore[attr-defined]
    throttle = state.get("core.login_throttle")
    if throttle is None:
        throttle = state["core.login_throttle"] = LoginThrottle()
    return throttle
