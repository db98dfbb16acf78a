""" The start-up cache: what deploying internal services found, so the next start can skip
importing their modules (they are imported on first use instead).

The cache is keyed by the Zato version, the enabled plugins with their distributions and
versions, and the path, size and modification time of every internal service module. Any
change to those, a file that does not parse, or a checksum that does not match means the
cache is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from zato import __version__
from zato.server.deployment import ServiceEntry

FORMAT = 1


def cache_key(plugin_fingerprint: list[tuple[str, str, str]], modules: list[str]) -> str:
    files = []
    for module in sorted(modules):
        spec = importlib.util.find_spec(module)
        origin = spec.origin if spec and spec.origin else ""
        try:
            stat = os.stat(origin)
            files.append((module, origin, stat.st_size, stat.st_mtime_ns))
        except OSError:
            files.append((module, origin, -1, -1))
    material = json.dumps([__version__, plugin_fingerprint, files], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


def _checksum(key: str, entries: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps([key, entries], sort_keys=True).encode()).hexdigest()


def load(path: Path, key: str) -> tuple[list[ServiceEntry] | None, str]:
    """ The cached entries, or None and why the cache cannot be used. """
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None, "no cache yet"
    except (OSError, ValueError) as exc:
        return None, f"cache file is corrupt ({type(exc).__name__})"
    try:
        if data["format"] != FORMAT:
            return None, "cache format changed"
        if data["key"] != key:
            return None, "plugins or their files changed"
        entries = data["entries"]
        if data["checksum"] != _checksum(key, entries):
            return None, "cache checksum does not match"
        return [ServiceEntry(**item) for item in entries], "cache"
    except (KeyError, TypeError) as exc:
        return None, f"cache file is corrupt ({type(exc).__name__}: {exc})"


def save(path: Path, key: str, entries: list[ServiceEntry]) -> None:
    items = [entry.to_cache() for entry in entries]
    data = {"format": FORMAT, "key": key, "entries": items, "checksum": _checksum(key, items)}
    from zato.common.files import write_file
    write_file(path, json.dumps(data, indent=1))  # 0600: it says which modules to import; atomic for workers
