""" The plugin index (docs/plugin-index.md): a JSON file, {"format": 1, "plugins": [entry, ...]},
that organisations publish so `zato plugins list --available` shows their connectors beside the
installed ones. Read from a path, a file:// or an http(s):// URL; checked strictly, every problem
given with its JSON path. """

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from zato import __version__


def _console():
    from zato.cli import _console as console
    return console()


def _paths(base_dir: str | None):
    from zato.cli import _paths as paths
    return paths(base_dir)


# The plugin index (docs/plugin-index.md): {"format": 1, "plugins": [entry, ...]}
PLUGIN_INDEX_FORMAT = 1
PLUGIN_INDEX_KINDS = ("connector", "channel", "security", "feature", "tool", "other")
_INDEX_TOP_KEYS = {"format": True, "plugins": True, "name": False, "description": False, "index_url": False}
_INDEX_ENTRY_KEYS = {"name": True, "distribution": True, "summary": True, "version": True, "url": False,
                     "kind": False, "requires_core": False, "index_url": False}


class PluginIndexError(click.ClickException):
    """ A plugin index that cannot be read or is not valid: the location, each JSON path and what to do. """


def list_available(base_dir: str | None, config: Any, location: str | None, as_json: bool) -> None:
    from importlib import metadata
    from rich.markup import escape
    from rich.table import Table

    source = "--index"
    if location is None:
        location = str((config.get("main") or {}).get("plugin_index") or "").strip() if config else ""
        source = f"[main] plugin_index in {_paths(base_dir).server_conf}" if base_dir else ""
        if not location:
            where = f"set [main] plugin_index in {_paths(base_dir).server_conf}" if base_dir else \
                "give a server directory whose server.conf sets [main] plugin_index"
            raise click.UsageError(f"--available reads a plugin index: give --index PATH_OR_URL or {where} "
                                   f"(docs/plugin-index.md)")
    index = read_plugin_index(location, source)
    rows = []
    for entry in index["plugins"]:
        try:
            installed = metadata.distribution(entry["distribution"]).version
        except metadata.PackageNotFoundError:
            installed = None
        outdated = installed is not None and _version_key(installed) < _version_key(entry["version"])
        compatible = _core_satisfies(entry.get("requires_core"))
        rows.append({**entry, "installed": installed is not None, "installed_version": installed,
                     "outdated": outdated, "core_compatible": compatible})
    if as_json:
        click.echo(json.dumps({"index": location, "name": index.get("name", ""), "plugins": rows}, indent=2))
        return
    table = Table(title=f"Plugins in {index.get('name') or location}")
    for column in ("name", "distribution", "version", "installed", "kind", "about"):
        table.add_column(column)
    for row in rows:
        if not row["installed"]:
            installed_text = "[dim]no[/]"
        elif row["outdated"]:
            installed_text = f"[yellow]{escape(row['installed_version'])}, older[/]"
        else:
            installed_text = f"[green]{escape(row['installed_version'])}[/]"
        about = escape(row["summary"]) + (f"\n[link={escape(row['url'])}]{escape(row['url'])}[/link]"
                                          if row.get("url") else "")
        if row["core_compatible"] is False:
            about += f"\n[red]needs zato-core {escape(row['requires_core'])}; this is {escape(__version__)}[/]"
        table.add_row(row["name"], row["distribution"], row["version"], installed_text, row.get("kind") or "",
                      about)
    _console().print(table)
    for row in rows:  # one line each, never wrapped, so it can be copied
        if row["installed"] and not row["outdated"]:
            continue
        index_url = row.get("index_url") or index.get("index_url")
        option = f" --index-url {index_url}" if index_url else ""
        verb = f"is {row['installed_version']}, the index has {row['version']}: pip install -U" \
            if row["outdated"] else "is not installed: pip install"
        click.echo(f"{row['name']}: {row['distribution']} {verb}{option} {row['distribution']}=={row['version']}")


def read_plugin_index(location: str, source: str = "") -> dict[str, Any]:
    """ A plugin index read from a path, a file:// URL or an http(s):// URL and checked
    (`check_plugin_index`); `PluginIndexError` saying what is wrong and where otherwise. """
    from urllib.parse import unquote, urlparse
    given = f" ({source})" if source else ""
    parsed = urlparse(location)
    if parsed.scheme in ("http", "https"):
        import httpx
        try:
            response = httpx.get(location, timeout=30, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise PluginIndexError(f"plugin index {location}{given}: cannot download it: {type(exc).__name__}: "
                                   f"{exc}; check the URL and that the web server is up") from None
        if response.status_code != 200:
            raise PluginIndexError(f"plugin index {location}{given}: the web server answered {response.status_code} "
                                   f"{response.reason_phrase}; check the URL") from None
        text = response.text
    elif parsed.scheme in ("file", "") or (len(parsed.scheme) == 1 and os.name == "nt"):
        path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(location).expanduser()
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise PluginIndexError(f"plugin index {location}{given}: a file:// URL names a local file "
                                   f"(file:///path/to/index.json), not one on host {parsed.netloc!r}")
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise PluginIndexError(f"plugin index {location}{given}: cannot read {path}: "
                                   f"{exc.strerror or exc}") from None
    else:
        raise PluginIndexError(f"plugin index {location}{given}: {parsed.scheme}:// is not read; give a path, "
                               f"a file:// URL or an http(s):// URL")
    try:
        data = json.loads(text)
    except ValueError as exc:
        line, column = getattr(exc, "lineno", "?"), getattr(exc, "colno", "?")
        raise PluginIndexError(f"plugin index {location}{given}: line {line}, column {column}: not JSON: "
                               f"{getattr(exc, 'msg', exc)}; fix the file (docs/plugin-index.md shows the format)") \
            from None
    problems = check_plugin_index(data)
    if problems:
        raise PluginIndexError(f"plugin index {location}{given} is not valid ({len(problems)} problem"
                               f"{'s' if len(problems) != 1 else ''}; docs/plugin-index.md shows the format):\n"
                               + "\n".join(f"  {path}: {problem}" for path, problem in problems))
    return data


def check_plugin_index(data: Any) -> list[tuple[str, str]]:
    """ What is wrong with a plugin index, as (JSON path, what is wrong and what to do); empty if nothing. """
    import difflib
    import re
    problems: list[tuple[str, str]] = []

    def keys(obj: dict[str, Any], allowed: dict[str, bool], path: str) -> None:
        for key, required in allowed.items():
            if required and key not in obj:
                problems.append((path, f"{key!r} is missing; every {'entry' if path != '$' else 'index'} has "
                                       f"{', '.join(k for k, r in allowed.items() if r)}"))
        for key in obj:
            if key not in allowed:
                close = difflib.get_close_matches(key, list(allowed), n=1)
                problems.append((f"{path}.{key}", "unknown key" + (f"; did you mean {close[0]!r}?" if close else
                                                                    f"; the keys are {', '.join(allowed)}")))

    def text(obj: dict[str, Any], key: str, path: str) -> str | None:
        value = obj.get(key)
        if key in obj and (not isinstance(value, str) or not value.strip()):
            problems.append((f"{path}.{key}", f"must be a non-empty string, not {json.dumps(value)}"))
            return None
        return value

    if not isinstance(data, dict):
        return [("$", f"the index is a JSON object {{\"format\": {PLUGIN_INDEX_FORMAT}, \"plugins\": [...]}}, not "
                      f"{type(data).__name__}")]
    keys(data, _INDEX_TOP_KEYS, "$")
    if "format" in data and data["format"] != PLUGIN_INDEX_FORMAT:
        problems.append(("$.format", f"format {json.dumps(data['format'])} is not known; this zato reads format "
                                     f"{PLUGIN_INDEX_FORMAT} (a newer index may need a newer zato-core)"))
    for key in ("name", "description"):
        text(data, key, "$")
    _check_url(data, "index_url", "$", problems)
    entries = data.get("plugins", [])
    if not isinstance(entries, list):
        problems.append(("$.plugins", f"must be a list of entries, not {type(entries).__name__}"))
        return problems
    seen: dict[str, str] = {}
    for number, entry in enumerate(entries):
        path = f"$.plugins[{number}]"
        if not isinstance(entry, dict):
            problems.append((path, f"an entry is an object with name, distribution, summary and version, not "
                                   f"{json.dumps(entry)}"))
            continue
        keys(entry, _INDEX_ENTRY_KEYS, path)
        name = text(entry, "name", path)
        if name is not None and not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            problems.append((f"{path}.name", f"{name!r} is not a plugin name: the entry point's name, lower-case "
                                             f"letters, digits and _ (as ibm_mq)"))
        elif name is not None:
            if name in seen:
                problems.append((f"{path}.name", f"{name!r} is listed already at {seen[name]}; list each plugin once"))
            seen.setdefault(name, path)
        distribution = text(entry, "distribution", path)
        if distribution is not None and not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", distribution):
            problems.append((f"{path}.distribution", f"{distribution!r} is not a distribution name (as "
                                                     f"zato-plugin-ibm-mq)"))
        text(entry, "summary", path)
        version = text(entry, "version", path)
        if version is not None and _version_key(version, strict=True) is None:
            problems.append((f"{path}.version", f"{version!r} is not a version (PEP 440), e.g. \"1.2.0\""))
        kind = entry.get("kind")
        if "kind" in entry and kind not in PLUGIN_INDEX_KINDS:
            problems.append((f"{path}.kind", f"{json.dumps(kind)} is not one of {', '.join(PLUGIN_INDEX_KINDS)}"))
        requires = text(entry, "requires_core", path)
        if requires is not None and _core_satisfies(requires) is None:
            problems.append((f"{path}.requires_core", f"{requires!r} is not a version specifier (PEP 440), e.g. "
                                                      f"\">=0.1,<2\""))
        _check_url(entry, "url", path, problems)
        _check_url(entry, "index_url", path, problems)
    return problems


def _check_url(obj: dict[str, Any], key: str, path: str, problems: list[tuple[str, str]]) -> None:
    from urllib.parse import urlparse
    if key not in obj:
        return
    value = obj[key]
    parsed = urlparse(value) if isinstance(value, str) else None
    if parsed is None or parsed.scheme not in ("http", "https", "file") or not (parsed.netloc or parsed.path):
        problems.append((f"{path}.{key}", f"must be an http(s):// (or file://) URL, not {json.dumps(value)}"))


def _version_key(version: str, strict: bool = False) -> Any:
    """ A comparable form of a version (packaging's, where it is installed); None if it is not one. """
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:  # numbers only, compared as numbers
        import re
        match = re.fullmatch(r"v?(\d+(?:\.\d+)*)([-_.+]?[A-Za-z0-9.+-]*)?", version.strip())
        if match is None:
            return None if strict else (0,)
        return tuple(int(part) for part in match.group(1).split("."))
    try:
        return Version(version)
    except InvalidVersion:
        return None if strict else Version("0")


def _core_satisfies(requires: str | None) -> bool | None:
    """ Whether this zato-core is what `requires` (">=0.1,<2") asks for; None for no requirement or one
    that is not a version specifier. """
    if not requires:
        return None
    try:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet
    except ImportError:
        return True
    try:
        return SpecifierSet(requires).contains(__version__, prereleases=True)
    except InvalidSpecifier:
        return None
