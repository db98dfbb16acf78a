""" BST definitions: the plain-text format of Zato's business state transitions, parsed into
`Definition` objects, stored as `bst_definition` configuration objects and deployed from `.bst`
files like services.

The format, one or more definitions a text, separated by blank lines::

    Orders
    ------
    Objects: Order, Priority order
    New: Submitted
    Submitted: Ready
    Ready: Sent
    Sent: Confirmed, Rejected
    Rejected: Updated
    Updated: Ready
    Force stop: Canceled, Timed out

* The name line, then an underline of `-` (or `=`) characters.
* `Objects: A, B` - the business object types the definition applies to (exactly one such line;
  an object type belongs to one definition of a text).
* `State: next, next` - from State an object may go to any of the states listed. A state is
  defined (on the left) once.
* `Force stop: X, Y` (optional) - states an object may go to from any state. A force-stop state
  is reached only this way: it may not also appear in a `State: next` line (a state that is both
  a step of the flow and an emergency exit is two states, e.g. `Canceled` and `Withdrawn`).
* Lines starting with `#` are comments.

Roots (entry states) are the states on the left of a `:` that never appear on a right side; an
object without a state yet may only go to a root (not to a force-stop state: force stop moves an
object out of the flow it is in; a forced transition can still put it anywhere). Every state defined on the left must be
reachable from a root. States on the right only are final (no transition leads out of them but
to a force-stop state): a misspelt next state (`Sent: Confirmd`) is not an error but a new final
state, so deployment logs each definition's final states in one INFO line (`final_states_line`)
where such a typo shows. A forced transition goes from any
state (or none) to any state of the definition. State names compare without case; output keeps
the definition's spelling.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping

import trio

from zato.plugin_api import DeployableFile, Field, ObjectType

logger = logging.getLogger("zato.bst")

OBJECT_TYPE = "bst_definition"
CONFIG_CHANGED = "config.objects.changed"
DEPLOYED_FROM = "deployed from "
FORCE_STOP_KEYS = ("force stop", "force-stop", "force_stop")
EXAMPLE = "Orders\n------\nObjects: Order\nNew: Submitted\nSubmitted: Ready\nForce stop: Canceled"


class DefinitionError(ValueError):
    """ A definition text that cannot be used: `line` (1-based, or None) says where. """

    def __init__(self, message: str, line: int | None = None, file: str = "<text>") -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.file = file

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line is not None else self.message


class DefinitionNotFound(LookupError):
    """ No definition covers an object type, or none has the name asked for. """


@dataclass(frozen=True)
class Definition:
    """ One parsed definition. `transitions`, `roots` and `force_stop` hold lower-case state
    names; `states` and the output of every method keep the definition's spelling. """
    name: str
    objects: tuple[str, ...]
    states: tuple[str, ...]
    transitions: Mapping[str, tuple[str, ...]] = field(hash=False)
    roots: tuple[str, ...]
    force_stop: tuple[str, ...] = ()
    text: str = ""
    version: int = 1
    _display: Mapping[str, str] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "transitions", MappingProxyType(
            {key.lower(): tuple(v.lower() for v in values) for key, values in self.transitions.items()}))
        object.__setattr__(self, "_display", MappingProxyType({state.lower(): state for state in self.states}))

    # ############################################################################################

    def state(self, name: str | None) -> str | None:
        """ The definition's spelling of a state given in any case, None if it has no such state. """
        if not isinstance(name, str):
            return None
        return self._display.get(name.strip().lower())

    def _shown(self, keys: tuple[str, ...] | list[str]) -> list[str]:
        return [self._display[key] for key in keys]

    def allowed_from(self, state_old: str | None) -> list[str]:
        """ The states an object in `state_old` (None: no state yet) may go to without force: the
        roots from None; from a state, its next states and the force-stop states. An unknown
        state allows nothing. """
        if state_old is None:
            return self._shown(self.roots)
        key = state_old.strip().lower()
        if key not in self._display:
            return []
        nexts = list(self.transitions.get(key, ()))
        return self._shown(nexts + [s for s in self.force_stop if s not in nexts])

    def can_transition(self, state_old: str | None, state_new: str, force: bool = False, *,
                       object_type: str | None = None) -> tuple[bool, str]:
        """ Whether an object may go from `state_old` (None: it has no state yet) to `state_new`,
        and when not, why and what is allowed. `object_type` names the object in the reason
        (the definition's only object type, or "An object of <name>", by default). """
        who = object_type or (self.objects[0] if len(self.objects) == 1 else f"An object of {self.name}")
        new = self.state(state_new)
        if new is None:
            return False, (f"{who} cannot go to {state_new!r}: definition {self.name!r} has no such state; "
                           f"its states are: {', '.join(self.states)}")
        force_text = f" (or a force-stop state: {', '.join(self._shown(self.force_stop))})" if self.force_stop else ""
        if state_old is None:
            if force or new.lower() in self.roots:
                return True, ""
            return False, (f"{who} has no state yet and cannot go to {new}; it may only go to a root state: "
                           f"{', '.join(self._shown(self.roots))} (or to any state with force)")
        old = self.state(state_old)
        if force:
            return True, ""
        if old is None:
            return False, (f"{who} is in state {state_old!r}, which definition {self.name!r} does not have (its "
                           f"states are: {', '.join(self.states)}); only a forced transition can move it")
        if new.lower() in self.force_stop:
            return True, ""
        nexts = self.transitions.get(old.lower(), ())
        if new.lower() in nexts:
            return True, ""
        if nexts:
            allowed = f"from {old} it may go to: {', '.join(self._shown(nexts))}{force_text}"
        elif self.force_stop:
            allowed = (f"{old} is a final state: it may only go on to a force-stop state: "
                       f"{', '.join(self._shown(self.force_stop))}")
        else:
            allowed = f"{old} is a final state: no transition leads out of it (only a forced one)"
        return False, f"{who} cannot go from {old} to {new}; {allowed}"

    def to_dict(self) -> dict[str, Any]:
        """ The definition as JSON-serialisable data, in the definition's spelling. """
        return {
            "name": self.name,
            "version": self.version,
            "objects": list(self.objects),
            "states": list(self.states),
            "transitions": {self._display[key]: self._shown(values) for key, values in self.transitions.items()},
            "roots": self._shown(self.roots),
            "force_stop": self._shown(self.force_stop),
        }

    @property
    def final_states(self) -> tuple[str, ...]:
        """ The states no line leads out of (those only on the right of `State: next`), in the
        definition's spelling and order; force-stop states are not among them. """
        return tuple(state for state in self.states
                     if state.lower() not in self.transitions and state.lower() not in self.force_stop)

    def covers(self, object_type: str) -> bool:
        """ Whether the definition applies to `object_type` (compared without case). """
        wanted = object_type.strip().lower()
        return any(item.lower() == wanted for item in self.objects)


# ################################################################################################
# Parsing


def _is_underline(line: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= 2 and (set(stripped) == {"-"} or set(stripped) == {"="})


def _names(value: str, number: int, what: str, line_text: str) -> list[str]:
    """ A comma-separated list of names, none empty, none twice (compared without case). """
    items = [item.strip() for item in value.split(",")]
    if not value.strip():
        raise DefinitionError(f"{line_text!r} lists no {what}; give at least one after the ':', "
                              f"separated by commas", number)
    seen: dict[str, str] = {}
    for item in items:
        if not item:
            raise DefinitionError(f"{line_text!r} has an empty {what} name (two commas in a row, or a comma at "
                                  f"an end); remove the extra comma", number)
        if ":" in item:
            raise DefinitionError(f"{line_text!r}: {item!r} has a ':', which no name may have; one line defines "
                                  f"one state, `State: next state, other next state`", number)
        if item.lower() in seen:
            raise DefinitionError(f"{line_text!r} lists {what} {item!r} twice; list each once", number)
        seen[item.lower()] = item
    return items


@dataclass
class _Section:
    name: str
    line: int  # of the name
    lines: list[tuple[int, str]] = field(default_factory=list)  # (number, text) after the underline
    end: int = 0  # the last line of the section that is not blank


def _sections(text: str) -> tuple[list[_Section], list[str]]:
    """ The definitions of a text, each with its lines, and the text's lines. """
    raw = text.splitlines()
    sections: list[_Section] = []
    current: _Section | None = None
    index = 0
    while index < len(raw):
        number, line = index + 1, raw[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        if _is_underline(line):
            raise DefinitionError(f"the underline {line!r} has no definition name above it; put the name on the "
                                  f"line before it, e.g. {EXAMPLE.splitlines()[0]!r}", number)
        # the next line that is not a comment says whether this one names a new definition
        after = index
        while after < len(raw) and raw[after].strip().startswith("#"):
            after += 1
        if after < len(raw) and _is_underline(raw[after]):
            if ":" in line:
                raise DefinitionError(f"a definition's name may not contain ':' ({line!r}); name it in words, "
                                      f"e.g. 'Orders'", number)
            current = _Section(line, number, end=after + 1)
            sections.append(current)
            index = after + 1
            continue
        if current is None or (":" not in line and number > 1 and not raw[number - 2].strip()):
            raise DefinitionError(f"{line!r} is not followed by an underline: a definition starts with its name "
                                  f"and a line of '-' (or '=') characters under it, e.g. "
                                  f"{EXAMPLE.splitlines()[0]!r} then '------'", number)
        current.lines.append((number, line))
        current.end = number
    return sections, raw


def _parse_section(section: _Section, raw: list[str]) -> Definition:
    objects: list[str] | None = None
    objects_line = 0
    force_stop: list[str] = []
    force_line = 0
    transitions: dict[str, list[str]] = {}
    defined_at: dict[str, int] = {}
    display: dict[str, str] = {}
    order: list[str] = []

    def seen(name: str) -> None:
        key = name.lower()
        if key not in display:
            display[key] = name
            order.append(key)

    for number, line in section.lines:
        if ":" not in line:
            raise DefinitionError(f"{line!r} has no ':'; write `State: next state, other next state` "
                                  f"(or `Objects: ...`, `Force stop: ...`)", number)
        left, right = (part.strip() for part in line.split(":", 1))
        key = " ".join(left.lower().split())
        if not left:
            raise DefinitionError(f"{line!r} has no state name before the ':'; write `State: next state`", number)
        if key == "objects":
            if objects is not None:
                raise DefinitionError(f"a second 'Objects:' line in definition {section.name!r} (the first is on "
                                      f"line {objects_line}); list every object type on one line", number)
            objects, objects_line = _names(right, number, "object type", line), number
        elif key in FORCE_STOP_KEYS:
            if force_line:
                raise DefinitionError(f"a second 'Force stop:' line in definition {section.name!r} (the first is "
                                      f"on line {force_line}); list every force-stop state on one line", number)
            force_stop, force_line = _names(right, number, "state", line), number
        else:
            key = left.lower()
            if key in defined_at:
                raise DefinitionError(f"state {left!r} is defined twice in definition {section.name!r} (first on "
                                      f"line {defined_at[key]}); list all its next states on one line", number)
            nexts = _names(right, number, "state", line)
            defined_at[key] = number
            seen(left)
            for item in nexts:
                seen(item)
            transitions[key] = [item.lower() for item in nexts]

    if objects is None:
        raise DefinitionError(f"definition {section.name!r} has no 'Objects:' line; say which business object "
                              f"types it applies to, e.g. 'Objects: Order, Priority order'", section.line)
    if not transitions:
        raise DefinitionError(f"definition {section.name!r} has no transitions; add `State: next state` lines, "
                              f"e.g. 'New: Submitted'", section.line)

    normal = set(order)
    for item in force_stop:
        if item.lower() in normal:
            where = defined_at.get(item.lower()) or next(
                n for n, line in section.lines if n != force_line and n != objects_line and item.lower() in
                [x.strip().lower() for x in line.split(":", 1)[1].split(",")])
            raise DefinitionError(f"{item!r} is a force-stop state and also a normal state (line {where}); a "
                                  f"force-stop state is reached from any state and only that way: remove it from "
                                  f"the 'Force stop:' line or from line {where}, or give the two different names",
                                  force_line)
        seen(item)

    targets = {item for values in transitions.values() for item in values}
    roots = [key for key in transitions if key not in targets]
    if not roots:
        raise DefinitionError(f"definition {section.name!r} has no root state: every state on the left of a ':' is "
                              f"also the next state of another, so no object can enter it; add an entry state that "
                              f"no line leads to, e.g. 'New: {display[next(iter(transitions))]}'", section.line)
    reachable: set[str] = set()
    todo = list(roots)
    while todo:
        key = todo.pop()
        if key in reachable:
            continue
        reachable.add(key)
        todo.extend(transitions.get(key, ()))
    for key, number in defined_at.items():
        if key not in reachable:
            raise DefinitionError(f"state {display[key]!r} cannot be reached from the root state"
                                  f"{'s' if len(roots) > 1 else ''} {', '.join(display[r] for r in roots)}: no "
                                  f"line leads to it from there; list it as the next state of a reachable state, "
                                  f"or remove it", number)

    source = "\n".join(raw[section.line - 1:section.end]).strip("\n") + "\n"
    return Definition(name=section.name, objects=tuple(objects), states=tuple(display[key] for key in order),
                      transitions={key: tuple(values) for key, values in transitions.items()},
                      roots=tuple(roots), force_stop=tuple(item.lower() for item in force_stop), text=source)


def parse(text: str, file: str = "<text>") -> list[Definition]:
    """ Every definition of `text`, in order. Raises `DefinitionError` (with `.line`) for the
    first problem found, saying what is wrong and how to fix it. """
    if not isinstance(text, str):
        raise DefinitionError(f"a definition is text, not {type(text).__name__}", None, file)
    try:
        sections, raw = _sections(text)
        if not sections:
            raise DefinitionError(f"no definition in the text; write one, e.g.: {EXAMPLE!r}", 1 if text else None)
        definitions: list[Definition] = []
        names: dict[str, int] = {}
        owners: dict[str, tuple[str, str]] = {}  # object type (lower case) -> its definition, spelling
        for section in sections:
            if section.name.lower() in names:
                raise DefinitionError(f"a second definition named {section.name!r} (the first is on line "
                                      f"{names[section.name.lower()]}); give each definition its own name",
                                      section.line)
            names[section.name.lower()] = section.line
            definition = _parse_section(section, raw)
            for item in definition.objects:
                owner = owners.get(item.lower())
                if owner is not None:
                    line = next(n for n, line in section.lines if line.lower().startswith("objects"))
                    raise DefinitionError(f"object type {item!r} is listed by definition {owner[0]!r} and again by "
                                          f"{definition.name!r}; an object type follows one definition: remove it "
                                          f"from one of them", line)
                owners[item.lower()] = (definition.name, item)
            definitions.append(definition)
        return definitions
    except DefinitionError as exc:
        exc.file = file
        raise


def log_final_states(definition: Definition, origin: str) -> None:
    """ One INFO line naming the definition's final states: a state only on the right of
    `State: next` is final, so a typo there (`Confirmd`) makes a new final state, not an error. """
    force = f"; force stop: {', '.join(definition._shown(definition.force_stop))}" if definition.force_stop else ""
    logger.info("%s: BST definition %r: final states (a typo of a state's name makes a new one): %s%s", origin,
                definition.name, ", ".join(definition.final_states) or "(none)", force)


# ################################################################################################
# The configuration object type


def check_definition(data: Mapping[str, Any], partial: bool = False) -> list[dict[str, str]]:
    """ `ObjectType.check` of bst_definition: the text parses and holds exactly one definition,
    named as the object. """
    text = data.get("text")
    if text is None:
        return [] if partial else [{"field": "text", "error": "missing: give the definition's text"}]
    if not isinstance(text, str):
        return [{"field": "text", "error": f"expected text, got {type(text).__name__}"}]
    try:
        definitions = parse(text)
    except DefinitionError as exc:
        return [{"field": "text", "error": str(exc) if exc.line is not None else exc.message}]
    if len(definitions) != 1:
        names = ", ".join(repr(d.name) for d in definitions)
        return [{"field": "text", "error": f"the text holds {len(definitions)} definitions ({names}); an object "
                                           f"holds one: create one object per definition, or deploy the text as a "
                                           f".bst file"}]
    name = data.get("name")
    if isinstance(name, str) and name.strip() and definitions[0].name != name:
        return [{"field": "text", "error": f"line 1: the definition is named {definitions[0].name!r}, but the object "
                                           f"is named {name!r}; name both the same"}]
    log_final_states(definitions[0], OBJECT_TYPE)
    return []


BST_DEFINITION = ObjectType(OBJECT_TYPE, (
    Field("name", required=True, description="The definition's name, as on the first line of its text",
          example="Orders"),
    Field("text", required=True, description="The definition in BST's plain-text format: its name, an underline, "
                                             "`Objects: A, B`, `State: next, next` lines and optionally "
                                             "`Force stop: X, Y`", example=EXAMPLE),
    Field("description", default="", description="What the definition is for (or the .bst file it was deployed "
                                                 "from)"),
    Field("is_active", "bool", default=True, description="An inactive definition is not used for transitions"),
), description="A business state transitions (BST) definition: which states objects of its types go through",
    check=check_definition)


# ################################################################################################
# The definitions a server uses

_CACHE: dict[tuple[str, int, str], Definition | None] = {}
_CACHE_MAX = 1024


def version_of(obj: Mapping[str, Any]) -> int:
    """ The version the core keeps of a configuration object (1 for a new one). """
    meta = obj.get("_meta") or {}
    version = meta.get("version") if isinstance(meta, Mapping) else None
    return version if isinstance(version, int) else 1


def _parsed(name: str, version: int, text: str) -> Definition | None:
    key = (name, version, text)
    if key in _CACHE:
        return _CACHE[key]
    result: Definition | None = None
    try:
        definitions = parse(text, file=f"{OBJECT_TYPE} {name!r}")
        if len(definitions) != 1 or definitions[0].name != name:
            logger.error("%s %r is not used: its text holds %s, not the one definition named %r; correct it "
                         "through the admin API or its .bst file", OBJECT_TYPE, name,
                         ", ".join(repr(d.name) for d in definitions), name)
        else:
            result = replace(definitions[0], version=version)
    except DefinitionError as exc:
        logger.error("%s %r is not used: %s; correct it through the admin API or its .bst file", OBJECT_TYPE, name, exc)
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[key] = result
    return result


def definitions_of(server: Any) -> dict[str, Definition]:
    """ The active definitions of the server by name, parsed once per (name, version). """
    out: dict[str, Definition] = {}
    for name, obj in (server.config_objects.get(OBJECT_TYPE) or {}).items():
        if obj.get("is_active") is False or not isinstance(obj.get("text"), str):
            continue
        definition = _parsed(name, version_of(obj), obj["text"])
        if definition is not None:
            out[name] = definition
    return out


def definition_for(server: Any, object_type: str | None, def_name: str | None = None) -> Definition:
    """ The definition named `def_name` (compared without case; it must cover `object_type` if
    one is given), or the one definition covering `object_type`. Raises `DefinitionNotFound`
    (a LookupError) naming what is known. """
    definitions = definitions_of(server)
    known = ", ".join(sorted(definitions)) or "(none)"
    if def_name:
        found = definitions.get(def_name) or next(
            (d for name, d in definitions.items() if name.lower() == def_name.strip().lower()), None)
        if found is None:
            raise DefinitionNotFound(f"no active BST definition named {def_name!r}; the definitions are: {known}")
        if object_type and not found.covers(object_type):
            raise DefinitionNotFound(f"BST definition {found.name!r} does not apply to {object_type!r}; it applies "
                                     f"to: {', '.join(found.objects)}")
        return found
    if not object_type:
        raise DefinitionNotFound("give an object type or a definition name to find a BST definition")
    covering = [d for d in definitions.values() if d.covers(object_type)]
    if len(covering) == 1:
        return covering[0]
    if covering:
        raise DefinitionNotFound(f"{len(covering)} BST definitions apply to {object_type!r}: "
                                 f"{', '.join(d.name for d in covering)}; name the one to use")
    objects = ", ".join(sorted({f"{o} ({d.name})" for d in definitions.values() for o in d.objects})) or "(none)"
    raise DefinitionNotFound(f"no active BST definition applies to object type {object_type!r}; the object types "
                             f"known are: {objects}")


# ################################################################################################
# .bst files, deployed like services


def _description(file_name: str) -> str:
    return f"{DEPLOYED_FROM}{file_name}"


def _store(server: Any, file_name: str, definitions: list[Definition]) -> tuple[list[str], bool]:
    """ Blocking: each definition stored (when its text or origin changed), the ones this file
    deployed before and no longer holds deleted; the names deployed, and whether anything changed. """
    description = _description(file_name)
    changed = False
    wanted = {d.name for d in definitions}
    for definition in definitions:
        try:
            current = server.odb.get_object(OBJECT_TYPE, definition.name)
        except LookupError:
            current = None
        if current is not None and current.get("text") == definition.text and \
                current.get("description") == description and current.get("is_active", True):
            continue
        if current is not None and current.get("description") != description:
            logger.warning("%s %r (%s) is replaced by the one in %s", OBJECT_TYPE, definition.name,
                           current.get("description") or "created through the admin API", file_name)
        server.odb.put_object(OBJECT_TYPE, definition.name, {
            "name": definition.name, "text": definition.text, "description": description, "is_active": True})
        changed = True
    for obj in server.odb.list_objects(OBJECT_TYPE, active_only=False):
        if obj.get("description") == description and obj["name"] not in wanted:
            server.odb.delete_object(OBJECT_TYPE, obj["name"])
            changed = True
    return [d.name for d in definitions], changed


def _remove(server: Any, file_name: str) -> list[str]:
    description = _description(file_name)
    removed = []
    for obj in server.odb.list_objects(OBJECT_TYPE, active_only=False):
        if obj.get("description") == description:
            try:
                server.odb.delete_object(OBJECT_TYPE, obj["name"])
            except LookupError:
                continue
            removed.append(obj["name"])
    return removed


async def deploy_file(server: Any, file_name: str, source: bytes) -> list[str]:
    """ Deploys a .bst file: each of its definitions stored as a bst_definition object (every
    worker re-reads them). Returns the names deployed; raises DeploymentError for a bad file. """
    from zato.plugin_api import DeploymentError
    try:
        text = source.decode("utf-8") if isinstance(source, (bytes, bytearray)) else str(source)
    except UnicodeDecodeError as exc:
        raise DeploymentError(f"{file_name}: not UTF-8 text (byte {exc.start}); save the file as UTF-8",
                              file=file_name) from None
    try:
        definitions = parse(text, file=file_name)
    except DefinitionError as exc:
        where = f"{file_name}:{exc.line}" if exc.line is not None else file_name
        raise DeploymentError(f"{where}: {exc.message}", file=file_name, line=exc.line) from None
    for definition in definitions:
        log_final_states(definition, file_name)
    names, changed = await trio.to_thread.run_sync(_store, server, file_name, definitions)
    if changed:
        await server.notify(CONFIG_CHANGED, {"types": [OBJECT_TYPE]})
    logger.info("%s: BST definitions %s%s", file_name, ", ".join(names), "" if changed else " (unchanged)")
    return names


async def undeploy_file(server: Any, file_name: str) -> list[str]:
    """ Deletes the definitions deployed from `file_name`; returns their names. """
    removed = await trio.to_thread.run_sync(_remove, server, file_name)
    if removed:
        await server.notify(CONFIG_CHANGED, {"types": [OBJECT_TYPE]})
        logger.info("%s: BST definitions %s undeployed", file_name, ", ".join(removed))
    return removed


DEPLOYABLE = DeployableFile(".bst", deploy_file, undeploy_file, "BST definitions (business state transitions)")
