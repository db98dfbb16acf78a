""" The generic object model: validating configuration objects against their type's schema,
storing their secrets, and resolving `$NAME` environment references when they are loaded.

Every object type - the core's and every plugin's - goes through these functions, so storage,
validation, the admin API and enmasse work the same for all of them.

Secrets (`Field(secret=True)`) are never stored in clear and never returned:

* `secret_storage="encrypt"` (passwords the server must send elsewhere: SMTP, SQL...):
  Fernet-encrypted with a key kept in the server directory (`config/secret.key`), outside the
  database; stored as `enc:v1:<token>`.
* `secret_storage="hash"` (passwords the server only checks: inbound Basic Auth): scrypt,
  stored as `scrypt$...`.
* A secret written as `$NAME` is kept as that reference and read from the environment when the
  object is loaded.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from zato.config import ENV_REFERENCE, FALSE_WORDS, TRUE_WORDS, to_bool
from zato.registry import Field, ObjectType

logger = logging.getLogger("zato.objects")

ENCRYPTED_PREFIX = "enc:v1:"
HASHED_PREFIX = "scrypt$"
RESERVED = ("name", "is_active")
NAME_MAX_LENGTH = 400  # the `name` column of the configuration database (zato.odb)


class ObjectValidationError(Exception):
    """ An object does not match its type's schema; `errors` lists every bad field. """

    def __init__(self, object_type: str, name: str | None, errors: list[dict[str, str]]) -> None:
        self.object_type = object_type
        self.name = name
        self.errors = errors
        listed = "; ".join(f"{e['field']}: {e['error']}" for e in errors)
        super().__init__(f"invalid {object_type} {name!r}: {listed}" if name else f"invalid {object_type}: {listed}")


class ObjectEnvError(Exception):
    """ An object's field names an environment variable that is not set. """


def is_env_reference(value: Any) -> bool:
    return isinstance(value, str) and bool(ENV_REFERENCE.match(value))


# ################################################################################################
# Validation and the JSON Schema of a field: one place, so that the OpenAPI document describes
# exactly what `validate` accepts. Text forms (digits for an int, "yes"/"off" for a bool, "a, b"
# for a list) are read with the same regular expressions the schema publishes.


def secret_call(type_name: str, name: str, field: str) -> str:
    """ The admin API call that sets one secret of one object, for messages that tell a user how to
    set a missing or refused password or token: `PUT /zato/api/objects/outgoing_ftp/My%20FTP/secrets/password`. """
    from urllib.parse import quote
    return f"PUT /zato/api/objects/{type_name}/{quote(name, safe='')}/secrets/{field}"


def _caseless(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word)


BOOL_TEXT = r"^\s*(?:" + "|".join(_caseless(w) for w in sorted(TRUE_WORDS | FALSE_WORDS, key=lambda w: (-len(w), w))
                                  if w) + r")?\s*$"
ENV_SCHEMA = {"type": "string", "pattern": r"^\$[A-Za-z_][A-Za-z0-9_]*$",
              "description": "an environment variable reference, read when the object loads"}
NAME_TEXT = r"^[^\x00]*[^\s\x00][^\x00]*$"  # something other than white space, and no NUL
LIST_SEPARATORS = re.compile(r"[,\n]")
IS_ACTIVE = Field("is_active", "bool", default=True, description="Inactive objects are stored but not used")
NAME_FIELD = Field("name", required=True, min_length=1, max_length=NAME_MAX_LENGTH)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", tuple: "a list", str: "text", bool: "a boolean",
            type(None): "null", int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _digit_range(lo: str, hi: str) -> list[str]:
    """ Regular expressions (alternatives) for the integers lo..hi, written with as many digits. """
    if lo == hi:
        return [lo]
    if set(lo) == {"0"} and set(hi) == {"9"}:
        return [f"[0-9]{{{len(lo)}}}"]
    if len(lo) == 1:
        return [f"[{lo}-{hi}]"]
    if lo[0] == hi[0]:
        return [lo[0] + rest for rest in _digit_range(lo[1:], hi[1:])]
    tail = len(lo) - 1
    parts = [lo[0] + rest for rest in _digit_range(lo[1:], "9" * tail)]
    if int(hi[0]) - int(lo[0]) > 1:
        parts.append(f"[{int(lo[0]) + 1}-{int(hi[0]) - 1}][0-9]{{{tail}}}")
    return parts + [hi[0] + rest for rest in _digit_range("0" * tail, hi[1:])]


def integer_range_pattern(lo: int, hi: int | None) -> str:
    """ A regular expression (no anchors) matching the integers lo..hi written in digits without
    leading zeros (hi None: no upper limit); lo >= 0. """
    parts: list[str] = []
    top = len(str(hi)) if hi is not None else len(str(lo))
    for length in range(len(str(lo)), top + 1):
        first = lo if length == len(str(lo)) else 10 ** (length - 1)
        last = hi if hi is not None and length == len(str(hi)) else 10 ** length - 1
        if first <= last:
            parts += _digit_range(str(first), str(last))
    if hi is None:
        parts.append(f"[1-9][0-9]{{{len(str(lo))},}}")
    return "|".join(parts) or "(?!)"


def _whole(value: Any) -> bool:
    return value is not None and float(value).is_integer() and value >= 0


def number_text_pattern(field: Field) -> str | None:
    """ What text must look like to be read as the field's number (int, float), or None when the
    field takes numbers only (a range that a regular expression cannot say). """
    lo, hi = field.minimum, field.maximum
    if field.type == "int":
        if lo is None and hi is None:
            digits = r"[+-]?[0-9]+"
        elif _whole(lo) and (hi is None or _whole(hi)):
            digits = r"\+?0*(?:" + integer_range_pattern(int(lo), None if hi is None else int(hi)) + ")"
        else:
            return None
    elif field.type == "float":
        if lo is None and hi is None:
            digits = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
        elif hi is None and _whole(lo):  # x >= N (a whole N) exactly when the whole part of x is >= N
            digits = r"\+?(?:0*(?:" + integer_range_pattern(int(lo), None) + r")(?:\.[0-9]*)?" + \
                     (r"|\.[0-9]+" if lo == 0 else "") + ")"
        else:
            return None
    else:
        return None
    return r"^\s*" + digits + r"\s*$"


def _numbers_as_text(field: Field) -> bool:
    """ Whether a number given for a text field is taken as its text (YAML's `db_name: 2024`). """
    return field.type in ("str", "text") and not field.choices and field.max_length is None


def _list_as_text(field: Field) -> bool:
    """ Whether a list field also takes "a, b" or one item per line (free text items only). """
    return field.item_type in (None, "str") and not field.item_choices and not field.unique_items \
        and field.max_length is None


def _item_field(field: Field) -> Field:
    return Field(field.name, field.item_type or "any", required=True, choices=field.item_choices)


def _unicode_problem(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid Unicode text (a lone surrogate at character {exc.start + 1})"
    return None


def _in_range(field: Field, number: float) -> None:
    lo, hi = field.minimum, field.maximum
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        if lo is not None and hi is not None:
            raise ValueError(f"must be from {lo:g} to {hi:g}, not {number!r}")
        raise ValueError(f"must be {lo:g} or more, not {number!r}" if lo is not None
                         else f"must be {hi:g} or less, not {number!r}")


def _length(field: Field, size: int, what: str) -> None:
    lo = field.min_length if field.min_length is not None else (1 if field.required and what == "characters" else None)
    if lo is not None and size < lo:
        raise ValueError("must not be empty" if lo == 1 and what == "characters" else
                         f"must have at least {lo} {what}, not {size}")
    if field.max_length is not None and size > field.max_length:
        raise ValueError(f"must have at most {field.max_length} {what}, not {size}")


def _in_choices(value: Any, choices: tuple[Any, ...]) -> bool:
    return any(type(value) is type(choice) and value == choice for choice in choices) or \
        any(isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(choice, (int, float))
            and not isinstance(choice, bool) and value == choice for choice in choices)


def _convert(field: Field, value: Any, *, text_lists: bool = False) -> Any:
    """ `value` (not None, not a `$NAME` reference) as the field's type, checked against its
    choices and constraints; raises ValueError saying what is wrong. `text_lists`: any list may be
    given as text (values read from the environment are text). """
    if field.choices is not None:
        if field.type in ("str", "text") and not isinstance(value, (str, int, float)):
            raise ValueError(f"expected text, got {_kind(value)}")
        if not _in_choices(value, field.choices):
            raise ValueError(f"{_shown(value)} is not one of: {', '.join(str(c) for c in field.choices)}")
        return value
    kind = field.type
    if kind in ("str", "text", "datetime"):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and _numbers_as_text(field) \
                and math.isfinite(value):
            return str(value)
        if not isinstance(value, str):
            raise ValueError(f"expected text, got {_kind(value)}" +
                             ("; quote it" if isinstance(value, (bool, int, float)) else ""))
        problem = _unicode_problem(value)
        if problem:
            raise ValueError(problem)
        _length(field, len(value), "characters")
        return value
    if kind == "int":
        if isinstance(value, str):
            pattern = number_text_pattern(field)
            if pattern is None or not re.search(pattern, value):
                raise ValueError(f"expected an integer, got {_shown(value)}")
            number = int(value.strip())
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
            number = int(value)
        else:
            raise ValueError(f"expected an integer, got {_shown(value) if isinstance(value, float) else _kind(value)}")
        _in_range(field, number)
        return number
    if kind == "float":
        if isinstance(value, str):
            pattern = number_text_pattern(field)
            if pattern is None or not re.search(pattern, value):
                raise ValueError(f"expected a number, got {_shown(value)}")
            number = float(value.strip())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                raise ValueError("the number is too large") from None
        else:
            raise ValueError(f"expected a number, got {_kind(value)}")
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {number!r}")
        _in_range(field, number)
        return number
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and re.search(BOOL_TEXT, value):
            return to_bool(value)
        raise ValueError(f"expected true or false, got {_shown(value) if isinstance(value, (str, int, float)) else _kind(value)}")
    if kind == "list":
        if isinstance(value, str):
            if not (text_lists or _list_as_text(field)):
                raise ValueError(f"expected a list, got text ({_shown(value)}); write it as a list, e.g. [a, b]")
            items = [item.strip() for item in LIST_SEPARATORS.split(value) if item.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ValueError(f"expected a list, got {type(value).__name__}")
        if field.item_type is not None or field.item_choices is not None:
            item_field = _item_field(field)
            for index, item in enumerate(items):
                if item is None:
                    raise ValueError(f"item {index + 1}: must not be null")
                try:
                    items[index] = _convert(item_field, item, text_lists=text_lists)
                except ValueError as exc:
                    raise ValueError(f"item {index + 1}: {exc}") from None
        if field.unique_items:
            for index, item in enumerate(items):
                if item in items[:index]:
                    raise ValueError(f"item {index + 1}: {_shown(item)} is given twice")
        _length(field, len(items), "items")
        return items
    if kind == "dict":
        if not isinstance(value, dict):
            raise ValueError(f"expected an object, got {type(value).__name__}")
        return value
    if kind == "any":
        return value
    raise ValueError(f"the schema names an unknown type {kind!r}")


def _default(field: Field) -> Any:
    return list(field.default) if isinstance(field.default, list) else field.default


def field_value(field: Field, value: Any, *, text_lists: bool = False) -> Any:
    """ What `validate` keeps for one field: null is the default (refused for a required field),
    a `$NAME` reference is kept as written (except for is_active, which lives in its own column),
    anything else goes through `_convert`. """
    if value is None:
        if field.required:
            raise ValueError("must not be null (it is required)")
        return _default(field)
    if field.name == "is_active":
        if is_env_reference(value):
            raise ValueError("is kept in its own column: give true or false, not an environment variable")
        return _convert(IS_ACTIVE, value)
    if is_env_reference(value):
        return value
    if field.secret:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise ValueError(f"expected text, got {_kind(value)}")
        problem = _unicode_problem(value)
        if problem:
            raise ValueError(problem)
        return value
    return _convert(field, value, text_lists=text_lists)


def name_problem(name: Any) -> str | None:
    """ Why `name` cannot name an object (None if it can). """
    if name is None:
        return "missing (every object needs a name)"
    if not isinstance(name, str):
        return f"expected text, got {_kind(name)}"
    if not name.strip():
        return "must not be empty (every object needs a name)"
    if len(name) > NAME_MAX_LENGTH:
        return f"must have at most {NAME_MAX_LENGTH} characters, not {len(name)}"
    if "\x00" in name:
        return "must not contain NUL characters"
    return _unicode_problem(name)


def field_schema(field: Field, *, for_output: bool = False) -> dict[str, Any]:
    """ The JSON Schema of one field: what `validate` takes (`for_output`: what the admin API
    returns, the stored values). Description, default and examples are the caller's. """
    if field.name == "name":
        return {"type": "string", "minLength": 1, "maxLength": NAME_MAX_LENGTH, "pattern": NAME_TEXT}
    if field.name == "is_active":
        return {"type": "boolean"} if for_output else {"anyOf": _value_schemas(IS_ACTIVE) + [{"type": "null"}]}
    if for_output:  # the stored value, a `$NAME` reference or null
        branches = [_output_schema(field)]
        if branches[0] != {"type": "string"}:
            branches.append({"type": "string"})
    else:
        branches = [{"enum": list(field.choices)}] if field.choices is not None else _value_schemas(field)
        if field.choices is not None or field.type not in ("str", "text") or field.min_length \
                or field.max_length is not None:  # else the text branch takes `$NAME` already
            branches.append(dict(ENV_SCHEMA))
    if not field.required or for_output:
        branches.append({"type": "null"})
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def _output_schema(field: Field) -> dict[str, Any]:
    if field.choices is not None:
        return {"enum": list(field.choices)}
    kind = {"str": "string", "text": "string", "datetime": "string", "int": "integer", "float": "number",
            "bool": "boolean", "list": "array", "dict": "object"}.get(field.type)
    return {"type": kind} if kind else {}


def _value_schemas(field: Field) -> list[dict[str, Any]]:
    """ The forms a field's value may take, other than null and `$NAME`. """
    kind = field.type
    if kind in ("str", "text", "datetime"):
        text: dict[str, Any] = {"type": "string"}
        min_length = field.min_length if field.min_length is not None else (1 if field.required else None)
        if min_length:
            text["minLength"] = min_length
        if field.max_length is not None:
            text["maxLength"] = field.max_length
        if kind == "datetime":
            text["format"] = "date-time"
        return [text, {"type": "number"}] if _numbers_as_text(field) and kind != "datetime" else [text]
    if kind in ("int", "float"):
        number: dict[str, Any] = {"type": "integer" if kind == "int" else "number"}
        if field.minimum is not None:
            number["minimum"] = field.minimum
        if field.maximum is not None:
            number["maximum"] = field.maximum
        pattern = number_text_pattern(field)
        return [number, {"type": "string", "pattern": pattern}] if pattern else [number]
    if kind == "bool":
        return [{"type": "boolean"}, {"enum": [0, 1]}, {"type": "string", "pattern": BOOL_TEXT}]
    if kind == "list":
        array: dict[str, Any] = {"type": "array"}
        if field.item_type is not None or field.item_choices is not None:
            array["items"] = _item_schema(field)
        if field.unique_items:
            array["uniqueItems"] = True
        if field.min_length:
            array["minItems"] = field.min_length
        if field.max_length is not None:
            array["maxItems"] = field.max_length
        if not _list_as_text(field):
            return [array]
        text = {"type": "string", "description": "the items separated by commas or new lines"}
        if field.min_length:
            text["pattern"] = r"[^\s,]"
        return [array, text]
    if kind == "dict":
        return [{"type": "object"}]
    return [{}]


def _item_schema(field: Field) -> dict[str, Any]:
    item_field = _item_field(field)
    if item_field.choices is not None:
        return {"enum": list(item_field.choices)}
    branches = _value_schemas(item_field)
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def validate(object_type: ObjectType, data: Mapping[str, Any], *, partial: bool = False,
             allow_secrets: bool = False, run_check: bool = True, check_choices: bool = True) -> dict[str, Any]:
    """ A clean copy of `data`: known fields only, typed, defaults filled in (unless `partial`).
    Raises `ObjectValidationError` listing every bad field: the type of every value, null for a
    required field, list items, ranges and lengths (`field_schema` publishes the same rules).
    Secrets are refused unless `allow_secrets` (they have their own call); when allowed they are
    returned in clear and must go through `store_secrets` before storage. When the schema is met,
    the type's own `check(clean, partial=partial)` (if it has one, and `run_check`) adds the
    errors it finds on the fields that are valid. `check_choices=False` takes text outside a
    field's `choices` (the plugin using the value reports it in its own words).
    """
    name = data.get("name")
    errors: list[dict[str, str]] = []
    known = {f.name: f for f in object_type.fields}
    clean: dict[str, Any] = {}

    if "name" in data or not partial:
        problem = name_problem(name)
        if problem:
            errors.append({"field": "name", "error": problem})
        else:
            clean["name"] = name
    for key, value in data.items():
        if not isinstance(key, str):
            errors.append({"field": str(key), "error": "field names must be text"})
            continue
        if key.startswith("_") or key == "name":
            continue
        field = known.get(key) or (IS_ACTIVE if key == "is_active" else None)
        if field is None:
            valid = ", ".join(sorted(known)) or "(none)"
            errors.append({"field": key, "error": f"not a field of {object_type.name}; valid fields: {valid}"})
            continue
        if field.secret and not allow_secrets:
            errors.append({"field": key, "error": "a secret: set it with its own call (PUT .../secrets/" + key + ")"})
            continue
        if field.choices is not None and not check_choices:
            field = replace(field, choices=None)
        try:
            clean[key] = field_value(field, value)
        except ValueError as exc:
            errors.append({"field": key, "error": str(exc)})

    if not partial:
        for field in object_type.fields:
            if field.name in clean or field.name in data or field.secret:
                continue
            if field.required and field.name not in RESERVED:
                errors.append({"field": field.name, "error": "missing (it is required)"})
            elif field.default is not None:
                clean[field.name] = _default(field)
    if object_type.check is not None and run_check:  # the type's own checks, on the typed and valid fields
        bad = {error["field"] for error in errors}
        try:
            errors.extend(error for error in object_type.check(clean, partial=partial) if error["field"] not in bad)
        except Exception as exc:
            if not errors:  # a defect of the plugin, reported rather than answered with a 500
                logger.exception("the check of object type %s failed", object_type.name)
                errors.append({"field": "(object)", "error": f"the {object_type.name} check failed "
                                                             f"({type(exc).__name__}: {exc}); report it to the "
                                                             f"plugin's authors"})
    if errors:
        raise ObjectValidationError(object_type.name, name if isinstance(name, str) else None, errors)
    return clean


# ################################################################################################
# Secrets


class SecretBox:
    """ Encrypts and decrypts secrets with a Fernet key kept in a file outside the database. """

    def __init__(self, key_file: Path) -> None:
        self.key_file = Path(key_file)
        self._fernet: Any = None

    @staticmethod
    def create_key(key_file: Path) -> None:
        from cryptography.fernet import Fernet
        key_file = Path(key_file)
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())

    def _box(self) -> Any:
        if self._fernet is None:
            from cryptography.fernet import Fernet
            if not self.key_file.exists():
                self.create_key(self.key_file)
            self._fernet = Fernet(self.key_file.read_bytes().strip())
        return self._fernet

    def encrypt(self, value: str) -> str:
        return ENCRYPTED_PREFIX + self._box().encrypt(value.encode("utf-8")).decode("ascii")

    def decrypt(self, stored: str) -> str:
        from cryptography.fernet import InvalidToken
        try:
            return self._box().decrypt(stored[len(ENCRYPTED_PREFIX):].encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise ValueError(f"cannot decrypt a secret with {self.key_file}: the key is not the one it was "
                             f"encrypted with; set the secret again") from None


def storage_of(field: Field, data: Mapping[str, Any] | None = None) -> str:
    """ How a secret field is stored for this object: "hash" or "encrypt". A field may decide
    per object (a security definition used to check callers is hashed; one whose password an
    outgoing connection sends is encrypted). """
    storage = field.secret_storage
    return storage(data or {}) if callable(storage) else storage


def store_secret(field: Field, value: Any, box: SecretBox | None, data: Mapping[str, Any] | None = None) -> str | None:
    """ The stored form of a secret: encrypted, hashed, or a `$NAME` reference kept as written.
    `data` is the object the secret belongs to. """
    if value is None or value == "":
        return None
    value = str(value)
    if is_env_reference(value):
        return value
    if storage_of(field, data) == "hash":
        from zato.passwords import hash_password
        return hash_password(value)
    if box is None:
        raise ValueError(f"the secret {field.name!r} is stored encrypted: a key (SecretBox) is needed")
    return box.encrypt(value)


def store_secrets(object_type: ObjectType, data: dict[str, Any], box: SecretBox) -> dict[str, Any]:
    """ `data` with every secret field turned into its stored form. """
    result = dict(data)
    for field in object_type.fields:
        if field.secret and field.name in result and not _is_stored(result[field.name]):
            result[field.name] = store_secret(field, result[field.name], box, data)
    return result


def _is_stored(value: Any) -> bool:
    return value is None or (isinstance(value, str) and (value.startswith((ENCRYPTED_PREFIX, HASHED_PREFIX))))


def public_view(object_type: ObjectType | None, obj: Mapping[str, Any]) -> dict[str, Any]:
    """ What the admin API returns: no secret values, only whether each secret is set. """
    result = {key: value for key, value in obj.items() if not key.startswith("_")}
    if object_type is None:
        return result
    secrets_set = []
    for field in object_type.fields:
        if field.secret:
            if result.pop(field.name, None):
                secrets_set.append(field.name)
    if any(f.secret for f in object_type.fields):
        result["secrets_set"] = sorted(secrets_set)
    if "_meta" in obj:
        result["version"] = obj["_meta"].get("version")
    return result


# ################################################################################################
# Loading: what runtimes (channels, connections) get


def runtime_view(object_type: ObjectType | None, obj: Mapping[str, Any], box: SecretBox | None,
                 environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """ The object as channels and connections use it: `$NAME` references read from the
    environment and typed, encrypted secrets decrypted (hashed ones stay hashed). Raises
    `ObjectEnvError` naming the object, the field and the variable. """
    environ = os.environ if environ is None else environ
    result = dict(obj)
    if object_type is None:
        return result
    name = obj.get("name")
    for field in object_type.fields:
        value = result.get(field.name)
        if is_env_reference(value):
            variable = value[1:]
            if variable not in environ:
                raise ObjectEnvError(
                    f"{object_type.name} {name!r}, field {field.name!r} = {value}: environment variable {variable} "
                    f"is not set on this server; export it and restart, or change the field")
            raw = environ[variable]
            try:
                result[field.name] = raw if field.secret else _convert(field, raw, text_lists=True)
            except ValueError as exc:
                raise ObjectEnvError(f"{object_type.name} {name!r}, field {field.name!r} = {value}: {exc}") from None
        elif field.secret and isinstance(value, str) and value.startswith(ENCRYPTED_PREFIX):
            if box is None:
                raise ObjectEnvError(f"{object_type.name} {name!r}: cannot decrypt {field.name!r} without the key")
            result[field.name] = box.decrypt(value)
    return result
