""" From an `outgoing_sql` definition to what `sqlalchemy.create_engine` gets.

* `engine` (`postgresql`, `mysql`, `oracle`, `mssql`, `sqlite`...) becomes a SQLAlchemy
  dialect+driver name (`ENGINES`); a full dialect+driver name (`postgresql+psycopg2`) is taken
  as it is.
* The URL is built from its parts with `URL.create` (the password is never pasted into a
  string); driver options come from the query string on `db_name` (`mydb?charset=utf8`, or
  `?service_name=X` alone).
* `extra` lines (`key=value`, one per line) become typed keyword arguments, checked against
  the ones `create_engine` accepts for that dialect and pool (`valid_engine_arguments`).

Nothing here connects to a database or imports a driver, so a definition can be checked
anywhere: `check_object` is the object type's check, run by the admin API and enmasse.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import parse_qsl

OBJECT_TYPE = "outgoing_sql"
DEFAULT_POOL_SIZE = 5
DEFAULT_MAX_OVERFLOW = 10  # SQLAlchemy's QueuePool default
UNBOUNDED_CONCURRENCY = 64  # async calls at once when the pool itself sets no bound

# Engine names as users write them (Zato's dashboard choices) -> (SQLAlchemy dialect+driver,
# the zato-plugin-sql extra that installs the driver).
ENGINES: dict[str, tuple[str, str | None]] = {
    "postgresql": ("postgresql+psycopg", "postgresql"),
    "mysql": ("mysql+pymysql", "mysql"),
    "mariadb": ("mariadb+pymysql", "mysql"),
    "oracle": ("oracle+oracledb", "oracle"),
    "mssql": ("mssql+pymssql", "mssql"),
    "sqlite": ("sqlite", None),  # the standard library's sqlite3
}
ALIASES = {"postgres": "postgresql", "pgsql": "postgresql", "sqlite3": "sqlite"}
EXTRA_OF_DRIVER = {driver: extra for driver, extra in ENGINES.values() if extra}

# How create_engine names pool arguments (sqlalchemy.engine.create._pool_translate_kwargs; a test
# checks that every name we list is really consumed by create_engine).
POOL_ARGUMENT_NAMES = {
    "logging_name": "pool_logging_name", "echo": "echo_pool", "timeout": "pool_timeout", "recycle": "pool_recycle",
    "reset_on_return": "pool_reset_on_return", "pre_ping": "pool_pre_ping", "use_lifo": "pool_use_lifo",
    "events": "pool_events",
}
# create_engine's own arguments, consumed before the dialect, pool and engine get theirs.
CREATE_ENGINE_ARGUMENTS = {"connect_args", "poolclass", "enable_from_linting"}
# Accepted by create_engine but not from a line of text: they take Python objects (functions,
# modules, pools, event lists) or are internal to SQLAlchemy.
NOT_FROM_TEXT = {"dbapi", "dialect", "pool", "url", "creator", "module", "cls", "_dispatch", "compiler_linting",
                 "json_serializer", "json_deserializer", "pool_events", "future"}
# Set through fields of their own, not `extra`.
OWN_FIELDS = {"pool_size": "pool_size is a field of its own; set it there, not in extra"}

_INT = re.compile(r"[+-]?\d+\Z")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][+-]?\d+|\.\d+[eE][+-]?\d+)\Z")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class SQLConfigError(ValueError):
    """ A definition that cannot become an engine; `errors` lists each problem with its field,
    in the shape of the admin API's validation errors. """

    def __init__(self, name: Any, errors: list[dict[str, str]]) -> None:
        self.name = name
        self.errors = errors
        listed = "; ".join(f"{e['field']}: {e['error']}" for e in errors)
        super().__init__(f"invalid {OBJECT_TYPE} {name!r}: {listed}")


@dataclass
class EngineSettings:
    """ What `create_engine` gets for one definition. """
    drivername: str
    url: Any  # sqlalchemy.engine.URL
    kwargs: dict[str, Any] = field(default_factory=dict)
    concurrency: int = DEFAULT_POOL_SIZE + DEFAULT_MAX_OVERFLOW  # how many connections may be in use at once

    @property
    def safe_url(self) -> str:
        """ The URL with the password hidden, for logs and errors. """
        return self.url.render_as_string(hide_password=True)


# ################################################################################################
# The engine


def resolve_engine(engine: Any) -> str:
    """ The SQLAlchemy dialect+driver name for an engine name; raises ValueError saying what
    names work. """
    from sqlalchemy.engine import URL
    from sqlalchemy.exc import NoSuchModuleError
    text = str(engine or "").strip()
    if not text:
        raise ValueError(f"missing: one of {', '.join(ENGINES)}, or a SQLAlchemy dialect+driver name")
    key = ALIASES.get(text.lower(), text.lower())
    if key in ENGINES:
        return ENGINES[key][0]
    try:
        dialect = URL.create(key).get_dialect()
    except NoSuchModuleError:
        raise ValueError(f"unknown engine {text!r}: use one of {', '.join(ENGINES)}, or a SQLAlchemy dialect+driver "
                         f"name such as postgresql+psycopg2 (its driver installed on the server)") from None
    if getattr(dialect, "is_async", False):
        raise ValueError(f"{text!r} is an asyncio driver; use a blocking one (e.g. {ENGINES['postgresql'][0]}): "
                         f"services run SQL in worker threads, async services through .run()")
    return key


def driver_missing_hint(drivername: str, module: str | None) -> str:
    """ What to install when a driver module cannot be imported. """
    extra = EXTRA_OF_DRIVER.get(drivername)
    if extra:
        return f"install it on the server: pip install 'zato-plugin-sql[{extra}]'"
    return f"install the package that provides the {module or 'driver'} module on the server"


# ################################################################################################
# db_name and its query string


def split_db_name(db_name: Any) -> tuple[str | None, dict[str, str | tuple[str, ...]]]:
    """ `mydb?charset=utf8` -> ("mydb", {"charset": "utf8"}); `?service_name=X` -> (None, {...}).
    A key given twice becomes a tuple of its values (as URL.create takes them). """
    text = str(db_name or "")
    database, _, query_string = text.partition("?")
    query: dict[str, Any] = {}
    for key, value in parse_qsl(query_string, keep_blank_values=True, strict_parsing=bool(query_string)):
        if key in query:
            query[key] = (*(query[key] if isinstance(query[key], tuple) else (query[key],)), value)
        else:
            query[key] = value
    return (database or None), query


def sqlite_path(database: str | None, base_dir: Path | str | None) -> str | None:
    """ A relative SQLite file is relative to the server directory; `:memory:` and `file:` URIs
    stay as they are. """
    if not database or database == ":memory:" or database.startswith("file:"):
        return database
    path = Path(database).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return str(path)


# ################################################################################################
# extra


def parse_value(text: str) -> Any:
    """ The typed value of one `extra` entry: true/false -> bool, none/null -> None, integers,
    floats, Python literals in brackets or quotes (`{'options': '-c x=1'}`); anything else is text. """
    value = text.strip()
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    if _INT.match(value):
        return int(value)
    if _FLOAT.match(value):
        return float(value)
    if value and value[0] in "{[(\"'":
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ValueError(f"{value} starts like a Python literal but is not one (check its brackets and quotes)") \
                from None
    return value


def _entries(line: str) -> list[str]:
    """ One line split on `;` (Zato's other separator), except inside quotes and brackets. """
    parts, current, depth, quote = [], [], 0, ""
    for char in line:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == ";" and depth <= 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def parse_extra(text: Any) -> tuple[dict[str, Any], list[str]]:
    """ `extra` as keyword arguments, and the problems found (each naming its line). Blank lines
    and lines starting with # are skipped. """
    arguments: dict[str, Any] = {}
    problems: list[str] = []
    for number, line in enumerate(str(text or "").splitlines(), 1):
        for entry in _entries(line):
            entry = entry.strip()
            if not entry or entry.startswith("#"):
                continue
            key, equals, value = entry.partition("=")
            key = key.strip()
            if not equals or not _KEY.match(key):
                problems.append(f"line {number}: {entry!r} is not key=value (e.g. echo=True)")
                continue
            try:
                arguments[key] = parse_value(value)
            except ValueError as exc:
                problems.append(f"line {number}: {key}: {exc}")
    return arguments, problems


def pool_classes() -> dict[str, type]:
    """ Pool classes `extra` may name as `poolclass=NullPool` (the blocking ones). """
    import sqlalchemy.pool as pools
    found = {}
    for name in getattr(pools, "__all__", dir(pools)):
        candidate = getattr(pools, name, None)
        if isinstance(candidate, type) and issubclass(candidate, pools.Pool) and candidate is not pools.Pool \
                and not getattr(candidate, "_is_asyncio", False) and "Async" not in name:
            found[name] = candidate
    return found


def valid_engine_arguments(url: Any, poolclass: type | None = None) -> set[str]:
    """ Every keyword argument `create_engine` consumes for this URL's dialect and pool class
    that a line of text can give. It is worked out the way `create_engine` itself decides what
    it accepts (the keyword arguments of the dialect class, the pool class and `Engine`, plus
    its own), so dialect-specific options (`client_encoding`, `fast_executemany`...) are
    included and nothing `create_engine` would refuse is. """
    from sqlalchemy.engine import Engine
    from sqlalchemy.util import get_cls_kwargs
    dialect_cls = url.get_dialect()
    pool_cls = poolclass or dialect_cls.get_pool_class(url)
    names = set(get_cls_kwargs(dialect_cls)) | set(CREATE_ENGINE_ARGUMENTS)
    names |= {POOL_ARGUMENT_NAMES.get(name, name) for name in get_cls_kwargs(pool_cls)}
    names |= set(get_cls_kwargs(Engine))
    return {name for name in names if name not in NOT_FROM_TEXT and not name.startswith("_")}


# ################################################################################################
# Everything together


def engine_settings(definition: Mapping[str, Any], base_dir: Path | str | None = None) -> EngineSettings:
    """ The URL and `create_engine` arguments of a definition (as runtimes get it: secrets
    decrypted). Raises `SQLConfigError` listing every problem with its field. """
    from sqlalchemy.engine import URL
    import sqlalchemy.pool as pools

    name = definition.get("name")
    errors: list[dict[str, str]] = []
    try:
        drivername = resolve_engine(definition.get("engine"))
    except ValueError as exc:
        raise SQLConfigError(name, [{"field": "engine", "error": str(exc)}]) from None

    try:
        database, query = split_db_name(definition.get("db_name"))
    except ValueError as exc:
        errors.append({"field": "db_name", "error": f"its query string is not key=value&key=value: {exc}"})
        database, query = None, {}

    pool_size = _as_int(definition.get("pool_size"), DEFAULT_POOL_SIZE)
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 0:
        errors.append({"field": "pool_size", "error": f"expected 0 or more connections, got {pool_size!r}"})
        pool_size = DEFAULT_POOL_SIZE

    extra, problems = parse_extra(definition.get("extra"))
    errors.extend({"field": "extra", "error": problem} for problem in problems)

    poolclass = None
    if "poolclass" in extra:
        wanted, known = extra.pop("poolclass"), pool_classes()
        poolclass = known.get(str(wanted))
        if poolclass is None:
            errors.append({"field": "extra", "error": f"poolclass={wanted}: not a pool class; use one of "
                                                      f"{', '.join(sorted(known))}"})
    elif pool_size == 0:
        poolclass = pools.NullPool  # as in Zato: a pool size of 0 keeps no connection open

    is_sqlite = drivername.split("+")[0] == "sqlite"
    if is_sqlite:  # a file (or memory): host, port and credentials mean nothing to SQLite
        url = URL.create(drivername, database=sqlite_path(database, base_dir), query=query)
    else:
        port = _as_int(definition.get("port"), None)
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
            errors.append({"field": "port", "error": f"expected a TCP port (1-65535), got {port!r}"})
            port = None
        url = URL.create(drivername, username=definition.get("username") or None,
                         password=definition.get("password") or None, host=definition.get("host") or None,
                         port=port or None, database=database, query=query)

    valid = valid_engine_arguments(url, poolclass)
    for key in extra:
        if key in OWN_FIELDS:
            errors.append({"field": "extra", "error": OWN_FIELDS[key]})
        elif key not in valid:
            pool_name = (poolclass or url.get_dialect().get_pool_class(url)).__name__
            errors.append({"field": "extra", "error": (
                f"{key!r} is not a create_engine argument for {drivername} with {pool_name}; valid keys: "
                f"{', '.join(sorted(valid - OWN_FIELDS.keys()))}")})
    if errors:
        raise SQLConfigError(name, errors)

    kwargs: dict[str, Any] = {"pool_pre_ping": True}  # a connection dropped by the database is replaced
    if poolclass is not None:
        kwargs["poolclass"] = poolclass
    if "pool_size" in valid:
        kwargs["pool_size"] = pool_size
    kwargs.update(extra)
    return EngineSettings(drivername, url, kwargs, _concurrency(url, poolclass, kwargs))


def _as_int(value: Any, default: Any) -> Any:
    """ Integers as they are, digit strings as integers, nothing as `default`; anything else is
    returned for the caller to refuse. """
    if value is None or value == "":
        return default
    if isinstance(value, str) and _INT.match(value.strip()):
        return int(value)
    return value


def _concurrency(url: Any, poolclass: type | None, kwargs: Mapping[str, Any]) -> int:
    """ How many connections the pool hands out at once: async calls (`.run`) are limited to it,
    so threads never queue inside the pool. """
    import sqlalchemy.pool as pools
    pool_cls = poolclass or url.get_dialect().get_pool_class(url)
    if issubclass(pool_cls, pools.QueuePool):
        overflow = int(kwargs.get("max_overflow", DEFAULT_MAX_OVERFLOW))
        size = int(kwargs.get("pool_size", DEFAULT_POOL_SIZE))
        if overflow < 0 or size <= 0:  # -1: no limit; pool_size=0 in a QueuePool also means no limit
            return UNBOUNDED_CONCURRENCY
        return size + overflow
    if issubclass(pool_cls, (pools.StaticPool, pools.SingletonThreadPool)):
        return 1 if issubclass(pool_cls, pools.StaticPool) else UNBOUNDED_CONCURRENCY
    return UNBOUNDED_CONCURRENCY  # NullPool and others: a new connection each time


def check_definition(definition: Mapping[str, Any]) -> list[dict[str, str]]:
    """ The problems of a whole definition, in the admin API's error shape ([] if none).
    Imports no driver and connects nowhere. """
    try:
        engine_settings(definition)
    except SQLConfigError as exc:
        return exc.errors
    return []


def check_object(data: Mapping[str, Any], partial: bool = False) -> list[dict[str, str]]:
    """ `ObjectType.check`: what the admin API and enmasse refuse beyond the schema, on typed
    data. Fields written as `$NAME` are left to the build, when the environment is read. A
    partial change (PATCH) without `engine` can only have its `extra` lines read, not their keys
    checked: the build checks those, and says so in the log and the ping reply. """
    from zato.plugin_api import is_env_reference
    known = {key: value for key, value in data.items() if not is_env_reference(value)}
    if "engine" in known:
        return check_definition(known)
    if "engine" not in data and not partial:
        return []  # the schema has already said that engine is missing
    arguments, problems = parse_extra(known.get("extra"))
    errors = [{"field": "extra", "error": problem} for problem in problems]
    errors += [{"field": "extra", "error": OWN_FIELDS[key]} for key in arguments if key in OWN_FIELDS]
    return errors
