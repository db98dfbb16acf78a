""" Helpers shared by the core's tests (fixtures are in conftest.py). A module of its own, with a
name no plugin's tests use, so that `from core_test_helpers import ...` means this file whatever
else pytest collects. """

from __future__ import annotations

import json
import os
import sys
import textwrap
import urllib.request
import uuid
from base64 import b64encode
from pathlib import Path
from typing import Any

import pytest


class PluginSite:
    """ A directory on sys.path holding plugin modules with real `*.dist-info` metadata, so
    `importlib.metadata` finds their `zato.plugins` entry points exactly as it finds pip-installed
    ones. Subprocesses see it through PYTHONPATH. """

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        monkeypatch.syspath_prepend(str(root))
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
        self.modules: list[str] = []

    def add(self, name: str, source: str, *, distribution: str | None = None, version: str = "1.0",
            module: str | None = None, files: dict[str, str] | None = None, opt_in: bool = False) -> str:
        """ Adds plugin `name`; returns its (unique) module name. `files` are extra modules. `opt_in`:
        the distribution lists it in `zato.plugins.opt_in` too, so it is off until switched on. """
        module = module or f"zato_test_plugin_{name}_{uuid.uuid4().hex[:8]}"
        distribution = distribution or f"zato-plugin-{name}"
        (self.root / f"{module}.py").write_text(textwrap.dedent(source), "utf-8")
        for file_name, file_source in (files or {}).items():
            (self.root / file_name).write_text(textwrap.dedent(file_source), "utf-8")
        dist_info = self.root / f"{distribution.replace('-', '_')}-{version}.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
        entry_points = f"[zato.plugins]\n{name} = {module}\n"
        if opt_in:
            entry_points += f"\n[zato.plugins.opt_in]\n{name} = {module}\n"
        (dist_info / "entry_points.txt").write_text(entry_points)
        self.modules.append(module)
        return module

    def cleanup(self) -> None:
        for module in self.modules:
            sys.modules.pop(module, None)


def unique_module_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


# Real HTTP peers live in the core's test kit, for plugins' tests too.
from zato.testing import handle_lifespan, serve_asgi, text_app  # noqa: E402,F401


def admin_post(address: str, service: str, payload: Any = None) -> Any:
    """ Invokes `service` through the admin API of a server process, on a new connection each
    time, so that in a multi-worker server either worker may answer; the JSON reply, or b"". """
    from zato.testing import ADMIN_PASSWORD
    request = urllib.request.Request(f"{address}/zato/api/invoke/{service}", data=json.dumps(payload or {}).encode(),
                                     method="POST")
    request.add_header("Authorization", "Basic " + b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode())
    request.add_header("Content-Type", "application/json")
    request.add_header("Connection", "close")
    with urllib.request.urlopen(request, timeout=10) as reply:
        body = reply.read()
    return json.loads(body) if body else body
