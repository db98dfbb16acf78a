""" enmasse: a server's configuration objects as code, in one YAML file.

    zato enmasse import DIR FILE.yaml [--dry-run] [--delete-missing]
    zato enmasse export DIR [--secrets omit|env] [--format ours|zato] > FILE.yaml

The file's top-level keys are object type names (Zato's: `security`, `channel_rest`,
`outgoing_rest`, `scheduler`..., and every enabled plugin's), each holding a list of objects.
A file as Zato 3.2 exports it reads too: each type's `ObjectType.zato` (`zato.registry.ZatoSpelling`)
names Zato's keys (`http_soap`, `def_sec`, `outconn_sql`...), field names and values, which are
read into ours; Zato-only fields are dropped and listed in `Plan.notes`. `export --format zato`
writes Zato's spelling back. Our own spelling:

    security:
      - name: my.user
        type: basic_auth
        username: my.user
        password: $MY_USER_PASSWORD
    channel_rest:
      - name: /api/user
        url_path: /api/user
        service: api.user.get
        security: my.user

Import is all or nothing. The whole file is read and checked first - YAML syntax, keys, every
object against its type's schema (`zato.objects.validate`), duplicate names, references to other
objects - and every problem is reported with the file, line, object and field; then the plan
(create / update / delete / unchanged per object) is computed against the database, and applied
in one transaction (`zato.odb.ODB.apply`), in dependency order: an object is written after the
objects it references (security definitions before the channels that use them).

An object is updated only if what would be stored differs from what is stored, so importing the
same file twice changes nothing the second time. Secrets may be given in clear (stored hashed or
encrypted, as their field says) or as `$NAME` references (kept as written); a clear secret equal
to the stored one counts as unchanged (verified against the hash, or decrypted with
`config/secret.key`), and a secret left out of the file keeps its stored value.

Export writes every object, active or not, without ids or versions, grouped by type in dependency
order and sorted by name, with `$NAME` values as written. Secrets are never written in clear nor
in their stored form: they are left out (`omit`, with a comment saying which) or written as
`$ZATO_SECRET_<TYPE>_<NAME>_<FIELD>` references (`env`). The same database always gives the same
bytes.

Everything here is blocking (files, SQL, scrypt); the CLI calls it directly.
"""

from __future__ import annotations

import hmac
import json
import os
import re
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from zato.objects import (
    ENCRYPTED_PREFIX, HASHED_PREFIX, ObjectValidationError, SecretBox, is_env_reference, storage_of, store_secrets,
    validate,
)
from zato.registry import Field, Kind, ObjectType, Registry, ZatoSpelling

# Zato's enmasse top-level keys (shared/reference/zato-facts.md). A key of these that no enabled
# plugin provides yet is reported as such rather than as a typo.
ZATO_KEYS = ("security", "def_sec", "channel_rest", "outgoing_rest", "http_soap", "channel_plain_http",
             "outconn_plain_http", "scheduler", "pubsub_topic", "pubsub_endpoint", "pubsub_subscription", "outconn_sql",
             "outgoing_sql", "email_smtp", "outconn_redis", "outconn_ftp", "web_socket", "zato_generic_connection",
             "def_jms_wmq", "channel_jms_wmq", "outconn_jms_wmq")

# Zato keys of connectors that ship as their own distributions: (plugin, distribution)
ZATO_KEY_PLUGINS = {
    **{key: ("ibm_mq", "zato-plugin-ibm-mq") for key in ("def_jms_wmq", "channel_jms_wmq", "outconn_jms_wmq")},
    "outconn_sql": ("sql", "zato-plugin-sql"), "email_smtp": ("smtp", "zato-plugin-smtp"),
    "outconn_redis": ("redis", "zato-plugin-redis"), "outconn_ftp": ("ftp", "zato-plugin-ftp"),
    "web_socket": ("wsx", "zato-plugin-wsx"),
}

# Zato's generic connections: one key, each row's `type_` says which kind
GENERIC_KEY = "zato_generic_connection"
ZATO_GENERIC_PLUGINS = {"cloud-dropbox": ("dropbox", "zato-plugin-dropbox"), "outconn-wsx": ("wsx", "zato-plugin-wsx")}

# Export formats: ours (our type and field names) or Zato 3.2's (its keys, field names and values)
FORMAT_OURS, FORMAT_ZATO = "ours", "zato"
FORMATS = (FORMAT_OURS, FORMAT_ZATO)

# Keys Zato 3.2's import reads unconditionally (its enmasse maps them back to its older names
# with `dict.pop(key)`, which fails when one is missing): a Zato export always writes them
ZATO_ALWAYS_WRITTEN = ("security", "channel_rest", "outgoing_rest")

SECRETS_OMIT = "omit"
SECRETS_ENV = "env"
SECRET_MODES = (SECRETS_OMIT, SECRETS_ENV)

CREATE, UPDATE, DELETE, UNCHANGED = "create", "update", "delete", "unchanged"
ACTIONS = (CREATE, UPDATE, DELETE, UNCHANGED)

SCRYPT_HASH = re.compile(r"^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$")

# At most this many YAML nodes (scalars, lists, mappings), counted with every alias (`*name`, a
# `<<: *name` merge) expanded where it is used, before anything is built from a file: a file whose
# aliases multiply past it (an "alias bomb", a few hundred bytes expanding to billions of values)
# is refused with the line of the collection that expands too far. A million is far more than any
# configuration holds (about 40 per REST channel); $ZATO_ENMASSE_MAX_YAML_NODES changes it.
MAX_YAML_NODES = int(os.environ.get("ZATO_ENMASSE_MAX_YAML_NODES") or 1_000_000)


class EnmasseError(Exception):
    """ The file cannot be imported (or the database refused it); `problems` lists every reason.
    Nothing was changed. """

    def __init__(self, problems: list["Problem"]) -> None:
        self.problems = sorted(problems, key=lambda p: p.line or 0)  # stable: same line, found order
        super().__init__("\n".join(str(problem) for problem in problems))


@dataclass(frozen=True)
class Problem:
    """ One reason a file cannot be imported: `FILE:LINE: <type> <name>: <field>: <message>`. """
    file: str
    line: int | None
    message: str
    object_type: str = ""
    name: str | None = None
    field: str = ""

    def __str__(self) -> str:
        parts = [f"{self.file}:{self.line}" if self.line else self.file]
        if self.object_type:
            parts.append(f"{self.object_type} {self.name!r}" if self.name is not None else self.object_type)
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return ": ".join(parts)


# ################################################################################################
# Reading YAML with line numbers


class _Mapping(dict):
    """ A YAML mapping that remembers its own line and the line of each of its keys. """
    line: int = 0
    key_lines: dict[Any, int]

    def line_of(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)


class _Loader(yaml.SafeLoader):
    """ PyYAML's safe loader, plus: every mapping is a `_Mapping` with line numbers, a key given
    twice in one mapping is a problem (PyYAML keeps the last silently), and dates stay text
    (configuration values are compared and stored as JSON). """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.duplicate_keys: list[tuple[int, Any, int]] = []  # (line, key, line of the first one)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> Any:
    own = {id(key_node) for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge"}
    loader.flatten_mapping(node)  # merge keys (`<<: *defaults`): merged ones come first, own ones override
    data = _Mapping()
    data.line = node.start_mark.line + 1
    data.key_lines = {}
    own_lines: dict[Any, int] = {}
    yield data
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, "found an unhashable key", key_node.start_mark) from None
        line = key_node.start_mark.line + 1
        if id(key_node) in own:
            if key in own_lines:
                loader.duplicate_keys.append((line, key, own_lines[key]))
            own_lines[key] = line
        data.key_lines[key] = line
        data[key] = loader.construct_object(value_node, deep=False)


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def _load_yaml(path: Path, shown: str) -> tuple[Any, list[Problem]]:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise EnmasseError([Problem(shown, None, f"cannot read the file: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise EnmasseError([Problem(shown, None, f"not UTF-8 text (byte {exc.start}); save the file as UTF-8")]) \
            from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            problem = _expansion_problem(node, shown, MAX_YAML_NODES)
            if problem is not None:
                raise EnmasseError([problem])
        document = loader.construct_document(node) if node is not None else None
    except RecursionError:
        raise EnmasseError([Problem(shown, None, "YAML: the document is nested too deeply to be read; a "
                                                 "configuration needs a few levels only")]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        context = exc.context or ""
        if context and exc.context_mark is not None and exc.context_mark.line + 1 != line:
            context += f" (from line {exc.context_mark.line + 1})"
        detail = ", ".join(str(part) for part in (context, exc.problem) if part)
        raise EnmasseError([Problem(shown, line, f"YAML syntax: {detail}; fix the file and import again")]) from None
    except yaml.YAMLError as exc:
        raise EnmasseError([Problem(shown, None, f"YAML syntax: {exc}")]) from None
    finally:
        loader.dispose()
    problems = [Problem(shown, line, f"key {key!r} is given twice in this mapping (first on line {first}); "
                                     f"keep one") for line, key, first in loader.duplicate_keys]
    return document, problems


def _expansion_problem(root: yaml.Node, shown: str, limit: int) -> Problem | None:
    """ Counts the nodes the document holds with every alias expanded, without building anything
    (each node is counted once, its expanded size remembered); the innermost collection that
    expands past `limit` is the problem. Iterative: nesting depth costs no Python stack. """
    sizes: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[key] = 1
            continue
        children = [item for pair in node.value for item in pair] if isinstance(node, yaml.MappingNode) \
            else list(node.value)
        if not children_done:
            visiting.add(key)
            stack.append((node, True))
            for child in children:
                if id(child) in visiting:
                    return Problem(shown, node.start_mark.line + 1, "YAML: an alias refers to a collection it is "
                                                                   "part of (the document would never end); "
                                                                   "remove that alias")
                if id(child) not in sizes:
                    stack.append((child, False))
            continue
        visiting.discard(key)
        size = 1 + sum(sizes[id(child)] for child in children)
        if size > limit:
            return Problem(shown, node.start_mark.line + 1,
                           f"YAML: this {'mapping' if isinstance(node, yaml.MappingNode) else 'list'} expands, "
                           f"with its aliases (*name), to more than {limit:,} values; a configuration holds far "
                           f"fewer (an alias bomb?). Write the objects out, or raise ZATO_ENMASSE_MAX_YAML_NODES "
                           f"if the file is really that large")
        sizes[key] = size
    return None


# ################################################################################################
# A server directory opened for enmasse


class ServerConfigStore:
    """ What enmasse works on: a server directory's object types (from the plugins its server.conf
    enables), its configuration database and its secret key. Close it (or use `with`). """

    def __init__(self, base_dir: Path | str, *, registry: Registry | None = None) -> None:
        from zato.config import as_bool
        from zato.odb import ODB
        from zato.plugins import load_plugins, plugin_switches
        from zato.server.server import ServerPaths, database_url, read_server_config

        self.paths = ServerPaths(base_dir)
        if not self.paths.server_conf.exists():
            raise FileNotFoundError(f"{self.paths.base_dir} is not a server directory ({self.paths.server_conf} is "
                                    f"missing); create one with `zato quickstart create {base_dir}`")
        config = read_server_config(self.paths)
        if registry is None:
            skip_broken = as_bool(config.main.get("skip_broken_plugins", False))
            registry = load_plugins(plugin_switches(config.get("plugins"), config.get("component_enabled")),
                                    skip_broken=skip_broken).registry
        self.registry = registry
        self.object_types: dict[str, ObjectType] = registry.items(Kind.OBJECT_TYPES)
        self.odb = ODB(database_url(self.paths, config))
        self.box = SecretBox(self.paths.config_dir / "secret.key")

    def close(self) -> None:
        self.odb.close()

    def __enter__(self) -> "ServerConfigStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def read_objects(self) -> dict[str, dict[str, dict[str, Any]]]:
        """ Every object in the database, active or not: type -> name -> object. """
        from sqlalchemy.exc import SQLAlchemyError
        objects: dict[str, dict[str, dict[str, Any]]] = {}
        try:
            rows = self.odb.list_all(active_only=False)
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise EnmasseError([Problem(str(self.paths.base_dir), None, (
                f"cannot read the configuration database {self.odb.engine.url.render_as_string(hide_password=True)} ({reason}); start the server once "
                f"(`zato start`) to create or migrate it, or check [odb] url in {self.paths.server_conf}"))]) from None
        for object_type, obj in rows:
            objects.setdefault(object_type, {})[obj["name"]] = obj
        return objects

    def dependency_order(self, types: Iterable[str]) -> list[str]:
        """ `types` sorted so that each comes after the types its fields reference. """
        return dependency_order(self.object_types, types)


def dependency_order(object_types: Mapping[str, ObjectType], types: Iterable[str]) -> list[str]:
    wanted = sorted(set(types))
    placed: list[str] = []
    visiting: set[str] = set()

    def place(name: str) -> None:
        if name in placed or name in visiting:
            return  # placed already, or a cycle: the order within a cycle is by name
        visiting.add(name)
        object_type = object_types.get(name)
        for target in sorted({f.references for f in (object_type.fields if object_type else ())
                              if f.references and f.references != "service"}):
            if target in wanted:
                place(target)
        visiting.discard(name)
        placed.append(name)

    for name in wanted:
        place(name)
    return placed


# ################################################################################################
# Import: reading and checking the file


@dataclass
class FileObject:
    """ One object read from the file, validated. """
    object_type: str
    name: str
    line: int
    data: dict[str, Any]  # validated; secrets in clear or as $NAME, as given
    given: _Mapping
    zato: bool = False  # read from a row in Zato's spelling (ObjectType.zato)


@dataclass
class ImportFile:
    path: str
    objects: list[FileObject]
    type_lines: dict[str, int]  # type key -> its line
    invalid: set[tuple[str, str]] = dataclass_field(default_factory=set)  # (type, name) of rows with problems
    notes: list[Problem] = dataclass_field(default_factory=list)  # Zato-only fields, ignored
    _names: dict[str, set[str]] = dataclass_field(default_factory=dict)

    def __post_init__(self) -> None:
        for obj in self.objects:
            self._names.setdefault(obj.object_type, set()).add(obj.name)

    def names(self, object_type: str) -> set[str]:
        return self._names.get(object_type, set())


def read_import_file(store: ServerConfigStore, path: Path | str, *, shown: str | None = None) -> ImportFile:
    """ Reads and validates the file; raises `EnmasseError` with every problem found. """
    imported, problems = _read_import_file(store, path, shown)
    if problems:
        raise EnmasseError(problems)
    return imported


def _read_import_file(store: ServerConfigStore, path: Path | str, shown: str | None) -> tuple[ImportFile, list[Problem]]:
    """ The valid objects of the file, and the problems of the others (a YAML syntax error raises:
    nothing else can be read then). """
    path = Path(path)
    shown = shown or str(path)
    document, problems = _load_yaml(path, shown)
    if document is None:
        document = _Mapping()
        document.key_lines = {}
    if not isinstance(document, dict):
        raise EnmasseError([Problem(shown, 1, "the file must be a mapping of object types to lists of objects, "
                                              "e.g. `channel_rest:` followed by `  - name: ...` lines")])
    objects: list[FileObject] = []
    type_lines: dict[str, int] = {}
    first_seen: dict[tuple[str, str], int] = {}
    invalid: set[tuple[str, str]] = set()
    spelled = zato_keys(store.object_types)
    generic_types = {t.zato.generic_type: t for t in store.object_types.values()
                     if t.zato is not None and t.zato.generic_type}
    notes: list[Problem] = []
    zato_ids = _ZatoIds()
    for key, rows in document.items():
        key_line = document.line_of(key)
        if isinstance(key, str) and key in spelled and (rows is None or isinstance(rows, list)):
            # Zato's key (which may also be our type's name): each row is of the type whose
            # spelling matches it, renamed to ours
            for object_type in spelled[key]:
                type_lines.setdefault(object_type.name, key_line)
            for row in rows or ():
                candidates = [t for t in spelled[key] if not isinstance(row, _Mapping) or t.zato.matches(row)]
                if len(candidates) != 1:
                    problems.append(Problem(shown, getattr(row, "line", key_line),
                                            _unmatched_row_message(key, row, spelled[key], candidates)))
                    continue
                _read_rows(shown, candidates[0], [row], key_line, problems, objects, first_seen, invalid,
                           candidates[0].zato, notes, zato_ids)
            continue
        object_type = store.object_types.get(key) if isinstance(key, str) else None
        if object_type is None and key == GENERIC_KEY and generic_types and isinstance(rows, list):
            # Zato's generic connections: each row is of the type its `type_` names
            for row in rows:
                generic = generic_types.get(row.get("type_")) if isinstance(row, _Mapping) else None
                if generic is None:
                    problems.append(Problem(shown, getattr(row, "line", key_line),
                                            _unknown_generic_message(row, generic_types)))
                    continue
                type_lines.setdefault(generic.name, key_line)
                _read_rows(shown, generic, [row], key_line, problems, objects, first_seen, invalid, generic.zato,
                           notes, zato_ids)
            continue
        if object_type is None:
            problems.append(Problem(shown, key_line, _unknown_key_message(key, store.object_types, rows)))
            continue
        key = object_type.name
        type_lines.setdefault(key, key_line)
        if rows is None:
            continue  # `channel_rest:` with nothing under it: no objects of this type
        if not isinstance(rows, list):
            problems.append(Problem(shown, key_line, f"must be a list of objects (`  - name: ...`), not a "
                                                     f"{_kind(rows)}", key))
            continue
        _read_rows(shown, object_type, rows, key_line, problems, objects, first_seen, invalid)
    unresolved, resolved = zato_ids.resolve(shown, store.object_types, objects, invalid)
    problems += unresolved
    notes += resolved
    notes += _outgoing_directions(store, objects, shown)
    return ImportFile(shown, objects, type_lines, invalid, notes=notes), problems


DIRECTION, OUTGOING = "direction", "outgoing"  # a security definition's field, and its value for outgoing use


def _outgoing_directions(store: ServerConfigStore, objects: list[FileObject], shown: str) -> list[Problem]:
    """ Zato's security definitions serve channels and outgoing connections alike; ours say which
    (`direction`), since an outgoing one's password is stored encrypted, to be sent, and an
    inbound one's only as a hash. A definition from a Zato row that gives no direction and that
    only outgoing connections of the file use is made outgoing (else its password would be hashed,
    and lost for sending); each such change is a note. """
    outgoing_types = {t.object_type for t in store.registry.values(Kind.OUTGOING_CONNECTION_TYPES)}
    users: dict[tuple[str, str], set[str]] = {}  # (type, name) -> the types of the objects naming it
    for obj in objects:
        for ref_field in _references(store.object_types[obj.object_type]):
            value = obj.data.get(ref_field.name)
            if isinstance(value, str):
                users.setdefault((ref_field.references, value), set()).add(obj.object_type)
    notes = []
    for obj in objects:
        object_type = store.object_types[obj.object_type]
        used_by = users.get((obj.object_type, obj.name), set())
        if (obj.zato and DIRECTION not in obj.given and any(f.name == DIRECTION for f in object_type.fields)
                and used_by and used_by <= outgoing_types):
            obj.data[DIRECTION] = OUTGOING
            notes.append(Problem(shown, obj.line, f"set to {OUTGOING!r}: only outgoing connections "
                                                  f"({', '.join(sorted(used_by))}) use it, and Zato has no such field",
                                 obj.object_type, obj.name, DIRECTION))
    return notes


# Zato 3.2 keeps an outgoing WebSocket connection's security (`zato_generic_connection`,
# `type_: outconn-wsx`) as its web-admin form's select gives it, `<security type>/<database id>`
# (`security_def: basic_auth/14`), and its enmasse exports it so, without a name
ZATO_ID_REFERENCE = re.compile(r"^(?P<type>[A-Za-z][A-Za-z0-9_-]*)/(?P<id>[0-9]+)$")


@dataclass
class _ZatoIds:
    """ Turns references Zato's files give as `<type>/<id>` into names: the Zato `id` of each row
    read in Zato's spelling (a Zato-only field, dropped from the object) and the references of that
    form, resolved once the whole file is read (a row may name one that comes after it). """
    # (our type, Zato's id) -> (name, Zato's `type`)
    rows: dict[tuple[str, str], tuple[str, Any]] = dataclass_field(default_factory=dict)
    # (object, our field, Zato's field)
    references: list[tuple[FileObject, Field, str]] = dataclass_field(default_factory=list)

    def remember_row(self, object_type: ObjectType, row: _Mapping) -> None:
        """ A Zato row, before it is translated (its `id` is dropped then). """
        name, zato_id = row.get("name"), row.get("id")
        if isinstance(name, str) and isinstance(zato_id, (int, str)) and not isinstance(zato_id, bool):
            self.rows.setdefault((object_type.name, str(zato_id)), (name, row.get("type")))

    def remember_references(self, object_type: ObjectType, spelling: ZatoSpelling, row: _Mapping,
                            found: FileObject) -> None:
        """ The fields of an object read from Zato's `row` that name another object as `<type>/<id>`. """
        for ref_field in _references(object_type):
            value = found.data.get(ref_field.name)
            if isinstance(value, str) and ZATO_ID_REFERENCE.match(value):
                zato_field = next((key for key in row if row[key] == value and
                                   spelling.fields.get(key, key) == ref_field.name), ref_field.name)
                self.references.append((found, ref_field, zato_field))

    def resolve(self, shown: str, object_types: Mapping[str, ObjectType], objects: list[FileObject],
                invalid: set[tuple[str, str]]) -> tuple[list[Problem], list[Problem]]:
        """ Problems and notes: each reference becomes the name of the row of the referenced type
        with that id (and type, if the row gives one), with a note; if there is none, a problem,
        and the object is left out (else it would be reported again, as naming a missing object).
        A value that is the name of an object of the file is a name after all. """
        problems: list[Problem] = []
        notes: list[Problem] = []
        names = {(obj.object_type, obj.name) for obj in objects}
        unresolved: set[int] = set()
        for obj, ref_field, zato_field in self.references:
            value, target = obj.data[ref_field.name], ref_field.references
            if (target, value) in names:
                continue
            match = ZATO_ID_REFERENCE.match(value)
            zato_type, zato_id = match["type"], match["id"]
            name, row_type = self.rows.get((target, zato_id), (None, None))
            line = obj.given.line_of(ref_field.name)
            meaning = f"{value!r} is Zato's {target} type and database id"
            if name is not None and row_type in (None, zato_type):
                obj.data[ref_field.name] = name
                notes.append(Problem(shown, line, f"{meaning}: read as {name!r}, the {target} row of this file "
                                                  f"with `id: {zato_id}`", obj.object_type, obj.name, zato_field))
                continue
            spelling = object_types[target].zato if target in object_types else None
            keys = " or ".join(f"`{key}`" for key in (spelling.all_keys if spelling else (target,)))
            why = (f"no {keys} row of this file has `id: {zato_id}`; add that row (with `id: {zato_id}`) to the file"
                   if name is None else f"the row with `id: {zato_id}` is {name!r}, of type {row_type!r}; correct "
                                        f"the type or the id")
            problems.append(Problem(shown, line, f"{meaning}, but {why}, or write the name of the {target} "
                                                 f"definition instead (`{zato_field}: NAME`)", obj.object_type,
                                    obj.name, zato_field))
            invalid.add((obj.object_type, obj.name))
            unresolved.add(id(obj))
        objects[:] = [obj for obj in objects if id(obj) not in unresolved]
        return problems, notes


def _read_rows(shown: str, object_type: ObjectType, rows: list[Any], key_line: int, problems: list["Problem"],
               objects: list["FileObject"], first_seen: dict[tuple[str, str], int], invalid: set[tuple[str, str]],
               spelling: Any = None, notes: list["Problem"] | None = None, zato_ids: "_ZatoIds | None" = None) -> None:
    """ Reads the rows of one type into `objects` (and what is wrong with them into `problems`;
    Zato-only fields a row of Zato's spelling gives into `notes`; its Zato id and `<type>/<id>`
    references into `zato_ids`). """
    key = object_type.name
    for row in rows:
        zato_row = None
        if spelling is not None and isinstance(row, _Mapping):
            name = row.get("name") if isinstance(row.get("name"), str) else None
            for ignored in spelling.ignored_in(row):
                if notes is not None:
                    notes.append(Problem(shown, row.line_of(ignored), "Zato's field, which means nothing here; ignored", key, name, ignored))
            zato_row, row = row, _in_our_spelling(spelling, row)
            if zato_ids is not None:
                zato_ids.remember_row(object_type, zato_row)
        found = _read_row(shown, object_type, row, key_line, problems)
        if found is None:
            if isinstance(row, dict) and isinstance(row.get("name"), str):
                invalid.add((key, row["name"]))
            continue
        seen_at = first_seen.get((key, found.name))
        if seen_at is not None:
            problems.append(Problem(shown, found.line, f"duplicate name: the same name is used on line "
                                                       f"{seen_at}; names are unique within a type", key,
                                    found.name, "name"))
            continue
        first_seen[(key, found.name)] = found.line
        found.zato = spelling is not None
        if zato_row is not None and zato_ids is not None:
            zato_ids.remember_references(object_type, spelling, zato_row, found)
        objects.append(found)


def zato_keys(object_types: Mapping[str, ObjectType]) -> dict[str, list[ObjectType]]:
    """ Each top-level key of Zato's enmasse files (but the generic connections' one) -> the
    object types whose rows it may hold, told apart by `ZatoSpelling.when`. """
    out: dict[str, list[ObjectType]] = {}
    for object_type in object_types.values():
        if object_type.zato is not None and not object_type.zato.generic_type:
            for key in object_type.zato.all_keys:
                out.setdefault(key, []).append(object_type)
    return out


def _unmatched_row_message(key: str, row: Any, types: list[ObjectType], matching: list[ObjectType]) -> str:
    """ Why a row under a Zato key is of none (or more than one) of the types the key holds. """
    if not isinstance(row, Mapping):
        return f"each item under {key!r} must be a mapping with at least `name`, not a {_kind(row)} ({row!r:.60})"
    accepted = "; ".join(f"{t.name}: " + ", ".join(
        f"{name} {' or '.join(repr(v) if v is not None else 'left out' for v in values)}"
        for name, values in t.zato.when.items()) for t in types if t.zato.when)
    given = ", ".join(f"{name} {row[name]!r}" if name in row else f"{name} left out"
                      for name in sorted({n for t in types for n in t.zato.when}))
    which = f"{key} {row.get('name')!r}" if isinstance(row.get("name"), str) else f"a {key} row"
    if matching:
        return (f"{which} ({given}) could be any of {', '.join(t.name for t in matching)}; say which: {accepted}")
    return f"{which} ({given}) has no counterpart on this server; supported rows: {accepted}"


def _unknown_generic_message(row: Any, generic_types: Mapping[str, ObjectType]) -> str:
    kind = row.get("type_") if isinstance(row, Mapping) else None
    known = ", ".join(f"{name} ({t.name})" for name, t in sorted(generic_types.items()))
    if kind is None:
        return f"a zato_generic_connection row needs `type_`, one of: {known}"
    plugin = ZATO_GENERIC_PLUGINS.get(kind)
    which = f"; it comes with {_plugin_hint(*plugin)}" if plugin else ""
    return f"zato_generic_connection type_ {kind!r} is not supported on this server{which}. Known type_ values: {known}"


def _in_our_spelling(spelling: Any, row: _Mapping) -> _Mapping:
    """ A row of Zato's spelling of a type (`ObjectType.zato`) with our field names, lines kept. """
    translated = _Mapping(spelling.translate(row))
    translated.line = row.line
    translated.key_lines = {}
    for key, line in row.key_lines.items():
        translated.key_lines.setdefault(spelling.fields.get(key, key), line)
    return translated


def _plugin_hint(plugin: str, distribution: str) -> str:
    from zato.plugins import switch_on_line
    return (f"the {plugin} plugin: pip install {distribution}, then switch it on in server.conf "
            f"({switch_on_line(plugin)})")


def _unknown_key_message(key: Any, object_types: Mapping[str, ObjectType], rows: Any) -> str:
    known = ", ".join(sorted(object_types)) or "(none)"
    if key == "zato_generic_connection":
        kinds = sorted({str(row.get("type_")) for row in rows or () if isinstance(row, dict) and row.get("type_")})
        which = f" (type_ {', '.join(kinds)})" if kinds else ""
        hint = "".join(f"; type_ {kind} comes with {_plugin_hint(*ZATO_GENERIC_PLUGINS[kind])}"
                       for kind in kinds if kind in ZATO_GENERIC_PLUGINS)
        return (f"zato_generic_connection{which} is not supported yet: no enabled plugin provides it{hint}; "
                f"remove these rows or move them to a supported key. Known keys: {known}")
    if key in ZATO_KEYS:
        plugin = ZATO_KEY_PLUGINS.get(key)
        which = f"it comes with {_plugin_hint(*plugin)}" if plugin else "install or enable the plugin that does"
        return (f"{key!r} is a Zato enmasse key, but no enabled plugin provides object type {key!r} on this "
                f"server; {which}, or remove the key. Known keys: {known}")
    return f"unknown key {key!r}: not an object type of this server. Known keys: {known}"


def _kind(value: Any) -> str:
    return {dict: "mapping", _Mapping: "mapping", list: "list", str: "text"}.get(type(value), type(value).__name__)


def _read_row(shown: str, object_type: ObjectType, row: Any, key_line: int,
              problems: list[Problem]) -> FileObject | None:
    type_name = object_type.name
    if not isinstance(row, _Mapping):
        problems.append(Problem(shown, key_line, f"each item must be a mapping with at least `name`, not a "
                                                 f"{_kind(row)} ({row!r:.60})", type_name))
        return None
    name = row.get("name")
    if "name" in row and not isinstance(name, str):
        problems.append(Problem(shown, row.line_of("name"), f"must be text, not {name!r}; quote it", type_name,
                                str(name), "name"))
        return None
    shown_name = name if isinstance(name, str) else None
    before = len(problems)
    for key in row:
        if not isinstance(key, str):
            problems.append(Problem(shown, row.line_of(key), "field names must be text", type_name, shown_name,
                                    str(key)))
    if len(problems) > before:
        return None
    try:
        data = validate(object_type, dict(row), allow_secrets=True)
    except ObjectValidationError as exc:
        for error in exc.errors:
            problems.append(Problem(shown, row.line_of(error["field"]), error["error"], type_name, shown_name,
                                    error["field"]))
        return None
    for secret_field in object_type.fields:
        if secret_field.secret and secret_field.name in data:
            message = _stored_form_problem(secret_field, data[secret_field.name], data)
            if message:
                problems.append(Problem(shown, row.line_of(secret_field.name), message, type_name, shown_name,
                                        secret_field.name))
    if len(problems) > before:
        return None
    return FileObject(type_name, name, row.line, data, row)


def _stored_form_problem(secret_field: Field, value: Any, data: dict[str, Any]) -> str | None:
    """ A secret in the file is taken in clear or as `$NAME`; stored forms from a database are
    refused (an encrypted one only opens with that server's key), except a scrypt hash for a
    field that is stored hashed anyway. """
    if not isinstance(value, str):
        return None
    if value.startswith(ENCRYPTED_PREFIX):
        return ("is an encrypted value from a configuration database, which only that server's key opens; "
                "give the secret in clear or as a $NAME environment reference")
    if value.startswith(HASHED_PREFIX):
        hashed = storage_of(secret_field, data) == "hash"
        if hashed and SCRYPT_HASH.match(value):
            return None
        if hashed:
            return "looks like a scrypt hash but is not a valid one; give the secret in clear or as $NAME"
        return ("is a hash, but this secret must be stored encrypted (the server needs it in clear); give it in "
                "clear or as $NAME")
    return None


# ################################################################################################
# Import: the plan


@dataclass
class Step:
    """ What importing does to one object. `data` is what will be stored (new secrets still in
    clear: `apply_plan` stores them), None for deletes. """
    action: str
    object_type: str
    name: str
    data: dict[str, Any] | None = None
    changed: tuple[str, ...] = ()  # for updates: the fields that differ (secrets by name only)
    line: int | None = None

    def describe(self, type_width: int = 0) -> str:
        """ `create     channel_rest  /api/x`, and for updates the fields that change. """
        text = f"{self.action:<9}  {self.object_type:<{type_width}}  {self.name}"
        if self.changed:
            text += f"  ({', '.join(self.changed)})"
        return text


@dataclass
class Plan:
    """ Every object of the file (and, with `delete_missing`, the objects to delete), in the order
    they are applied: deletes first (objects that reference others before those), then creates and
    updates in dependency order. """
    file: str
    steps: list[Step] = dataclass_field(default_factory=list)
    notes: list[Problem] = dataclass_field(default_factory=list)  # Zato-only fields of the file, ignored
    warnings: list[str] = dataclass_field(default_factory=list)  # $NAME references to unset variables

    def counts(self) -> dict[str, int]:
        return {action: sum(1 for s in self.steps if s.action == action) for action in ACTIONS}

    @property
    def changes(self) -> list[Step]:
        return [s for s in self.steps if s.action != UNCHANGED]

    @property
    def changed_types(self) -> list[str]:
        return sorted({s.object_type for s in self.changes})

    def summary(self, *, done: bool = False) -> str:
        counts = self.counts()
        if done:
            return (f"{counts[CREATE]} created, {counts[UPDATE]} updated, {counts[DELETE]} deleted, "
                    f"{counts[UNCHANGED]} unchanged")
        return (f"{counts[CREATE]} to create, {counts[UPDATE]} to update, {counts[DELETE]} to delete, "
                f"{counts[UNCHANGED]} unchanged")


def plan_import(store: ServerConfigStore, path: Path | str, *, delete_missing: bool = False,
                shown: str | None = None) -> Plan:
    """ Reads and checks the file, then compares it with the database. Changes nothing; raises
    `EnmasseError` with every problem found. """
    imported, problems = _read_import_file(store, path, shown)
    current = store.read_objects()

    replaced = set(imported.type_lines) if delete_missing else set()  # types the file holds in full
    problems += _check_references(store, imported, current, replaced)

    deletes = []
    for object_type in replaced:
        invalid = {name for kind, name in imported.invalid if kind == object_type}
        for name in current.get(object_type, {}).keys() - imported.names(object_type) - invalid:
            deletes.append(Step(DELETE, object_type, name))
    problems += _check_deletes(store, imported, current, replaced, deletes)
    if problems:
        raise EnmasseError(problems)

    by_type: dict[str, list[Step]] = {}
    for obj in imported.objects:
        by_type.setdefault(obj.object_type, []).append(
            _plan_object(store, store.object_types[obj.object_type], obj, current.get(obj.object_type, {})))
    by_type_deletes: dict[str, list[Step]] = {}
    for step in deletes:
        by_type_deletes.setdefault(step.object_type, []).append(step)

    plan = Plan(imported.path, notes=list(imported.notes))
    for object_type in reversed(store.dependency_order(by_type_deletes)):
        plan.steps += sorted(by_type_deletes[object_type], key=lambda s: s.name)
    for object_type in store.dependency_order(by_type):
        plan.steps += sorted(by_type[object_type], key=lambda s: s.name)
    for step in plan.changes:
        if step.data is not None:
            plan.warnings += missing_env_references(step.object_type, step.name, step.data)
    return plan


def missing_env_references(object_type: str, name: str, data: Mapping[str, Any],
                           environ: Mapping[str, str] | None = None) -> list[str]:
    """ A warning for each `$NAME` value (or list item) whose variable `environ` (this process's
    environment) lacks: the object is stored as given, but the server cannot use it until the
    variable is set where it runs. Shared by enmasse and the admin API. """
    environ = os.environ if environ is None else environ
    warnings = []
    for field_name, value in data.items():
        for item in value if isinstance(value, list) else [value]:
            if is_env_reference(item) and item[1:] not in environ:
                warnings.append(f"{object_type} {name!r}: field {field_name!r}: environment variable {item[1:]} "
                                f"is not set; set it where the server runs, or the server cannot use {item}")
    return warnings


def _references(object_type: ObjectType | None) -> list[Field]:
    return [f for f in (object_type.fields if object_type else ()) if f.references and f.references != "service"]


def _check_references(store: ServerConfigStore, imported: ImportFile, current: dict[str, dict[str, dict]],
                      replaced: set[str]) -> list[Problem]:
    """ Every field naming another object names one in the file or (unless the file replaces
    that type) in the database. `$NAME` references are resolved by the server, not here. """
    problems = []
    for obj in imported.objects:
        for ref_field in _references(store.object_types[obj.object_type]):
            value = obj.data.get(ref_field.name)
            if value in (None, "") or is_env_reference(value):
                continue
            target = ref_field.references
            if value in imported.names(target) or (target, value) in imported.invalid:
                continue  # in the file (a row with problems of its own is reported for those)
            in_database = value in current.get(target, {})
            if in_database and target not in replaced:
                continue
            why = (f"{target} {value!r} is not in the file, and --delete-missing deletes it from the database"
                   if in_database else f"{target} {value!r} does not exist in the file or in the database")
            problems.append(Problem(imported.path, obj.given.line_of(ref_field.name),
                                    f"{why}; add it under `{target}:` in the file", obj.object_type, obj.name,
                                    ref_field.name))
    return problems


def _check_deletes(store: ServerConfigStore, imported: ImportFile, current: dict[str, dict[str, dict]],
                   replaced: set[str], deletes: list[Step]) -> list[Problem]:
    """ An object deleted by --delete-missing must not be used by an object that stays in the
    database without being in the file (those in the file were checked by `_check_references`). """
    problems = []
    deleted = {(s.object_type, s.name) for s in deletes}
    for other_type, objects in sorted(current.items()):
        if other_type in replaced:
            continue  # every object of this type that stays is in the file
        in_file = imported.names(other_type)
        for ref_field in _references(store.object_types.get(other_type)):
            for name, obj in sorted(objects.items()):
                value = obj.get(ref_field.name)
                if name in in_file or (ref_field.references, value) not in deleted:
                    continue
                problems.append(Problem(
                    imported.path, imported.type_lines.get(ref_field.references), f"not in the file, so "
                    f"--delete-missing would delete it, but {other_type} {name!r} (in the database) uses it in "
                    f"{ref_field.name!r}; add it to the file, or change or delete {other_type} {name!r} first",
                    ref_field.references, value))
    return problems


def _plan_object(store: ServerConfigStore, object_type: ObjectType, obj: FileObject,
                 current_objects: dict[str, dict[str, Any]]) -> Step:
    current = current_objects.get(obj.name)
    secrets, secrets_changed = _plan_secrets(store, object_type, obj, current)
    wanted = {key: value for key, value in obj.data.items()
              if value is not None and key not in secrets and not _is_secret(object_type, key)}
    wanted["is_active"] = bool(wanted.get("is_active", True))
    data = {**wanted, **secrets}
    if current is None:
        return Step(CREATE, obj.object_type, obj.name, data, line=obj.line)
    before = comparable(object_type, current)
    for key in wanted.keys() & set(_secret_like(object_type, current)):
        before[key] = current[key]  # a plain field that holds a stored-looking value, given in the file
    before = _json_round_trip(before)
    after = _json_round_trip(wanted)
    changed = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
    changed += secrets_changed
    if not changed:
        return Step(UNCHANGED, obj.object_type, obj.name, data, line=obj.line)
    return Step(UPDATE, obj.object_type, obj.name, data, tuple(changed), line=obj.line)


def _is_secret(object_type: ObjectType, key: str) -> bool:
    return any(f.name == key and f.secret for f in object_type.fields)


def _looks_stored(value: Any) -> bool:
    return isinstance(value, str) and (value.startswith(ENCRYPTED_PREFIX) or bool(SCRYPT_HASH.match(value)))


def _secret_like(object_type: ObjectType | None, obj: Mapping[str, Any]) -> list[str]:
    """ The object's secret fields: its type's, and - so that a schema that forgets to mark one
    cannot leak it - any field whose stored value is encrypted or a scrypt hash. """
    names = [f.name for f in (object_type.fields if object_type else ()) if f.secret]
    names += [key for key, value in obj.items() if key not in names and not key.startswith("_")
              and _looks_stored(value)]
    return names


def comparable(object_type: ObjectType, stored: Mapping[str, Any]) -> dict[str, Any]:
    """ A stored object's non-secret fields as import and export see them: defaults filled in,
    values typed as validation types them, None values left out. An object that no longer matches
    its schema is taken as it is. """
    secret = set(_secret_like(object_type, stored))
    plain = {key: value for key, value in stored.items() if not key.startswith("_") and key not in secret}
    try:
        plain = validate(object_type, plain, allow_secrets=False)
    except ObjectValidationError:
        pass
    plain = {key: value for key, value in plain.items() if value is not None}
    plain["is_active"] = bool(stored.get("is_active", True))
    return _json_round_trip(plain)


def _json_round_trip(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data))


def _plan_secrets(store: ServerConfigStore, object_type: ObjectType, obj: FileObject,
                  current: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """ The secrets to store ({field: value}: the stored value if unchanged, else as given) and
    the names of those that change. A secret left out of the file keeps its stored value. """
    keep: dict[str, Any] = {}
    changed: list[str] = []
    for name in _secret_like(object_type, current or {}):
        stored = (current or {}).get(name)
        if name not in obj.data:
            if stored not in (None, ""):
                keep[name] = stored
            continue
        given = obj.data[name]
        if not _is_secret(object_type, name):
            continue  # a plain field given in the file: compared as plain data
        if given in (None, ""):
            if stored not in (None, ""):
                changed.append(name)
            continue
        given = str(given)
        if _same_secret(store, given, stored):
            keep[name] = stored
        else:
            keep[name] = given
            changed.append(name)
    return keep, changed


def _same_secret(store: ServerConfigStore, given: str, stored: Any) -> bool:
    """ Whether `given` (clear, `$NAME` or a scrypt hash) is what `stored` holds. """
    if not isinstance(stored, str) or not stored:
        return False
    if is_env_reference(given) or is_env_reference(stored) or SCRYPT_HASH.match(given):
        return given == stored
    if SCRYPT_HASH.match(stored):
        from zato.passwords import verify_password
        return verify_password(given, stored)
    if stored.startswith(ENCRYPTED_PREFIX):
        if not store.box.key_file.exists():
            return False  # cannot tell; never create a key just to compare (a dry run writes nothing)
        try:
            return hmac.compare_digest(store.box.decrypt(stored).encode(), given.encode())
        except ValueError:
            return False
    return False  # stored in clear (written past the object model): storing it properly is a change


# ################################################################################################
# Import: applying the plan


def apply_plan(store: ServerConfigStore, plan: Plan) -> int:
    """ Stores the plan's new secrets (hashed or encrypted) and applies every change in one
    transaction. Returns how many objects changed. If the database refuses any change (e.g. an
    object created by someone else since the plan was made) nothing is changed and
    `EnmasseError` says why. """
    from sqlalchemy.exc import SQLAlchemyError
    from zato.odb import Change

    changes = []
    for step in plan.changes:
        if step.action == DELETE:
            changes.append(Change(DELETE, step.object_type, step.name))
            continue
        data = store_secrets(store.object_types[step.object_type], dict(step.data or {}), store.box)
        changes.append(Change(step.action, step.object_type, step.name, data, bool(data.get("is_active", True))))
    if not changes:
        return 0
    try:
        return store.odb.apply(changes)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise EnmasseError([Problem(plan.file, None, f"the configuration database refused the changes ({reason}); "
                                                     f"nothing was changed. If another change was made at the same "
                                                     f"time, import again to see the new plan")]) from exc


# ################################################################################################
# Export


@dataclass
class Export:
    """ The YAML text and what the caller should tell the user (on stderr). """
    text: str
    omitted: list[str] = dataclass_field(default_factory=list)  # "type 'name' field"
    variables: list[tuple[str, str]] = dataclass_field(default_factory=list)  # (variable, "type 'name' field")
    warnings: list[str] = dataclass_field(default_factory=list)


def secret_variable(object_type: str, name: str, field_name: str) -> str:
    """ `ZATO_SECRET_<TYPE>_<NAME>_<FIELD>`, upper-cased, every run of other characters an `_`. """
    raw = f"ZATO_SECRET_{object_type}_{name}_{field_name}".upper()
    return re.sub(r"[^A-Z0-9]+", "_", raw).strip("_")


def export_config(store: ServerConfigStore, *, secrets: str = SECRETS_OMIT, format: str = FORMAT_OURS) -> Export:
    """ Every object in the database as enmasse YAML (see the module docstring); with
    `format="zato"`, in Zato 3.2's spelling (`ObjectType.zato`), so that Zato imports it. """
    if secrets not in SECRET_MODES:
        raise ValueError(f"secrets must be one of {', '.join(SECRET_MODES)}, not {secrets!r}")
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    result = Export("")
    by_type = {object_type: list(objects.values()) for object_type, objects in store.read_objects().items()}

    unknown = sorted(set(by_type) - set(store.object_types))
    for object_type in unknown:
        result.warnings.append(f"left out {len(by_type[object_type])} object(s) of type {object_type!r}: no enabled "
                               f"plugin provides that type, so they could not be imported back")
    used_variables: set[str] = set()
    lines = ["# Zato configuration objects, written by `zato enmasse export`.",
             "# Secrets are " + ("left out: set them after importing, or export with --secrets env."
                                 if secrets == SECRETS_OMIT else
                                 "$ZATO_SECRET_... environment references: set those variables on the server.")]
    exported = set(by_type) - set(unknown)
    if format == FORMAT_ZATO:
        return _export_zato(store, by_type, exported, secrets, result, used_variables, lines)
    for type_name in store.dependency_order(exported):
        object_type = store.object_types[type_name]
        lines.append(f"{_yaml_scalar(type_name)}:")
        for obj in sorted(by_type[type_name], key=lambda o: o["name"]):
            lines += _export_object(object_type, obj, secrets, result, used_variables)
    result.text = "\n".join(lines) + "\n"
    return result


def _export_zato(store: ServerConfigStore, by_type: dict[str, list[dict[str, Any]]], exported: set[str], secrets: str,
                 result: Export, used_variables: set[str], lines: list[str]) -> Export:
    """ The objects under Zato's keys, in Zato's field names; types Zato has no counterpart of are
    left out with a warning (Zato 3.2 refuses a file with a key it does not know). """
    lines[0] = "# Zato configuration objects in Zato 3.2's enmasse format, written by `zato enmasse export --format zato`."
    rows_by_key: dict[str, list[str]] = {key: [] for key in ZATO_ALWAYS_WRITTEN}
    for type_name in store.dependency_order(exported):
        object_type = store.object_types[type_name]
        spelling = object_type.zato
        if spelling is None:
            result.warnings.append(f"left out {len(by_type[type_name])} object(s) of type {type_name!r}: Zato 3.2's "
                                   f"enmasse has no counterpart (export without --format zato to keep them)")
            continue
        key = GENERIC_KEY if spelling.generic_type else spelling.key
        rows = rows_by_key.setdefault(key, [])
        for obj in sorted(by_type[type_name], key=lambda o: o["name"]):
            rows += _export_object(object_type, obj, secrets, result, used_variables, spelling)
    for key, rows in rows_by_key.items():
        lines.append(f"{_yaml_scalar(key)}:" + ("" if rows else " []"))
        lines += rows
    result.text = "\n".join(lines) + "\n"
    return result


def _export_object(object_type: ObjectType, obj: dict[str, Any], secrets: str, result: Export,
                   used_variables: set[str], spelling: Any = None) -> list[str]:
    name = obj["name"]
    plain = comparable(object_type, obj)
    try:
        validate(object_type, {**plain, "name": name}, allow_secrets=False)
    except ObjectValidationError as exc:
        result.warnings.append(f"{object_type.name} {name!r} does not match its type's schema ({exc}); it is "
                               f"exported as stored, and importing it will report the same problem")
    ordered: dict[str, Any] = {"name": name}
    for schema_field in object_type.fields:
        if schema_field.name in plain and schema_field.name not in ("name", "is_active"):
            ordered[schema_field.name] = plain[schema_field.name]
    for key in sorted(plain):  # fields outside the schema (written past validation)
        if key not in ordered and key != "is_active":
            ordered[key] = plain[key]
    left_out = []
    for secret_name in _secret_like(object_type, obj):
        value = obj.get(secret_name)
        if value in (None, ""):
            continue
        where = f"{object_type.name} {name!r} {secret_name}"
        if is_env_reference(value):
            ordered[secret_name] = value  # a reference, not a secret: kept as written
        elif secrets == SECRETS_ENV:
            variable = secret_variable(object_type.name, name, secret_name)
            suffix = 2
            while variable in used_variables:
                variable = f"{secret_variable(object_type.name, name, secret_name)}_{suffix}"
                suffix += 1
            used_variables.add(variable)
            ordered[secret_name] = f"${variable}"
            result.variables.append((variable, where))
        else:
            left_out.append(secret_name)
            result.omitted.append(where)
    if not plain.get("is_active", True):
        ordered["is_active"] = False
    if spelling is not None:
        ordered = spelling.to_zato(ordered)
        if spelling.generic_type:
            ordered = {"type_": spelling.generic_type, **ordered}
    dumped = yaml.safe_dump([ordered], sort_keys=False, allow_unicode=True, default_flow_style=False, width=4096)
    lines = ["  " + line for line in dumped.splitlines()]
    if left_out:
        lines.append(f"    # left out (secret): {', '.join(left_out)}")
    return lines


def _yaml_scalar(value: str) -> str:
    return yaml.safe_dump(value, default_style=None).splitlines()[0] if not re.match(r"^[a-z0-9_]+$", value) \
        else value
