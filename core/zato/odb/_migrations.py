""" The configuration database's schema as Alembic branches: the core's chain
(zato/odb/migrations/versions, version table `alembic_version`) and one branch per plugin that
brings tables of its own (`register_migrations`), each with its own version table
`alembic_version_<branch label>`.

One version table per branch, rather than every branch's heads in `alembic_version`, is what
lets a plugin be switched off: its revisions are then unknown to Alembic (the plugin is not even
imported), and its version table is simply not read, so its tables and their rows stay as they
are until it is switched on again and its branch is upgraded. It also keeps plugins' revision
ids apart (each branch is its own script directory) and lets Alembic refuse a branch stamped by a
newer version of its plugin.

The core's own chain runs first, so a branch may rely on the core's tables.
"""

from __future__ import annotations

import ast
import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, inspect, text
from sqlalchemy.engine import Connection
from zato.registry import Kind

logger = logging.getLogger("zato.odb")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
CORE_BRANCH = "zato"
CORE_VERSION_TABLE = "alembic_version"
BRANCH_LABEL = re.compile(r"[a-z][a-z0-9_]{0,39}\Z")  # alembic_version_<label> fits every database's names

# Until the built-ins' tables moved into branches of their own, the core's chain held them:
# 0003 the scheduler's, 0004 rate_limit's, 0005 pubsub's. A database at one of those revisions is
# stamped at the core's 0002 and at the first revision of each branch whose tables it has
# (never rebuilt). Which tables each had, to check they are there before stamping.
LEGACY_REVISIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # old core revision: (branch label, its first revision, the tables it created)
    "0003": ("scheduler", "scheduler_0001", ("zato_scheduler_lease", "zato_scheduler_state", "zato_scheduler_run")),
    "0004": ("rate_limit", "rate_limit_0001", ("zato_rate_limit_counter",)),
    "0005": ("pubsub", "pubsub_0001", ("zato_pubsub_message", "zato_pubsub_delivery", "zato_pubsub_dead_letter",
                                       "zato_pubsub_topic_state")),
}
LEGACY_CORE_REVISION = "0002"  # where the core's chain stopped before 0003


class MigrationError(Exception):
    """ A branch's migrations cannot be run: the message names the branch, its directory and what to do. """


@dataclass(frozen=True)
class Branch:
    """ One chain of migrations with its own version table. """
    label: str
    directory: Path  # the versions directory
    version_table: str

    def heads(self) -> frozenset[str] | None:
        """ The newest revisions, read from the scripts without importing Alembic (it costs about
        half a second at every start): the revisions no other script names as `down_revision`.
        None if a script is not plain enough to read that way; Alembic then decides. """
        revisions: set[str] = set()
        downs: set[str] = set()
        for path in sorted(self.directory.glob("*.py")):
            values = _module_constants(path, ("revision", "down_revision"))
            if values is None or not isinstance(values.get("revision"), str):
                return None
            revisions.add(values["revision"])
            down = values.get("down_revision")
            downs.update([down] if isinstance(down, str) else list(down or ()))
        return frozenset(revisions - downs)


def _module_constants(path: Path, names: tuple[str, ...]) -> dict[str, Any] | None:
    try:
        tree = ast.parse(path.read_text("utf-8"), str(path))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    found: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in names:
            try:
                found[target.id] = ast.literal_eval(value)
            except ValueError:
                return None
    return found


CORE = Branch(CORE_BRANCH, MIGRATIONS / "versions", CORE_VERSION_TABLE)


def check_branch(label: Any, directory: Any) -> tuple[str, Path]:
    """ What `register(branch_label, directory)` in `register_migrations` accepts; raises
    TypeError (the registry names the plugin) otherwise. """
    if not isinstance(label, str) or not BRANCH_LABEL.match(label):
        raise TypeError(f"branch_label {label!r} must be 1-40 characters: lower-case letters, digits and _, "
                        f"starting with a letter (it names the version table alembic_version_<branch_label>)")
    if label == CORE_BRANCH:
        raise TypeError(f"branch_label {label!r} is the core's own chain; use the plugin's name")
    try:
        path = Path(directory).resolve()
    except TypeError:
        raise TypeError(f"directory {directory!r} of branch {label!r} must be a path (str or pathlib.Path)") from None
    if not path.is_dir():
        raise TypeError(f"directory {str(path)!r} of branch {label!r} does not exist; give the directory that holds "
                        f"the branch's Alembic revision scripts, e.g. Path(__file__).parent / 'migrations'")
    return label, path


def branches_of(migrations: Mapping[str, Any]) -> list[Branch]:
    """ `migrations`: branch label -> versions directory, as `registry.items(Kind.MIGRATIONS)`. """
    branches = []
    for label, directory in migrations.items():
        label, path = check_branch(label, directory)
        branches.append(Branch(label, path, f"{CORE_VERSION_TABLE}_{label}"))
    return branches


def installed_migrations() -> dict[str, Path]:
    """ The branches of every installed plugin, none switched off (what a new server directory
    enables): what `ODB.upgrade()` migrates when not told which. A plugin that cannot be imported
    is skipped (and logged by load_plugins), so one broken plugin does not stop `zato quickstart`
    for the others; a server does not start with it unless told to skip it too. """
    from zato.plugins import load_plugins
    return load_plugins(skip_broken=True).registry.items(Kind.MIGRATIONS)


def installed_branch(label: str) -> Branch:
    """ The branch `label` of an installed plugin (tests run its migrations up and down). """
    migrations = installed_migrations()
    if label not in migrations:
        raise LookupError(f"no installed plugin registers the migrations branch {label!r} "
                          f"(installed branches: {', '.join(migrations) or 'none'})")
    return branches_of({label: migrations[label]})[0]


def alembic_config(conn: Connection | None, branch: Branch = CORE) -> Any:
    """ An Alembic `Config` running `branch`'s migrations on `conn` (tests use it to go down). """
    from alembic.config import Config
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))  # env.py, script.py.mako
    if branch.label != CORE_BRANCH:
        # one directory, which may hold spaces: split on os.pathsep only (the option's name since 1.16)
        config.set_main_option(_path_separator_option(), "os")
        config.set_main_option("version_locations", str(branch.directory))
    config.attributes["connection"] = conn
    config.attributes["version_table"] = branch.version_table
    config.attributes["core_chain"] = branch.label == CORE_BRANCH
    return config


@lru_cache(maxsize=1)
def _path_separator_option() -> str:
    import alembic
    version = tuple(int(part) for part in re.findall(r"\d+", alembic.__version__)[:2])
    return "path_separator" if version >= (1, 16) else "version_path_separator"


def _version_table(name: str) -> Table:
    """ The table Alembic keeps a branch's revision in, defined as Alembic defines it. """
    return Table(name, MetaData(), Column("version_num", String(32), nullable=False),
                 PrimaryKeyConstraint("version_num", name=f"{name}_pkc"))


def stored_revisions(conn: Connection, branches: list[Branch]) -> tuple[dict[str, frozenset[str]], bool]:
    """ Each branch's stored revisions (label -> revisions, empty if it has no version table) and
    whether the core's object table exists. """
    tables = set(inspect(conn).get_table_names())
    stored = {}
    for branch in [CORE, *branches]:
        if branch.version_table in tables:
            stored[branch.label] = frozenset(conn.execute(text(f"SELECT version_num FROM {branch.version_table}")).scalars())
        else:
            stored[branch.label] = frozenset()
    return stored, "zato_object" in tables


def is_current(stored: Mapping[str, frozenset[str]], branches: list[Branch], core_head: str) -> bool:
    """ True if every branch is at its heads (read without Alembic); False if not or not known. """
    if stored[CORE_BRANCH] != {core_head}:
        return False
    for branch in branches:
        heads = branch.heads()
        if heads is None or stored[branch.label] != heads:
            return False
    return True


def adopt_legacy(conn: Connection) -> str | None:
    """ Stamps a database at the core's old 0003-0005 as the same schema in branches (see
    `LEGACY_REVISIONS`): the core at 0002, each moved branch at its first revision, whether or not
    its plugin is switched on. Returns the old revision, or None if there was nothing to adopt. """
    tables = set(inspect(conn).get_table_names())
    if CORE_VERSION_TABLE not in tables:
        return None
    old = set(conn.execute(text(f"SELECT version_num FROM {CORE_VERSION_TABLE}")).scalars()) & set(LEGACY_REVISIONS)
    if not old:
        return None
    (revision,) = old  # the old chain had one head
    for old_revision, (label, first, branch_tables) in LEGACY_REVISIONS.items():
        if old_revision > revision:
            break
        present = [name for name in branch_tables if name in tables]
        if not present:
            continue  # stamped by a build whose revision was still empty: the branch creates them
        missing = [name for name in branch_tables if name not in tables]
        if missing:
            raise MigrationError(
                f"the configuration database is at the core's old revision {revision}, which made the tables "
                f"{', '.join(branch_tables)} of the {label} plugin, but {', '.join(missing)} are missing; restore it "
                f"from a backup or drop the remaining {', '.join(present)} (their rows are lost) and start again")
        version_table = _version_table(f"{CORE_VERSION_TABLE}_{label}")
        version_table.create(conn, checkfirst=True)
        if conn.execute(version_table.select()).first() is None:
            conn.execute(version_table.insert().values(version_num=first))
    conn.execute(text(f"UPDATE {CORE_VERSION_TABLE} SET version_num = :core WHERE version_num = :old"),
                 {"core": LEGACY_CORE_REVISION, "old": revision})
    logger.info("configuration database at the core's old revision %s: stamped as the core's %s and the branches "
                "of the tables it has", revision, LEGACY_CORE_REVISION)
    return revision


def upgrade_branch(conn: Connection, branch: Branch) -> None:
    """ Runs `branch`'s migrations up to its heads, naming the branch if Alembic cannot. """
    from alembic import command
    from alembic.util import CommandError
    try:
        command.upgrade(alembic_config(conn, branch), "heads")
    except CommandError as exc:
        where = "the core's chain" if branch.label == CORE_BRANCH else f"branch {branch.label!r}"
        raise MigrationError(
            f"cannot migrate {where} of the configuration database (scripts in {branch.directory}, version table "
            f"{branch.version_table}): {exc}. If the database was migrated by a newer version of the plugin or of "
            f"Zato, install that version again") from None


def stamp_core(conn: Connection, revision: str) -> None:
    from alembic import command
    command.stamp(alembic_config(conn), revision)
