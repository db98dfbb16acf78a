""" Zato's enclog format: a log line whose message is `enclogdata:` followed by a Fernet token of
the message; the rest of the line (time, level, per the formatter's format) stays clear.

Imports nothing of the server, so that `from zato.enclog import EncryptedLogFormatter` is cheap in
plain Python programs.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Iterable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

PREFIX = "enclogdata:"


class BadKey(ValueError):
    """ A text that is not a Fernet key. """


def genkey() -> str:
    """ A new Fernet key: 32 random bytes, url-safe base64 (44 characters). """
    return Fernet.generate_key().decode("ascii")


def fernet_of(keys: str | bytes | Iterable[str | bytes]) -> MultiFernet:
    """ One key or several (the first encrypts, any decrypts); raises `BadKey` for one that is
    not a Fernet key, without showing it. """
    if isinstance(keys, (str, bytes)):
        keys = [keys]
    fernets = []
    for position, key in enumerate(keys, 1):
        try:
            fernets.append(Fernet(key.strip() if isinstance(key, (str, bytes)) else key))
        except (ValueError, TypeError, binascii.Error):
            raise BadKey(f"key #{position} is not a Fernet key (32 url-safe base64-encoded bytes, 44 characters, "
                            f"as `zato enclog genkey` prints)") from None
    if not fernets:
        raise BadKey("no key given")
    return MultiFernet(fernets)


class EncryptedLogFormatter(logging.Formatter):
    """ `EncryptedLogFormatter(key, fmt)`: a `logging.Formatter` writing the record's message (and its
    traceback, if any, so that a record stays one line) as `enclogdata:<Fernet token>`; the rest of
    `fmt` stays clear. `key` is a Fernet key (str or bytes) or a list of keys, the first of which
    encrypts. The record itself is left as it was, for any other handler. """

    def __init__(self, key: str | bytes | list[str | bytes] | None = None, *args, **kwargs) -> None:
        key = key or kwargs.pop("fernet_key")
        self.fernet = fernet_of(key)
        super().__init__(*args, **kwargs)

    def encrypt(self, text: str) -> str:
        return PREFIX + self.fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        exc_text = record.exc_text
        if record.exc_info and not exc_text:
            exc_text = self.formatException(record.exc_info)
        if exc_text:
            text += "\n" + exc_text
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        copy = logging.makeLogRecord(record.__dict__)
        copy.msg, copy.args = self.encrypt(text), None
        copy.exc_info = copy.exc_text = copy.stack_info = None
        return super().format(copy)


# ################################################################################################
# Reading


def well_formed(token: str) -> bool:
    """ True if `token` has a Fernet token's shape (version 0x80, timestamp, IV, whole AES blocks,
    HMAC); a token that has it and still does not decrypt was made with another key (or altered). """
    try:
        data = base64.urlsafe_b64decode(token.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return False
    return len(data) >= 73 and data[0] == 0x80 and (len(data) - 57) % 16 == 0


class Reader:
    """ Decrypts lines of an enclog file one by one, keeping count of what it could and could not. """

    def __init__(self, keys: str | bytes | Iterable[str | bytes]) -> None:
        self.fernet = fernet_of(keys)
        self.decrypted = 0
        self.wrong_key = 0  # well-formed tokens no key decrypts
        self.corrupt = 0  # tokens cut short or altered

    def line(self, text: str) -> tuple[str, str | None]:
        """ (the line to print, None) or (the line as it is, the problem). A line without the prefix is
        returned unchanged. """
        head, found, token = text.partition(PREFIX)
        if not found:
            return text, None
        token = token.strip()
        try:
            clear = self.fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            if well_formed(token):
                self.wrong_key += 1
                return text, "the token does not decrypt with the key given (another key, or altered)"
            self.corrupt += 1
            return text, "truncated or corrupt token"
        self.decrypted += 1
        return head + clear, None
