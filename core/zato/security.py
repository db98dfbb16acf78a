""" Password hashing for secrets kept at rest: scrypt (memory-hard), compared in constant time.

Stored form: `scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`. Verifying costs tens of milliseconds
on purpose; `Verifier` remembers successful checks (keyed by an HMAC under a per-process key,
never the password itself) so that authenticating every request stays cheap.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

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
