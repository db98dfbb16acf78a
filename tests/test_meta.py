""" Keeps the plugin contract honest: every hook is documented (docstring and docs/plugins.md)
and exercised by a test, and the docs name no hook that does not exist. """

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from zato import hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(name for name, value in vars(hookspecs).items() if inspect.isfunction(value) and hasattr(value, "zato_spec"))
DOCS = (ROOT / "docs" / "plugins.md").read_text("utf-8")
DOCUMENTED = set(re.findall(r"^### `([a-z_]+)`", DOCS, re.MULTILINE))
HOOK_FIXTURE_FILES = {"test_meta.py", "all_hooks_plugin.py"}


def test_there_are_hooks_for_every_area_the_core_promises():
    for expected in ("register_channel_types", "register_outgoing_connection_types", "register_rate_limiter_backends",
                     "register_internal_services", "register_object_types", "register_cli_commands", "startup_phase"):
        assert expected in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_docstring(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert len(doc) > 80, f"{hook} needs a docstring saying when it is called, its arguments and its result"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_in_docs_plugins_md(hook):
    assert hook in DOCUMENTED, f"docs/plugins.md needs a '### `{hook}`' section"


def test_docs_name_no_hook_that_does_not_exist():
    assert DOCUMENTED <= set(HOOKS), DOCUMENTED - set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_exercised_by_a_test(hook):
    files = [p for p in ROOT.glob("tests/**/*.py") if p.name not in HOOK_FIXTURE_FILES]
    assert any(hook in p.read_text("utf-8") for p in files), f"no test under tests/ names {hook}"


def test_hooks_are_called_with_keywords_only():
    """ The core calls hooks with keywords (a spec's arguments are the contract). """
    core = ROOT / "core" / "zato"
    for path in core.rglob("*.py"):
        for match in re.finditer(r"pm\.hook\.(\w+)\(([^)]*)\)", path.read_text("utf-8")):
            args = [a.strip() for a in match.group(2).split(",") if a.strip()]
            assert all("=" in a for a in args), f"{path}: hook {match.group(1)} called with positional arguments"
