""" The `enclog` plugin: encrypted logs in Zato's enclog format.

* `getLogger('enclog')` in a service writes `enclogdata:<Fernet token>` lines to `[enclog] log_file`
  (logs/enclog.log, 0600), and nothing of it to server.log or the console: the logger does not
  propagate.
* server.conf: `[enclog] key = $NAME` (several, comma-separated, for rotation: the first encrypts,
  any decrypts). A key written in clear, a variable that does not hold a Fernet key or no key at
  all stops start-up naming `[enclog] key`; the key itself is never shown.
* Without an `[enclog]` section (quickstart lists every installed plugin as on) records of `enclog` are
  dropped, with one warning in server.log, rather than written in clear. With the plugin switched off
  or not installed, the core does that (zato.server.logs.DroppedEnclog, which `configure` replaces).
* `zato enclog genkey | open | tailf` (zato_plugin_enclog.cli).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
from pathlib import Path
from typing import Any

from zato.plugin_api import SERVER_STARTUP, Setting, hookimpl

PHASE = SERVER_STARTUP.PHASE
PLUGIN = "enclog"
LOGGER = "enclog"
DEFAULT_LOG_FILE = "logs/enclog.log"
LOG_FILE_MODE = 0o600
ENV_REFERENCE = re.compile(r"^\$[A-Za-z_][A-Za-z0-9_]*$")

logger = logging.getLogger("zato.enclog")

# Until the plugin configures it, nothing of `enclog` may reach server.log in clear.
logging.getLogger(LOGGER).propagate = False


class EnclogConfigError(Exception):
    """ [enclog] in server.conf cannot be used (the message never holds a key). """


class StandaloneEnclogInstalled(RuntimeError):
    """ The published zato-enclog distribution is installed beside the core. """


def standalone_enclog_problem() -> str | None:
    """ What is wrong, and how to repair it, if the published zato-enclog is installed in this
    environment: its `zato_enclog-*-nspkg.pth` makes, at interpreter start, a `zato` module that the
    core's zato/__init__.py never runs in (so `zato` fails: "cannot import name '__version__'"),
    and its zato/enclog/ package hides this plugin's zato/enclog.py. """
    from importlib import metadata
    try:
        dist = metadata.distribution("zato-enclog")
    except metadata.PackageNotFoundError:
        return None
    files = [str(f) for f in (dist.files or []) if str(f).endswith("-nspkg.pth") or str(f).startswith("zato/enclog/")]
    where = dist.locate_file("")
    return (f"the standalone zato-enclog {dist.version} is installed in this environment ({where}); it takes the "
            f"`zato` package over ({', '.join(files[:2]) or 'its namespace .pth'}) and hides zato/enclog.py of "
            f"zato-plugin-enclog. Repair: `pip uninstall zato-enclog` (the core's files are not touched; nothing "
            f"needs reinstalling); use `zato enclog` instead of its `enclog` command, or keep zato-enclog in a "
            f"virtual environment of its own")


def _check_standalone() -> None:
    problem = standalone_enclog_problem()
    if problem:
        raise StandaloneEnclogInstalled(problem)


@hookimpl
def register_server_config(register):
    register(PLUGIN, {
        "key": Setting([], secret=True, doc="The key(s) as $NAME, environment variables holding Fernet keys "
                                            "(`zato enclog genkey`); comma-separated for rotation: the first "
                                            "encrypts, any decrypts. Never the key itself."),
        "log_file": Setting(DEFAULT_LOG_FILE, non_empty=True,
                            doc="Where getLogger('enclog') writes, relative to the server directory (0600)"),
        "level": Setting("INFO", choices=("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"),
                         doc="The enclog logger's level"),
    }, doc="Encrypted logs: getLogger('enclog') in services writes enclogdata: lines to their own file.")


@hookimpl
def startup_phase(phase, ctx):
    # FS_CONFIG_ONLY: the first phase, after logging is set up and before any service is deployed
    if phase == PHASE.FS_CONFIG_ONLY:
        _check_standalone()
        configure(ctx.kwargs["server_config"], Path(ctx.kwargs["base_dir"]))


def _switched_on(config: Any) -> bool:
    from zato.plugin_api import as_bool
    for section in ("plugins", "component_enabled"):
        value = (config.get(section) or {}).get(PLUGIN)
        if value is not None:
            try:
                return as_bool(value)
            except ValueError:
                return False
    return False


def keys_of(config: Any) -> list[str]:
    """ The keys [enclog] key names, read from the environment; raises `EnclogConfigError`. """
    from zato_plugin_enclog.crypto import BadKey, fernet_of
    path = config.get("__path__", "server.conf")
    raw = str((config.get("__raw__", {}).get(PLUGIN) or {}).get("key", "")).strip()
    names = [item.strip() for item in raw.split(",") if item.strip()]
    how = "give it as key = $NAME, an environment variable holding a key that `zato enclog genkey` printed"
    if not names:
        raise EnclogConfigError(f"{path}: [enclog] key is not set; {how}")
    for position, name in enumerate(names, 1):
        if not ENV_REFERENCE.match(name):
            raise EnclogConfigError(f"{path}: [enclog] key: item #{position} is not a $NAME reference; a key written "
                                    f"in clear in server.conf is refused (not shown here); {how}, and remove the "
                                    f"key from the file")
    values = config[PLUGIN]["key"]
    values = values if isinstance(values, list) else [values]
    for name, value in zip(names, values):
        try:
            fernet_of(value)
        except BadKey:
            raise EnclogConfigError(f"{path}: [enclog] key = {name}: the environment variable {name[1:]} does not "
                                    f"hold a Fernet key (32 url-safe base64-encoded bytes, 44 characters, as "
                                    f"`zato enclog genkey` prints)") from None
    return [str(value) for value in values]


def configure(config: Any, base_dir: Path) -> logging.Logger:
    """ Points the `enclog` logger at its file, encrypted, and nowhere else. """
    enclog = logging.getLogger(LOGGER)
    enclog.propagate = False
    for handler in list(enclog.handlers):
        enclog.removeHandler(handler)
        handler.close()
    if PLUGIN not in (config.get("__raw__") or {}):
        enclog.addHandler(logging.NullHandler())
        logger.warning("[enclog] is not configured: records of logger 'enclog' are dropped, not written in clear; "
                       "set [enclog] key = $NAME in server.conf to write them encrypted to %s", DEFAULT_LOG_FILE)
        return enclog
    keys = keys_of(config)
    section = config[PLUGIN]
    path = Path(section.get("log_file") or DEFAULT_LOG_FILE)
    path = path if path.is_absolute() else base_dir / path
    from zato_plugin_enclog.crypto import EncryptedLogFormatter
    handler = EncryptedFile(path)
    handler.setFormatter(EncryptedLogFormatter(keys, "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"))
    enclog.addHandler(handler)
    enclog.setLevel(getattr(logging, str(section.get("level", "INFO")).upper(), logging.INFO))
    logger.info("enclog: logger 'enclog' writes encrypted to %s (%d key(s))", path, len(keys))
    return enclog


class EncryptedFile(logging.handlers.WatchedFileHandler):
    """ Appends to the file (every worker does), 0600 whatever the umask, reopened when it is rotated. """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(str(path), encoding="utf-8", delay=False)

    def _open(self):  # type: ignore[no-untyped-def]
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LOG_FILE_MODE)
        os.fchmod(fd, LOG_FILE_MODE)
        return os.fdopen(fd, "a", encoding=self.encoding)


@hookimpl
def register_cli_commands(cli):
    from zato_plugin_enclog.cli import enclog
    problem = standalone_enclog_problem()
    if problem:
        import click

        @click.command("enclog", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
        def broken() -> None:
            raise click.ClickException(problem)
        cli.add_command(broken)
        return
    cli.add_command(enclog)
