""" Reading server.conf and other INI files: `$NAME` environment references, comma lists,
typed keys declared by plugins, and warnings for keys nobody declared.
"""

from __future__ import annotations

import configparser
import difflib
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

from zato.registry import Setting, as_setting

ENV_REFERENCE = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")

TRUE_WORDS = frozenset(("true", "yes", "on", "1", "y", "t"))
FALSE_WORDS = frozenset(("false", "no", "off", "0", "n", "f", ""))


class ConfigError(Exception):
    """ A configuration file is unreadable or holds a value that cannot be used. """


class Bunch(dict):
    """ A dict whose keys are also attributes, as Zato's config objects are:
    `server_config.main.port` and `server_config['main']['port']` are the same value.
    Setting an attribute sets the key, so start-up callables can change config in place.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no config key {name!r}; known keys: {', '.join(sorted(self)) or '(none)'}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]


def as_bool(value: Any) -> bool:
    """ Zato's `as_bool`: True/False from bools, numbers and words like "yes", "off", "True". """
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, (int, float)):
        return bool(value)
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError(f"not a boolean: {value!r} (use True or False)")


def to_int(value: Any) -> int:
    """ An integer from an int, a whole float or digits; booleans are refused. """
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    raise ValueError(f"expected an integer, got {value!r}")


def to_float(value: Any) -> float:
    """ A number from a number or text; booleans are refused. """
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None


def to_bool(value: Any) -> bool:
    """ `as_bool` with an error message for users. """
    try:
        return as_bool(value)
    except ValueError:
        raise ValueError(f"expected true or false, got {value!r}") from None


def setting_number(settings: Any, field: str, kind: type, default: Any, *, check: Any = None,
                   expected: str = "", where: str = "") -> Any:
    """ A connection's numeric setting: `settings[field]` as `kind` (int or float), `default` when
    missing or empty; a value that is not a number, or that `check` refuses, raises ValueError
    `"<where>: <field> = <value> is not <expected>"`. """
    value = settings.get(field)
    if value is None or value == "":
        return default
    expected = expected or f"a{'n' if kind is int else ''} {'integer' if kind is int else 'number'}"
    prefix = f"{where}: " if where else ""
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{prefix}{field} = {value!r} is not {expected}") from None
    if check is not None and not check(number):
        raise ValueError(f"{prefix}{field} = {value!r} is not {expected}")
    return number


def _split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


class _Location:
    """ Where a value comes from, for error messages. """
    __slots__ = ("path", "section", "key")

    def __init__(self, path: Path | str, section: str, key: str) -> None:
        self.path, self.section, self.key = path, section, key

    def __str__(self) -> str:
        return f"{self.path}: [{self.section}] {self.key}"


def resolve_env(value: str, where: Any, environ: dict[str, str] | None = None) -> str:
    """ `$NAME` -> the environment variable NAME; anything else is returned as it is. """
    match = ENV_REFERENCE.match(value.strip())
    if not match:
        return value
    name = match.group(1)
    environ = os.environ if environ is None else environ
    try:
        return environ[name]
    except KeyError:
        raise ConfigError(
            f"{where} = ${name}: environment variable {name} is not set; "
            f"export {name} before starting, or write the value directly") from None


def _convert(value: Any, default: Any) -> Any:
    """ A value read from the file (or set by a start-up callable) as the type of the declared
    default; raises ValueError saying what is wrong. """
    if isinstance(default, bool):
        try:
            return as_bool(value)
        except ValueError:
            raise ValueError("not true or false") from None
    if isinstance(default, int):
        try:
            return to_int(value)
        except ValueError:
            raise ValueError("not an integer") from None
    if isinstance(default, float):
        try:
            number = to_float(value)
        except ValueError:
            raise ValueError("not a number") from None
        if not math.isfinite(number):
            raise ValueError("not a finite number")
        return number
    if isinstance(default, list):
        return value if isinstance(value, list) else _split_list(str(value))
    return value


def _in_range(value: Any, setting: Setting) -> Any:
    """ `value` if `setting` allows it (a choice in its declared spelling); raises ValueError. """
    if setting.non_empty and (value == [] or (isinstance(value, str) and not value.strip())):
        raise ValueError("must not be empty")
    if setting.choices is not None:
        items = value if isinstance(value, list) else [value]
        chosen = [_choice(item, setting.choices) for item in items]
        value = chosen if isinstance(value, list) else chosen[0]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if setting.exclusive_minimum is not None and value <= setting.exclusive_minimum:
            raise ValueError("too small")
        if setting.minimum is not None and value < setting.minimum:
            raise ValueError("too small")
        if setting.maximum is not None and value > setting.maximum:
            raise ValueError("too large")
    if setting.check is not None:
        setting.check(value)
    return value


def _choice(value: Any, choices: tuple[Any, ...]) -> Any:
    for choice in choices:
        if choice == value or (isinstance(choice, str) and isinstance(value, str)
                               and choice.lower() == value.strip().lower()):
            return choice
    raise ValueError("not one of the allowed values")


def check_value(value: Any, declared: Any, where: Any) -> Any:
    """ `value` of the key at `where`, typed and checked against its declaration (a `Setting` or
    a plain default); raises ConfigError naming the file, section, key and what is allowed. """
    setting = as_setting(declared)
    try:
        return _in_range(_convert(value, setting.default), setting)
    except (TypeError, ValueError) as exc:
        shown = "(not shown: a secret)" if setting.secret else repr(value)
        raise ConfigError(f"{where} = {shown}: {exc}; allowed: {setting.describe()}") from None


def _plain_value(raw: str) -> Any:
    """ A value of a key nobody declared: quoted text stays text, comma lists become lists. """
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    if "," in text:
        return _split_list(text)
    return text


def read_ini(path: Path | str, environ: dict[str, str] | None = None) -> Bunch:
    """ Reads an INI file into a Bunch of Bunches, resolving `$NAME` values and comma lists.
    Values stay untyped (strings and lists) until `apply_schema` types declared keys.
    """
    path = Path(path)
    parser = configparser.ConfigParser(interpolation=None, strict=True, default_section="\x00none")
    parser.optionxform = str  # keep key case as written
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; create it (`zato quickstart create DIR` writes one)") from None
    except configparser.Error as exc:
        raise ConfigError(f"{path}: not a valid INI file: {exc}") from None

    result = Bunch()
    for section in parser.sections():
        values = Bunch()
        for key, raw in parser.items(section):
            where = _Location(path, section, key)
            raw = resolve_env(raw, where, environ)
            value = _plain_value(raw)
            if isinstance(value, list):
                value = [resolve_env(item, where, environ) for item in value]
            values[key] = value
        result[section] = values
    result["__raw__"] = {s: dict(parser.items(s)) for s in parser.sections()}
    result["__path__"] = str(path)
    return result


def apply_schema(config: Bunch, sections: Iterable[Any]) -> list[str]:
    """ Types declared keys, fills in defaults and returns a warning for each unknown section
    or key, naming the nearest declared one. `sections` are `ServerConfigSection`s.
    """
    path = config.get("__path__", "server.conf")
    declared = {section.name: section for section in sections}
    warnings: list[str] = []

    for name, section in declared.items():
        values = config.setdefault(name, Bunch())
        raw_values = config.get("__raw__", {}).get(name, {})
        for key, declared_key in section.keys.items():
            where = _Location(path, name, key)
            default = as_setting(declared_key).default
            if key not in values:
                values[key] = list(default) if isinstance(default, list) else default
                continue
            value = values[key]
            if isinstance(default, str) and isinstance(value, list) and key in raw_values:
                # A declared text value keeps its commas (a password, a DSN)
                value = resolve_env(raw_values[key], where)
            values[key] = check_value(value, declared_key, where)

    for name, values in config.items():
        if name.startswith("__"):
            continue
        section = declared.get(name)
        if section is None:
            if name in SWITCH_SECTIONS:
                continue  # read by the core before plugins load (zato.plugins)
            hint = _nearest(name, declared)
            warnings.append(f"{path}: unknown section [{name}]{hint}; it is ignored")
            continue
        if section.free_form:
            continue
        for key in values:
            if key not in section.keys:
                hint = _nearest(key, section.keys)
                warnings.append(f"{path}: unknown key {key!r} in [{name}]{hint}; it is ignored")
    return warnings


def _nearest(name: str, known: Iterable[str]) -> str:
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")

# The keys the core reads before any plugin is loaded, so before the plugins' declarations are
# known: the essentials plugin declares them with these same Settings, and `check_startup_keys` checks
# them as soon as server.conf is read.
STARTUP_SETTINGS: dict[str, dict[str, Setting]] = {
    "main": {
        "workers": Setting(1, minimum=1, maximum=256, doc="Trio worker processes sharing the port; more "
                                                          "than 1 starts a supervising process"),
        "skip_broken_plugins": Setting(False, doc="Start without plugins that fail to import"),
    },
    "logging": {
        "level": Setting("INFO", choices=LOG_LEVELS, doc="The lowest level written to logs/server.log"),
    },
}
PLUGIN_SWITCH = Setting(True, allowed="True or False")

# Sections the core reads itself, before any plugin is loaded (zato.plugins): every key is a
# switch, and none is unknown to `apply_schema`. [deploy_internal] switches plugins and modules of
# internal services, as Zato's does; [plugins] is its name before, still read.
SWITCH_SECTIONS = ("deploy_internal", "plugins")


def check_startup_keys(config: Bunch) -> None:
    """ Types and checks the keys in `STARTUP_SETTINGS` and each switch of `SWITCH_SECTIONS`
    ([deploy_internal], [plugins]), in place; raises ConfigError naming the file, section, key
    and what is allowed. """
    path = config.get("__path__", "server.conf")
    for section, settings in STARTUP_SETTINGS.items():
        values = config.get(section) or {}
        for key, setting in settings.items():
            if key in values:
                values[key] = check_value(values[key], setting, _Location(path, section, key))
    for section in SWITCH_SECTIONS:
        for name, value in (config.get(section) or {}).items():
            check_value(value, PLUGIN_SWITCH, _Location(path, section, name))


def get_config(repo_location: str | Path, file_name: str) -> Bunch:
    """ Zato's `get_config`: reads `repo_location/file_name` as a Bunch. """
    return read_ini(Path(repo_location) / file_name)
