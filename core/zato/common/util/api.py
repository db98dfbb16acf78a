""" Zato's `zato.common.util.api` (and `zato.common.util` before 3.2): helpers service code imports.

    from zato.common.util.api import get_config, new_cid

    server_conf = get_config(self.server.repo_location, 'server.conf')
    server_conf.main.port                  # server.conf, section `main`, key `port`
    server_conf.user_config_items.user     # config/user.conf, read because [user_config] names it

`get_config` keeps Zato's signature and behaviour: `user_config_items` holds every file that
`[user_config]` names (relative paths are relative to `repo_location`; a missing one is logged
and left out), and a file that cannot be read is logged and gives an empty Bunch unless
`raise_on_error=True`. Values are read as server.conf is (`$NAME` from the environment, comma
lists), not decrypted: `crypto_manager` and `secrets_conf` are accepted and ignored.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

from zato.config import Bunch, ConfigError, as_bool, read_ini

__all__ = ["as_bool", "get_config", "new_cid"]

logger = logging.getLogger("zato.common.util")


def new_cid() -> str:
    """ A new correlation ID: 24 random hex characters (96 bits). """
    return secrets.token_hex(12)


def _plain(data: Any) -> Any:
    """ A Bunch of Bunches as dicts (`bunchified=False`). """
    if isinstance(data, dict):
        return {key: _plain(value) for key, value in data.items()}
    return data


def _sections(data: Bunch) -> Bunch:
    """ What `read_ini` read, without its bookkeeping keys (`__raw__`, `__path__`). """
    return Bunch({key: value for key, value in data.items() if not key.startswith("__")})


def _user_config_items(conf: Bunch, repo_location: str | Path | None) -> Bunch:
    items = Bunch()
    for name, value in (conf.get("user_config") or {}).items():
        path = Path(str(value)).expanduser()
        if not path.is_absolute():
            path = Path(repo_location or ".") / path
        try:
            items[name] = _sections(read_ini(path))
        except ConfigError as exc:
            logger.warning("user config %r (named under [user_config] of %s) left out: %s", name,
                           conf.get("__path__", "the config"), exc)
    return items


def get_config(repo_location: str | Path | None, config_name: str, bunchified: bool = True,
               needs_user_config: bool = True, crypto_manager: Any = None, secrets_conf: Any = None,
               raise_on_error: bool = False, log_exception: bool = True, require_exists: bool = True,
               conf_location: str | Path | None = None) -> Any:
    """ Reads `repo_location/config_name` (or `conf_location`) as Zato does: a Bunch of sections,
    plus `user_config_items` (name -> the file's sections) when `needs_user_config`. On an error
    (no such file, not INI, a `$NAME` the environment lacks) it logs a warning naming the file
    and the cause and returns an empty Bunch, or raises `ConfigError` if `raise_on_error`. A
    missing file with `require_exists=False` is an empty Bunch without a warning. """
    if conf_location is None:
        if repo_location is None:
            raise ValueError("get_config needs repo_location (the server's config directory, "
                             "self.server.repo_location) or conf_location (the file's full path)")
        conf_location = Path(repo_location) / config_name
    path = Path(conf_location).absolute()
    if not require_exists and not path.exists():
        return Bunch() if bunchified else {}
    try:
        data = read_ini(path)
    except ConfigError as exc:
        if log_exception:
            logger.warning("could not read %s (get_config %r): %s", path, config_name, exc)
        if raise_on_error:
            raise
        return Bunch() if bunchified else {}
    conf = _sections(data)
    if needs_user_config:
        conf["__path__"] = str(path)
        conf.user_config_items = _user_config_items(conf, repo_location if repo_location is not None else path.parent)
        del conf["__path__"]
    return conf if bunchified else _plain(conf)
