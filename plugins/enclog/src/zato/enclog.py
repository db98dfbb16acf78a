""" `from zato.enclog import EncryptedLogFormatter, genkey`, as Zato's enclog article imports it.

`EncryptedLogFormatter(key, fmt)` writes each record's message as `enclogdata:` + a Fernet token
(the rest of the line, per `fmt`, stays clear); `genkey()` returns a new key (str). Read such
logs with `zato enclog open PATH --key K` or follow them with `zato enclog tailf PATH --key K`.
"""

from zato_plugin_enclog.crypto import PREFIX, BadKey, EncryptedLogFormatter, Reader, genkey

log_prefix = PREFIX  # Zato's name for it

__all__ = ["EncryptedLogFormatter", "genkey", "PREFIX", "log_prefix", "BadKey", "Reader"]
