""" The `user_config` plugin: user config files available to services as `self.config`.

Files are named in server.conf, as Zato does:

    [user_config]
    user = user.conf          ; relative to config/, or an absolute path
    crm = /etc/myapp/crm.ini

A service reads `self.config.user.my_section.my_key` (the file `user`, its section, its key);
`$NAME` values come from the environment and comma lists are lists, as in server.conf.

Saving a file reloads it within about a second (each worker checks the files' modification
times); the internal service `zato.user-config.reload` reloads every file in every worker at
once. A file that cannot be read (bad INI, missing variable) is reported in the log with the
file and the reason, and the previous values stay.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import trio

from zato import hookimpl
from zato.config import Bunch, ConfigError, read_ini
from zato.server.plugin_state import PluginState

logger = logging.getLogger("zato.user_config")

PLUGIN = "user_config"
FILES = PluginState["UserConfigFiles"](PLUGIN)
RELOAD = "user_config.reload"
POLL_SECONDS = 0.5


class UserConfigFiles:
    """ The files of one worker and what was last read from each. """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.paths: dict[str, Path] = {}
        for name, value in server.config.get("user_config", {}).items():
            path = Path(str(value))
            self.paths[name] = path if path.is_absolute() else server.paths.config_dir / path
        self.stamps: dict[str, tuple[int, int] | None] = {}

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int] | None:
        try:
            stat = os.stat(path)
            return stat.st_mtime_ns, stat.st_size
        except OSError:
            return None

    def load(self, name: str) -> bool:
        """ Reads one file into `server.user_config[name]`; on error keeps the previous values. """
        path = self.paths[name]
        self.stamps[name] = self._stamp(path)
        try:
            data = read_ini(path)
        except ConfigError as exc:
            kept = "the previous values stay" if name in self.server.user_config else "it is empty until fixed"
            logger.error("user config %r not loaded: %s; %s", name, exc, kept)
            self.server.user_config.setdefault(name, Bunch())
            return False
        self.server.user_config[name] = Bunch({k: v for k, v in data.items() if not k.startswith("__")})
        return True

    def load_all(self) -> list[str]:
        return [name for name in self.paths if self.load(name)]

    def changed(self) -> list[str]:
        return [name for name, path in self.paths.items() if self._stamp(path) != self.stamps.get(name)]


def files_of(server: Any) -> UserConfigFiles:
    return FILES.require(server)


@hookimpl
def startup_phase(phase, ctx):
    if phase == "ON_STARTING":
        server = ctx.kwargs["server"]
        files = FILES.set(server, UserConfigFiles(server))
        loaded = files.load_all()
        if loaded:
            logger.info("user config loaded: %s", ", ".join(loaded))


@hookimpl
def register_tasks(register, server):
    async def watch(*, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        while True:
            await trio.sleep(POLL_SECONDS)
            files = files_of(server)
            for name in files.changed():
                if files.load(name):
                    logger.info("user config %r reloaded from %s", name, files.paths[name])
    register("watch-files", watch)


def _reload(server: Any, payload: Any) -> None:
    loaded = files_of(server).load_all()
    logger.info("user config reloaded on request: %s", ", ".join(loaded) or "nothing")


@hookimpl
def register_notification_handlers(register):
    register(RELOAD, _reload)


@hookimpl
def register_internal_services(register):
    register("zato.builtin.services_user_config")
