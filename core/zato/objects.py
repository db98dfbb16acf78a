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

import os
import re
from pathlib import Path
from typing import Any, Mapping

from zato.config import as_bool, to_bool, to_float, to_int
from zato.registry import Field, ObjectType

ENV_REFERENCE = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
ENCRYPTED_PREFIX = "enc:v1:"
HASHED_PREFIX = "scrypt$"
RESERVED = ("name", "is_active")


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


def _convert(field: Field, value: Any) -> Any:
    """ The value as the field's type; `$NAME` references are kept as written. """
    if value is None or is_env_reference(value):
        return value
    kind = field.type
    if kind == "str":
        if isinstance(value, (dict, list)):
            raise ValueError(f"expected text, got a {type(value).__name__}")
        return value if isinstance(value, str) else str(value)
    if kind == "int":
        return to_int(value)
    if kind == "float":
        return to_float(value)
    if kind == "bool":
        return to_bool(value)
    if kind == "list":
        if isinstance(value, str):
            return [item.strip() for item in value.splitlines() if item.strip()] if "\n" in value else \
                [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ValueError(f"expected a list, got {type(value).__name__}")
    if kind == "dict":
        if not isinstance(value, dict):
            raise ValueError(f"expected an object, got {type(value).__name__}")
        return value
    if kind in ("datetime", "text"):
        return str(value)
    raise ValueError(f"the schema names an unknown type {kind!r}")


def validate(object_type: ObjectType, data: Mapping[str, Any], *, partial: bool = False,
             allow_secrets: bool = False) -> dict[str, Any]:
    """ A clean copy of `data`: known fields only, typed, defaults filled in (unless `partial`).
    Raises `ObjectValidationError` listing every bad field. Secrets are refused unless
    `allow_secrets` (they have their own call); when allowed they are returned in clear and
    must go through `store_secrets` before storage. When the schema is met, the type's own
    `check(clean, partial=partial)` (if it has one) adds the errors it finds.
    """
    name = data.get("name")
    errors: list[dict[str, str]] = []
    known = {f.name: f for f in object_type.fields}
    clean: dict[str, Any] = {}

    if not partial and not (isinstance(name, str) and name.strip()):
        errors.append({"field": "name", "error": "missing (every object needs a name)"})
    for key, value in data.items():
        if key.startswith("_"):
            continue
        field = known.get(key)
        if field is None:
            if key in RESERVED:
                clean[key] = as_bool(value) if key == "is_active" and not isinstance(value, bool) else value
                continue
            valid = ", ".join(sorted(known)) or "(none)"
            errors.append({"field": key, "error": f"not a field of {object_type.name}; valid fields: {valid}"})
            continue
        if field.secret and not allow_secrets:
            errors.append({"field": key, "error": "a secret: set it with its own call (PUT .../secrets/" + key + ")"})
            continue
        try:
            clean[key] = _convert(field, value)
        except ValueError as exc:
            errors.append({"field": key, "error": str(exc)})
            continue
        if field.choices and clean[key] is not None and not is_env_reference(clean[key]) \
                and clean[key] not in field.choices:
            errors.append({"field": key, "error": f"{clean[key]!r} is not one of: "
                                                  f"{', '.join(str(c) for c in field.choices)}"})

    if not partial:
        for field in object_type.fields:
            if field.name in clean or field.secret:
                continue
            if field.required and field.name not in RESERVED:
                errors.append({"field": field.name, "error": "missing (it is required)"})
            elif field.default is not None:
                clean[field.name] = list(field.default) if isinstance(field.default, list) else field.default
    if not errors and object_type.check is not None:  # the type's own checks, on typed data
        errors.extend(object_type.check(clean, partial=partial))
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
        from zato.security import hash_password
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
                result[field.name] = raw if field.secret else _convert(field, raw)
            except ValueError as exc:
                raise ObjectEnvError(f"{object_type.name} {name!r}, field {field.name!r} = {value}: {exc}") from None
        elif field.secret and isinstance(value, str) and value.startswith(ENCRYPTED_PREFIX):
            if box is None:
                raise ObjectEnvError(f"{object_type.name} {name!r}: cannot decrypt {field.name!r} without the key")
            result[field.name] = box.decrypt(value)
    return result
