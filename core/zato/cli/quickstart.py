""" `zato quickstart create DIR`: a ready-to-run server directory. """

from __future__ import annotations

import logging
from pathlib import Path

from zato.common.files import LOG_DIR, PRIVATE_DIR, SHARED_DIR, make_dir, write_file
from zato.objects import SecretBox
from zato.odb import ODB, sqlite_url
from zato.plugins import DEPLOY_INTERNAL_HEADER, PluginLoadError, deploy_internal_lines, discover_plugins, load_plugins
from zato.registry import RegistrationError
from zato.passwords import hash_password
from zato.server.server import ServerPaths

logger = logging.getLogger(__name__)

SERVER_CONF = """\
# Zato server configuration.
#
# Any value may be written as $NAME to read it from the environment variable NAME when the
# server starts; a variable that is not set stops start-up with an error naming it.
# Comma-separated values are lists.

[main]
# A name for this server, shown in logs and in zato.server.get-info.
name = {name}
# Where to listen. 127.0.0.1 keeps the server private to this machine; use 0.0.0.0 only
# behind a firewall or a proxy. Port 0 picks a free port (see work/server.json).
host = 127.0.0.1
port = {port}
# Trio worker processes sharing the port (Zato's gunicorn_workers). More than 1 starts a
# supervising process that restarts workers that die.
workers = {workers}
# Seconds in-flight requests get to finish when the server stops.
graceful_timeout = 10
# Largest request body accepted, in bytes; larger ones get 413.
max_body_size = 10485760
# Threads for services whose handle() is a plain def.
sync_service_threads = 64
# Start without plugins that fail to import (as --skip-broken-plugins does).
skip_broken_plugins = False

[misc]
# Start-up callables: dotted names of functions called with a PhaseCtx in each start-up
# phase, in this order. The server directory's lib/ folder is on PYTHONPATH.
# startup_callable = my_startup.update_fs_config, my_startup.create_cache
startup_callable =

{deploy_internal}

[component_enabled]
# Zato's feature switches, which start-up callables may read or set. A key naming a plugin
# (ibm_mq = True, as in Zato) switches that plugin on or off, and wins over its [deploy_internal] line.

[logging]
level = INFO

[odb]
# The configuration database. Empty: work/zato.db (SQLite) in this directory.
url =

[admin]
# The admin API (/zato/api/...) uses HTTP Basic Auth with this user. The password is kept
# only as a scrypt hash; change it with `zato set-admin-password DIR`.
username = admin
password_hash = {password_hash}

[user_config]
# User config files, as name = path (relative to this directory). A service reads
# self.config.user.<section>.<key>; saving a file reloads it.
user = user.conf
"""

USER_CONF = """\
# User config: services read these values as self.config.user.<section>.<key>.
# Values may be $NAME to read them from the environment. Saving this file reloads it.

[demo]
greeting = Hello
"""

DEMO_SERVICE = '''\
""" A demo service, deployed from the pickup directory and exposed by the REST channel
/demo/hello (see `zato quickstart create`). Try:

    curl http://127.0.0.1:{port}/demo/hello?name=Zato
"""

from zato.server.service import Service


class Hello(Service):
    name = "demo.hello"

    def handle(self):
        name = self.request.http.params.get("name") or "world"
        self.response.payload = {{"hello": name}}
'''

DEMO_CHANNEL = {
    "url_path": "/demo/hello",
    "service": "demo.hello",
    "methods": ["GET", "POST"],
    "data_format": "json",
    "security": None,
}


class QuickstartError(Exception):
    pass


def deploy_internal_stanza() -> str:
    """ server.conf's [deploy_internal]: a line per installed plugin and per module of internal
    services of a plugin that registers several, each after a comment saying what it brings. The
    modules are those of the plugins a new server loads (opt-in ones are not imported here). """
    found = discover_plugins()
    try:
        registry = load_plugins({}, skip_broken=True).registry
    except (PluginLoadError, RegistrationError) as exc:  # the server will say it at start; the plugin lines still go in
        logger.warning("plugins could not be loaded to list their modules of internal services: %s", exc)
        registry = None
    return "\n".join([DEPLOY_INTERNAL_HEADER, *deploy_internal_lines(found, registry)])


def create_server_dir(base_dir: Path | str, *, port: int = 17010, workers: int = 1, name: str = "server1",
                      admin_password: str, progress=lambda message: None) -> ServerPaths:
    paths = ServerPaths(base_dir)
    if paths.base_dir.exists() and any(paths.base_dir.iterdir()):
        raise QuickstartError(f"{paths.base_dir} exists and is not empty; choose a new directory")
    # config/ and work/ hold secrets, logs/ may: none is open to other users, whatever the umask
    make_dir(paths.base_dir, SHARED_DIR)
    for directory, mode in ((paths.config_dir, PRIVATE_DIR), (paths.pickup_dir, SHARED_DIR), (paths.logs_dir, LOG_DIR),
                            (paths.work_dir, PRIVATE_DIR), (paths.lib_dir, SHARED_DIR)):
        make_dir(directory, mode)
    progress(f"created {paths.base_dir} with config/, pickup/, logs/, work/ and lib/")

    write_file(paths.server_conf, SERVER_CONF.format(  # 0600 from the start: it holds the admin password's hash
        name=name, port=port, workers=workers, deploy_internal=deploy_internal_stanza(),
        password_hash=hash_password(admin_password)))
    write_file(paths.config_dir / "user.conf", USER_CONF)  # users keep API keys there
    SecretBox.create_key(paths.config_dir / "secret.key")  # encrypts secrets in the database; keep it safe
    progress(f"wrote {paths.server_conf} and {paths.config_dir / 'user.conf'}")

    odb = ODB(sqlite_url(paths.database))
    try:
        odb.create_schema()
        odb.put_object("channel_rest", "demo.hello", DEMO_CHANNEL)
    finally:
        odb.close()
    progress(f"created the configuration database {paths.database} with the REST channel /demo/hello")

    write_file(paths.pickup_dir / "demo.py", DEMO_SERVICE.format(port=port))
    progress(f"wrote the demo service {paths.pickup_dir / 'demo.py'}")
    return paths
